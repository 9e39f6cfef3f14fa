#!/usr/bin/env python3
"""hwnas profiling kit runner: times every ONNX micro-model of the kit on this device.

Needs only python3, numpy and onnxruntime. Unzip the kit, then run:

    python3 runner.py --threads 4 --out results.csv
    (optional: --provider CUDAExecutionProvider --warmup 10 --repeats 60 --rounds 6 --passes 3)

and bring results.csv back to `hwnas lut import results.csv --space SPACE --device DEVICE`.
Measurement follows measure.py (shipped beside this file, the same code hwnas uses).
"""
import argparse
import csv
import json
import os
import platform
import sys
import tempfile

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from measure import Protocol, Yardstick, measure_models, ort_session  # noqa: E402

RESULTS_SCHEMA = "hwnas.kit-results/1"
CHUNK = 16
BATCH = 3 * CHUNK  # models between two progress lines


def runner(entry, args):
    """One inference of the entry's model per call, on a fixed random input (uint8 for a
    block that reads an int8 tensor, float32 otherwise: the model's own input type)."""
    sess = ort_session(ort, os.path.join(HERE, entry["file"]), args.provider, args.threads)
    rng = np.random.default_rng(0)
    if sess.get_inputs()[0].type == "tensor(uint8)":
        x = rng.integers(0, 256, entry["input"], dtype=np.uint8)
    else:
        x = rng.standard_normal(entry["input"]).astype(np.float32)
    feeds = {"input": x}
    return lambda: sess.run(None, feeds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--provider", default="CPUExecutionProvider")
    Protocol.add_arguments(parser)
    parser.add_argument("--out", default="results.csv")
    args = parser.parse_args()
    if args.provider not in ort.get_available_providers():
        sys.exit(f"runner: onnxruntime here lacks {args.provider}; available: {', '.join(ort.get_available_providers())}")
    with open(os.path.join(HERE, "manifest.json")) as fh:
        manifest = json.load(fh)
    protocol = Protocol.from_arguments(args)
    entries = manifest["entries"]
    rows = []
    yardstick = Yardstick(lambda: runner(manifest["reference"], args))
    for start in range(0, len(entries), BATCH):
        batch = entries[start:start + BATCH]
        timings = measure_models([lambda e=e: runner(e, args) for e in batch], protocol, yardstick, CHUNK, seed=start)
        for e, t in zip(batch, timings):
            rows.append([e["id"], e["key"], t.median, t.p10, t.p90, t.mean, t.std, t.n, t.rejected])
        print(f"runner: {len(rows)}/{len(entries)} models timed", file=sys.stderr)
    header = {"schema": RESULTS_SCHEMA, "kit": manifest["kit_id"], "space": manifest["space"],
              "onnxruntime": ort.__version__, "provider": args.provider, "threads": args.threads,
              "batch": manifest["batch"], "resolutions": manifest["resolutions"], "machine": platform.machine(), "node": platform.node(),
              "protocol": protocol.to_dict(),
              "reference": {**{k: manifest["reference"][k] for k in ("arch_id", "resolution")}, "ms": yardstick.baseline_ms},
              "drift_factor_range": [min(yardstick.factors), max(yardstick.factors)]}
    out = os.path.abspath(args.out)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as fh:
        fh.write("# " + json.dumps(header) + "\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "key", "median", "p10", "p90", "mean", "std", "n", "rejected"])
        w.writerows(rows)
    os.replace(tmp, out)
    print(f"runner: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
