"""HardSwish / HardSigmoid in int8: onnxruntime has no QLinear kernel for them, so the QDQ graph falls back
to DQ -> float -> Q. Alternative: write them as Add/Clip/Mul, which fuse into QLinearAdd/QLinearMul."""
import numpy as np, onnx
from onnx import helper, TensorProto
from common import *
from nas.hardware.onnx_graph import _Graph, OPSET


class DecomposedGraph(_Graph):
    def act(self, x, name):
        if name == "hswish":   # x * relu6(x + 3) / 6
            t = self.node("Add", [x, self.const(np.array(3, np.float32), "three")])
            t = self.node("Clip", [t, self.const(np.array(0, np.float32), "lo"), self.const(np.array(6, np.float32), "hi")])
            return self.node("Mul", [self.node("Mul", [x, t]), self.const(np.array(1 / 6, np.float32), "sixth")])
        if name == "hsigmoid":  # relu6(x + 3) / 6
            t = self.node("Add", [x, self.const(np.array(3, np.float32), "three")])
            t = self.node("Clip", [t, self.const(np.array(0, np.float32), "lo"), self.const(np.array(6, np.float32), "hi")])
            return self.node("Mul", [t, self.const(np.array(1 / 6, np.float32), "sixth")])
        return super().act(x, name)


def model_with(graph_cls, layers, seed=0):
    g = graph_cls(seed); x = "input"
    for s in layers:
        x = g.layer(x, s)
    g.nodes.append(helper.make_node("Identity", [x], ["output"]))
    last = layers[-1]
    oshape = [1, last.out_ch] + ([last.out_size] * 2 if last.op not in ("gap", "linear") else [])
    graph = helper.make_graph(g.nodes, "m", [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape(layers[0]))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, oshape)], g.initializers)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]); m.ir_version = 9
    return m


if __name__ == "__main__":
    from timing import mb
    from boundary import rewire
    spec = mb(40, 40, 8, 6, k=5, se=60, act="hswish", gate="hsigmoid")
    shape = input_shape(spec[0])
    models = {}
    for tag, cls in (("HardSwish op", _Graph), ("decomposed", DecomposedGraph)):
        fm = model_with(cls, spec)
        q = qdq(fm, shape, n=4)
        print(f"{tag}: int8 optimized = {summary(optimized_ops(q))}")
        models[f"fp32 {tag}"] = fm
        models[f"int8 {tag} (int8 in/out)"] = rewire(q, True, True, False)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    # the decomposed form computes the same function in float
    a = session(models["fp32 HardSwish op"]).run(None, {"input": x})[0]
    b = session(models["fp32 decomposed"]).run(None, {"input": x})[0]
    print("fp32 max |HardSwish op - decomposed| =", float(np.abs(a - b).max()))
    feeds = {k: feed_for(m) for k, m in models.items()}
    print("loadavg:", open("/proc/loadavg").read().strip())
    res = [measure(models, feeds, rounds=40, seed=p) for p in range(3)]
    for k in models:
        print(f"  {k:40s} min-over-passes p10 = {min(r[k][1] for r in res):.1f} us")
    print("loadavg:", open("/proc/loadavg").read().strip())
