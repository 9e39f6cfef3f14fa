"""Shared helpers: float block models from hwnas's emitter, QDQ via onnxruntime.quantization, optimized op lists."""
import os, tempfile, collections
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import quantize_static, QuantFormat, QuantType, CalibrationDataReader, CalibrationMethod
from nas.space.layers import LayerSpec
from nas.hardware.onnx_graph import network_model, input_shape

ort.set_default_logger_severity(3)
TMP = tempfile.mkdtemp(prefix="int8r_")


class Reader(CalibrationDataReader):
    def __init__(self, shape, n=8, seed=0):
        rng = np.random.default_rng(seed)
        self.data = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]
        self.i = iter(self.data)

    def get_next(self):
        return next(self.i, None)


def float_model(layers, seed=0):
    return network_model(layers, batch=1, seed=seed)


def qdq(model, shape, act=QuantType.QUInt8, wt=QuantType.QInt8, per_channel=True, reduce_range=False,
        op_types=None, extra=None, method=CalibrationMethod.MinMax, n=8):
    src = os.path.join(TMP, "f.onnx"); dst = os.path.join(TMP, "q.onnx")
    onnx.save(model, src)
    quantize_static(src, dst, Reader(shape, n), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=reduce_range, activation_type=act, weight_type=wt,
                    op_types_to_quantize=op_types, extra_options=extra or {}, calibrate_method=method)
    return onnx.load(dst)


def session(model, threads=1, optimized_path=None, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = level
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def optimized_ops(model):
    path = os.path.join(TMP, "opt.onnx")
    session(model, optimized_path=path)
    m = onnx.load(path)
    return [(n.domain + "." if n.domain else "") + n.op_type for n in m.graph.node]


def op_types(model):
    return [n.op_type for n in model.graph.node]


def summary(ops):
    c = collections.Counter(ops)
    return ", ".join(f"{k}x{v}" if v > 1 else k for k, v in c.items())


def measure(models_or_sessions, feeds, rounds=60, slice_s=0.002, seed=0):
    """Interleaved timing of several sessions in one run: per model, `rounds` slices of ~slice_s each,
    in a fresh shuffled order every round. Returns {name: (min_us, p10_us, median_us)} per inference.
    On a shared, overloaded 2-core VM the min/p10 of short slices is the robust estimate (a slice that
    was preempted only gets slower)."""
    import time
    sess = {k: (session(m) if isinstance(m, onnx.ModelProto) else m) for k, m in models_or_sessions.items()}

    def run(k, n):
        s, f = sess[k], feeds[k]
        t0 = time.perf_counter()
        for _ in range(n):
            s.run(None, f)
        return (time.perf_counter() - t0) / n

    reps = {}
    for k in sess:
        run(k, 3)
        reps[k] = max(1, int(slice_s / run(k, 5)))
    times = {k: [] for k in sess}
    order = list(sess)
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            times[k].append(run(k, reps[k]))
    return {k: tuple(float(np.percentile(v, q)) * 1e6 for q in (0, 10, 50)) for k, v in times.items()}


def feed_for(sess_or_model):
    s = session(sess_or_model) if isinstance(sess_or_model, onnx.ModelProto) else sess_or_model
    i = s.get_inputs()[0]
    rng = np.random.default_rng(0)
    if i.type == "tensor(uint8)":
        return {i.name: rng.integers(0, 255, i.shape, dtype=np.uint8)}
    return {i.name: rng.standard_normal(i.shape).astype(np.float32)}
