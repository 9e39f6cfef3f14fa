"""boundary.py's additivity check repeated in 3 passes (fresh sessions each pass), p10 of 2 ms slices."""
import json, itertools
from boundary import *
CHAIN = mb(16, 16, 32, 3) + mb(16, 24, 32, 6, stride=2) + mb(24, 24, 16, 6) + mb(24, 24, 16, 6, se=36)
P = {"f": "fp32", "i": "int8"}
patterns = ["ffff", "iiii", "fiif", "iffi", "ifif", "ffii", "iiif", "fiii"]
models = {f"chain {p}": chain_model(CHAIN, [P[c] for c in p]) for p in patterns}
for b, spec in enumerate(CHAIN):
    for prec, inp in itertools.product(("fp32", "int8"), repeat=2):
        if not (b == 0 and inp == "int8"):
            models[f"b{b} {prec} in={inp}"] = entry_model(spec, prec, inp)
last = CHAIN[-1]
models["exit"] = exit_model([1, last.out_ch, last.out_size, last.out_size])
feeds = {k: feed_for(m) for k, m in models.items()}
allp = []
for p in range(3):
    print("pass", p, "loadavg:", open("/proc/loadavg").read().strip())
    stats = measure(models, feeds, rounds=40, seed=p)
    med = {k: v[1] for k, v in stats.items()}
    line = []
    for pat in patterns:
        prev = "fp32"; total = 0.0
        for b, c in enumerate(pat):
            total += med[f"b{b} {P[c]} in={prev}"]; prev = P[c]
        if prev == "int8":
            total += med["exit"]
        line.append(f"{pat} {med['chain ' + pat]:.0f}/{total:.0f}={med['chain ' + pat] / total:.2f}")
    print("  measured/LUT-sum (us):", "  ".join(line))
    print("  entries p10 us:", json.dumps({k: round(v, 1) for k, v in med.items() if not k.startswith("chain")}))
    allp.append(stats)
json.dump(allp, open("boundary_passes.json", "w"))
