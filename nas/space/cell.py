"""The NAS-Bench-201 cell space: one cell of 6 edges x 5 ops, stacked in a fixed skeleton.

Skeleton (NB201): 3x3 conv stem + BN, three stages of N cells at C, 2C, 4C channels
separated by ResNet reduction blocks, then BN + ReLU, global pooling and a classifier.
Archs read and write the standard string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` and
map to the benchmark's own index order, which is a fixed permutation shipped with
the package (nb201_order.npy; see `order_from_table` for how it was made).
"""
from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import NasError, closest
from nas.space.arch import Arch, Decision, Value
from nas.space.base import SearchSpace
from nas.space.layers import NB201_EDGES, NB201_OPS, LayerSpec

ORDER_FILE = Path(__file__).with_name("nb201_order.npy")
NB201_SIZE = len(NB201_OPS) ** len(NB201_EDGES)


def edge_name(to: int, frm: int) -> str:
    return f"{to}<-{frm}"


def _rescale(size: int, resolution: int | None, base: int) -> int:
    """A feature-map size at another input resolution (the skeleton halves it twice)."""
    if resolution is not None and resolution % 4:
        raise NasError(f"NB201 resolution {resolution} must be a multiple of 4 "
                       "(the two reduction blocks halve it with a 2x2 average pool)")
    return size if resolution is None or size == 1 else max(1, round(size * resolution / base))


@dataclass(frozen=True, eq=False)
class FixedLayer:
    """A slot that is the same layer in every arch."""

    spec: LayerSpec
    base_resolution: int
    deps: tuple[str, ...] = ()

    def make(self, values: Mapping[str, Value], resolution: int | None) -> LayerSpec:
        return replace(self.spec, in_size=_rescale(self.spec.in_size, resolution, self.base_resolution))


@dataclass(frozen=True, eq=False)
class CellLayer:
    """A slot holding one cell; all cells of a stage share one slot object (and its tables)."""

    channels: int
    size: int
    base_resolution: int
    deps: tuple[str, ...]

    def make(self, values: Mapping[str, Value], resolution: int | None) -> LayerSpec:
        size = _rescale(self.size, resolution, self.base_resolution)
        return LayerSpec("nb201_cell", self.channels, self.channels, size, edges=tuple(values[d] for d in self.deps))


