"""Resident memory of one ONNX network under onnxruntime, read in a process of its own.

nas.hardware.memory runs `python -m nas.hardware.memory_probe MODEL.onnx PROVIDER THREADS`
once per network, so nothing another network allocated (and the allocator kept) is in
the reading. Linux only: it reads VmRSS and the high-water mark VmHWM from
/proc/self/status and resets the mark through /proc/self/clear_refs before each phase.
Prints one JSON line of byte counts:

  load_bytes   peak growth while the session is built (the weights and every copy
               the runtime makes of them: parsed initializers, pre-packed kernels)
  run_bytes    further peak growth over a few inferences (activations, workspace)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RUNS = 3


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str]) -> None:
    import onnxruntime as ort

    from nas.hardware.measure import ort_session

    model, provider, threads = argv[0], argv[1], int(argv[2])
    _reset_peak()
    before = _kib("VmRSS")
    session = ort_session(ort, model, provider, threads)
    load_peak, loaded = _kib("VmHWM"), _kib("VmRSS")
    spec = session.get_inputs()[0]
    feeds = {spec.name: np.ones([d if isinstance(d, int) else 1 for d in spec.shape], dtype=np.float32)}
    _reset_peak()
    for _ in range(RUNS):
        session.run(None, feeds)
    run_peak = _kib("VmHWM")
    print(json.dumps({"load_bytes": (load_peak - before) * 1024, "run_bytes": max(0, run_peak - loaded) * 1024}))


if __name__ == "__main__":
    main(sys.argv[1:])
