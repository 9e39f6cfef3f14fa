"""Is the fp32 SE block slow because of denormals? Time with and without session.set_denormal_as_zero,
and count subnormal values in its intermediate tensors."""
import numpy as np, onnx
from common import *
from timing import mb, timeit
from boundary import chain_model
spec = mb(24, 24, 16, 6, se=36)
fm = float_model(spec)
x = {"input": np.random.default_rng(0).standard_normal([1, 24, 16, 16]).astype(np.float32)}
# intermediate tensors: expose every node output
m = onnx.ModelProto(); m.CopyFrom(fm)
for n in m.graph.node:
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n.output[0]))
outs = session(m, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, x)
names = ["output"] + [n.output[0] for n in fm.graph.node]
tiny = np.finfo(np.float32).tiny
for nm, o in zip(names, outs):
    sub = int(((o != 0) & (np.abs(o) < tiny)).sum())
    print(f"  {nm:22s} shape={list(o.shape)} min={o.min():.3g} max={o.max():.3g} subnormals={sub}")
def sess(model, daz):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    if daz: so.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
print("loadavg:", open("/proc/loadavg").read().strip())
ffff = chain_model(mb(16, 16, 32, 3) + mb(16, 24, 32, 6, stride=2) + mb(24, 24, 16, 6) + spec, ["fp32"] * 4)
xc = {"input": np.random.default_rng(0).standard_normal([1, 16, 32, 32]).astype(np.float32)}
cases = {"SE block": (fm, x), "SE block no-SE twin": (float_model(mb(24, 24, 16, 6)), x), "chain ffff": (ffff, xc)}
res = {}
for r in range(9):
    for k, (mm, feed) in cases.items():
        for daz in (False, True):
            s = res.setdefault((k, daz), [sess(mm, daz), []])
            s[1].append(timeit(s[0], feed, 100))
for (k, daz), (_, t) in res.items():
    print(f"{k:22s} denormal_as_zero={daz}: {np.median(t) * 1e6:.1f} us")
print("loadavg:", open("/proc/loadavg").read().strip())
