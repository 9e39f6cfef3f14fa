"""Q1/Q2: which QDQ patterns onnxruntime's CPU EP fuses at ORT_ENABLE_ALL.

Float blocks come from hwnas's own emitter; QDQ graphs from onnxruntime.quantization.quantize_static
(the reference tool); the optimized graph is saved and its op types listed.
"""
import sys
from common import *

BLOCKS = {
    "stem conv3x3 s2 3>16 relu": [LayerSpec("conv", 3, 16, 32, kernel=3, stride=2, act="relu")],
    "pw conv 16>96 relu6": [LayerSpec("conv", 16, 96, 32, act="relu6")],
    "mbconv 24>24 e6 k3 relu6 (residual)": [LayerSpec("mbconv", 24, 24, 16, kernel=3, mid_ch=144, act="relu6")],
    "mbconv 24>24 e6 k3 relu6 SE sigmoid": [LayerSpec("mbconv", 24, 24, 16, kernel=3, mid_ch=144, act="relu6", se_ch=36)],
    "mbconv 24>24 e6 k3 hswish SE hsigmoid": [LayerSpec("mbconv", 24, 24, 16, kernel=3, mid_ch=144, act="hswish", se_ch=36, se_gate="hsigmoid")],
    "mbconv 24>24 e6 k3 swish": [LayerSpec("mbconv", 24, 24, 16, kernel=3, mid_ch=144, act="swish")],
    "head gap + linear 256>10": [LayerSpec("gap", 256, 256, 4), LayerSpec("linear", 256, 10, 1, bias=True)],
}
CONFIGS = {
    "U8S8 per-channel (x86 default advice)": dict(act=QuantType.QUInt8, wt=QuantType.QInt8),
    "S8S8 per-channel": dict(act=QuantType.QInt8, wt=QuantType.QInt8),
}
for bname, layers in BLOCKS.items():
    shape = input_shape(layers[0])
    fm = float_model(layers)
    print(f"## {bname}\n  float:     {summary(op_types(fm))}\n  float opt: {summary(optimized_ops(fm))}")
    for cname, cfg in CONFIGS.items():
        q = qdq(fm, shape, **cfg)
        print(f"  [{cname}] QDQ written: {summary(op_types(q))}")
        print(f"  [{cname}] optimized:   {summary(optimized_ops(q))}")
    # force QDQ around every op type the tool knows, incl. HardSwish/HardSigmoid (not in its registry)
    q = qdq(fm, shape, act=QuantType.QUInt8, wt=QuantType.QInt8,
            op_types=["Conv", "Gemm", "Add", "Mul", "Sigmoid", "GlobalAveragePool", "Clip", "Relu", "HardSwish",
                      "HardSigmoid", "Flatten"])
    print(f"  [U8S8 + HardSwish/HardSigmoid forced] QDQ: {summary(op_types(q))}")
    print(f"  [U8S8 + HardSwish/HardSigmoid forced] opt: {summary(optimized_ops(q))}")
    sys.stdout.flush()
