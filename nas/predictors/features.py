"""Predictor features, all derived from the LayerSpecs of an arch and vectorised over codes.

Every slot of a space is tabulated once over the decisions it reads: each variant's
LayerSpec becomes a vector of numbers a device's cost depends on (MACs, parameters,
activations read and written, the parts of an inverted residual, the graph of an
NB201 cell). A batch of archs is then a gather per slot, like the cost tables of
nas.space.tables. Four groups of columns come out of those vectors, from coarse to fine:

    net     whole-network sums (and logs of the totals), the true peak activation memory
    stage   per-stage sums (a stage: a chain stage, or a run of identical NB201 cells)
    layer   each searchable slot's vector, including per-edge encodings of a cell
    ops     the one-hot code of every decision

Models regularise the groups differently: a handful of physical aggregates generalise
from 20 measurements, per-layer detail needs hundreds. Columns that are constant over
the space or that repeat an earlier column exactly (three NB201 stages share one cell)
are dropped when the tables are built, so the names depend on the space alone.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nas.errors import NasError, closest
from nas.space.base import SearchSpace
from nas.space.cell import cell_reach, live_edges
from nas.space.counters import layer_io_elements, layer_macs, layer_params
from nas.space.layers import INT8_OPS, NB201_EDGES, NB201_OPS, LayerSpec, nb201_edge_layer
from nas.space.tables import slot_variants

GROUPS = ("net", "stage", "layer", "ops")
COARSE = ("net", "stage")  # the physical aggregates; "layer" and "ops" are the fine detail
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "layerspec": GROUPS,  # the default: everything
    "coarse": COARSE,  # physical aggregates only
    "onehot": ("ops",),  # the field's baseline encoding
}
LOG_TOTALS = ("macs", "params", "io")


# ----------------------------------------------------------------------------- one layer
def layer_vector(spec: LayerSpec) -> dict[str, float]:
    """The numbers of one block a cost model reads. Keys starting with '.' are encodings
    that only make sense per layer (kernel, expansion): they are not summed into stage
    or network totals."""
    out = {"macs": float(layer_macs(spec)), "params": float(layer_params(spec)),
           "io": float(layer_io_elements(spec)), "blocks": 1.0}
    out.update(OP_FEATURES[spec.op](spec))
    if spec.quantized:  # float blocks add no column, so a float space's features stay as they were
        out.update(_precision_features(spec))
    return out


def _precision_features(spec: LayerSpec) -> dict[str, float]:
    """What an int8 block changes: its MACs run on integer kernels, and a precision
    boundary converts the block's input (a quantize before int8, a dequantize after it)."""
    size_in = 1 if spec.op == "linear" else spec.in_size
    boundary = float(spec.in_ch * size_in * size_in)
    return {"int8_macs": float(layer_macs(spec)) if spec.precision == "int8" else 0.0,
            "int8_blocks": float(spec.precision == "int8"),
            "quantize_elements": boundary if (spec.in_precision, spec.precision) == ("fp32", "int8") else 0.0,
            "dequantize_elements": boundary if (spec.in_precision, spec.precision) == ("int8", "fp32") else 0.0}


