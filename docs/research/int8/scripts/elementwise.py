"""Which formula reproduces the fused QLinearAdd / QLinearMul / QLinearGlobalAveragePool / QLinearSigmoid bit for bit."""
import numpy as np, torch, onnx
from onnx import helper, TensorProto, numpy_helper
from common import session
f32 = np.float32
rng = np.random.default_rng(0)

def qdq_model(op, n_in, shape, out_shape, scales, zps, ys, yz, **attrs):
    nodes, inits, inputs = [], [], []
    for i in range(n_in):
        inits += [numpy_helper.from_array(f32(scales[i]), f"s{i}"), numpy_helper.from_array(np.uint8(zps[i]), f"z{i}")]
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.UINT8, shape))
        nodes.append(helper.make_node("DequantizeLinear", [f"x{i}", f"s{i}", f"z{i}"], [f"d{i}"]))
    nodes.append(helper.make_node(op, [f"d{i}" for i in range(n_in)], ["y"], **attrs))
    inits += [numpy_helper.from_array(f32(ys), "ys"), numpy_helper.from_array(np.uint8(yz), "yz")]
    nodes.append(helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["out"]))
    g = helper.make_graph(nodes, op, inputs, [helper.make_tensor_value_info("out", TensorProto.UINT8, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 9
    return m

def rnd(v): return np.clip(np.rint(v), 0, 255)

def check(op, n_in, shape, out_shape, cands, trials=20, **attrs):
    tot = {k: 0 for k in cands}; elems = 0; fused = None
    for t in range(trials):
        scales = rng.uniform(0.005, 0.1, n_in).astype(f32); zps = rng.integers(0, 255, n_in)
        ys = f32(rng.uniform(0.005, 0.1)); yz = int(rng.integers(0, 255))
        m = qdq_model(op, n_in, shape, out_shape, scales, zps, ys, yz, **attrs)
        if fused is None:
            import os; from common import TMP
            p = os.path.join(TMP, "e.onnx"); session(m, optimized_path=p)
            fused = [n.op_type for n in onnx.load(p).graph.node]
        xs = [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(n_in)]
        ref = session(m).run(None, {f"x{i}": x for i, x in enumerate(xs)})[0].astype(np.int64)
        for k, fn in cands.items():
            tot[k] += int((fn(xs, scales, zps, ys, yz).astype(np.int64) != ref).sum())
        elems += ref.size
    print(f"{op}: fused as {fused}; mismatching elements per candidate (of {elems}):", tot)

X = lambda x: x.astype(f32)
# Add
check("Add", 2, [1, 64, 16, 16], [1, 64, 16, 16], {
    "dq-add-q float32 (x/s)": lambda xs, s, z, ys, yz: rnd(((X(xs[0]) - z[0]) * s[0] + (X(xs[1]) - z[1]) * s[1]) / ys + yz),
    "ratios a*rA+b*rB+bias": lambda xs, s, z, ys, yz: rnd(X(xs[0]) * (s[0] / ys) + X(xs[1]) * (s[1] / ys) + (f32(yz) - f32(z[0]) * (s[0] / ys) - f32(z[1]) * (s[1] / ys))),
    "ratios (a-za)*rA+(b-zb)*rB+zc": lambda xs, s, z, ys, yz: rnd((X(xs[0]) - z[0]) * (s[0] / ys) + (X(xs[1]) - z[1]) * (s[1] / ys) + yz),
    "float64 exact": lambda xs, s, z, ys, yz: rnd(((xs[0] - np.float64(z[0])) * np.float64(s[0]) + (xs[1] - np.float64(z[1])) * np.float64(s[1])) / np.float64(ys) + yz),
})
check("Mul", 2, [1, 64, 16, 16], [1, 64, 16, 16], {
    "dq-mul-q float32": lambda xs, s, z, ys, yz: rnd(((X(xs[0]) - z[0]) * s[0] * ((X(xs[1]) - z[1]) * s[1])) / ys + yz),
    "int product * (sa*sb/sc) + zc": lambda xs, s, z, ys, yz: rnd(((xs[0].astype(np.int32) - z[0]) * (xs[1].astype(np.int32) - z[1])).astype(f32) * (s[0] * s[1] / ys) + f32(yz)),
})
def gap_int(xs, s, z, ys, yz):
    hw = xs[0].shape[2] * xs[0].shape[3]
    acc = xs[0].astype(np.int64).sum((2, 3), keepdims=True) - int(z[0]) * hw
    return rnd(acc.astype(f32) * (s[0] / (ys * f32(hw))) + yz)
def gap_int2(xs, s, z, ys, yz):
    hw = xs[0].shape[2] * xs[0].shape[3]
    acc = xs[0].astype(np.int64).sum((2, 3), keepdims=True) - int(z[0]) * hw
    return rnd(acc.astype(f32) * (s[0] / ys / f32(hw)) + yz)
check("GlobalAveragePool", 1, [1, 96, 8, 8], [1, 96, 1, 1], {
    "dq-mean-q float32": lambda xs, s, z, ys, yz: rnd(((X(xs[0]) - z[0]) * s[0]).mean((2, 3), keepdims=True) / ys + yz),
    "int sum * sa/(sc*N)": gap_int, "int sum * (sa/sc/N)": gap_int2,
})
def sig_torch(xs, s, z, ys, yz):
    t = torch.sigmoid(torch.from_numpy(((np.arange(256, dtype=f32) - f32(z[0])) * s[0]).astype(f32))).numpy()
    return rnd(t / ys + yz)[xs[0]]
# ORT's own float Sigmoid for the table
from onnx import helper as H
sg = H.make_model(H.make_graph([H.make_node("Sigmoid", ["x"], ["y"])], "s", [H.make_tensor_value_info("x", 1, [256])],
                  [H.make_tensor_value_info("y", 1, [256])]), opset_imports=[H.make_opsetid("", 17)]); sg.ir_version = 9
sgs = session(sg)
def sig_ort(xs, s, z, ys, yz):
    t = sgs.run(None, {"x": ((np.arange(256, dtype=f32) - f32(z[0])) * s[0]).astype(f32)})[0]
    return rnd(t / ys + yz)[xs[0]]
def sig_f64(xs, s, z, ys, yz):
    v = (np.arange(256, dtype=np.float64) - z[0]) * np.float64(s[0])
    return rnd(1 / (1 + np.exp(-v)) / np.float64(ys) + yz)[xs[0]]
check("Sigmoid", 1, [1, 64, 16, 16], [1, 64, 16, 16], {"table torch.sigmoid": sig_torch, "table ORT float Sigmoid": sig_ort, "table float64": sig_f64})
