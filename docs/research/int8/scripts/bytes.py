"""Q5: initializer bytes of quantize_static's QDQ model (U8S8, per-channel) by role, vs a formula."""
import collections
from common import *
from onnx import numpy_helper, TensorProto
from timing import mb
from nas.space.counters import layer_weight_params

def roles(q):
    cons = collections.defaultdict(list)
    for n in q.graph.node:
        for i, x in enumerate(n.input):
            cons[x].append((n.op_type, i))
    out = collections.Counter(); detail = collections.Counter()
    for t in q.graph.initializer:
        a = numpy_helper.to_array(t)
        key = f"{TensorProto.DataType.Name(t.data_type)} {'scalar' if a.ndim == 0 else 'vector' if a.ndim == 1 else 'tensor'}"
        out[key] += a.nbytes; detail[key] += 1
    return out, detail

for name, layers in {
    "conv 16>96 k1 (BN folded bias)": [LayerSpec("conv", 16, 96, 8, act="relu6")],
    "mbconv 24>24 e6 k3 SE": mb(24, 24, 8, 6, se=36),
    "gap + linear 256>10 bias": [LayerSpec("gap", 256, 256, 4), LayerSpec("linear", 256, 10, 1, bias=True)],
}.items():
    fm = float_model(layers)
    q = qdq(fm, input_shape(layers[0]))
    b, d = roles(q)
    total = sum(b.values())
    print(f"## {name}: float weight params {sum(layer_weight_params(s) for s in layers)} -> fp32 {4*sum(layer_weight_params(s) for s in layers)} B; QDQ initializers {total} B")
    for k in sorted(b):
        print(f"   {k:22s} n={d[k]:3d} bytes={b[k]}")
    for t in q.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim <= 1 and len(q.graph.initializer) < 40:
            print(f"     {t.name:40s} {TensorProto.DataType.Name(t.data_type):6s} shape={list(a.shape)}")
