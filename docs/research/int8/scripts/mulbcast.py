"""QLinearMul with a broadcast gate [1,C,1,1] (the SE scaling) and Add: which formula matches."""
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
from common import session
f32 = np.float32; rng = np.random.default_rng(1)
def model(shapes, op):
    inits, nodes, ins = [], [], []
    for i, sh in enumerate(shapes):
        ins.append(helper.make_tensor_value_info(f"x{i}", TensorProto.UINT8, sh))
        nodes.append(helper.make_node("DequantizeLinear", [f"x{i}", f"s{i}", f"z{i}"], [f"d{i}"]))
    nodes += [helper.make_node(op, ["d0", "d1"], ["y"]), helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["out"])]
    g = helper.make_graph(nodes, "m", ins, [helper.make_tensor_value_info("out", TensorProto.UINT8, shapes[0])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 9
    return m
def rnd(v): return np.clip(np.rint(v), 0, 255)
tot = {"dq-mul-q": 0, "int product*ratio+zc": 0, "float64": 0}; n = 0
for t in range(40):
    shapes = [[1, 144, 8, 8], [1, 144, 1, 1]]
    m = model(shapes, "Mul")
    s = rng.uniform(0.005, 0.1, 2).astype(f32); z = rng.integers(0, 255, 2); ys = f32(rng.uniform(0.005, 0.1)); yz = int(rng.integers(0, 255))
    m.graph.initializer.extend([numpy_helper.from_array(f32(s[0]), "s0"), numpy_helper.from_array(np.uint8(z[0]), "z0"),
                                numpy_helper.from_array(f32(s[1]), "s1"), numpy_helper.from_array(np.uint8(z[1]), "z1"),
                                numpy_helper.from_array(ys, "ys"), numpy_helper.from_array(np.uint8(yz), "yz")])
    a = rng.integers(0, 256, shapes[0]).astype(np.uint8); b = rng.integers(0, 256, shapes[1]).astype(np.uint8)
    ref = session(m).run(None, {"x0": a, "x1": b})[0].astype(int)
    A, B = a.astype(f32), b.astype(f32)
    tot["dq-mul-q"] += int((rnd(((A - z[0]) * s[0]) * ((B - z[1]) * s[1]) / ys + yz) != ref).sum())
    tot["int product*ratio+zc"] += int((rnd(((a.astype(np.int32) - z[0]) * (b.astype(np.int32) - z[1])).astype(f32) * (s[0] * s[1] / ys) + f32(yz)) != ref).sum())
    tot["float64"] += int((rnd((a - float(z[0])) * float(s[0]) * (b - float(z[1])) * float(s[1]) / float(ys) + yz) != ref).sum())
    n += ref.size
print("Mul broadcast [1,C,H,W]x[1,C,1,1]: mismatches of", n, tot)
