"""`hwnas bench quant`: post-training int8 accuracy of a supernet's subnets.

For N seeded random archs of a supernet's space (every precision decision set to int8,
so each subnet is quantized whole: the largest accuracy cost precision can have), each
arch is scored as search scores it, float (BN recalibrated) and int8 (nas.quant), and its
int8 ONNX model is run in onnxruntime on the same images: the accuracy drop int8 costs,
how closely the simulation search trusts matches the runtime (top-1 agreement, largest
logit difference in output steps), and what scoring an int8 arch costs against a float one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from nas.quant.settings import QuantSettings


def all_int8(space, arch):
    """`arch` with every precision decision of its space set to int8."""
    names = [d.name for d in space.decisions if d.name.endswith("precision")]
    return space.arch({**dict(arch), **{n: "int8" for n in names}})


def quant_bench(run_dir: Path | str, archs: int = 20, seed: int = 0, split: str = "val",
                quant: QuantSettings | None = None, progress: bool = True) -> dict[str, Any]:
    """Float and int8 accuracy of `archs` subnets, and onnxruntime-vs-simulation agreement."""
    from tqdm import tqdm

    from nas.quant.ptq import compare_with_onnxruntime
    from nas.supernet import SupernetAccuracy
    from nas.supernet.evaluation import accuracy

    oracle = SupernetAccuracy(run_dir, split, quant=quant)
    space, scorer = oracle.space, oracle.evaluator
    if not any(d.name.endswith("precision") for d in space.decisions):
        from nas.errors import NasError

        raise NasError(f"space {space.name} has no precision decision; train a supernet of an int8 space "
                       "(tiny_mbconv_int8, ofa_mbv3_int8)")
    rows = []
    labels = scorer.labels.cpu().numpy()
    for i in tqdm(range(archs), desc="subnets", disable=not progress):
        arch = all_int8(space, space.sample(seed + i))
        resolution, layers = space.resolution(arch), space.layers(arch)
        started = time.perf_counter()
        net = oracle.supernet.extract(arch)
        float_acc = scorer.score(net, resolution)  # recalibrates `net` in place
        float_s = time.perf_counter() - started
        started = time.perf_counter()
        qnet = scorer.quantized(net, resolution, layers)
        int8_acc = accuracy(qnet, scorer.images("eval", resolution), scorer.labels, scorer.batch_size)
        int8_s = time.perf_counter() - started + float_s  # what scoring the int8 arch costs search
        found, ours, theirs = compare_with_onnxruntime(qnet, scorer.images("eval", resolution))
        rows.append({"arch_id": arch.arch_id, "float": float_acc, "int8": int8_acc,
                     "int8_onnxruntime": float((theirs == labels).mean()), **found,
                     "seconds_float": round(float_s, 3), "seconds_int8": round(int8_s, 3)})
    drops = np.array([r["float"] - r["int8"] for r in rows])
    return {"run": str(run_dir), "space": space.name, "split": split, "archs": archs, "seed": seed,
            "quant": scorer.quant.model_dump(), "images": rows[0]["images"] if rows else 0,
            "drop_median": float(np.median(drops)), "drop_worst": float(drops.max()),
            "agreement_min": min(r["top1_agreement"] for r in rows),
            "max_logit_diff_steps": max(r.get("max_logit_diff_steps", 0.0) for r in rows),
            "seconds_float_median": float(np.median([r["seconds_float"] for r in rows])),
            "seconds_int8_median": float(np.median([r["seconds_int8"] for r in rows])), "rows": rows}
