"""Per-node time split (onnxruntime profiler) of int8 micro-models: kernel vs Q/DQ/Transpose boundary."""
import json, collections, os
from common import *
from timing import BLOCKS, strip_boundary, NET

def node_times(model, feed, runs=200):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    so.enable_profiling = True; so.profile_file_prefix = os.path.join(TMP, "prof")
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(20): s.run(None, feed)
    path = s.end_profiling()
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(runs): s.run(None, feed)
    path = s.end_profiling()
    ev = json.load(open(path))
    acc = collections.defaultdict(float)
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            acc[e["args"]["op_name"]] += e["dur"]
    return {k: round(v / runs, 1) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}

print("loadavg:", open("/proc/loadavg").read().strip())
for name in ["pw 16>96 @32 relu6", "dw3 384 @8 relu6", "stem 3>16 k3 s2 @128 relu6", "mbconv 24>24 e6 k3 @16",
             "mbconv 24>24 e6 k3 @16 +SE sigmoid", "mbconv 40>40 e6 k5 @8 hswish +SE hsig", "head conv1x1 96>256 @4"]:
    layers = BLOCKS[name]; shape = input_shape(layers[0])
    fm = float_model(layers); qm = qdq(fm, shape)
    x = {"input": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    print(f"{name}\n  fp32 us/op: {node_times(fm, x)}\n  int8 us/op: {node_times(qm, x)}")
fm = float_model(NET); qm = qdq(fm, [1, 3, 128, 128])
x = {"input": np.random.default_rng(1).standard_normal([1, 3, 128, 128]).astype(np.float32)}
print(f"net\n  fp32 us/op: {node_times(fm, x, 50)}\n  int8 us/op: {node_times(qm, x, 50)}")
print("loadavg:", open("/proc/loadavg").read().strip())
