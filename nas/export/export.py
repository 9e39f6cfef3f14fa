"""`export_arch`: one found arch -> a folder a user can load, fine-tune and deploy."""
from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas.export.budgets import Budgets, card_budgets
from nas.export.bundle import ONNX_FILE, WEIGHTS_FILE, staged_folder, write_record
from nas.export.card import SCHEMA as CARD_SCHEMA
from nas.export.card import CARD_LIBRARIES, measured_figures, now, write_card
from nas.export.int8 import INT8_ONNX, INT8_PARAMS, has_int8, random_images, write_int8
from nas.export.latency import local_device, measure_onnx, measured_ms
from nas.export.onnx_export import write_onnx
from nas.export.weights import fresh_model, save_weights
from nas.hardware.measure import Protocol
from nas.provenance import library_versions
from nas.space.arch import Arch
from nas.space.base import SearchSpace

DEFAULT_PROTOCOL = Protocol()  # the LUTs' measurement protocol


def resolve(space: SearchSpace | str, arch: Arch | Mapping[str, Any] | str) -> tuple[SearchSpace, Arch]:
    """The space (object, name or YAML path) and the arch (Arch, mapping, JSON/NB201 text, max, min)."""
    from nas.space import load_space

    space = load_space(space) if isinstance(space, (str, Path)) else space
    if isinstance(arch, str):
        return space, space.resolve_arch(arch)
    return space, space.validate(arch)


def export_arch(space: SearchSpace | str, arch: Arch | Mapping[str, Any] | str, out: Path | str,
                supernet: Path | str | None = None, budgets: Budgets | None = None,
                provenance: Mapping[str, Any] | None = None, *, seed: int = 0, split: str = "val",
                latency_protocol: Protocol | None = DEFAULT_PROTOCOL, force: bool = False,
                device: torch.device | None = None, sources: Mapping[str, Any] | None = None,
                base: Path | None = None) -> Path:
    """Write the export folder `out` (see nas.export.bundle) and return its path.

    supernet: a `hwnas supernet train` folder (or its checkpoint) to inherit weights and
    recalibrated BN statistics from and to score the arch on `split`; without one the
    weights are freshly initialised from `seed`. budgets: checked on the card (see
    nas.export.budgets). provenance: extra facts for the card, e.g. {"search_run": id,
    "seeds": {...}}. latency_protocol None skips the local latency measurement.
    sources: the cost sources the arch was searched under (a search config's `sources:`,
    nas.sources; relative paths read from `base`): the card predicts from them first and
    checks the budgets with them.
    """
    from nas.sources import Resolver

    started = time.perf_counter()
    space, arch = resolve(space, arch)
    resolver = Resolver(space, sources, base)  # bad sources fail before any work
    layers = space.layers(arch)
    resolution = space.resolution(arch)
    input_shape = (1, space.in_channels, resolution, resolution)
    int8 = has_int8(layers)
    if int8:  # the int8 model is verified and timed with this machine's runtime
        local_device().check_precisions(layers, f"arch {arch.arch_id} of {space.name}")
    inherited = None
    if supernet is not None:
        from nas.export.inherit import inherit

        inherited = inherit(Path(supernet), space, arch, split, device)
        model = inherited.model
    else:
        model = fresh_model(lambda: space.build(arch).to(device or "cpu"), seed, input_shape)
    out = Path(out)
    with staged_folder(out, force) as tmp:
        save_weights(model, tmp / WEIGHTS_FILE, {"space": space.name, "arch_id": arch.arch_id})
        check = write_onnx(model, input_shape, tmp / ONNX_FILE, seed)
        measured = None
        if latency_protocol is not None:
            measured = measure_onnx(tmp / ONNX_FILE, input_shape, latency_protocol)
        created = now()
        quantized = _int8(model, layers, inherited, tmp, input_shape, seed, latency_protocol) if int8 else None
        record = write_record(
            tmp, (WEIGHTS_FILE, ONNX_FILE, *((INT8_ONNX, INT8_PARAMS) if int8 else ())), space=space.name,
            space_file=getattr(space, "source", None), space_fingerprint=space.fingerprint(), arch=dict(arch),
            arch_id=arch.arch_id, layers=layers,
            input={"shape": list(input_shape), "channels": space.in_channels, "resolution": resolution,
                   "preprocessing": inherited.preprocessing if inherited else None},
            classes=layers[-1].out_ch, created=created)
        card = _card(space, arch, record, check.to_dict(), measured, inherited, budgets, provenance, seed, resolver)
        if quantized is not None:
            quantized["float"] = {"accuracy": inherited.accuracy if inherited else None,
                                  "size_bytes": (tmp / ONNX_FILE).stat().st_size,
                                  "measured_latency_ms": measured_ms(measured) if measured else None}
        card["int8"] = quantized
        card["provenance"]["export_seconds"] = round(time.perf_counter() - started, 3)
        write_card(tmp, card)
    return out