def _mbconv_features(spec: LayerSpec) -> dict[str, float]:
    mid = spec.mid_ch or spec.in_ch
    return {"kernels": _mbconv_kernels(spec),
            "expand_macs": float(spec.in_ch // spec.groups * spec.mid_ch * spec.in_size ** 2),
            "depthwise_macs": float(mid * spec.kernel ** 2 * spec.out_size ** 2),
            "project_macs": float(mid // spec.groups * spec.out_ch * spec.out_size ** 2),
            "expanded_elements": float(mid * (spec.in_size ** 2 + spec.out_size ** 2)),
            "residual_adds": float(spec.out_ch * spec.out_size ** 2) if spec.residual else 0.0,
            ".kernel": float(spec.kernel), ".expansion": mid / spec.in_ch, ".groups": float(spec.groups)}


def _mbconv_kernels(spec: LayerSpec) -> float:
    """Operators an inverted residual launches (BN folded into its conv, activation
    fused): a GPU at batch 1 spends most of an arch's time launching them, not on MACs
    (FBNet on a GTX 1080 Ti at batch 1: Spearman 0.94 with this count, 0.21 with MACs)."""
    se = 4 if spec.se_ch else 0  # pool, reduce, expand, scale
    return float(bool(spec.mid_ch) + (spec.shuffle and spec.groups > 1) + 2 + se + spec.residual)


def _cell_features(spec: LayerSpec) -> dict[str, float]:
    scale = spec.in_ch * spec.in_size ** 2
    out = {k: v * scale if k.endswith("_elements") else v for k, v in cell_graph(spec.edges).items()}
    out["live_macs"] = sum(float(layer_macs(nb201_edge_layer(op, spec.in_ch, spec.in_size)))
                           for op, live in zip(spec.edges, live_edges(spec.edges)) if live)
    return out


def _encoder_features(spec: LayerSpec) -> dict[str, float]:
    """What a transformer layer's time depends on beyond its MACs: the attention matmuls
    grow with tokens squared, and the map (heads x tokens x tokens) goes through softmax."""
    t, a = spec.tokens, spec.attn_dim
    return {"attention_macs": float(2 * t * t * a), "attention_map_elements": float(spec.heads * t * t),
            "mlp_macs": float(2 * t * spec.in_ch * spec.mid_ch), "tokens": float(t),
            ".heads": float(spec.heads), ".mlp_ratio": spec.mid_ch / spec.in_ch}


def _no_extras(spec: LayerSpec) -> dict[str, float]:
    return {}


# Per op, the features beyond the counters' macs, params and io that every block has.
OP_FEATURES: dict[str, Callable[[LayerSpec], dict[str, float]]] = {
    "conv": lambda s: {"kernels": 1.0}, "mbconv": _mbconv_features,
    "skip": lambda s: {"identity": float(s.is_identity), "kernels": float(not s.is_identity)},
    "gap": _no_extras, "linear": _no_extras, "norm": _no_extras, "avgpool": _no_extras,
    "nb201_cell": _cell_features, "resblock": _no_extras,
    "patch_embed": lambda s: {"tokens": float(s.tokens)}, "encoder": _encoder_features, "token_pool": _no_extras,
}
SUPPORTED_OPS = frozenset(OP_FEATURES)
REFUSED_OPS: frozenset[str] = frozenset()
INT8_SUPPORTED_OPS = INT8_OPS  # _precision_features describes any block
INT8_REFUSED_OPS: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=None)
def cell_graph(edges: tuple[str, ...]) -> dict[str, float]:
    """Graph-aware features of an NB201 cell. 'none' edges disconnect nodes, so an op's
    cost depends on where it sits: on a live path from input to output, on a node that
    only ever sees zeros, or feeding a node whose result is never used (a compiler may
    prune the last two, a framework runs them). Sizes are per unit of the cell's
    feature map (the caller scales them)."""
    fed, used = cell_reach(edges)
    out: dict[str, float] = {}
    for op in NB201_OPS:
        out[f"n_{op}"] = float(sum(e == op for e in edges))
    for (to, frm), op in zip(NB201_EDGES, edges):
        if op == "none":
            continue
        kind = "live" if fed[frm] and used[to] else "unused" if not used[to] else "zero_input"
        out[f"{kind}_{op}"] = out.get(f"{kind}_{op}", 0.0) + 1.0
        if kind == "live":
            out[f".edge{to}{frm}_{op}"] = 1.0
    for kind in ("live", "unused", "zero_input"):
        for op in NB201_OPS[1:]:
            out.setdefault(f"{kind}_{op}", 0.0)
    out["connected"] = float(fed[3])
    incoming = [sum(1 for (to, _), op in zip(NB201_EDGES, edges) if to == node and op != "none") for node in (1, 2, 3)]
    out["adds"] = float(sum(max(0, n - 1) for n in incoming))
    out["adds_elements"] = out["adds"]
    out["empty_nodes"] = float(sum(n == 0 for n in incoming))
    paths = _paths(edges, 3)
    out["paths"] = float(len(paths))
    out["path_convs"] = float(max((sum(edges[i].startswith("nor_conv") for i in p) for p in paths), default=0))
    out["path_length"] = float(max((len(p) for p in paths), default=0))
    return out


def _paths(edges: tuple[str, ...], node: int) -> list[list[int]]:
    """Edge indices of every path from the input to `node` through real edges."""
    if node == 0:
        return [[]]
    return [p + [i] for i, ((to, frm), op) in enumerate(zip(NB201_EDGES, edges))
            if to == node and op != "none" for p in _paths(edges, frm)]


# ----------------------------------------------------------------------------- tables
class _SlotTable:
    """One slot's layer vectors over every combination of its decisions."""

    def __init__(self, space: SearchSpace, slot, cols: tuple[int, ...]) -> None:
        self.cols = list(cols)
        radices = space.radices[self.cols]
        self.strides = np.ones(len(cols), dtype=np.int64)
        for i in range(len(cols) - 2, -1, -1):
            self.strides[i] = self.strides[i + 1] * radices[i + 1]
        variants = [(flat, layer_vector(spec)) for flat, spec in slot_variants(space, slot, cols, None)]
        self.keys = sorted({k for _, vector in variants for k in vector})
        self.table = np.zeros((int(np.prod(radices)), len(self.keys)), dtype=np.float64)
        index = {k: j for j, k in enumerate(self.keys)}
        for flat, vector in variants:
            for k, v in vector.items():
                self.table[flat, index[k]] = v


def _digest(cols: Sequence[int], column: np.ndarray) -> str:
    """Identity of a tabulated column: the decisions it reads and its values."""
    return hashlib.sha256(repr(list(cols)).encode() + column.tobytes()).hexdigest()


class Featurizer:
    """codes (N x D) -> features (N x F) for one space and one feature set.

    `lut_values` (block key -> value) adds the LUT sum of the arch as a net feature,
    so a learned model can correct a LUT instead of starting from nothing.
    """

    def __init__(self, space: SearchSpace, feature_set: str = "layerspec",
                 lut_values: Mapping[str, float] | None = None) -> None:
        if feature_set not in FEATURE_SETS:
            raise NasError(f"unknown feature set {feature_set!r}{closest(feature_set, FEATURE_SETS)}; "
                           f"known: {', '.join(FEATURE_SETS)}")
        self.space, self.feature_set = space, feature_set
        self.lut_values = dict(lut_values) if lut_values is not None else None
        self._tables, self._stages = _slot_tables(space)
        self._lut = _lut_table(space, self.lut_values) if self.lut_values is not None else None
        self._columns = self._select()
        self._project()

    # -- which columns ------------------------------------------------------------
    def _select(self) -> list[tuple[str, str, Any]]:
        """(group, name, how) for every kept column, from the tables alone: a column is
        dropped when it is constant over the space or is an exact repeat of an earlier
        one (same decisions read, same tabulated values)."""
        wanted = FEATURE_SETS[self.feature_set]
        columns: list[tuple[str, str, Any]] = []
        if self._lut is not None:
            columns.append(("net", "net.lut_sum", ("lut",)))
        seen: set[str] = set()

        def keep(group: str, name: str, how: Any, signature: str | None) -> None:
            if signature is None or signature in seen:
                return
            seen.add(signature)
            columns.append((group, name, how))

        if "net" in wanted:
            members = range(len(self._tables))
            for key in self._summable(members):
                keep("net", f"net.{key}", ("sum", key, None), self._signature(key, members))
            for key in LOG_TOTALS:
                columns.append(("net", f"net.log_{key}", ("log", key, None)))
            columns.append(("net", "net.log_peak_activation", ("peak",)))
        if "stage" in wanted:
            for stage, members in self._stages.items():
                for key in self._summable(members):
                    keep("stage", f"stage.{stage}.{key}", ("sum", key, stage), self._signature(key, members))
        if "layer" in wanted:
            for t, (label, table) in enumerate(self._distinct()):
                for j, key in enumerate(table.keys):
                    column = table.table[:, j]
                    signature = _digest(table.cols, column) if np.ptp(column) > 0 else None
                    keep("layer", f"layer.{label}.{key.lstrip('.')}", ("slot", t, j), signature)
        if "ops" in wanted:
            for d, decision in enumerate(self.space.decisions):
                for c, choice in enumerate(decision.choices):
                    columns.append(("ops", f"ops.{decision.name}={choice}", ("onehot", d, c)))
        return columns

    def _summable(self, members: Sequence[int]) -> list[str]:
        keys = {k for t in members for k in self._tables[t][1].keys if not k.startswith(".")}
        return sorted(keys)

    def _signature(self, key: str, members: Sequence[int]) -> str | None:
        """Identity of a sum over slots: the multiset of (decisions read, tabulated column)
        of its members; None when every member is constant (the sum is too)."""
        parts, varies = [], False
        for t in members:
            table = self._tables[t][1]
            if key in table.keys:
                column = table.table[:, table.keys.index(key)]
                varies |= bool(np.ptp(column) > 0)
                parts.append(_digest(table.cols, column))
        return hashlib.sha256("|".join(sorted(parts)).encode()).hexdigest() if varies else None

    def _distinct(self) -> list[tuple[str, _SlotTable]]:
        """Each searchable slot object once, labelled, in network order."""
        seen: set[int] = set()
        out = []
        for label, table in self._tables:
            if table.cols and id(table) not in seen:
                seen.add(id(table))
                out.append((label, table))
        return out

    # -- public -------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [name for _, name, _ in self._columns]

    @property
    def groups(self) -> list[str]:
        """The group (net, stage, layer, ops) of each column."""
        return [group for group, _, _ in self._columns]

    @property
    def fingerprint(self) -> str:
        """Hash of the space's name, the feature set and the column names: a predictor file
        made with other features is refused on load."""
        text = "\n".join([self.space.name, self.feature_set, *self.names])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def transform(self, codes: np.ndarray) -> np.ndarray:
        """Features of every row of an N x D code matrix, float64."""
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        if codes.shape[1] != len(self.space.decisions):
            raise NasError(f"codes have {codes.shape[1]} columns; space {self.space.name} "
                           f"has {len(self.space.decisions)} decisions")
        out = np.zeros((len(codes), len(self._columns)))
        sums = np.tile(self._bias, (len(codes), 1))
        flats: dict[tuple[int, ...], np.ndarray] = {}
        for cols, strides, layer_slice, layer_table, sum_table in self._projections:
            flat = flats.get(cols)
            if flat is None:
                flat = flats[cols] = _flat_index(codes, cols, strides)
            if layer_table is not None:
                out[:, layer_slice] = layer_table[flat]
            if sum_table is not None:
                sums += sum_table[flat]
        out[:, self._sum_columns] = sums
        out[:, self._log] = np.log(out[:, self._log] + 1.0)
        if self._onehot is not None:  # one column per choice, decisions in order
            out[np.arange(len(codes))[:, None], self._onehot + codes] = 1.0
        if self._peak is not None:
            out[:, self._peak] = np.log(self.space.table("peak_activation_bytes")(codes) + 1.0)
        if self._lut is not None:
            out[:, 0] = self._lut(codes)
        return out

    def _project(self) -> None:
        """Precompute what transform() gathers. Per-layer columns of a slot are contiguous,
        so they are one slice of the slot's table; every summed column (net and stage sums,
        the totals behind the logs) is folded into one table per set of decisions read,
        whose row for a variant holds that variant's contribution to each sum."""
        sum_cols = [i for i, (_, _, how) in enumerate(self._columns) if how[0] in ("sum", "log")]
        self._sum_columns = np.array(sum_cols, dtype=np.int64)
        self._bias = np.zeros(len(sum_cols))
        self._log = np.array([i for i, (_, _, how) in enumerate(self._columns) if how[0] == "log"], dtype=np.int64)
        onehot = [i for i, (_, _, how) in enumerate(self._columns) if how[0] == "onehot"]
        self._onehot = onehot[0] + np.concatenate([[0], np.cumsum(self.space.radices)[:-1]]) if onehot else None
        peak = [i for i, (_, _, how) in enumerate(self._columns) if how[0] == "peak"]
        self._peak = peak[0] if peak else None
        sum_tables: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        for s, i in enumerate(sum_cols):
            how = self._columns[i][2]
            members = self._stages[how[2]] if how[2] is not None else range(len(self._tables))
            for t in members:
                table = self._tables[t][1]
                if how[1] not in table.keys:
                    continue
                column = table.table[:, table.keys.index(how[1])]
                if table.cols:
                    cols = tuple(table.cols)
                    if cols not in sum_tables:
                        sum_tables[cols] = (table.strides, np.zeros((len(table.table), len(sum_cols))))
                    sum_tables[cols][1][:, s] += column
                else:
                    self._bias[s] += column[0]
        self._projections = []
        distinct = self._distinct()
        for t in sorted({how[1] for _, _, how in self._columns if how[0] == "slot"}):
            idx = [i for i, (_, _, how) in enumerate(self._columns) if how[0] == "slot" and how[1] == t]
            table = distinct[t][1]
            part = np.ascontiguousarray(table.table[:, [self._columns[i][2][2] for i in idx]])
            self._projections.append((tuple(table.cols), table.strides, slice(idx[0], idx[-1] + 1), part, None))
        for cols, (strides, projected) in sum_tables.items():
            self._projections.append((cols, strides, None, None, projected))


@functools.lru_cache(maxsize=16)
def _slot_tables(space: SearchSpace) -> tuple[list[tuple[str, _SlotTable]], dict[str, list[int]]]:
    """(label, table) per slot in network order (repeated slot objects share a table) and
    stage -> slot positions. Cached: an NB201 cell is tabulated over 15,625 variants."""
    column = {d.name: i for i, d in enumerate(space.decisions)}
    by_object: dict[int, _SlotTable] = {}
    tables: list[tuple[str, _SlotTable]] = []
    stages: dict[str, list[int]] = {}
    previous, run = None, 0
    for position, slot in enumerate(space.slots()):
        if id(slot) not in by_object:
            cols = tuple(sorted(column[name] for name in slot.deps))
            by_object[id(slot)] = _SlotTable(space, slot, cols)
        label = getattr(slot, "label", None)
        if label is None:  # unlabelled slots (NB201): a run of one slot object is a stage
            run += slot is not previous
            label = f"s{run}"
        stage = label.split(".")[0]
        previous = slot
        tables.append((label, by_object[id(slot)]))
        stages.setdefault(stage, []).append(position)
    return tables, stages


def get_featurizer(space: SearchSpace, feature_set: str = "layerspec",
                   lut_values: Mapping[str, float] | None = None) -> Featurizer:
    """A Featurizer, shared per (space, feature set) when there is no LUT: building the
    column selection of an NB201 space costs a few tenths of a second each time."""
    if lut_values is not None:
        return Featurizer(space, feature_set, lut_values)
    return _shared_featurizer(space, feature_set)


@functools.lru_cache(maxsize=16)
def _shared_featurizer(space: SearchSpace, feature_set: str) -> Featurizer:
    return Featurizer(space, feature_set)


def _flat_index(codes: np.ndarray, cols: Sequence[int], strides: np.ndarray) -> np.ndarray:
    """Row of a slot table for each arch: the mixed-radix number of its decisions' codes."""
    flat = codes[:, cols[0]] * strides[0]
    for c, s in zip(cols[1:], strides[1:]):
        flat = flat + codes[:, c] * s
    return flat


def _lut_table(space: SearchSpace, values: Mapping[str, float]):
    from nas.space.tables import SpecTable

    def value(spec: LayerSpec) -> float:
        if spec.key not in values:
            raise NasError(f"the LUT lacks block {spec.key!r} of space {space.name}")
        return values[spec.key]

    return SpecTable(space, value, "sum")
