"""The int8 model of an export, verified before it is written.

`write_int8(model, layers, calib, settings, folder, ...)` quantizes a float module
(nas.quant: BN folded, ranges calibrated on `calib`), runs the int8 ONNX model in
onnxruntime and its torch integer simulation on the verification inputs, and refuses
(one line, nothing written) unless the two agree on top-1 for at least 99 % of them.
Only then does it write `model_int8.onnx` and `quant_int8.npz` (the scales, zero points,
int8 weights and int32 biases, as plain arrays) into `folder`, and it returns the card's
`int8` section. `hwnas export` calls it inside its staged folder; fine-tuning calls it
again to re-export the int8 model of the fine-tuned weights.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.atomic import write_atomic
from nas.errors import NasError
from nas.quant import QuantSettings, quantize
from nas.quant.ptq import compare_with_onnxruntime
from nas.space.layers import LayerSpec

INT8_ONNX, INT8_PARAMS = "model_int8.onnx", "quant_int8.npz"
MIN_AGREEMENT = 0.99  # top-1 agreement of onnxruntime and the simulation the export requires
RANDOM_INPUTS = 256   # verification inputs when there is no validation data


def has_int8(layers: Sequence[LayerSpec]) -> bool:
    return any(s.precision == "int8" for s in layers)


def random_images(n: int, shape: Sequence[int], seed: int) -> torch.Tensor:
    """Seeded N(0, 1) images (inputs are normalized): calibration and verification data
    for a network without a dataset."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape[1:], generator=g)


def write_int8(model: nn.Module, layers: Sequence[LayerSpec], calib: torch.Tensor, settings: QuantSettings,
               folder: Path | str, verify_images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               *, calib_source: str = "given images", verify_source: str = "seeded random inputs",
               seed: int = 0, latency_protocol=None, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Quantize `model`, verify it (see the module doc), write INT8_ONNX and INT8_PARAMS
    into `folder` and return the card's `int8` section.

    verify_images: normalized validation images (with `labels` the int8 accuracy is
    measured on them); None: RANDOM_INPUTS seeded random inputs of the calibration shape.
    latency_protocol: measure the int8 model's latency as the float one's (needs input_shape).
    """
    net = quantize(model, layers, calib, settings)
    if verify_images is None:
        verify_images = random_images(RANDOM_INPUTS, calib.shape, seed + 1)
    checked, ours, theirs = compare_with_onnxruntime(net, verify_images)
    checked["inputs"] = verify_source
    if checked["top1_agreement"] < MIN_AGREEMENT:
        raise NasError(f"int8 export refused: onnxruntime's int8 model and the torch simulation agree on top-1 for "
                       f"{checked['top1_agreement']:.1%} of {checked['images']} {verify_source}, below "
                       f"{MIN_AGREEMENT:.0%}; nothing written")
    folder = Path(folder)
    write_atomic(folder / INT8_ONNX, net.to_onnx())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **net.params())
    write_atomic(folder / INT8_PARAMS, buffer.getvalue())
    section: dict[str, Any] = {
        "file": INT8_ONNX, "params_file": INT8_PARAMS,
        "layers": [{"index": i, "key": key} for i, key in net.int8_layers],
        "calibration": {"method": settings.method, "images": len(calib), "source": calib_source,
                        "reduce_range": settings.reduce_range,
                        **({"percentile": settings.percentile} if settings.method == "percentile" else {})},
        "verification": checked, "accuracy": None, "measured_latency": None,
        "size_bytes": (folder / INT8_ONNX).stat().st_size}
    if labels is not None:
        y = labels.detach().cpu().numpy()
        section["accuracy"] = {"value": float((theirs == y).mean()), "simulated": float((ours == y).mean()),
                               "images": len(y), "of": "onnxruntime running model_int8.onnx"}
    if latency_protocol is not None:
        from nas.export.latency import measure_onnx

        section["measured_latency"] = measure_onnx(folder / INT8_ONNX, tuple(input_shape), latency_protocol)
    return section
