"""Agreement of the integer simulation on hswish/hsigmoid networks (float fallback ops inside int8)."""
import json, torch
import torch.nn.functional as F
from agree import compare, lin
from sim import QDQSim
from timing import mb
from common import *
layers = ([LayerSpec("conv", 3, 16, 32, kernel=3, stride=2, act="hswish")] + mb(16, 16, 16, 1, act="relu")
          + mb(16, 24, 16, 4, stride=2, act="relu") + mb(24, 40, 8, 3, k=5, stride=2, se=18, act="relu", gate="hsigmoid")
          + mb(40, 40, 4, 6, k=5, se=60, act="hswish", gate="hsigmoid") + mb(40, 48, 4, 3, se=30, act="hswish", gate="hsigmoid")
          + [LayerSpec("conv", 48, 128, 4, act="hswish"), LayerSpec("gap", 128, 128, 4), lin(128, 10)])
print("HardSwish as F.hardswish:", json.dumps(compare(layers, n_eval=300)))
orig = QDQSim.run
