"""SE block residual mismatch: try the ORT float Sigmoid for the QLinearSigmoid table."""
import numpy as np, torch
from onnx import helper as H
from common import *
from sim import QDQSim
from timing import mb
from agree import compare
sg = H.make_model(H.make_graph([H.make_node("Sigmoid", ["x"], ["y"])], "s", [H.make_tensor_value_info("x", 1, [256])],
                  [H.make_tensor_value_info("y", 1, [256])]), opset_imports=[H.make_opsetid("", 17)]); sg.ir_version = 9
sgs = session(sg)
print("torch.sigmoid table:", compare(mb(24, 24, 8, 6, se=8), n_eval=30)["integer"])
QDQSim.sigmoid = staticmethod(lambda v: torch.from_numpy(sgs.run(None, {"x": v.numpy().astype(np.float32)})[0]))
print("ORT Sigmoid table:  ", compare(mb(24, 24, 8, 6, se=8), n_eval=30)["integer"])
print("ORT Sigmoid table, 40>40 e6 k5 se10 @8:", compare(mb(40, 40, 8, 6, k=5, se=10), n_eval=30)["integer"])
