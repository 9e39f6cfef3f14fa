"""Which node stays float in the S8S8 mbconv; per-node placement."""
from common import *
fm = float_model([LayerSpec("mbconv", 24, 24, 16, kernel=3, mid_ch=144, act="relu6")])
q = qdq(fm, [1, 24, 16, 16], act=QuantType.QInt8, wt=QuantType.QInt8)
import onnx, os
p = os.path.join(TMP, "o.onnx"); session(q, optimized_path=p)
for n in onnx.load(p).graph.node:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute if a.name in ("group", "kernel_shape", "channels_last")}
    print(n.op_type, attrs, list(n.input)[:2])
