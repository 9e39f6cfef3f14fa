"""Q4: torch simulations of onnxruntime's int8 arithmetic vs onnxruntime itself.

A torch interpreter of a QDQ graph (as quantize_static writes it), two modes:
  fakequant: the QDQ graph's float semantics: DQ -> float32 op -> Q (torch.fake_quantize-style rounding:
             x * (1/s), round half to even), bias DQ'd from int32.
  integer:   what the fused kernels do: Conv/Gemm accumulate exactly in integers (float64 conv on integer
             tensors + int32 bias), requantize with the float32 multiplier m = float32(float32(sx*sw)/sy),
             round half to even, + zp, saturate. Elementwise ops/GAP/Sigmoid: dequant -> float op -> quant
             (x / s, as MLAS QuantizeLinear divides).
"""
import numpy as np, torch, onnx
from onnx import numpy_helper
import torch.nn.functional as F

torch.set_num_threads(1)


class QDQSim:
    def __init__(self, model: onnx.ModelProto, mode: str):
        self.mode = mode
        self.init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.nodes = list(model.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}

    def _quant(self, x, scale, zp, dtype, axis=1):
        s = torch.as_tensor(scale, dtype=torch.float32); z = torch.as_tensor(zp.astype(np.int32))
        if s.ndim == 1 and s.numel() > 1:
            shape = [1] * x.ndim; shape[axis] = -1; s = s.reshape(shape); z = z.reshape(shape)
        lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
        if self.mode == "fakequant":
            q = torch.round(x * (1.0 / s)) + z        # torch.fake_quantize_* arithmetic
        else:
            q = torch.round(x / s) + z                # MLAS QuantizeLinear: x / scale, round to even
        return torch.clamp(q, lo, hi), s, z           # integer-valued float tensor

    def _dq(self, q, s, z):
        return (q - z) * s

    def run(self, x: np.ndarray) -> np.ndarray:
        env = {"input": torch.from_numpy(x)}
        qinfo = {}  # tensor name -> (q int tensor, scale, zp) for DQ outputs
        for n in self.nodes:
            ins = [env[i] if i in env else (torch.from_numpy(np.asarray(self.init[i])) if i in self.init else None) for i in n.input]
            op = n.op_type
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if op == "QuantizeLinear":
                scale, zp = self.init[n.input[1]], self.init[n.input[2]]
                q, s, z = self._quant(ins[0].float(), scale, zp, zp.dtype, attrs.get("axis", 1))
                env[n.output[0]] = q; qinfo[n.output[0]] = (scale, zp)
            elif op == "DequantizeLinear":
                src = n.input[0]
                scale = self.init[n.input[1]]; zp = self.init[n.input[2]] if len(n.input) > 2 else np.zeros((), np.int32)
                q = ins[0].double() if src in self.init else env[src].double()
                s = torch.as_tensor(scale, dtype=torch.float64 if zp.dtype == np.int32 else torch.float32)
                z = torch.as_tensor(zp.astype(np.float64))
                if s.ndim == 1 and s.numel() > 1:
                    shape = [1] * q.ndim; shape[attrs.get("axis", 1)] = -1; s = s.reshape(shape); z = z.reshape(shape)
                env[n.output[0]] = ((q - z) * s).float()
                qinfo[n.output[0]] = (q, scale, zp)
            elif op in ("Conv", "Gemm") and self.mode == "integer":
                env[n.output[0]] = self._int_linear(n, attrs, qinfo)
            elif op == "Conv":
                env[n.output[0]] = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs["strides"],
                                            attrs["pads"][:2], 1, attrs.get("group", 1))
            elif op == "Gemm":
                env[n.output[0]] = F.linear(ins[0], ins[1] if attrs.get("transB") else ins[1].T, ins[2] if len(ins) > 2 else None)
            elif op in ("Add", "Mul", "GlobalAveragePool", "Sigmoid") and self.mode == "integer" \
                    and all(i in qinfo for i in n.input):
                env[n.output[0]] = self._int_elementwise(n, qinfo)
            elif op == "Add": env[n.output[0]] = ins[0] + ins[1]
            elif op == "Mul": env[n.output[0]] = ins[0] * ins[1]
            elif op == "Sigmoid": env[n.output[0]] = torch.sigmoid(ins[0])
            elif op == "GlobalAveragePool": env[n.output[0]] = ins[0].mean((2, 3), keepdim=True)
            elif op == "Flatten": env[n.output[0]] = ins[0].flatten(1)
            elif op == "Identity": env[n.output[0]] = ins[0]
            elif op == "Relu": env[n.output[0]] = torch.relu(ins[0])
            elif op == "Clip": env[n.output[0]] = torch.clamp(ins[0], float(ins[1]), float(ins[2]))
            elif op == "HardSigmoid": env[n.output[0]] = torch.clamp(ins[0] * attrs["alpha"] + attrs["beta"], 0, 1)
            elif op == "HardSwish": env[n.output[0]] = F.hardswish(ins[0])
            else:
                raise NotImplementedError(op)
        return env["output"].numpy()

    def _int_linear(self, n, attrs, qinfo):
        """Integer conv/gemm + MLAS requantization; the output stays float = DQ(Q(y)) of the following Q."""
        xq, xs, xz = qinfo[n.input[0]]
        wq, ws, _ = qinfo[n.input[1]]
        acc_x = xq - float(xz)
        if n.op_type == "Conv":
            acc = F.conv2d(acc_x, wq, None, attrs["strides"], attrs["pads"][:2], 1, attrs.get("group", 1))
            cshape = (1, -1, 1, 1)
        else:
            acc = F.linear(acc_x, wq if attrs.get("transB") else wq.T)
            cshape = (1, -1)
        if len(n.input) > 2:
            bq = qinfo[n.input[2]][0]
            acc = acc + bq.reshape(cshape)
        # the following QuantizeLinear supplies the output scale/zp (its consumer is the Q node)
        q_node = next(m for m in self.nodes if m.op_type == "QuantizeLinear" and m.input[0] == n.output[0])
        ys = np.float32(self.init[q_node.input[1]]); yz = self.init[q_node.input[2]]
        mult = (np.float32(xs) * ws.astype(np.float32)) / ys           # float32, as ORT computes it
        mult = torch.as_tensor(np.atleast_1d(mult).astype(np.float32)).reshape(cshape)
        acc32 = acc.float()                                             # int32 -> float32 conversion
        lo, hi = (0, 255) if yz.dtype == np.uint8 else (-128, 127)
        q = torch.clamp(torch.round(acc32 * mult) + int(yz), lo, hi)
        # hand the Q node an exactly representable value: mark it pre-quantized
        self._prequant = getattr(self, "_prequant", set()); self._prequant.add(q_node.output[0])
        return (q.double() - int(yz)).float() * float(ys)               # DQ(q): the Q node re-quantizes it exactly

    def _next_q(self, n):
        q_node = next(m for m in self.nodes if m.op_type == "QuantizeLinear" and m.input[0] == n.output[0])
        return np.float32(self.init[q_node.input[1]]), self.init[q_node.input[2]]

    def _int_elementwise(self, n, qinfo):
        """MLAS arithmetic of QLinearAdd / QLinearMul / QLinearGlobalAveragePool / QLinearSigmoid."""
        ys, yz = self._next_q(n)
        f32 = np.float32
        a, sa, za = qinfo[n.input[0]]
        a = a.float()
        if n.op_type == "Add":
            b, sb, zb = qinfo[n.input[1]]
            rac, rbc = f32(sa) / ys, f32(sb) / ys
            v = (a - float(za)) * float(rac) + (b.float() - float(zb)) * float(rbc) + float(yz)
        elif n.op_type == "Mul":
            b, sb, zb = qinfo[n.input[1]]
            ratio = f32(sa) * f32(sb) / ys
            acc = (a - float(za)) * (b.float() - float(zb))        # exact integers
            v = acc * float(ratio) + float(yz)
        elif n.op_type == "GlobalAveragePool":
            hw = a.shape[2] * a.shape[3]
            acc = a.double().sum((2, 3), keepdim=True) - float(za) * hw
            scale = f32(sa) / (ys * f32(hw))
            v = acc.float() * float(scale) + float(yz)
        else:  # Sigmoid: a 256-entry table of Q(sigmoid(DQ(q)))
            table = torch.arange(256, dtype=torch.float32) if za.dtype == np.uint8 else torch.arange(-128, 128, dtype=torch.float32)
            y = self.sigmoid((table - float(za)) * float(sa))
            t = torch.clamp(torch.round(y / float(ys)) + float(yz), 0, 255)
            idx = (a - (0 if za.dtype == np.uint8 else -128)).long()
            q = t[idx]
            return (q - float(yz)) * float(ys)
        q = torch.clamp(torch.round(v), 0, 255)
        return (q - float(yz)) * float(ys)

    sigmoid = staticmethod(torch.sigmoid)
