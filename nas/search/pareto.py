"""Pareto fronts on objective matrices (minimisation), crowding, and hypervolume.

Hypervolume is exact and our own (no library offers it as a public API): a sweep for two
objectives, and for more, slicing along the last objective (between consecutive values
of it, the dominated region is a slab over the lower-dimensional hypervolume of the
points below; Hypervolume by Slicing Objectives), which is fast for the fronts a search
finds (hundreds of points, two to four objectives). The rest is small vectorised numpy
for NSGA-II's selection.
"""
from __future__ import annotations

import numpy as np

MATRIX_ROWS = 2048  # up to this many rows, the all-pairs dominance matrix is the fastest route


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """M x N: whether row i of `a` dominates row j of `b` (minimisation)."""
    le = np.all(a[:, None, :] <= b[None, :, :], axis=2)
    lt = np.any(a[:, None, :] < b[None, :, :], axis=2)
    return le & lt


def nondominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows no other row dominates.

    Rows are visited in lexicographic order, so a row can only be dominated by rows
    visited before it, and only the front found so far needs checking: O(n x front)
    instead of the O(n^2) all-pairs matrix (a whole benchmark table has 15,625 rows);
    small sets use the matrix, which is faster there.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) <= MATRIX_ROWS:
        return ~dominates(points, points).any(axis=0) if len(points) else np.zeros(0, dtype=bool)
    keep = np.zeros(len(points), dtype=bool)
    front = np.zeros((0, points.shape[1] if points.ndim == 2 else 0))
    for i in np.lexsort(points.T[::-1]) if len(points) else []:
        p = points[i]
        if len(front) and np.any(np.all(front <= p, axis=1) & np.any(front < p, axis=1)):
            continue
        keep[i] = True
        front = np.vstack([front, p])
    return keep


def front_ranks(points: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """NSGA-II rank of each row (0 = first front) under constrained domination: a feasible
    row beats an infeasible one, and infeasible rows are ranked by total violation."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    total = np.zeros(n) if violation is None or violation.size == 0 else np.clip(violation, 0.0, None).sum(axis=1)
    ranks = np.full(n, -1, dtype=np.int64)
    remaining = np.flatnonzero(total <= 0)
    beats = dominates(points[remaining], points[remaining]) if len(remaining) <= MATRIX_ROWS else None
    alive = np.ones(len(remaining), dtype=bool)
    rank = 0
    while alive.any():  # peel fronts off the feasible rows
        idx = np.flatnonzero(alive)
        first = ~beats[np.ix_(idx, idx)].any(axis=0) if beats is not None else nondominated(points[remaining[idx]])
        ranks[remaining[idx[first]]] = rank
        alive[idx[first]] = False
        rank += 1
    infeasible = np.flatnonzero(total > 0)
    if len(infeasible):
        levels = np.unique(total[infeasible], return_inverse=True)[1]
        ranks[infeasible] = rank + levels
    return ranks


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary rows get infinity)."""
    n, k = points.shape
    out = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        out[order[0]] = out[order[-1]] = np.inf
        if span > 0:
            out[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return out


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by `points` (minimisation) and bounded by `reference`; points that
    do not dominate the reference add nothing."""
    points = np.asarray(points, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    inside = np.all(points < reference, axis=1) if len(points) else np.zeros(0, dtype=bool)
    if not inside.any():
        return 0.0
    pts = points[inside]
    return float(_volume(pts[nondominated(pts)], reference))


def _volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume of points that all dominate the reference (dominated ones allowed)."""
    k = points.shape[1]
    if k == 1:
        return float(reference[0] - points[:, 0].min())
    if k == 2:  # sweep along the first objective; the best second objective so far covers each strip
        p = points[np.lexsort((points[:, 1], points[:, 0]))]
        widths = np.diff(np.append(p[:, 0], reference[0]))
        return float(np.sum(widths * (reference[1] - np.minimum.accumulate(p[:, 1]))))
    # Add the points in increasing order of the last objective: each adds its box less the part
    # the points before it already cover, and that part, limited to the new point's box, is a
    # slab over a (k-1)-objective hypervolume of the limited points (usually few nondominated;
    # the two-objective sweep takes dominated points as they are, cheaper than filtering them).
    p = points[np.argsort(points[:, -1], kind="stable")]
    boxes = np.prod(reference - p, axis=1)
    total = float(boxes[0])
    for i in range(1, len(p)):
        limited = np.maximum(p[:i, :-1], p[i, :-1])
        covered = _volume(limited if k == 3 else limited[nondominated(limited)], reference[:-1])
        total += boxes[i] - (reference[-1] - p[i, -1]) * covered
    return total
