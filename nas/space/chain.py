"""Chain spaces: stem -> stages of blocks -> head, read from YAML.

    name: tiny_mbconv
    input: {channels: 3, resolution: [28, 32]}     # a list is a decision
    classes: 10
    defaults: {act: relu, se_gate: hsigmoid}      # block fields for every layer
    stem: [{op: conv, out: 16, kernel: 3, stride: 2}]
    stages:
      - depth: [1, 2, 3]                          # first d layers of the stage are active
        width: [24, 32]                           # output channels of the stage
        stride: 2                                 # of its first layer
        block: {op: mbconv, kernel: [3, 5], expand: [3, 6], per: layer}
        first: {...}                              # overrides for the stage's first layer
    head: [{op: conv, out: 256, kernel: 1}, {op: gap}, {op: linear, out: classes}]

Transformer blocks (issue 18) take the same grammar: a `patch_embed` entry turns the
image or a hybrid's feature map into tokens (`patch`: the patch size, a fixed number
because the token grid follows it; `cls`: prepend a class token; `tokens`: optionally
the token count you expect, checked), stages of `encoder` blocks (`heads`, `head_dim`,
`mlp_ratio` or `mid` for the MLP width; the stage keeps the embed dim, so `width` may be
left out) and a `token_pool` entry (the class token or the mean, and the final layer
norm) before the classifier:

    stem:   [{op: patch_embed, out: [192, 216, 240], patch: 16, cls: true}]
    stages: [{depth: [12, 13, 14], block: {op: encoder, heads: [3, 4], head_dim: 64, mlp_ratio: [3.5, 4]}}]
    head:   [{op: token_pool}, {op: linear, out: classes}]

A hybrid puts convolutional stages before the patch embedding. Each layer reads a
feature map, tokens or a pooled vector, and an op that cannot read what the layer
before it writes is refused at load (an encoder straight after a conv: no tokens yet).

`precision` (fp32, int8) is a block field like the others, so a list is a decision per
layer or per stage; the top-level `precision` (fp32 unless given; a list there is one
decision for the whole network) is every layer's unless its block or `defaults` set one.
Each layer also knows the precision of its input, the last active layer's before it
(`Producer`): the first layer of a stage reads the previous stage's precision decision,
and its depth as well when that stage's layers choose their precisions one by one.

Any block field given as a list becomes a decision, one per layer (`per: layer`, the
default) or one per stage (`per: stage`); `{choices: [...], per: stage}` sets the scope
of one field. `candidates: {name: {fields}}` makes a decision over named block
variants (FBNet's k3_e1, skip, ...). Stem and head entries are one-layer stages whose
width is their `out`.

Sizes are bounded at load (SIZE_LIMITS), far above any network that trains on one
machine, so that a typo (a depth of 10^6, a width of 10^9) is refused in a line instead
of hanging a search or exhausting memory later: at most 1024 layers per stage and 4096
in the network, 16384 channels in any layer (stage width, `out`, input channels and the
expanded width an `expand` ratio makes), input resolution 4096, kernel 31 and 100000
classes. nas.space.builder separately refuses to build a network whose weights and
activations would not fit in memory.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas.errors import NasError, closest, unknown_key
from nas.space.arch import Arch, Decision, Value
from nas.space.base import SearchSpace
from nas.space.layers import PRECISIONS, LayerSpec, out_size

BLOCK_FIELDS = (
    "op", "kernel", "expand", "mid", "mid_divisor", "expand_conv", "groups", "shuffle",
    "se", "se_base", "se_divisor", "se_gate", "act", "bn", "bias", "precision",
    "patch", "cls", "tokens", "heads", "head_dim", "mlp_ratio",
)
ENTRY_KEYS = BLOCK_FIELDS + ("out", "stride", "name", "candidates", "per")
STAGE_KEYS = ("name", "depth", "width", "stride", "block", "first")
BLOCK_KEYS = BLOCK_FIELDS + ("candidates", "per")
TOP_KEYS = ("name", "type", "description", "input", "classes", "precision", "defaults", "stem", "stages", "head",
            "reference")
CHAIN_OPS = ("conv", "mbconv", "skip", "gap", "linear", "norm", "patch_embed", "encoder", "token_pool")
# What each op reads: a feature map (the image included), tokens, or a pooled vector.
# Ops absent here read a feature map; the tensor a layer writes is what the next one reads.
READS = {"encoder": "tokens", "token_pool": "tokens"}
WRITES = {"patch_embed": "tokens", "token_pool": "vector", "gap": "vector", "linear": "vector"}
_TENSOR_WORDS = {"image": "a feature map", "tokens": "tokens", "vector": "a pooled vector"}
SIZE_LIMITS = {"depth": 1024, "layers": 4096, "channels": 16384, "resolution": 4096, "kernel": 31, "classes": 100_000}


def make_divisible(value: float, divisor: int) -> int:
    """Round to a multiple of `divisor`, never more than 10 % below (MobileNet's rule)."""
    if divisor <= 1:
        return max(1, int(value + 0.5))
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class Const:
    value: Any
    deps: tuple[str, ...] = ()

    def get(self, values: Mapping[str, Value]) -> Any:
        return self.value


@dataclass(frozen=True)
class Choose:
    name: str

    @property
    def deps(self) -> tuple[str, ...]:
        return (self.name,)

    def get(self, values: Mapping[str, Value]) -> Any:
        return values[self.name]


Ref = Const | Choose


@dataclass(frozen=True, eq=False)
class ChainLayer:
    """A slot of a chain space: one layer position with references to its decisions."""

    label: str
    fields: tuple[tuple[str, Ref], ...]
    candidate: Choose | None
    options: Mapping[str, Mapping[str, Any]]
    in_ch: Ref
    out_ch: Ref
    stride: int
    reduction: int  # product of the strides before this layer; 0 after global pooling
    active_if: tuple[str, int] | None  # (depth decision, index): active when depth > index
    resolution: Ref
    producer: Producer | Const = Const("fp32")  # the precision of the input (fp32: the network's input)
    deps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        refs = [r for _, r in self.fields] + [self.in_ch, self.out_ch, self.resolution, self.producer]
        refs += [self.candidate] if self.candidate else []
        deps = {n for r in refs for n in r.deps} | ({self.active_if[0]} if self.active_if else set())
        object.__setattr__(self, "deps", tuple(sorted(deps)))

    def make(self, values: Mapping[str, Value], resolution: int | None) -> LayerSpec | None:
        if self.active_if and values[self.active_if[0]] <= self.active_if[1]:
            return None
        fields = {k: r.get(values) for k, r in self.fields}
        if self.candidate:
            fields.update(self.options[self.candidate.get(values)])
        size = 1 if self.reduction == 0 else out_size(resolution or self.resolution.get(values), self.reduction)
        return resolve_layer(fields, self.in_ch.get(values), self.out_ch.get(values), size, self.stride,
                             self.producer.get(values))

    @property
    def _candidate_precision(self) -> bool:
        """Whether some candidate of this layer sets its precision."""
        return self.candidate is not None and any("precision" in o for o in self.options.values())

    @property
    def _precision_field(self) -> Ref:
        return next((r for k, r in self.fields if k == "precision"), Const("fp32"))

    @property
    def precision_deps(self) -> tuple[str, ...]:
        """The decisions this layer's precision reads (its field, a candidate that sets it)."""
        deps = set(self._precision_field.deps) | (set(self.candidate.deps) if self._candidate_precision else set())
        return tuple(sorted(deps))

    @property
    def precision_source(self) -> object:
        """What decides the precision: layers with equal sources have equal precisions."""
        return id(self) if self._candidate_precision else self._precision_field

    def precision(self, values: Mapping[str, Value]) -> str:
        """The layer's precision for these decision values (only precision_deps are read)."""
        if self._candidate_precision:
            option = self.options[self.candidate.get(values)]
            if "precision" in option:
                return option["precision"]
        return self._precision_field.get(values)


@dataclass(frozen=True, eq=False)
class Producer:
    """The precision of the tensor a layer reads: that of the last active layer before it.

    `layers` are the candidates, latest first, each with whether it may be inactive; the
    first layer of a stage reads the previous stage, whose depth decides which of its
    layers came last (its first layer always runs, so the search ends there). A slot
    thus reads the previous stage's depth and per-layer precisions only when they exist.
    """

    layers: tuple[tuple[ChainLayer, bool], ...]
    deps: tuple[str, ...] = ()
    same: bool = False  # all candidates have the same precision source

    def __post_init__(self) -> None:
        deps = {n for layer, _ in self.layers for n in layer.precision_deps}
        # which layer ran last matters only when their precisions can differ (not when
        # they read one per-stage decision, or all have the same fixed precision)
        same = len({layer.precision_source for layer, _ in self.layers}) == 1
        if not same:
            deps |= {layer.active_if[0] for layer, may_skip in self.layers if may_skip}
        object.__setattr__(self, "deps", tuple(sorted(deps)))
        object.__setattr__(self, "same", same)

    def get(self, values: Mapping[str, Value]) -> str:
        for layer, may_skip in self.layers:
            if self.same or not may_skip or values[layer.active_if[0]] > layer.active_if[1]:
                return layer.precision(values)
        return "fp32"  # not reached: a stage's first layer always runs


def resolve_layer(f: Mapping[str, Any], in_ch: int, out_ch: int, size: int, stride: int,
                  in_precision: str = "fp32") -> LayerSpec:
    """Block fields (ratios, divisors, defaults) -> a LayerSpec with every number concrete."""
    q = {"precision": f.get("precision", "fp32"), "in_precision": in_precision}
    op = f.get("op", "mbconv")
    kernel = f.get("kernel", 3 if op == "mbconv" else 1)
    if isinstance(kernel, int) and kernel > SIZE_LIMITS["kernel"]:
        raise NasError(f"kernel {kernel} is beyond the limit of {SIZE_LIMITS['kernel']}")
    if op not in CHAIN_OPS:
        raise NasError(f"unknown op {op!r}{closest(str(op), CHAIN_OPS)}; chain spaces know {', '.join(CHAIN_OPS)}")
    if op == "gap":
        return LayerSpec("gap", in_ch, in_ch, size, **q)
    if op in ("patch_embed", "encoder", "token_pool"):
        return _transformer_layer(op, f, in_ch, out_ch, size, q)
    if op == "norm":
        return LayerSpec("norm", in_ch, in_ch, size, act=f.get("act", "relu"), **q)
    if op == "skip":
        return LayerSpec("skip", in_ch, out_ch, size, stride=stride, **q)
    if op == "linear":
        return LayerSpec("linear", in_ch, out_ch, 1, act=f.get("act", "none"), bn=False, bias=f.get("bias", True), **q)
    if op == "conv":
        return LayerSpec("conv", in_ch, out_ch, size, kernel=f.get("kernel", 1), stride=stride, groups=f.get("groups", 1),
                         act=f.get("act", "relu"), bn=f.get("bn", True), bias=f.get("bias", False), **q)
    if "mid" in f:
        mid = _field_value(f, "mid", int)
    else:
        mid = make_divisible(in_ch * _field_value(f, "expand", float, 1), _field_value(f, "mid_divisor", int, 1))
    expand_conv = f.get("expand_conv", "auto")
    if not (expand_conv is True or expand_conv is False or expand_conv == "auto"):
        raise NasError(f"expand_conv must be true, false or auto, got {expand_conv!r}")
    if expand_conv is False and mid != in_ch:
        raise NasError(f"expand_conv is false but the block expands {in_ch} to {mid} channels")
    mid_ch = mid if expand_conv is True or (expand_conv == "auto" and mid != in_ch) else 0
    if mid_ch > SIZE_LIMITS["channels"]:
        raise NasError(f"the block expands to {mid_ch} channels, beyond the limit of {SIZE_LIMITS['channels']}")
    se = f.get("se", 0)
    se = 0.25 if se is True else 0.0 if se is False else _field_value(f, "se", float, 0, minimum=0)
    if f.get("se_base", "mid") not in ("mid", "in"):
        raise NasError(f"se_base must be 'mid' (the expanded width) or 'in' (the block input), got {f['se_base']!r}")
    se_base = mid if f.get("se_base", "mid") == "mid" else in_ch
    se_ch = make_divisible(se_base * se, _field_value(f, "se_divisor", int, 8)) if se > 0 else 0
    groups = f.get("groups", 1)
    shuffle = f.get("shuffle", True)
    if not isinstance(shuffle, bool):
        raise NasError(f"shuffle must be true or false, got {shuffle!r}")
    return LayerSpec("mbconv", in_ch, out_ch, size, kernel=f.get("kernel", 3), stride=stride, mid_ch=mid_ch,
                     groups=groups, shuffle=shuffle and groups > 1, act=f.get("act", "relu"),
                     se_ch=se_ch, se_gate=f.get("se_gate", "sigmoid"), **q)


def _transformer_layer(op: str, f: Mapping[str, Any], in_ch: int, out_ch: int, size: int,
                       q: Mapping[str, str]) -> LayerSpec:
    """A patch embedding, encoder or token pool; `size` is the side of the feature map a
    patch embedding reads, or of the patch grid the tokens of the others came from.
    Faults name the field, the layer's label is added by the caller."""
    cls = f.get("cls", False)
    if not isinstance(cls, bool):
        raise NasError(f"cls must be true or false, got {cls!r}")
    if op == "patch_embed":
        patch = _field_value(f, "patch", int)
        if size % patch:
            raise NasError(f"patch {patch} does not tile the {size}x{size} feature map ({size / patch:g} patches "
                           f"a side), so it cannot become tokens: choose a patch size that divides {size}")
        return LayerSpec("patch_embed", in_ch, out_ch, size, kernel=patch, stride=patch, cls_token=cls, **q)
    if op == "token_pool":
        return LayerSpec("token_pool", in_ch, in_ch, size, cls_token=cls, **q)
    if out_ch != in_ch:
        raise NasError(f"width {out_ch} differs from the embed dim {in_ch}: an encoder keeps it (leave width out)")
    heads = _field_value(f, "heads", int)
    head_dim = _field_value(f, "head_dim", int) if "head_dim" in f else 0
    if not head_dim and in_ch % heads:
        raise NasError(f"heads {heads} does not divide the embed dim {in_ch}; choose heads that divide it "
                       f"or give head_dim")
    if "mid" in f:
        mid = _field_value(f, "mid", int)
    else:
        ratio = _field_value(f, "mlp_ratio", float, 4)
        mid = round(in_ch * ratio)
        if abs(in_ch * ratio - mid) > 1e-9 * max(1.0, mid):
            raise NasError(f"mlp_ratio {ratio} gives an MLP width of {in_ch * ratio:g} at embed dim {in_ch}, "
                           f"not a whole number of channels")
    if mid > SIZE_LIMITS["channels"]:
        raise NasError(f"the MLP width {mid} is beyond the limit of {SIZE_LIMITS['channels']}")
    return LayerSpec("encoder", in_ch, in_ch, size, mid_ch=mid, act=f.get("act", "gelu"), cls_token=cls,
                     heads=heads, head_dim=head_dim, **q)


def _field_value(f: Mapping[str, Any], key: str, kind: type, default: Any = None, minimum: float | None = None) -> Any:
    """A numeric block field, checked: `int` fields are positive integers, `float` fields
    positive numbers (or at least `minimum`)."""
    value = f.get(key, default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and not (number and isinstance(value, int) and value >= 1):
        raise NasError(f"{key} must be a positive integer, got {value!r}")
    if kind is float and not (number and (value >= minimum if minimum is not None else value > 0)):
        limit = f"at least {minimum}" if minimum is not None else "positive"
        raise NasError(f"{key} must be a number, {limit}, got {value!r}")
    return value


class ChainSpace(SearchSpace):
    """Stem, stages of (elastic-depth) blocks and head, every choice a decision."""

    def __init__(self, data: Mapping[str, Any], source: str = "<dict>") -> None:
        self.source = source
        parser = _Parser(data, source)
        super().__init__(parser.name, parser.decisions.values(), str(data.get("description", "")).strip())
        self._slots = tuple(parser.layers)
        self._in_channels = parser.in_channels
        self._resolution = parser.resolution
        self.classes = parser.classes
        self.reference = data.get("reference")
        self._check()

    def slots(self) -> tuple[ChainLayer, ...]:
        return self._slots

    def resolution(self, arch: Arch) -> int:
        return int(self._resolution.get(arch))

    @property
    def in_channels(self) -> int:
        return self._in_channels

    def _check(self) -> None:
        """Build every layer variant once so a bad combination fails at load, not mid-search."""
        import itertools

        choices = {d.name: d.choices for d in self.decisions}
        for slot in self._slots:
            combos = itertools.product(*(choices[n] for n in slot.deps))
            for combo in itertools.islice(combos, 50_000):
                values = dict(zip(slot.deps, combo))
                try:
                    slot.make(values, None)
                except NasError as exc:
                    raise NasError(f"{self.source}: layer {slot.label} with {values}: {exc}") from None


class _Parser:
    """Turns the YAML mapping into decisions and ChainLayer slots, naming every fault by path."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.source = source
        _require_mapping(data, source, "the space")
        _check_keys(data, TOP_KEYS, source, "top level")
        if "name" not in data or not isinstance(data["name"], str):
            raise NasError(f"{source}: the space needs a 'name' (a string)")
        self.name = data["name"]
        self.decisions: dict[str, Decision] = {}
        inp = data.get("input", {})
        _require_mapping(inp, source, "input")
        _check_keys(inp, ("channels", "resolution"), source, "input")
        self.in_channels = _positive_int(inp.get("channels", 3), source, "input.channels")
        _within_limit(self.in_channels, "channels", source, "input.channels")
        self.resolution = self._ref(inp.get("resolution", 224), "resolution", "input.resolution", kind=int)
        _within_limit(self._values(self.resolution), "resolution", source, "input.resolution")
        self.classes = _positive_int(data.get("classes", 1000), source, "classes")
        _within_limit(self.classes, "classes", source, "classes")
        defaults = data.get("defaults", {})
        _require_mapping(defaults, source, "defaults")
        _check_keys(defaults, BLOCK_FIELDS, source, "defaults")
        self.defaults = dict(defaults)
        # the space-wide precision: every layer's unless its block or the defaults set one
        # (a list here is one decision for the whole network)
        self._check_precision(data.get("precision", "fp32"), "precision")
        self.precision = self._ref(data.get("precision", "fp32"), "precision", "precision")
        self.layers: list[ChainLayer] = []
        self.producer: Producer | Const = Const("fp32")
        self.channels: Ref = Const(self.in_channels)
        self.reduction = 1
        self.tensor = "image"  # what the next layer reads: image (a feature map), tokens or vector
        self.cls = False  # whether the token sequence has a class token
        for part in ("stem", "stages", "head"):
            entries = data.get(part, [])
            if not isinstance(entries, list):
                raise NasError(f"{source}: '{part}' must be a list")
            for i, entry in enumerate(entries):
                path = f"{part}[{i}]"
                _require_mapping(entry, source, path)
                if part == "stages":
                    self._stage(entry, entry.get("name", f"s{i + 1}"), path)
                else:
                    self._entry(entry, entry.get("name", f"{part}{i}"), path)
        if not self.layers:
            raise NasError(f"{source}: the space has no layers")

    # -- one-layer stem/head entries -------------------------------------------
    def _entry(self, entry: Mapping[str, Any], name: str, path: str) -> None:
        _check_keys(entry, ENTRY_KEYS, self.source, path)
        block = {k: v for k, v in entry.items() if k not in ("out", "stride", "name")}
        op = block.get("op")
        if op is None and "candidates" not in block:
            raise NasError(f"{self.source}: {path} needs an 'op' ({', '.join(CHAIN_OPS)})")
        if op is not None and not isinstance(op, (list, dict)) and op not in CHAIN_OPS:
            raise NasError(f"{self.source}: {path}: unknown op {op!r}{closest(str(op), CHAIN_OPS)}; "
                           f"chain spaces know {', '.join(CHAIN_OPS)}")
        if op == "patch_embed" and "stride" in entry:
            raise NasError(f"{self.source}: {path}.stride: a patch embedding's stride is its patch")
        if op in ("gap", "norm", "token_pool"):
            out: Ref = self.channels
        elif "out" not in entry:
            raise NasError(f"{self.source}: {path} ({op}) needs 'out' channels")
        elif entry["out"] == "classes":
            out = Const(self.classes)
        else:
            out = self._ref(entry["out"], f"{name}.out", f"{path}.out", kind=int)
            _within_limit(self._values(out), "channels", self.source, f"{path}.out")
        stride = _positive_int(entry.get("stride", 1), self.source, f"{path}.stride")
        self._stage_layers(name, path, block, {}, depth=Const(1), max_depth=1, out=out, stride=stride)

    # -- stages of blocks ------------------------------------------------------
    def _stage(self, stage: Mapping[str, Any], name: str, path: str) -> None:
        _check_keys(stage, STAGE_KEYS, self.source, path)
        block = stage.get("block", {})
        first = stage.get("first", {})
        _require_mapping(block, self.source, f"{path}.block")
        _require_mapping(first, self.source, f"{path}.first")
        _check_keys(block, BLOCK_KEYS, self.source, f"{path}.block")
        _check_keys(first, BLOCK_KEYS, self.source, f"{path}.first")
        if "width" not in stage and block.get("op") != "encoder":
            raise NasError(f"{self.source}: {path} needs 'width' (output channels, a number or a list)")
        depth = self._ref(stage.get("depth", 1), f"{name}.depth", f"{path}.depth", kind=int)
        depths = depth.value if isinstance(depth, Const) else self.decisions[depth.name].choices
        depths = depths if isinstance(depths, tuple) else (depths,)
        if min(depths) < 1:
            raise NasError(f"{self.source}: {path}.depth must be at least 1")
        _within_limit(max(depths), "depth", self.source, f"{path}.depth")
        width = self._ref(stage["width"], f"{name}.width", f"{path}.width", kind=int) if "width" in stage else self.channels
        _within_limit(self._values(width), "channels", self.source, f"{path}.width")
        stride = _positive_int(stage.get("stride", 1), self.source, f"{path}.stride")
        self._stage_layers(name, path, block, first, depth=depth, max_depth=max(depths), out=width, stride=stride,
                           min_depth=min(depths))

    def _stage_layers(self, name, path, block, first, *, depth: Ref, max_depth: int, out: Ref, stride: int,
                      min_depth: int = 1) -> None:
        per = block.get("per", "layer")
        if per not in ("layer", "stage"):
            raise NasError(f"{self.source}: {path}.per must be 'layer' or 'stage', not {per!r}")
        if len(self.layers) + max_depth > SIZE_LIMITS["layers"]:
            raise NasError(f"{self.source}: {path}: the network would have {len(self.layers) + max_depth} layers, "
                           f"beyond the limit of {SIZE_LIMITS['layers']}")
        for j in range(max_depth):
            own = {**self.defaults, **{k: v for k, v in block.items() if k != "per"}}
            if j == 0:
                own.update({k: v for k, v in first.items() if k != "per"})
            label = name if max_depth == 1 else f"{name}.{j}"
            ops = self._tensor_flow(own, path, label)
            fields = [] if "precision" in own else [("precision", self.precision)]
            if ops & {"encoder", "token_pool"}:
                if "cls" in own:
                    raise NasError(f"{self.source}: {path}.block.cls: the class token is the patch embedding's; "
                                   f"{label} reads it from the token sequence")
                fields.append(("cls", Const(self.cls)))
            for key, raw in own.items():
                if key == "candidates":
                    continue
                layer_scope = per == "layer" or (j == 0 and key in first)
                fields.append((key, self._field(raw, key, name, label, layer_scope, f"{path}.block.{key}")))
            candidate, options = None, {}
            if "candidates" in own:
                candidate, options = self._candidates(own["candidates"], name, label,
                                                      per == "layer" or (j == 0 and "candidates" in first), path)
            active_if = (depth.name, j) if isinstance(depth, Choose) and j >= min_depth else None
            layer_in = self.channels if j == 0 else out
            layer = ChainLayer(
                label=label, fields=tuple(fields), candidate=candidate, options=options, in_ch=layer_in, out_ch=out,
                stride=stride if j == 0 else 1, reduction=self.reduction, active_if=active_if,
                resolution=self.resolution, producer=self.producer if j == 0 else Producer(((self.layers[-1], False),)))
            self.layers.append(layer)
            if j == 0:
                self._advance(own, candidate, options, stride, path)
        stage = self.layers[-max_depth:]
        # the next stage reads the last active layer of this one (latest first, down to its first layer)
        self.producer = Producer(tuple((layer, layer.active_if is not None) for layer in reversed(stage)))
        self.channels = out

    def _tensor_flow(self, own: Mapping[str, Any], path: str, label: str) -> set[str]:
        """The layer's ops, refused when they cannot read what the layer before writes;
        records what this layer writes (and a patch embedding's class token)."""
        ops = _ops_of(own)
        for op in ops:
            reads = READS.get(op, "image")
            # layers after global pooling keep reading the pooled vector as a 1x1 map, as before
            if reads == self.tensor or (reads == "image" and op != "patch_embed" and self.tensor == "vector"):
                continue
            hint = {("tokens", "image"): "; a patch_embed must turn the feature map into tokens first",
                    ("image", "tokens"): "; only encoder and token_pool read tokens (end them with token_pool)"}
            raise NasError(f"{self.source}: {path}: layer {label} ({op}) reads {_TENSOR_WORDS[reads]} but gets "
                           f"{_TENSOR_WORDS[self.tensor]}{hint.get((reads, self.tensor), '')}")
        writes = {WRITES.get(op, self.tensor if op in READS or self.tensor == "vector" else "image") for op in ops}
        if len(writes) > 1:
            raise NasError(f"{self.source}: {path}: layer {label}: candidates {sorted(ops)} write different tensors")
        if "patch_embed" in ops:
            for key in ("patch", "cls", "tokens"):
                if isinstance(own.get(key), (list, dict)):
                    raise NasError(f"{self.source}: {path}.{key}: a patch embedding's {key} must be one value "
                                   f"(the token grid follows it)")
            self.cls = own.get("cls", False)
        self.tensor = writes.pop()
        return ops

    def _advance(self, fields, candidate, options, stride, path) -> None:
        ops = _ops_of(fields)
        if "patch_embed" in ops:
            patch = fields.get("patch")
            if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
                raise NasError(f"{self.source}: {path}.patch must be a positive integer (the patch size), got {patch!r}")
            if self.reduction == 0:
                raise NasError(f"{self.source}: {path}: no patch embedding after global pooling")
            if "tokens" in fields:
                self._check_tokens(fields["tokens"], patch, fields.get("cls", False), path)
            self.reduction *= patch
        elif "gap" in ops or "linear" in ops or "token_pool" in ops:
            if len(ops) > 1:
                raise NasError(f"{self.source}: {path}: pooling cannot be a candidate among other ops")
            self.reduction = 0
        elif self.reduction == 0 and stride != 1:
            raise NasError(f"{self.source}: {path}: no strided layer after global pooling")
        elif self.reduction:
            self.reduction *= stride

    def _check_tokens(self, tokens: Any, patch: int, cls: bool, path: str) -> None:
        """A patch embedding's stated token count against every resolution of the space
        (a resolution given later, as an override, makes its own count)."""
        for resolution in self._values(self.resolution):
            side = out_size(resolution, self.reduction)
            if side % patch == 0 and tokens != (side // patch) ** 2 + cls:
                raise NasError(f"{self.source}: {path}.tokens: {tokens!r} does not fit patch {patch} at {resolution} px: "
                               f"{side // patch}x{side // patch} patches{' and a class token' if cls else ''} make "
                               f"{(side // patch) ** 2 + cls}")

    # -- decisions -------------------------------------------------------------
    def _check_precision(self, raw: Any, path: str) -> None:
        for value in raw if isinstance(raw, list) else [raw]:
            if not isinstance(value, str) or value not in PRECISIONS:
                raise NasError(f"{self.source}: {path}: {unknown_key(value, PRECISIONS, 'precision')}")

    def _values(self, ref: Ref) -> tuple:
        """Every value a reference can take."""
        return self.decisions[ref.name].choices if isinstance(ref, Choose) else (ref.value,)

    def _field(self, raw, key, stage, label, layer_scope, path) -> Ref:
        if key not in BLOCK_FIELDS:
            raise NasError(f"{self.source}: {path}: unknown block field {key!r}{closest(key, BLOCK_FIELDS)}")
        if key == "precision":
            self._check_precision(raw["choices"] if isinstance(raw, dict) and "choices" in raw else raw, path)
        if key == "op" and isinstance(raw, (list, dict)):
            raise NasError(f"{self.source}: {path}: op must be one op; to choose between ops use "
                           "'candidates: {name: {op: ..., ...}}'")
        if isinstance(raw, dict):
            _check_keys(raw, ("choices", "per"), self.source, path)
            if "choices" not in raw:
                raise NasError(f"{self.source}: {path} needs 'choices'")
            scope = raw.get("per", "layer" if layer_scope else "stage")
            if scope not in ("layer", "stage"):
                raise NasError(f"{self.source}: {path}.per must be 'layer' or 'stage', not {scope!r}")
            layer_scope, raw = scope == "layer", raw["choices"]
        return self._ref(raw, f"{label if layer_scope else stage}.{key}", path)

    def _candidates(self, raw, stage, label, layer_scope, path) -> tuple[Choose, dict]:
        if not isinstance(raw, dict) or len(raw) < 2:
            raise NasError(f"{self.source}: {path}.candidates must map at least two names to block fields")
        options = {}
        for cand, fields in raw.items():
            fields = fields or {}
            _require_mapping(fields, self.source, f"{path}.candidates.{cand}")
            _check_keys(fields, BLOCK_FIELDS, self.source, f"{path}.candidates.{cand}")
            if any(isinstance(v, (list, dict)) for v in fields.values()):
                raise NasError(f"{self.source}: {path}.candidates.{cand}: candidate fields must be single values")
            if "precision" in fields:
                self._check_precision(fields["precision"], f"{path}.candidates.{cand}.precision")
            options[str(cand)] = dict(fields)
        ref = self._ref(list(options), f"{label if layer_scope else stage}.op", f"{path}.candidates")
        return ref, options

    def _ref(self, raw, name: str, path: str, kind: type | None = None) -> Ref:
        if isinstance(raw, list):
            if len(raw) == 1:
                raw = raw[0]
            else:
                if len(raw) == 0:
                    raise NasError(f"{self.source}: {path}: an empty list of choices")
                if kind is int and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw):
                    raise NasError(f"{self.source}: {path}: choices must be positive integers, got {raw}")
                if any(isinstance(v, (list, dict)) for v in raw):
                    raise NasError(f"{self.source}: {path}: choices must be single values, got {raw}")
                decision = Decision(name, tuple(raw))
                if name in self.decisions and self.decisions[name] != decision:
                    raise NasError(f"{self.source}: {path}: decision {name!r} defined twice with different choices")
                if len(set(map(repr, raw))) != len(raw):
                    raise NasError(f"{self.source}: {path}: repeated choices in {raw}")
                self.decisions[name] = decision
                return Choose(name)
        if kind is int:
            _positive_int(raw, self.source, path)
        return Const(raw)


def _ops_of(own: Mapping[str, Any]) -> set[str]:
    """The ops a layer may be: its op, or its candidates' (mbconv unless given)."""
    options = own.get("candidates")
    if isinstance(options, Mapping):
        return {(o or {}).get("op", own.get("op", "mbconv")) if isinstance(o, Mapping) or o is None else "mbconv"
                for o in options.values()}
    op = own.get("op", "mbconv")
    return {op if isinstance(op, str) else "mbconv"}


def _require_mapping(value: Any, source: str, path: str) -> None:
    if not isinstance(value, Mapping):
        raise NasError(f"{source}: {path} must be a mapping, got {type(value).__name__}")


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], source: str, path: str) -> None:
    for key in data:
        if key not in allowed:
            raise NasError(f"{source}: {path}: unknown key {key!r}{closest(key, allowed)}")


def _within_limit(values: Any, field: str, source: str, path: str) -> None:
    """Refuse a size beyond SIZE_LIMITS[field] (see the module doc)."""
    largest = max(values) if isinstance(values, (tuple, list)) else values
    if isinstance(largest, int) and largest > SIZE_LIMITS[field]:
        raise NasError(f"{source}: {path} = {largest} is beyond the limit of {SIZE_LIMITS[field]} ({field})")


def _positive_int(value: Any, source: str, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise NasError(f"{source}: {path} must be a positive integer, got {value!r}")
    return value
