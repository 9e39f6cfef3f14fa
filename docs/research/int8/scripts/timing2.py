"""Q3 (robust rerun): int8/fp32 latency per block kind, batch 1, 1 thread, interleaved, 3 passes of fresh sessions,
p10 of ~2 ms slices, min over passes (the VM is shared: load average printed).

Per block:
  fp32          hwnas's float micro-model (float in/out)
  int8 qdq      quantize_static QDQ micro-model, float in/out (pays Q + Transpose in, Transpose + DQ out)
  int8 in=fp32  float NCHW in -> Q -> Transpose -> block -> uint8 NHWC out (first int8 block after a float one)
  int8 in=int8  uint8 NHWC in/out: the explicit Transposes cancel, only integer kernels remain (block inside an int8 run)
"""
import json, sys
from common import *
from timing import BLOCKS
from boundary import rewire

models = {}
for name, layers in BLOCKS.items():
    fm = float_model(layers)
    q = qdq(fm, input_shape(layers[0]), n=4)
    models[(name, "fp32")] = fm
    models[(name, "int8 qdq")] = q
    if not name.startswith("net"):
        models[(name, "int8 in=fp32")] = rewire(q, False, True, False)
        models[(name, "int8 in=int8")] = rewire(q, True, True, False)
keys = {f"{a} | {b}": m for (a, b), m in models.items()}
feeds = {k: feed_for(m) for k, m in keys.items()}
passes = []
for p in range(3):
    print("pass", p, "loadavg:", open("/proc/loadavg").read().strip()); sys.stdout.flush()
    passes.append(measure(keys, feeds, rounds=30, seed=p))
print("end loadavg:", open("/proc/loadavg").read().strip())
best = {k: min(r[k][1] for r in passes) for k in keys}
spread = {k: max(r[k][1] for r in passes) / best[k] for k in keys}
rows = []
for name in BLOCKS:
    f = best[f"{name} | fp32"]
    row = {"block": name, "fp32_us": round(f, 1)}
    for v in ("int8 qdq", "int8 in=fp32", "int8 in=int8"):
        k = f"{name} | {v}"
        if k in best:
            row[v + "_us"] = round(best[k], 1); row[v + " ratio"] = round(best[k] / f, 2)
    row["max pass spread"] = round(max(spread[k] for k in keys if k.startswith(name + " |")), 2)
    rows.append(row); print(json.dumps(row))
json.dump({"rows": rows, "passes": [{k: v for k, v in r.items()} for r in passes]}, open("timing2.json", "w"), indent=1)
