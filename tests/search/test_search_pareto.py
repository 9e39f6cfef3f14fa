"""Our exact hypervolume against references that share no code with it: inclusion-exclusion
over the boxes of small fronts, counting unit cells on integer grids, and closed forms."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nas.search.pareto import hypervolume


def inclusion_exclusion(points: np.ndarray, reference: np.ndarray) -> float:
    """The union of the boxes [p, reference]: the sum over non-empty subsets S of
    (-1)^(|S|+1) times the volume of their intersection, the box from max(S) to the reference."""
    boxes = [p for p in points if np.all(p < reference)]
    total = 0.0
    for size in range(1, len(boxes) + 1):
        for subset in itertools.combinations(boxes, size):
            total += (-1) ** (size + 1) * float(np.prod(reference - np.max(subset, axis=0)))
    return total


def grid_count(points: np.ndarray, reference: np.ndarray) -> int:
    """Integer points and reference: the number of unit cells [c, c+1) some point is <= (exact)."""
    axes = [np.arange(int(r)) for r in reference]
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(reference))
    covered = np.zeros(len(cells), dtype=bool)
    for p in points:
        covered |= np.all(cells >= p, axis=1)
    return int(covered.sum())


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_random_small_fronts_match_inclusion_exclusion(k: int) -> None:
    rng = np.random.default_rng(k)
    for _ in range(20):
        points = rng.random((int(rng.integers(1, 9)), k))
        reference = np.full(k, 1.0) - rng.random(k) * 0.2  # some points fall outside it
        assert hypervolume(points, reference) == pytest.approx(inclusion_exclusion(points, reference), abs=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_integer_grids_match_the_number_of_covered_cells(k: int) -> None:
    rng = np.random.default_rng(10 + k)
    side = {2: 40, 3: 14, 4: 7}[k]
    for _ in range(10):
        points = rng.integers(0, side, size=(int(rng.integers(1, 60)), k)).astype(float)  # ties and duplicates
        reference = np.full(k, float(side))
        assert hypervolume(points, reference) == grid_count(points, reference)


def test_closed_forms() -> None:
    assert hypervolume(np.array([[1.0, 2.0, 3.0]]), np.array([4.0, 4.0, 4.0])) == 3 * 2 * 1
    assert hypervolume(np.array([[0.5]]), np.array([2.0])) == 1.5
    # the standard simplex's corners in 3-D: three unit-thick slabs overlapping pairwise
    corners = np.eye(3)
    assert hypervolume(corners, np.full(3, 2.0)) == pytest.approx(3 * 2 * 2 * 1 - 3 * 2 * 1 * 1 + 1)
    # n points on the 2-D staircase x + y = n-1 with reference (n, n): n(n+1)/2 unit cells
    n = 50
    stairs = np.c_[np.arange(n), np.arange(n)[::-1]].astype(float)
    assert hypervolume(stairs, np.full(2, float(n))) == n * (n + 1) / 2


def test_dominated_duplicate_and_outside_points_add_nothing() -> None:
    rng = np.random.default_rng(3)
    front = rng.random((12, 3))
    reference = np.full(3, 1.5)
    base = hypervolume(front, reference)
    dominated = front + rng.random(front.shape) * 0.1
    outside = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.5]])  # beyond, or on, the reference
    assert hypervolume(np.vstack([front, dominated, front, outside]), reference) == pytest.approx(base, rel=1e-12)
    assert hypervolume(np.zeros((0, 3)), reference) == 0.0
    assert hypervolume(outside, reference) == 0.0


def test_order_of_points_and_of_objectives_does_not_matter() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((200, 4))
    points = x / np.linalg.norm(x, axis=1, keepdims=True)  # on a sphere: every point on the front
    reference = np.full(4, 1.1)
    value = hypervolume(points, reference)
    for perm in ([3, 1, 0, 2], [1, 2, 3, 0]):
        assert hypervolume(points[rng.permutation(len(points))][:, perm], reference[perm]) == \
            pytest.approx(value, rel=1e-12)
    assert 0 < value < math.prod(reference)
