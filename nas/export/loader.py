"""`load(OUT)`: the exported network as a plain torch module, without unpickling anything.

The module is built by the space's own builder from the arch's LayerSpecs, then filled
from safetensors. arch.json names the space and records its fingerprint and the hash of the
arch's layers: if the space can be found and has changed so that this arch now builds
a different network, loading fails; if it has changed elsewhere, a warning says so. A
space that cannot be found (an export moved to a machine without the space's YAML) is
no obstacle: the LayerSpecs in arch.json, checked against their hash, build the same
module. The int8 files of an export (model_int8.onnx, quant_int8.npz) are checked against
their hashes too.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import nn

from nas.errors import CompatibilityError, CompatibilityWarning, DataError, NasError
from nas.export.bundle import (
    ARCH_FILE,
    FINETUNED_WEIGHTS,
    WEIGHTS_FILE,
    checked_file,
    layers_hash,
    read_record,
)
from nas.space.layers import LayerSpec


def export_layers(out: Path, record: dict[str, Any]) -> list[LayerSpec]:
    """The arch's LayerSpecs, from its space when that is available, checked against arch.json.

    The space's fingerprint tells the two ways an arch can stop matching its layers
    apart: if it equals the recorded one the space is as exported, so arch.json's arch
    was edited (DataError); if not, the space changed (CompatibilityError when this arch's
    network changed with it, a CompatibilityWarning when only other archs did). An
    export written before fingerprints has only its layers to compare.
    """
    file = Path(out) / ARCH_FILE
    try:
        stored = [LayerSpec.from_dict(d) for d in record["layers"]]
    except (NasError, TypeError) as exc:
        raise DataError(f"{file}: garbled layer list ({exc}); export again") from None
    if layers_hash(stored) != record["layers_hash"]:
        raise DataError(f"{file}: its layer list does not match its layers_hash; the file is damaged")
    if record.get("pruned"):  # a pruned network (nas.prune): its layers are no arch of the space
        return stored
    space = find_space(record)
    if space is None:
        return stored
    recorded, now = record.get("space_fingerprint"), space.fingerprint()
    unchanged = recorded == now
    then = f"fingerprint {recorded} then, {now} now" if recorded else "the export predates space fingerprints"
    try:
        layers = space.layers(space.arch(record["arch"]))
    except NasError as exc:
        if unchanged:
            raise DataError(f"{file}: its arch does not fit space {space.name} ({exc}), which is as exported "
                            f"(fingerprint {now}); the file was edited, export again") from None
        raise CompatibilityError(f"{out}: the arch no longer fits space {space.name} ({exc}); the space has changed "
                                 f"since export ({then})") from None
    if layers_hash(layers) != record["layers_hash"]:
        if unchanged:
            raise DataError(f"{file}: its arch builds another network than its recorded layers in space {space.name}, "
                            f"which is as exported (fingerprint {now}); the file was edited, export again")
        raise CompatibilityError(f"{out}: space {space.name} has changed since export and now builds another network "
                                 f"for this arch ({then})")
    if recorded and not unchanged:
        warnings.warn(f"space {space.name} has changed since {out} was exported (fingerprint {recorded} then, {now} "
                      "now); this arch's network is unchanged", CompatibilityWarning, stacklevel=3)
    return layers


def find_space(record: dict[str, Any]):
    from nas.space import load_space, space_files

    path = record.get("space_file")
    if path and Path(path).is_file():
        return load_space(path)
    if record["space"] in space_files():
        return load_space(record["space"])
    return None


def which_weights(out: Path, record: dict[str, Any], finetuned: bool | None) -> str:
    """model.safetensors, or finetuned.safetensors when asked for or (None) when a fine-tune finished."""
    done = FINETUNED_WEIGHTS in record["files"]
    if finetuned and not done:
        raise NasError(f"{out} holds no finished fine-tune; run 'hwnas finetune {out} --data ... --epochs N'")
    return FINETUNED_WEIGHTS if (done if finetuned is None else finetuned) else WEIGHTS_FILE


def check_int8_files(out: Path, record: dict[str, Any]) -> None:
    """The int8 model and its quantization file, when the export has them, against their
    recorded hashes: a changed scale file would deploy another model than the one verified."""
    from nas.export.bundle import FINETUNED_INT8_ONNX, FINETUNED_INT8_PARAMS
    from nas.export.int8 import INT8_ONNX, INT8_PARAMS

    for name in (INT8_ONNX, INT8_PARAMS, FINETUNED_INT8_ONNX, FINETUNED_INT8_PARAMS):
        if name in record["files"]:
            checked_file(out, record, name)


def load(out: Path | str, finetuned: bool | None = None) -> nn.Module:
    """The exported network in eval mode on the CPU (move it with .to(device)).

    finetuned: True for the fine-tuned weights, False for the exported ones, None (the
    default) for the fine-tuned ones when `hwnas finetune` has finished.
    """
    from nas.export.weights import load_weights
    from nas.space.builder import build_network

    out = Path(out)
    record = read_record(out)
    check_int8_files(out, record)
    name = which_weights(out, record, finetuned)
    path = checked_file(out, record, name)
    model = build_network(export_layers(out, record))
    return load_weights(model, path).eval()