class NB201Space(SearchSpace):
    """NAS-Bench-201: decisions are the six edges, named 'to<-from'."""

    def __init__(self, data: Mapping[str, Any], source: str = "<dict>") -> None:
        known = ("name", "type", "description", "channels", "cells_per_stage", "classes", "resolution", "input_channels")
        for key in data:
            if key not in known:
                raise NasError(f"{source}: unknown key {key!r}{closest(key, known)}")
        self.source = source
        edges = [edge_name(to, frm) for to, frm in NB201_EDGES]
        super().__init__(str(data.get("name", "nb201")), [Decision(e, NB201_OPS) for e in edges],
                         str(data.get("description", "")).strip())
        defaults = {"channels": 16, "cells_per_stage": 5, "classes": 10, "resolution": 32, "input_channels": 3}
        for key, default in defaults.items():
            value = data.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NasError(f"{source}: {key} must be a positive integer, got {value!r}")
        if data.get("resolution", 32) % 4:
            raise NasError(f"{source}: resolution {data['resolution']} must be a multiple of 4 "
                           "(the two reduction blocks halve it with a 2x2 average pool)")
        c = data.get("channels", 16)
        n = data.get("cells_per_stage", 5)
        self.classes = data.get("classes", 10)
        self._resolution = data.get("resolution", 32)
        self._in_channels = data.get("input_channels", 3)
        r = self._resolution
        fixed = functools.partial(FixedLayer, base_resolution=r)
        slots: list = [fixed(LayerSpec("conv", self._in_channels, c, r, kernel=3, act="none"))]
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            size = -(-r // 2 ** stage)
            if stage:
                slots.append(fixed(LayerSpec("resblock", width // 2, width, -(-r // 2 ** (stage - 1)), stride=2)))
            cell = CellLayer(width, size, r, tuple(edges))
            slots += [cell] * n
        size = -(-r // 4)
        slots += [fixed(LayerSpec("norm", 4 * c, 4 * c, size, act="relu")), fixed(LayerSpec("gap", 4 * c, 4 * c, size)),
                  fixed(LayerSpec("linear", 4 * c, self.classes, 1, bn=False, bias=True))]
        self._slots = tuple(slots)

    def slots(self) -> tuple:
        return self._slots

    def resolution(self, arch: Arch) -> int:
        return self._resolution

    @property
    def in_channels(self) -> int:
        return self._in_channels

    # ------------------------------------------------------------------ NB201 strings and indices
    def to_string(self, arch: Arch) -> str:
        """The standard NB201 arch string."""
        arch = self.validate(arch)
        nodes = []
        for to in (1, 2, 3):
            nodes.append("|" + "|".join(f"{arch[edge_name(to, frm)]}~{frm}" for frm in range(to)) + "|")
        return "+".join(nodes)

    def from_string(self, text: str) -> Arch:
        text = text.strip()
        nodes = text.split("+")
        if len(nodes) != 3:
            raise NasError(f"NB201 arch string {text!r} must have 3 nodes separated by '+', like "
                           "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")
        values = {}
        for to, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise NasError(f"NB201 arch string: node {to} {node!r} must start and end with '|'")
            parts = node[1:-1].split("|")
            if len(parts) != to:
                raise NasError(f"NB201 arch string: node {to} needs {to} inputs, got {len(parts)} in {node!r}")
            for frm, part in enumerate(parts):
                op, _, src = part.partition("~")
                if src != str(frm):
                    raise NasError(f"NB201 arch string: node {to} input {part!r} should read from node {frm} ('{op}~{frm}')")
                if op not in NB201_OPS:
                    raise NasError(f"NB201 arch string: unknown op {op!r}{closest(op, NB201_OPS)}; ops: {', '.join(NB201_OPS)}")
                values[edge_name(to, frm)] = op
        return self.arch(values)

    def parse_arch_string(self, text: str) -> Arch | None:
        return self.from_string(text) if text.startswith("|") else None

    def format_arch(self, arch: Arch) -> str:
        return self.to_string(arch)

    def _string_form(self) -> str | None:
        return "an NB201 arch string"

    def nb201_index(self, arch: Arch) -> int:
        """The arch's row in the NAS-Bench-201 tables."""
        return int(_order()[1][self.index(arch)])

    def from_nb201_index(self, index: int) -> Arch:
        if not 0 <= index < NB201_SIZE:
            raise NasError(f"NB201 index {index} outside 0..{NB201_SIZE - 1}")
        return self.from_index(int(_order()[0][index]))

    # ------------------------------------------------------------------ isomorphic cells
    def live_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes with every edge that cannot reach the cell's output set to 'none'."""
        return self._through(codes, _rank_tables()[0])

    def isomorphic_codes(self, codes: np.ndarray, live_only: bool = False) -> np.ndarray:
        """One code per class of cells that run the same work (see `isomorphic_edges`):
        equal codes for archs whose measured latencies are repeats of one network.
        `live_only` also drops dead edges first: equal codes for archs that compute the
        same function (the accuracy notion), which are different networks to a runtime
        that executes dead ops."""
        return self._through(codes, _rank_tables()[2 if live_only else 1])

    def _through(self, codes: np.ndarray, table: np.ndarray) -> np.ndarray:
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        if codes.shape[1] != len(NB201_EDGES) or np.any(codes < 0) or np.any(codes >= len(NB201_OPS)):
            raise NasError(f"NB201 codes must be N x {len(NB201_EDGES)} choices in 0..{len(NB201_OPS) - 1}")
        return _codes_of(table[codes @ _STRIDES])


# ---------------------------------------------------------------------- cell graphs
@functools.lru_cache(maxsize=None)
def cell_reach(edges: tuple[str, ...]) -> tuple[dict[int, bool], dict[int, bool]]:
    """(fed, used): whether each node gets data from the input through real edges, and
    whether it feeds the output. 'none' edges carry nothing."""
    real = [(to, frm) for (to, frm), op in zip(NB201_EDGES, edges) if op != "none"]
    fed = {0: True}
    for node in (1, 2, 3):
        fed[node] = any(fed[frm] for to, frm in real if to == node)
    used = {3: True}
    for node in (2, 1, 0):
        used[node] = any(used[to] for to, frm in real if frm == node)
    return fed, used


def live_edges(edges: tuple[str, ...]) -> tuple[bool, ...]:
    """Whether each edge lies on a path from the cell's input to its output."""
    fed, used = cell_reach(edges)
    return tuple(op != "none" and fed[frm] and used[to] for (to, frm), op in zip(NB201_EDGES, edges))


def isomorphic_edges(edges: tuple[str, ...], live_only: bool = False) -> tuple[str, ...]:
    """The canonical form of a cell's edges.

    When edge 2<-1 is 'none', nodes 1 and 2 are interchangeable: swapping them (their
    input edges 1<-0 / 2<-0 and their output edges 3<-1 / 3<-2) gives a cell that runs
    the same ops on tensors of the same shapes, in another order (so the peak of live
    activations may differ: by up to 1.3x on 48 of the 680 pairs). If every real edge
    is live, such twins are one network to any device, so their measured latencies are repeated
    measurements; the form keeps the smaller of the two in choice order. A cell with
    dead ops keeps its own form: runtimes prune dead ops by position (HW-NAS-Bench's
    Pixel 3 and Raspberry Pi 4 run a dead op into node 2 and drop one into node 1, up
    to 1000x apart on twins), so its twin is another network. With `live_only`, dead
    edges become 'none' first and the swap always applies: equal function, not equal
    work (the accuracy notion)."""
    edges = tuple(edges)
    alive = live_edges(edges)
    if live_only:
        edges = tuple(op if live else "none" for op, live in zip(edges, alive))
    elif any(op != "none" and not live for op, live in zip(edges, alive)):
        return edges
    if edges[2] != "none":
        return edges
    twin = (edges[1], edges[0], edges[2], edges[3], edges[5], edges[4])
    rank = {op: i for i, op in enumerate(NB201_OPS)}
    return min(edges, twin, key=lambda e: [rank[op] for op in e])


_STRIDES = np.array([len(NB201_OPS) ** (len(NB201_EDGES) - 1 - i) for i in range(len(NB201_EDGES))], dtype=np.int64)


def _codes_of(ranks: np.ndarray) -> np.ndarray:
    return (ranks[:, None] // _STRIDES) % len(NB201_OPS)


@functools.lru_cache(maxsize=1)
def _rank_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixed-radix rank -> rank of its live form, its isomorphic form and its live
    isomorphic form, over all cells (so batches of codes map by one gather)."""
    live, iso, both = (np.empty(NB201_SIZE, dtype=np.int64) for _ in range(3))
    for rank, code in enumerate(_codes_of(np.arange(NB201_SIZE))):
        edges = tuple(NB201_OPS[c] for c in code)
        alive = tuple(op if ok else "none" for op, ok in zip(edges, live_edges(edges)))
        for table, form in ((live, alive), (iso, isomorphic_edges(edges)), (both, isomorphic_edges(edges, True))):
            table[rank] = sum(NB201_OPS.index(op) * int(s) for op, s in zip(form, _STRIDES))
    return live, iso, both


@functools.lru_cache(maxsize=1)
def _order() -> tuple[np.ndarray, np.ndarray]:
    """(our mixed-radix rank of each NB201 index, NB201 index of each rank)."""
    ranks = np.load(ORDER_FILE, allow_pickle=False).astype(np.int64)
    inverse = np.empty_like(ranks)
    inverse[ranks] = np.arange(len(ranks))
    return ranks, inverse


def order_from_table(table: Path) -> np.ndarray:
    """Mixed-radix ranks in NB201 index order, read from a benchmark CSV with
    `nb201_index` and `arch_str` columns (how nb201_order.npy was made)."""
    space = NB201Space({})
    ranks = np.full(NB201_SIZE, -1, dtype=np.int64)
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            ranks[int(row["nb201_index"])] = space.index(space.from_string(row["arch_str"]))
    if np.any(ranks < 0) or len(set(ranks.tolist())) != NB201_SIZE:
        raise NasError(f"{table}: does not list each of the {NB201_SIZE} NB201 archs exactly once")
    return ranks


if __name__ == "__main__":  # python -m nas.space.cell TABLE.csv: regenerate the shipped order
    import sys

    np.save(ORDER_FILE, order_from_table(Path(sys.argv[1])).astype(np.uint16), allow_pickle=False)
