"""Q4 measurement: torch simulations vs onnxruntime int8 (ORT_ENABLE_ALL) on random blocks and networks."""
import json, sys
from common import *
from sim import QDQSim
from timing import mb

def lin(i, o, **k): return LayerSpec("linear", i, o, 1, bias=True, **k)

CASES = {
    "pw conv 16>96 relu6": [LayerSpec("conv", 16, 96, 16, act="relu6")],
    "dw3 conv 96 relu6": [LayerSpec("conv", 96, 96, 16, kernel=3, groups=96, act="relu6")],
    "stem 3>16 s2": [LayerSpec("conv", 3, 16, 32, kernel=3, stride=2, act="relu")],
    "mbconv residual (QLinearAdd)": mb(24, 24, 8, 6),
    "mbconv SE sigmoid (GAP, Sigmoid, Mul)": mb(24, 24, 8, 6, se=8),
    "gap+fc": [LayerSpec("gap", 64, 64, 4), lin(64, 10)],
}
def net(seed):
    rng = np.random.default_rng(seed)
    c = [16, 24, 32, 48]
    layers = [LayerSpec("conv", 3, 16, 32, kernel=3, act="relu")]
    cin, size = 16, 32
    for st, cout in enumerate(c):
        for d in range(2):
            stride = 2 if (d == 0 and st > 0) else 1
            e = int(rng.choice([3, 6])); k = int(rng.choice([3, 5])); se = int(rng.choice([0, cin * e // 4])) if st >= 2 else 0
            layers += mb(cin, cout, size, e, k=k, stride=stride, se=se, act="relu6")
            size = -(-size // stride); cin = cout
    layers += [LayerSpec("conv", cin, 128, size, act="relu"), LayerSpec("gap", 128, 128, size), lin(128, 10)]
    return layers
for s in range(4):
    CASES[f"random net {s} (11 layers)"] = net(s)

def compare(layers, n_eval=200, n_cal=32, seed=0):
    shape = input_shape(layers[0])
    fm = float_model(layers, seed=seed)
    qm = qdq(fm, shape, n=n_cal)
    ort_all = session(qm)
    ort_none = session(qm, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    sims = {m: QDQSim(qm, m) for m in ("fakequant", "integer")}
    out_dq = [n for n in qm.graph.node if n.op_type == "DequantizeLinear"
              and any(m.op_type == "Identity" and m.input[0] == n.output[0] for m in qm.graph.node)][0]
    step = float(numpy_helper.to_array([t for t in qm.graph.initializer if t.name == out_dq.input[1]][0]))
    rng = np.random.default_rng(100 + seed)
    res = {k: {"max_steps": 0.0, "elem_mismatch": 0, "elems": 0, "argmax_agree": 0} for k in ("fakequant", "integer", "ort_disable_all")}
    for _ in range(n_eval):
        x = rng.standard_normal(shape).astype(np.float32)
        ref = ort_all.run(None, {"input": x})[0]
        outs = {k: s.run(x) for k, s in sims.items()}
        outs["ort_disable_all"] = ort_none.run(None, {"input": x})[0]
        for k, y in outs.items():
            d = np.abs(y - ref) / step
            r = res[k]
            r["max_steps"] = max(r["max_steps"], float(d.max()))
            r["elem_mismatch"] += int((d > 0.5).sum()); r["elems"] += d.size
            if ref.ndim == 2:
                r["argmax_agree"] += int((y.argmax(1) == ref.argmax(1)).all())
    for r in res.values():
        r["elem_mismatch_frac"] = round(r.pop("elem_mismatch") / r.pop("elems"), 5)
        r["max_steps"] = round(r["max_steps"], 2)
        r["argmax_agree"] = f"{r['argmax_agree']}/{n_eval}" if ref.ndim == 2 else "-"
    return res

from onnx import numpy_helper
if __name__ == "__main__":
  for name, layers in CASES.items():
      n_eval = 300 if name.startswith("random") else 30
      print(name, json.dumps(compare(layers, n_eval=n_eval)))
      sys.stdout.flush()
