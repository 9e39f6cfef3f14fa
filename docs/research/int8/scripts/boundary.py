"""Precision boundaries: micro-models whose input/output arrive int8 in onnxruntime's NHWC layout,
and a check that a LUT keyed by (block, precision, input precision) adds up to mixed-precision chains.
"""
import json, sys, itertools
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
from common import *
from nas.hardware.onnx_graph import _Graph, OPSET
from timing import mb


def dims(vi):
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def nhwc(shape):
    return [shape[0], shape[2], shape[3], shape[1]] if len(shape) == 4 else shape


def rewire(m, u8_in: bool, u8_out: bool, float_block: bool):
    """Graph input/output as uint8 NHWC tensors (what int8 neighbours exchange inside onnxruntime)."""
    m2 = onnx.ModelProto(); m2.CopyFrom(m); g = m2.graph
    ishape, oshape = dims(g.input[0]), dims(g.output[0])
    nodes = list(g.node)
    if u8_in:
        perm_in = [0, 3, 1, 2] if len(ishape) == 4 else [0, 1]
        if float_block:  # fp32 block fed by an int8 one: Transpose + DQ in front
            g.initializer.extend([numpy_helper.from_array(np.float32(0.05), "bin_s"), numpy_helper.from_array(np.uint8(128), "bin_z")])
            pre = [helper.make_node("Transpose", ["input_u8"], ["bin_t"], perm=perm_in),
                   helper.make_node("DequantizeLinear", ["bin_t", "bin_s", "bin_z"], ["input"])]
            nodes = pre + nodes
        else:
            q = next(n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] == "input")
            nodes = [helper.make_node("Transpose", ["input_u8"], [q.output[0]], perm=perm_in)] + [n for n in nodes if n is not q]
        del g.input[:]; g.input.append(helper.make_tensor_value_info("input_u8", TensorProto.UINT8, nhwc(ishape)))
    if u8_out:
        ident = next(n for n in nodes if n.output[0] == "output")
        dq = next(n for n in nodes if n.op_type == "DequantizeLinear" and n.output[0] == ident.input[0])
        perm_out = [0, 2, 3, 1] if len(oshape) == 4 else [0, 1]
        nodes = [n for n in nodes if n is not ident and n is not dq] + [helper.make_node("Transpose", [dq.input[0]], ["output"], perm=perm_out)]
        del g.output[:]; g.output.append(helper.make_tensor_value_info("output", TensorProto.UINT8, nhwc(oshape)))
    del g.node[:]; g.node.extend(nodes)
    return m2


def exit_model(shape):
    """int8 NHWC -> float NCHW at the end of a network whose last block is int8."""
    perm = [0, 3, 1, 2] if len(shape) == 4 else [0, 1]
    g = helper.make_graph([helper.make_node("Transpose", ["input_u8"], ["t"], perm=perm),
                           helper.make_node("DequantizeLinear", ["t", "s", "z"], ["output"])], "exit",
                          [helper.make_tensor_value_info("input_u8", TensorProto.UINT8, nhwc(shape))],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
                          [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(128), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]); m.ir_version = 9
    return m


def chain_model(layers, precisions, seed=0):
    """A mixed-precision chain: quantize_static restricted to the nodes of the int8 blocks."""
    g = _Graph(seed); x = "input"; int8_nodes = []
    for spec, p in zip(layers, precisions):
        start = len(g.nodes); x = g.layer(x, spec)
        if p == "int8":
            int8_nodes += g.nodes[start:]
    g.nodes.append(helper.make_node("Identity", [x], ["output"]))
    for i, n in enumerate(g.nodes):
        n.name = f"n{i}_{n.op_type}"
    last = layers[-1]
    oshape = [1, last.out_ch] + ([last.out_size] * 2 if last.op not in ("gap", "linear") else [])
    graph = helper.make_graph(g.nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape(layers[0]))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, oshape)], g.initializers)
    fm = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]); fm.ir_version = 9
    if not int8_nodes:
        return fm
    src = os.path.join(TMP, "c.onnx"); dst = os.path.join(TMP, "cq.onnx"); onnx.save(fm, src)
    quantize_static(src, dst, Reader(input_shape(layers[0]), 4), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=[n.name for n in int8_nodes])
    return onnx.load(dst)


def entry_model(spec, prec, in_prec, is_last=False):
    fm = float_model([spec])
    if prec == "fp32":
        return rewire(fm, in_prec == "int8", False, True) if in_prec == "int8" else fm
    q = qdq(fm, input_shape(spec), n=4)
    return rewire(q, in_prec == "int8", True, False)


if __name__ == "__main__":
    CHAIN = mb(16, 16, 32, 3) + mb(16, 24, 32, 6, stride=2) + mb(24, 24, 16, 6) + mb(24, 24, 16, 6, se=36)
    # 1. do the explicit transposes cancel against onnxruntime's own?
    for name, m in {"int8 block, int8 in/out": entry_model(CHAIN[2], "int8", "int8"),
                    "int8 block, fp32 in, int8 out": entry_model(CHAIN[2], "int8", "fp32"),
                    "fp32 block, int8 in": entry_model(CHAIN[2], "fp32", "int8")}.items():
        print(f"{name}: optimized = {summary(optimized_ops(m))}")
    print("loadavg before:", open("/proc/loadavg").read().strip())
    patterns = ["ffff", "iiii", "fiif", "iffi", "ifif", "ffii", "iiif", "fiii"]
    P = {"f": "fp32", "i": "int8"}
    models = {}
    for pat in patterns:
        models[f"chain {pat}"] = chain_model(CHAIN, [P[c] for c in pat])
    for b, spec in enumerate(CHAIN):
        for prec, inp in itertools.product(("fp32", "int8"), repeat=2):
            if b == 0 and inp == "int8":
                continue
            models[f"b{b} {prec} in={inp}"] = entry_model(spec, prec, inp)
    last = CHAIN[-1]
    models["exit"] = exit_model([1, last.out_ch, last.out_size, last.out_size])
    feeds = {k: feed_for(m) for k, m in models.items()}
    stats = measure(models, feeds)
    med = {k: v[1] for k, v in stats.items()}  # p10
    print("loadavg after:", open("/proc/loadavg").read().strip())
    print(json.dumps({k: round(v, 1) for k, v in med.items()}))
    rows = []
    for pat in patterns:
        prev = "fp32"; total = 0.0
        for b, c in enumerate(pat):
            total += med[f"b{b} {P[c]} in={prev}"]; prev = P[c]
        if prev == "int8":
            total += med["exit"]
        meas = med[f"chain {pat}"]
        rows.append((pat, meas, total))
        print(f"chain {pat}: measured {meas:7.1f} us, LUT sum {total:7.1f} us, ratio {meas / total:.3f}")
    json.dump({"medians_us": med, "chains": rows}, open("boundary.json", "w"), indent=1)
