"""Q3: int8/fp32 latency ratios per block, batch 1, 1 thread, interleaved sessions in one run.

fp32: hwnas's emitter graph. int8: quantize_static QDQ (U8S8, per-channel, MinMax) of the same graph.
int8 'core': the same QDQ graph with its input QuantizeLinear and output DequantizeLinear cut off
(uint8 graph input/output), i.e. the block as it runs between two int8 neighbours
(the NCHW<->NHWC Transpose pair of the micro-model remains).
"""
import time, json, sys
from common import *
import onnx
from onnx import helper, TensorProto


def strip_boundary(q):
    """uint8 in/out: drop the graph input's Q and the graph output's DQ."""
    m = onnx.ModelProto(); m.CopyFrom(q)
    g = m.graph
    qin = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
    out_id = [n for n in g.node if "output" in n.output][0]      # Identity -> output
    dqout = [n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == out_id.input[0]]
    assert len(qin) == 1 and len(dqout) == 1, (len(qin), len(dqout))
    qin, dqout = qin[0], dqout[0]
    ishape = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    oshape = [d.dim_value for d in g.output[0].type.tensor_type.shape.dim]
    for n in g.node:
        for i, x in enumerate(n.input):
            if x == qin.output[0]:
                n.input[i] = "input"
    nodes = [n for n in g.node if n is not qin and n is not dqout and n is not out_id]
    nodes.append(helper.make_node("Identity", [dqout.input[0]], ["output"]))
    del g.node[:]; g.node.extend(nodes)
    del g.input[:]; g.input.append(helper.make_tensor_value_info("input", TensorProto.UINT8, ishape))
    del g.output[:]; g.output.append(helper.make_tensor_value_info("output", TensorProto.UINT8, oshape))
    return m


def dw(ch, size, k, stride=1):
    return [LayerSpec("conv", ch, ch, size, kernel=k, stride=stride, groups=ch, act="relu6")]


def mb(cin, cout, size, e, k=3, stride=1, se=0, act="relu6", gate="sigmoid"):
    return [LayerSpec("mbconv", cin, cout, size, kernel=k, stride=stride, mid_ch=cin * e if e > 1 else 0,
                      act=act, se_ch=se, se_gate=gate)]


BLOCKS = {
    "pw 16>96 @32 relu6": [LayerSpec("conv", 16, 96, 32, act="relu6")],
    "pw 96>24 @32": [LayerSpec("conv", 96, 24, 32)],
    "pw 64>384 @8 relu6": [LayerSpec("conv", 64, 384, 8, act="relu6")],
    "pw 384>64 @8": [LayerSpec("conv", 384, 64, 8)],
    "dw3 96 @32 relu6": dw(96, 32, 3),
    "dw5 96 @32 relu6": dw(96, 32, 5),
    "dw3 384 @8 relu6": dw(384, 8, 3),
    "dw5 384 @8 relu6": dw(384, 8, 5),
    "stem 3>16 k3 s2 @128 relu6": [LayerSpec("conv", 3, 16, 128, kernel=3, stride=2, act="relu6")],
    "stem 3>16 k3 s1 @32 relu": [LayerSpec("conv", 3, 16, 32, kernel=3, act="relu")],
    "mbconv 24>24 e6 k3 @16": mb(24, 24, 16, 6),
    "mbconv 24>24 e6 k3 @16 +SE sigmoid": mb(24, 24, 16, 6, se=36),
    "mbconv 40>40 e6 k5 @8 hswish +SE hsig": mb(40, 40, 8, 6, k=5, se=60, act="hswish", gate="hsigmoid"),
    "mbconv 40>40 e6 k5 @8 relu +SE hsig": mb(40, 40, 8, 6, k=5, se=60, act="relu", gate="hsigmoid"),
    "mbconv 40>40 e6 k5 @8 relu +SE sigmoid": mb(40, 40, 8, 6, k=5, se=60, act="relu", gate="sigmoid"),
    "head gap+fc 1280>1000": [LayerSpec("gap", 1280, 1280, 4), LayerSpec("linear", 1280, 1000, 1, bias=True)],
    "head gap+fc 256>10": [LayerSpec("gap", 256, 256, 4), LayerSpec("linear", 256, 10, 1, bias=True)],
    "head conv1x1 96>256 @4": [LayerSpec("conv", 96, 256, 4, act="relu")],
}
NET = ([LayerSpec("conv", 3, 16, 128, kernel=3, stride=2, act="relu6")]
       + mb(16, 16, 64, 1) + mb(16, 24, 64, 6, stride=2) + mb(24, 24, 32, 6)
       + mb(24, 32, 32, 6, stride=2) + mb(32, 32, 16, 6) + mb(32, 64, 16, 6, k=5, stride=2, se=16)
       + mb(64, 64, 8, 6, k=5, se=16) + mb(64, 96, 8, 6) + mb(96, 96, 8, 6, se=24)
       + [LayerSpec("conv", 96, 512, 8, act="relu6"), LayerSpec("gap", 512, 512, 8),
          LayerSpec("linear", 512, 1000, 1, bias=True)])
BLOCKS["net mbv2-ish 12 blocks @128"] = NET


def timeit(sess, feed, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        sess.run(None, feed)
    return (time.perf_counter() - t0) / reps


def main(rounds=15, budget_s=0.02):
    print("loadavg before:", open("/proc/loadavg").read().strip())
    rows = []
    for name, layers in BLOCKS.items():
        shape = input_shape(layers[0])
        fm = float_model(layers)
        qm = qdq(fm, shape)
        models = {"fp32": fm, "int8": qm}
        if not name.startswith("net"):
            models["int8core"] = strip_boundary(qm)
        sess = {k: session(m) for k, m in models.items()}
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        feeds = {k: {"input": x if k != "int8core" else np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)}
                 for k in models}
        reps = {}
        for k in sess:  # warm-up + reps so one timing slice lasts ~budget_s
            t = timeit(sess[k], feeds[k], 5)
            reps[k] = max(3, int(budget_s / t))
        times = {k: [] for k in sess}
        order = list(sess)
        rng = np.random.default_rng(0)
        for r in range(rounds):
            rng.shuffle(order)
            for k in order:
                times[k].append(timeit(sess[k], feeds[k], reps[k]))
        med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
        row = {"block": name, **{f"{k}_us": round(v, 1) for k, v in med.items()},
               "ratio_int8": round(med["int8"] / med["fp32"], 3)}
        if "int8core" in med:
            row["ratio_core"] = round(med["int8core"] / med["fp32"], 3)
        rows.append(row)
        print(json.dumps(row)); sys.stdout.flush()
    print("loadavg after:", open("/proc/loadavg").read().strip())
    json.dump(rows, open("timing.json", "w"), indent=1)


if __name__ == "__main__":
    main()