def _int8(model, layers, inherited, folder: Path, input_shape, seed: int, protocol) -> dict[str, Any]:
    """Write the verified int8 model (nas.export.int8) as search scored it: with a supernet,
    the run's quant settings, calibrated on its seeded pick of training images and verified
    on the validation split; without one, seeded random inputs."""
    from nas.quant import QuantSettings

    settings = inherited.quant if inherited is not None and inherited.quant is not None else QuantSettings()
    if local_device().reduce_range and not settings.reduce_range:  # this machine's int8 kernels need 7-bit weights
        settings = settings.model_copy(update={"reduce_range": True})
    resolution = input_shape[-1]
    if inherited is not None and inherited.scorer is not None:
        scorer = inherited.scorer
        return write_int8(model, layers, scorer.images("quant", resolution), settings, folder,
                          scorer.images("eval", resolution), scorer.labels,
                          calib_source="training split (the seeded pick of BN recalibration)",
                          verify_source=f"{inherited.split} images", seed=seed, latency_protocol=protocol,
                          input_shape=input_shape)
    calib = random_images(settings.calib_images, input_shape, seed)
    return write_int8(model, layers, calib, settings, folder, calib_source="seeded random N(0, 1) inputs "
                      "(no supernet: untrained weights)", seed=seed, latency_protocol=protocol, input_shape=input_shape)


def _card(space, arch, record, onnx_check, measured, inherited, budgets, provenance, seed, resolver) -> dict[str, Any]:
    from nas.export.predictions import predict_all

    extra = dict(provenance or {})
    seeds = {"export": seed, **(extra.pop("seeds", None) or {})}
    if inherited is not None:
        seeds["supernet"] = inherited.source["seed"]
    found = predict_all(space, arch, measured_ms(measured) if measured else None, resolver)
    card: dict[str, Any] = {
        "schema": CARD_SCHEMA, "space": space.name, "arch_id": arch.arch_id, "arch": dict(arch),
        "input": record["input"], "classes": record["classes"], "costs": space.counts(arch),
        "onnx": {"file": ONNX_FILE, **onnx_check}, "measured_latency": measured,
        "predictions": found["predictions"], "skipped": found["skipped"],
        "sources": resolver.serialized(),
        "accuracy": None if inherited is None else {
            "value": inherited.accuracy, "split": inherited.split,
            "source": f"supernet {inherited.source['supernet']}, BN recalibrated on "
                      f"{inherited.source['calib_images']} training images", "details": inherited.source},
        "finetune": None, "budgets": [],
        "provenance": {"search_run": extra.pop("search_run", None), "seeds": seeds,
                       "weights": "inherited from supernet" if inherited else f"fresh initialisation (seed {seed})",
                       "versions": library_versions(CARD_LIBRARIES), "created": record["created"], **extra},
    }
    card["budgets"] = card_budgets(budgets, resolver, arch, measured_figures(card))
    return card

