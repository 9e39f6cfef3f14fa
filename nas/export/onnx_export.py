"""The exported network as ONNX, verified against PyTorch with onnxruntime.

Exporter choice (measured on this project's 2-core VM, torch 2.13): the
torch.export-based exporter (dynamo=True) takes 6-10 s per network; the TorchScript
exporter (dynamo=False) takes 0.2-1.5 s and gives the same graph up to float rounding
(it folds eval-mode batch norm into the convs, as a deployment runtime wants). The
project's own LayerSpec -> ONNX emitter (nas.hardware.onnx_graph) would take
milliseconds, but it writes random profiling weights and has no way to take real ones.
So the TorchScript exporter it is; the onnxruntime check below is what vouches for the
result whichever exporter wrote it.
"""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from nas.atomic import write_atomic
from nas.errors import NasError

OPSET = 17
TOLERANCE = 1e-4  # max abs difference of outputs allowed between onnxruntime and PyTorch


@dataclass(frozen=True)
class OnnxCheck:
    """How an exported graph compared with its PyTorch module."""

    opset: int
    max_abs_diff: float
    max_abs_output: float
    batches: tuple[int, ...]
    inputs: int
    tolerance: float = TOLERANCE

    def to_dict(self) -> dict:
        return asdict(self)


def to_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The eval-mode module as ONNX bytes, opset 17, with a dynamic batch axis."""
    model = model.eval()
    example = torch.zeros((1, *input_shape[1:]), device=next(model.parameters()).device)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          do_constant_folding=True)
    return buf.getvalue()


def verify(model: nn.Module, data: bytes, input_shape: tuple[int, ...], seed: int = 0,
           batches: tuple[int, ...] = (1, 3)) -> OnnxCheck:
    """onnx.checker, then the same random inputs through onnxruntime and PyTorch (several
    batch sizes: the batch axis must really be dynamic); NasError beyond TOLERANCE."""
    import onnxruntime as ort

    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise NasError(f"exported ONNX graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    model = model.eval()
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    worst, scale = 0.0, 0.0
    for batch in batches:
        x = rng.standard_normal((batch, *input_shape[1:]), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
        got = session.run(["output"], {"input": x})[0]
        if got.shape != expected.shape:
            raise NasError(f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape} at batch {batch}")
        worst = max(worst, float(np.abs(got - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    check = OnnxCheck(opset, worst, scale, tuple(batches), len(batches))
    if not np.isfinite(worst) or worst > TOLERANCE:
        raise NasError(f"ONNX export disagrees with PyTorch: max abs difference {worst:.3g} > {TOLERANCE:g} "
                       f"(outputs up to {scale:.3g}; PyTorch's own float32 rounding here: "
                       f"{_float32_error(model, x):.3g}); not writing it")
    return check


def _float32_error(model: nn.Module, x: np.ndarray) -> float:
    """How far PyTorch's float32 outputs are from its float64 ones on `x`: when this is as
    large as the ONNX difference, the network amplifies rounding and the graph is not wrong."""
    device = next(model.parameters()).device
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        single = model(torch.from_numpy(x).to(device)).double()
        double = exact(torch.from_numpy(x).to(device).double())
    return float((single - double).abs().max())


def write_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, seed: int = 0) -> OnnxCheck:
    """Export, verify, then write `path` atomically (nothing is written when the check fails)."""
    data = to_onnx(model, input_shape)
    check = verify(model, data, input_shape, seed)
    write_atomic(path, data)
    return check
