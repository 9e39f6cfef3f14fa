"""Post-training int8 quantization simulated with onnxruntime's integer arithmetic
(issue 15): `quantize(model, layers, calib, settings) -> QuantizedNet`.

Only the settings load eagerly (config models import them); the rest imports torch and
onnxruntime's quantization tooling on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.quant.settings import QuantSettings

if TYPE_CHECKING:
    from nas.quant.calibrate import check_calibration
    from nas.quant.ptq import QuantizedNet, quantize

__all__ = ["QuantSettings", "QuantizedNet", "check_calibration", "quantize"]


def __getattr__(name: str) -> Any:
    if name in ("QuantizedNet", "quantize"):
        from nas.quant import ptq as module

        return getattr(module, name)
    if name == "check_calibration":
        from nas.quant.calibrate import check_calibration

        return check_calibration
    raise AttributeError(name)
