"""SearchSpace: decisions, architectures as integer codes, and networks as slots.

Every space is a product of independent decisions, so an arch encodes to one
integer per decision (its choice index) and a batch of archs to an N x D matrix.
A network is a fixed sequence of *slots*; each slot names the decisions that shape
it and turns their values into a LayerSpec (or None when the layer is inactive).
Knowing each slot's decisions is what lets any per-layer metric (params, MACs, LUT
latency) be tabulated per slot and evaluated for many archs as a gather and a sum.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nas.errors import NasError, closest
from nas.space.arch import Arch, Decision, Value
from nas.space.layers import LayerSpec

if TYPE_CHECKING:  # torch loads only when a network is built
    import torch

    from nas.space.tables import SpecTable

RngLike = np.random.Generator | int | None


class Slot(Protocol):
    """One layer position: the decisions it reads and how they make its LayerSpec."""

    deps: tuple[str, ...]

    def make(self, values: Mapping[str, Value], resolution: int | None) -> LayerSpec | None:
        """The layer for these decision values (only `deps` are read); None if inactive."""


class SearchSpace(ABC):
    """A named product of decisions whose every point builds to a chain of LayerSpecs."""

    def __init__(self, name: str, decisions: Sequence[Decision], description: str = "") -> None:
        self.name = name
        self.description = description
        self.decisions: tuple[Decision, ...] = tuple(decisions)
        self._index = {d.name: i for i, d in enumerate(self.decisions)}
        for d in self.decisions:
            # distinct as validation tells values apart: 3 and 3.0 are one choice (JSON
            # reads either), True and 1 are two
            same = any(_same_value(a, b) for i, a in enumerate(d.choices) for b in d.choices[:i])
            if len(d.choices) < 2 or same:
                raise NasError(f"space {name}: decision {d.name!r} needs at least two distinct choices, got {list(d.choices)}")
        self.radices = np.array([len(d.choices) for d in self.decisions], dtype=np.int64)

    # ------------------------------------------------------------------ structure
    @abstractmethod
    def slots(self) -> Sequence[Slot]:
        """The network's layer positions in execution order."""

    @abstractmethod
    def resolution(self, arch: Arch) -> int:
        """Input height (= width) of the network for this arch."""

    @property
    @abstractmethod
    def in_channels(self) -> int:
        """Channels of the input image."""

    def layers(self, arch: Arch, resolution: int | None = None) -> list[LayerSpec]:
        """The arch's active blocks in order; `resolution` overrides the input size."""
        arch = self.validate(arch)
        made = (slot.make(arch, resolution) for slot in self.slots())
        return [spec for spec in made if spec is not None]

    def build(self, arch: Arch) -> torch.nn.Module:
        """A plain torch module of the arch (imports torch only when called)."""
        from nas.space.builder import build_network

        return build_network(self.layers(arch))

    # ------------------------------------------------------------------ archs
    @property
    def size(self) -> int:
        """Exact number of distinct decision assignments."""
        return int(np.prod([int(r) for r in self.radices], dtype=object)) if len(self.radices) else 1

    def arch(self, values: Mapping[str, Any]) -> Arch:
        """Validate decision values (an Arch, a mapping, or the {"space", "arch"} JSON form) into an Arch."""
        if isinstance(values, Arch):
            if values.space != self.name:
                raise NasError(f"arch is for space {values.space!r}, not {self.name!r}")
            values = dict(values)
        elif "arch" in values and isinstance(values.get("arch"), Mapping):
            if values.get("space", self.name) != self.name:
                raise NasError(f"arch is for space {values['space']!r}, not {self.name!r}")
            values = values["arch"]
        unknown = [k for k in values if k not in self._index]
        if unknown:
            k = unknown[0]
            raise NasError(f"space {self.name}: unknown decision {k!r}{closest(k, self._index)}")
        missing = [d.name for d in self.decisions if d.name not in values]
        if missing:
            raise NasError(f"space {self.name}: arch lacks decision(s) {', '.join(missing)}")
        canonical = {}
        for d in self.decisions:
            v = values[d.name]
            matches = [c for c in d.choices if _same_value(v, c)]
            if not matches:
                raise NasError(f"space {self.name}: decision {d.name!r} = {v!r} is not allowed; choices: {list(d.choices)}")
            canonical[d.name] = matches[0]
        return Arch(self.name, canonical)

    def validate(self, arch: Arch | Mapping[str, Any]) -> Arch:
        """The arch checked against this space (an Arch can be built by hand with any values)."""
        return self.arch(arch)

    # ------------------------------------------------------------------ arch text
    def parse_arch(self, text: str) -> Arch:
        """An arch from text: canonical JSON (a decision mapping or the {"space", "arch"}
        form) or the space's own string form (`parse_arch_string`)."""
        text = text.strip()
        if text[:1] not in ("{", "[", '"'):
            arch = self.parse_arch_string(text)
            if arch is None:
                form = self._string_form()
                raise NasError(f"arch {text[:60]!r} is " + (f"neither arch JSON nor {form}" if form else
                                                           "not arch JSON (an object of decision -> value)"))
            return arch
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NasError(f"arch is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(data, dict):
            raise NasError("arch JSON must be an object of decision -> value")
        return self.arch(data)

    def parse_arch_string(self, text: str) -> Arch | None:
        """The space's own compact form, or None when `text` is not in it. Here: every
        decision's choice joined by '-' in decision order, for spaces whose choices are
        all strings (the FBNet strings of the HELP tables); NB201 has its arch strings."""
        parts = text.split("-")
        if len(parts) == len(self.decisions) and self._string_choices:
            return self.arch(dict(zip([d.name for d in self.decisions], parts)))
        return None

    def format_arch(self, arch: Arch) -> str:
        """The arch as one line for people and tables: its decision mapping as compact JSON
        in decision order (spaces with a string form of their own override this)."""
        return json.dumps(dict(self.validate(arch)), separators=(",", ":"))

    def resolve_arch(self, ref: str | None) -> Arch:
        """ARCH as a user gives it: arch text (`parse_arch`), max or min (`extreme`), a file
        holding arch text, or nothing for a space of one architecture."""
        if ref is None:
            if self.size != 1:
                raise NasError(f"space {self.name} has {size_text(self.size)} architectures: give ARCH "
                               "(inline JSON, a JSON file, max or min)")
            return self.from_index(0)
        if ref in ("max", "min"):
            return self.extreme(largest=ref == "max")
        stripped = ref.strip()
        if stripped.startswith("{"):
            return self.parse_arch(stripped)
        path = Path(ref)
        if path.is_file():
            try:
                return self.parse_arch(path.read_text())
            except UnicodeDecodeError:
                raise NasError(f"ARCH file {ref}: not a text file") from None
        arch = self.parse_arch_string(stripped)
        if arch is None:
            form = self._string_form()
            raise NasError(f"ARCH {ref!r} is neither inline JSON, {form + ', ' if form else ''}max, min nor an "
                           "existing file")
        return arch

    def _string_form(self) -> str | None:
        """How the space's own string form reads, for messages; None when it has none."""
        return f"{len(self.decisions)} choices joined by '-'" if self._string_choices else None

    @functools.cached_property
    def _string_choices(self) -> bool:
        return bool(self.decisions) and all(isinstance(c, str) for d in self.decisions for c in d.choices)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over what the space computes, the one identity that LUTs,
        supernet runs, kits and exports record and compare.

        It hashes the decisions (names and choices, in code order), the input channels, and
        every slot in network order as the decisions it reads plus the key of the LayerSpec
        it makes for each combination of their values ('-' where inactive): the whole
        map from arch to network, which is what a LUT's blocks, a checkpoint's weight
        shapes and codes, and an export's layers all depend on. The name and description
        are left out (every consumer checks the name beside the fingerprint), so a
        renamed copy of a space has the same fingerprint and any edit that changes one
        arch's network, one choice or the decision order changes it.
        """
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        from nas.space.tables import slot_variants

        column = {d.name: i for i, d in enumerate(self.decisions)}
        tables: dict[int, str] = {}  # NB201's cells share slot objects: hash each table once
        slots = []
        for slot in self.slots():
            cols = tuple(sorted(column[n] for n in slot.deps))
            if id(slot) not in tables:
                variants = dict(slot_variants(self, slot, cols, None))
                n = int(np.prod([int(self.radices[c]) for c in cols], dtype=np.int64))
                keys = "\n".join(variants[i].key if i in variants else "-" for i in range(n))
                tables[id(slot)] = hashlib.sha256(keys.encode()).hexdigest()
            slots.append([[self.decisions[c].name for c in cols], tables[id(slot)]])
        text = json.dumps({"decisions": [[d.name, list(d.choices)] for d in self.decisions],
                           "in_channels": self.in_channels, "slots": slots}, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ codes
    def encode(self, arch: Arch) -> np.ndarray:
        arch = self.validate(arch)
        return np.array([d.code(arch[d.name]) for d in self.decisions], dtype=np.int64)

    def decode(self, codes: Sequence[int] | np.ndarray) -> Arch:
        codes = np.asarray(codes)
        if codes.shape != (len(self.decisions),) or np.any(codes < 0) or np.any(codes >= self.radices):
            raise NasError(f"space {self.name}: codes {codes.tolist()} do not fit radices {self.radices.tolist()}")
        return Arch(self.name, {d.name: d.choices[int(c)] for d, c in zip(self.decisions, codes)})

    def encode_batch(self, archs: Sequence[Arch]) -> np.ndarray:
        out = np.empty((len(archs), len(self.decisions)), dtype=np.int64)
        for i, arch in enumerate(archs):
            out[i] = self.encode(arch)
        return out

    def decode_batch(self, codes: np.ndarray) -> list[Arch]:
        return [self.decode(row) for row in np.asarray(codes)]

    def sample_codes(self, rng: RngLike, n: int) -> np.ndarray:
        """n uniform random archs as an n x D code matrix."""
        rng = np.random.default_rng(rng)
        return (rng.random((n, len(self.radices))) * self.radices).astype(np.int64)

    def sample(self, rng: RngLike) -> Arch:
        return self.decode(self.sample_codes(rng, 1)[0])

    def mutate_codes(self, codes: np.ndarray, rng: RngLike, prob: float = 0.1) -> np.ndarray:
        """Each decision moves to another choice with probability `prob`."""
        rng = np.random.default_rng(rng)
        codes = np.atleast_2d(codes)
        if codes.shape[1] == 0:
            return codes.copy()
        flip = rng.random(codes.shape) < prob
        shift = rng.integers(1, self.radices, size=codes.shape)
        return np.where(flip, (codes + shift) % self.radices, codes)

    def mutate(self, arch: Arch, rng: RngLike, prob: float = 0.1) -> Arch:
        return self.decode(self.mutate_codes(self.encode(arch), rng, prob)[0])

    def crossover_codes(self, a: np.ndarray, b: np.ndarray, rng: RngLike) -> np.ndarray:
        """Uniform crossover: each decision comes from either parent with probability 1/2."""
        rng = np.random.default_rng(rng)
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        return np.where(rng.random(a.shape) < 0.5, a, b)

    def crossover(self, a: Arch, b: Arch, rng: RngLike) -> Arch:
        return self.decode(self.crossover_codes(self.encode(a), self.encode(b), rng)[0])

    # ------------------------------------------------------------------ enumeration
    def index(self, arch: Arch) -> int:
        """Mixed-radix rank of the arch (first decision most significant)."""
        rank = 0
        for code, radix in zip(self.encode(arch), self.radices):
            rank = rank * int(radix) + int(code)
        return rank

    def from_index(self, rank: int) -> Arch:
        if not 0 <= rank < self.size:
            raise NasError(f"space {self.name}: index {rank} outside 0..{self.size - 1}")
        codes = []
        for radix in reversed(self.radices.tolist()):
            rank, code = divmod(rank, radix)
            codes.append(code)
        return self.decode(codes[::-1])

    def enumerate(self) -> Iterator[Arch]:
        """Every arch in index order (use only on small spaces)."""
        for rank in range(self.size):
            yield self.from_index(rank)

    # ------------------------------------------------------------------ inactive decisions
    def active_mask(self, codes: np.ndarray) -> np.ndarray:
        """N x D: whether each decision shapes each arch's network.

        A decision matters when a layer that reads it is active, and always when it
        switches layers on and off (a depth).
        """
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        active = np.zeros(codes.shape, dtype=bool)
        active[:, self._switches] = True
        for cols, strides, is_active in self._activity_tables:
            on = is_active[codes[:, cols] @ strides] if cols else np.full(len(codes), bool(is_active[0]))
            active[:, cols] |= on[:, None]
        return active

    def canonical_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes with every decision that does not shape the network reset to choice 0:
        archs that differ only there (the kernel of a layer beyond its stage's depth)
        are one network and get equal canonical codes."""
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        return np.where(self.active_mask(codes), codes, 0)

    def canonical(self, arch: Arch) -> Arch:
        return self.decode(self.canonical_codes(self.encode(arch))[0])

    @functools.cached_property
    def distinct_size(self) -> int:
        """Exact number of distinct networks (archs that differ after canonical()).

        Which decisions matter depends only on the switches; for each combination of
        switch values, the choices of the decisions that then matter multiply.
        """
        switches = self._switches
        combos = int(np.prod([int(self.radices[c]) for c in switches], dtype=object))
        if combos > 1_000_000:
            raise NasError(f"space {self.name}: {combos} depth combinations are too many to count distinct networks")
        total = 0
        for combo in itertools.product(*(range(int(self.radices[c])) for c in switches)):
            codes = np.zeros((1, len(self.decisions)), dtype=np.int64)
            codes[0, switches] = combo
            mask = self.active_mask(codes)[0]
            mask[switches] = False
            total += int(np.prod([int(r) for r in self.radices[mask]], dtype=object))
        return total

    @functools.cached_property
    def _activity_tables(self) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """Per distinct slot: its decision columns, flat-index strides, and whether the
        slot is active for each combination of those decisions."""
        from nas.space.tables import slot_variants

        column = {d.name: i for i, d in enumerate(self.decisions)}
        tables, seen = [], set()
        for slot in self.slots():
            if id(slot) in seen:
                continue
            seen.add(id(slot))
            cols = tuple(sorted(column[n] for n in slot.deps))
            radices = [int(self.radices[c]) for c in cols]
            is_active = np.zeros(int(np.prod(radices, dtype=np.int64)), dtype=bool)
            is_active[[flat for flat, _ in slot_variants(self, slot, cols, None)]] = True
            strides = np.array([int(np.prod(radices[i + 1:], dtype=np.int64)) for i in range(len(cols))], dtype=np.int64)
            tables.append((list(cols), strides, is_active))
        return tables

    @functools.cached_property
    def _switches(self) -> list[int]:
        """Columns of decisions that turn some layer on or off."""
        found = set()
        for cols, _, is_active in self._activity_tables:
            grid = is_active.reshape([int(self.radices[c]) for c in cols] or [1])
            for axis, c in enumerate(cols):
                if not np.all(grid == np.take(grid, [0], axis=axis)):
                    found.add(c)
        return sorted(found)

    # ------------------------------------------------------------------ costs
    def table(self, metric: str, resolution: int | None = None, dtype: str = "float32") -> SpecTable:
        """A cached vectorised evaluator of a counter metric (see nas.space.tables)."""
        return _cached_table(self, metric, resolution, dtype)

    def counts(self, arch: Arch, resolution: int | None = None, dtype: str = "float32") -> dict[str, Any]:
        """params, macs, peak_activation_bytes, weight_bytes and arch_id of one arch."""
        from nas.space.counters import network_counts

        arch = self.validate(arch)
        out: dict[str, Any] = network_counts(self.layers(arch, resolution), dtype)
        out["resolution"] = resolution or self.resolution(arch)
        out["arch_id"] = arch.arch_id
        return out

    def extreme(self, largest: bool) -> Arch:
        """The largest (or smallest) arch by MACs, params breaking ties.

        Starts from every numeric decision at its max (min) and improves one decision
        at a time until no single change helps; exact whenever costs add up per
        decision, as they do in chain spaces without interacting choices. Both costs
        are per-slot sums, so a change of one decision is scored on the slots that read
        it alone: a sweep costs the size of the tables, not decisions x slots (a depth
        of 1000 took 14 s when every trial re-scored the whole network).
        """
        codes = np.array([_extreme_code(d, largest) for d in self.decisions], dtype=np.int64)
        macs, params = self.table("macs"), self.table("params")
        sign = -1.0 if largest else 1.0
        # one combined table per group of decision columns; macs and params share the grouping
        parts = [(cols, strides, sign * (m * 1e3 + p / 1e6))
                 for (cols, strides, m), (_, _, p) in zip(macs._parts, params._parts)]
        touching: list[list[int]] = [[] for _ in self.decisions]
        for k, (cols, _, _) in enumerate(parts):
            for c in cols:
                touching[c].append(k)
        for _ in range(4):
            changed = False
            for d, radix in enumerate(self.radices):
                local = np.zeros(int(radix))
                for k in touching[d]:
                    cols, strides, table = parts[k]
                    flat = sum(int(codes[c]) * int(s) for c, s in zip(cols, strides) if c != d)
                    local += table[flat + np.arange(radix) * strides[cols.index(d)]]
                j = int(np.argmin(local))
                if local[j] < local[codes[d]]:
                    codes[d], changed = j, True
            if not changed:
                break
        return self.decode(codes)

    def descend(self, codes: np.ndarray, score: Callable[[np.ndarray], np.ndarray],
                rounds: int) -> tuple[np.ndarray, float]:
        """Coordinate descent from `codes`: set one decision at a time to its lowest-scoring
        choice (score maps an N x D code matrix to N values) until no single change helps
        or `rounds` sweeps are done. Returns the codes and their score."""
        codes = np.array(codes, dtype=np.int64)
        current = score(codes[None, :])[0]
        for _ in range(rounds):
            changed = False
            for d, radix in enumerate(self.radices):
                options = np.repeat(codes[None, :], radix, axis=0)
                options[:, d] = np.arange(radix)
                scores = score(options)
                j = int(np.argmin(scores))
                if scores[j] < current:
                    codes, current, changed = options[j], scores[j], True
            if not changed:
                break
        return codes, float(current)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary: name, type, decisions with choices, size."""
        return {
            "name": self.name,
            "type": type(self).__name__,
            "description": self.description,
            "size": self.size,
            "distinct_size": self.distinct_size,
            "decisions": [{"name": d.name, "choices": list(d.choices)} for d in self.decisions],
        }


def size_text(n: int) -> str:
    """A count of archs for people: digits grouped, or scientific beyond 10^12 (through
    Decimal: a size beyond a float's range, such as 4**1000, cannot go through float)."""
    from decimal import Decimal

    return f"{n:,}" if n < 10**12 else f"{Decimal(n):.3e}"


def _same_value(value: Any, choice: Value) -> bool:
    """Strict equality that keeps True apart from 1 but lets JSON's 3 stand for 3.0."""
    if isinstance(value, bool) or isinstance(choice, bool) or isinstance(value, str) or isinstance(choice, str):
        return type(value) is type(choice) and value == choice
    return isinstance(value, (int, float)) and value == choice


def _extreme_code(d: Decision, largest: bool) -> int:
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices)
    if not numeric:
        return 0
    values = np.array(d.choices, dtype=float)
    return int(np.argmax(values) if largest else np.argmin(values))


@functools.lru_cache(maxsize=64)
def _cached_table(space: SearchSpace, metric: str, resolution: int | None, dtype: str):
    from nas.space.tables import counter_table

    return counter_table(space, metric, resolution, dtype)
