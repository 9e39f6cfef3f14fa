"""Per-tensor vs per-channel int8 weights: latency (int8 in/out micro-models) and whether optional zero points
can be omitted from the QDQ graph without losing the fusion."""
import onnx
from common import *
from timing import mb
from boundary import rewire
blocks = {"pw 96>24 @32": [LayerSpec("conv", 96, 24, 32)], "dw3 96 @32": [LayerSpec("conv", 96, 96, 32, kernel=3, groups=96, act="relu6")],
          "mbconv 24>24 e6 k3 @16 SE": mb(24, 24, 16, 6, se=36)}
models = {}
for name, layers in blocks.items():
    fm = float_model(layers)
    for pc in (True, False):
        q = qdq(fm, input_shape(layers[0]), per_channel=pc, n=4)
        models[f"{name} per_channel={pc}"] = rewire(q, True, True, False)
# zero points omitted: drop the weight/bias DQ zero-point inputs (optional in ONNX)
q = qdq(float_model(blocks["pw 96>24 @32"]), [1, 96, 32, 32], n=4)
m = onnx.ModelProto(); m.CopyFrom(q)
for n in m.graph.node:
    if n.op_type == "DequantizeLinear" and ("w_" in n.input[0] or "b_" in n.input[0]) and len(n.input) == 3:
        del n.input[2]
print("pw conv with weight/bias DQ zero points omitted -> optimized:", summary(optimized_ops(m)))
feeds = {k: feed_for(v) for k, v in models.items()}
print("loadavg:", open("/proc/loadavg").read().strip())
res = [measure(models, feeds, rounds=30, seed=p) for p in range(3)]
for k in models:
    print(f"  {k:45s} {min(r[k][1] for r in res):6.1f} us")
print("loadavg:", open("/proc/loadavg").read().strip())
