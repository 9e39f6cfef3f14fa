"""reduce_range: does the u8s8 kernel on this CPU saturate int16 pair sums (vpmaddubsw, AVX2 without VNNI)?

Adversarial QDQ conv: uint8 activations at 255 (zp 0), int8 weights all +127, exact result = 255*127*K.
"""
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
from common import session
f32 = np.float32
print(open("/proc/cpuinfo").read().count("avx512_vnni") > 0 and "cpu flags: avx512_vnni present" or "no avx512_vnni",
      "| avx_vnni" if " avx_vnni" in open("/proc/cpuinfo").read() else "")
for K, wval in [(64, 127), (512, 127), (512, -128), (64, 64)]:
    M = 8
    sx, sw = f32(1.0), f32(1.0)
    exact = 255 * wval * K
    sy = f32(abs(exact) / 100.0)  # output lands at 100 steps (zp 128 for signed results)
    w = np.full((M, K, 1, 1), wval, np.int8)
    inits = [numpy_helper.from_array(w, "wq"), numpy_helper.from_array(np.full(M, sw, f32), "ws"),
             numpy_helper.from_array(np.zeros(M, np.int8), "wz"), numpy_helper.from_array(sx, "xs"),
             numpy_helper.from_array(np.uint8(0), "xz"), numpy_helper.from_array(sy, "ys"), numpy_helper.from_array(np.uint8(128), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], kernel_shape=[1, 1]),
             helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"])]
    g = helper.make_graph(nodes, "sat", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, K, 4, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, M, 4, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 9
    y = session(m).run(None, {"x": np.full((1, K, 4, 4), 255, np.uint8)})[0]
    print(f"K={K} w={wval}: exact {exact}, onnxruntime {float(y.flat[0]):.0f} (a saturating int16 pair sum would give "
          f"{np.sign(exact) * min(abs(2 * 255 * wval), 32767 if wval > 0 else 32768) * K // 2})")
