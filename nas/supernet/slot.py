"""One layer position of a supernet: its families of shared weights and how it runs.

A variant runs as the torch builder's own module for its LayerSpec (built once on the
meta device, so it holds no memory) called with the family's tensors in place of its
own (torch.func.functional_call). The supernet therefore computes exactly what the
standalone network of nas.space.builder computes, and extraction is a copy of those
same tensors into a freshly built module.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import replace

import torch
from torch import nn
from torch.func import functional_call

from nas.errors import NasError
from nas.space.base import SearchSpace, Slot
from nas.space.builder import build_layer
from nas.space.layers import LayerSpec
from nas.quant.settings import QuantSettings
from nas.supernet.families import Family, Fixed, Weightless, family_key, make_family
from nas.supernet.qat import fake_quant_call

MAX_VARIANTS = 200_000
TEMPLATE_CACHE = 256


def slot_variants(space: SearchSpace, slot: Slot) -> list[LayerSpec]:
    """Every distinct LayerSpec the slot takes (input size ignored: weights do not depend on it)."""
    choices = {d.name: d.choices for d in space.decisions}
    first = slot.make({name: choices[name][0] for name in slot.deps}, None)
    if first is not None and first.op == "nb201_cell":
        return [_sizeless(first)]  # one family holds every op on every edge
    combos = 1
    for name in slot.deps:
        combos *= len(choices[name])
    if combos > MAX_VARIANTS:
        raise NasError(f"space {space.name}: a layer depends on {combos:,} decision combinations; too many for a supernet")
    seen: dict[LayerSpec, None] = {}
    for combo in itertools.product(*(choices[name] for name in slot.deps)):
        spec = slot.make(dict(zip(slot.deps, combo)), None)
        if spec is not None:
            seen.setdefault(_sizeless(spec), None)
    return list(seen)


def _sizeless(spec: LayerSpec) -> LayerSpec:
    """The spec with its input size dropped, except a patch embedding's: its position
    embedding has one row per token, so its weights depend on the size."""
    return spec if spec.op == "patch_embed" else replace(spec, in_size=1)


class SlotModule(nn.Module):
    """The families of one slot; `forward(x, spec)` runs the variant `spec`."""

    def __init__(self, variants: list[LayerSpec]) -> None:
        super().__init__()
        groups: dict[str, list[LayerSpec]] = {}
        for spec in variants:
            groups.setdefault(family_key(spec), []).append(spec)
        self.families = nn.ModuleDict({key: make_family(key, specs) for key, specs in groups.items()})
        self.passes_input = any(s.residual or s.is_identity for s in variants)
        self._templates: OrderedDict[LayerSpec, tuple[nn.Module, list[str]]] = OrderedDict()

    def family(self, spec: LayerSpec) -> Family:
        key = family_key(spec)
        if key not in self.families:
            raise NasError(f"layer {spec.key} is not a variant this supernet was built for")
        return self.families[key]

    def forward(self, x: torch.Tensor, spec: LayerSpec, qat: QuantSettings | None = None) -> torch.Tensor:
        """The variant `spec` on `x`; with `qat` (the quantization it will be deployed with), an
        int8 variant runs fake-quantized (nas.supernet.qat)."""
        family = self.family(spec)
        quantized = qat is not None and spec.precision == "int8"
        if isinstance(family, Fixed):
            if quantized:
                return fake_quant_call(family.module, spec, x, qat.reduce_range)
            return family.module(x)
        template, names = self._template(spec)
        if template.training != self.training:
            template.train(self.training)
        params, buffers = family.tensors(spec)
        tensors = dict(zip(names, params + buffers))
        if quantized:
            return fake_quant_call(template, spec, x, qat.reduce_range, tensors)
        if isinstance(family, Weightless):
            return template(x)
        return functional_call(template, tensors, (x,), strict=True)

    def state_for(self, spec: LayerSpec) -> dict[str, torch.Tensor]:
        """The builder module's state dict for `spec`: copies of the inherited tensors."""
        family = self.family(spec)
        if isinstance(family, Fixed):
            return {k: v.detach().clone() for k, v in family.module.state_dict().items()}
        _, names = self._template(spec)
        params, buffers = family.tensors(spec)
        return {name: t.detach().clone() for name, t in zip(names, params + buffers)}

    def _template(self, spec: LayerSpec) -> tuple[nn.Module, list[str]]:
        """The builder's module for `spec` on the meta device, with its tensor names in
        parameter-then-buffer order; the family's tensors are checked against it once."""
        key = _sizeless(spec)
        if key in self._templates:
            self._templates.move_to_end(key)
            return self._templates[key]
        with torch.device("meta"):
            template = build_layer(spec)
        template.train(self.training)
        named = list(template.named_parameters()) + list(template.named_buffers())
        params, buffers = self.family(spec).tensors(spec)
        shapes = [tuple(t.shape) for t in params + buffers]
        if shapes != [tuple(t.shape) for _, t in named]:
            raise RuntimeError(f"supernet tensors {shapes} do not match the builder's module for {spec.key}: "
                               f"{[(n, tuple(t.shape)) for n, t in named]}")
        entry = (template, [n for n, _ in named])
        self._templates[key] = entry
        if len(self._templates) > TEMPLATE_CACHE:
            self._templates.popitem(last=False)
        return entry
