"""`hwnas bench predictors`: the predictor figures of docs/benchmarks.md, from public device tables.

For every latency and energy column of the given tables (accuracy columns are scored
too, in their own section):

  fit       n_train random rows train, every other row with a value tests; 5 splits
  few-shot  leave one device out: the other devices' columns of the same space are
            pretrained on, K rows of the left-out column (chosen by the reference design
            with the split's seed, never by its values) adapt, all other rows test
  timing    fit time at the largest n_train, and predicting 100,000 random archs

A device's columns leave together (edgegpu latency and energy, fpga latency and the
energy derived from it), so no source column shares the target's device.
"""
from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import NasError
from nas.metrics import regression_report
from nas.predictors.features import get_featurizer
from nas.predictors.predictor import fit_predictor, infer_metric
from nas.predictors.tables import ARCH_COLUMNS, ArchTable, read_tables
from nas.predictors.transfer import N_PRETRAIN, pretrain, transfer_predictor
from nas.space import load_space, space_files
from nas.space.base import SearchSpace

REPORT_KEYS = ("spearman_rho", "kendall_tau", "within_5", "within_10", "within_15", "rmspe")
PREFERRED_SPACES = ("nb201", "fbnet_cifar")


def detect_space(path: Path) -> SearchSpace:
    """The shipped space whose archs the table's first row parses as."""
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh), None)
    if row is None:
        raise NasError(f"{path}: no rows")
    text = next((row[c] for c in ARCH_COLUMNS if c in row), None)
    if text is None:
        raise NasError(f"{path}: no 'arch' or 'arch_str' column")
    names = [*PREFERRED_SPACES, *sorted(set(space_files()) - set(PREFERRED_SPACES))]
    for name in names:
        try:
            space = load_space(name)
            space.parse_arch(text)
            return space
        except NasError:
            continue
    raise NasError(f"{path}: its archs belong to none of the shipped spaces; pass tables of one space with --space")


def device_of(column: str) -> str:
    return infer_metric(column)[2] or column


def _report(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    full = regression_report(predicted, measured)
    return {k: full[k] for k in REPORT_KEYS}


def _mean(reports: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in reports])) for k in reports[0]}


def bench_table(table: ArchTable, columns: Sequence[str], n_trains: Sequence[int], ks: Sequence[int], splits: int,
                models: Sequence[str], n_pretrain: int, log=print) -> list[dict[str, Any]]:
    """Per-column results for one space (see the module doc)."""
    results = []
    featurizer = get_featurizer(table.space)
    pretrained: dict[tuple[str, int], Any] = {}
    for column in columns:
        rows, y, col = table.rows(column, positive=True)
        entry: dict[str, Any] = {"space": table.space.name, "column": column, "rows": int(len(rows)),
                                 "dropped_missing": col.missing, "fit": {}, "few_shot": {}}
        for model in models:
            for n in n_trains:
                reports, seconds = [], []
                for seed in range(splits):
                    start = time.perf_counter()
                    predictor = fit_predictor(table, column, n, seed, model)
                    seconds.append(time.perf_counter() - start)
                    test = np.array([table.arch_ids[i] not in predictor.used_arch_ids for i in rows])
                    reports.append(_report(predictor.predict(table.subset(rows[test])), y[test]))
                entry["fit"].setdefault(model, {})[str(n)] = {**_mean(reports), "fit_seconds": float(np.mean(seconds))}
        sources = [c for c in columns if device_of(c) != device_of(column)]
        for k in ks if sources else ():
            reports = []
            for seed in range(splits):
                for c in sources:
                    if (c, seed) not in pretrained:
                        pretrained[c, seed] = pretrain(table, featurizer, c, n_pretrain, seed)
                predictor = transfer_predictor(table, sources, column, k, seed, use_shipped_reference=False,
                                               pretrained=[pretrained[c, seed] for c in sources])
                test = np.array([table.arch_ids[i] not in predictor.used_arch_ids for i in rows])
                reports.append(_report(predictor.predict(table.subset(rows[test])), y[test]))
            entry["few_shot"][str(k)] = {**_mean(reports), "sources": sources}
        log(_line(entry))
        results.append(entry)
    return results


def _line(entry: dict[str, Any]) -> str:
    parts = [f"{entry['space']:<12} {entry['column']:<22}"]
    for model, by_n in entry["fit"].items():
        for n, r in by_n.items():
            parts.append(f"{model} n={n}: rho {r['spearman_rho']:.3f} ±10% {r['within_10']:.2f}")
    for k, r in entry["few_shot"].items():
        parts.append(f"K={k}: rho {r['spearman_rho']:.3f}")
    return "  ".join(parts)


def timing(space: SearchSpace, table: ArchTable, column: str, n_train: int, n_archs: int = 100_000,
           model: str = "auto") -> dict[str, float]:
    """Seconds to fit at n_train and to predict n_archs random archs, features included
    (the space's feature tables are built once per process, before this runs). Wall time
    and this process's CPU time: on a shared machine the CPU time is the fair figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    predictor = fit_predictor(table, column, n_train, 0, model)
    out = {"fit_seconds": time.perf_counter() - wall, "fit_cpu_seconds": time.process_time() - cpu}
    codes = space.sample_codes(np.random.default_rng(0), n_archs)
    wall, cpu = time.perf_counter(), time.process_time()
    predictor.predict(codes)
    out.update(predict_seconds=time.perf_counter() - wall, predict_cpu_seconds=time.process_time() - cpu)
    return {**out, "n_archs": n_archs, "model": model}


def bench_predictors(paths: Sequence[Path], n_trains: Sequence[int] = (100, 900), ks: Sequence[int] = (20,),
                     splits: int = 5, models: Sequence[str] = ("auto",), n_pretrain: int = N_PRETRAIN,
                     log=print) -> dict[str, Any]:
    by_space: dict[str, tuple[SearchSpace, list[Path]]] = {}
    for path in paths:
        space = detect_space(Path(path))
        by_space.setdefault(space.name, (space, []))[1].append(Path(path))
    cost, accuracy, timings = [], [], {}
    for name, (space, files) in by_space.items():
        table = read_tables(files, space)
        costs = [c for c in table.value_columns if infer_metric(c)[0] in ("latency", "energy")]
        accs = [c for c in table.value_columns if infer_metric(c)[0] == "accuracy"]
        if costs:
            cost += bench_table(table, costs, n_trains, ks, splits, models, n_pretrain, log)
            for model in models:
                timings[f"{name}/{model}"] = timing(space, table, costs[0], max(n_trains), model=model)
                t = timings[f"{name}/{model}"]
                log(f"{name} {model}: fit n={max(n_trains)} {t['fit_seconds']:.2f} s ({t['fit_cpu_seconds']:.2f} s CPU), "
                    f"predict 100k archs {t['predict_seconds']:.2f} s ({t['predict_cpu_seconds']:.2f} s CPU)")
        if accs:
            accuracy += bench_table(table, accs, n_trains, (), splits, models, n_pretrain, log)
    return {"cost": cost, "accuracy": accuracy, "timing": timings, "summary": summarize(cost),
            "protocol": {"n_trains": list(n_trains), "ks": list(ks), "splits": splits, "models": list(models),
                         "n_pretrain": n_pretrain, "tables": [str(p) for p in paths]}}


def summarize(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over columns: per model and n_train, and per K."""
    out: dict[str, Any] = {"fit": {}, "few_shot": {}}
    if not entries:
        return out
    for model, by_n in entries[0]["fit"].items():
        for n in by_n:
            out["fit"][f"{model}/{n}"] = _mean([e["fit"][model][n] for e in entries])
    for k in entries[0]["few_shot"]:
        shots = [e["few_shot"][k] for e in entries if k in e["few_shot"]]
        out["few_shot"][k] = _mean([{key: s[key] for key in REPORT_KEYS} for s in shots])
    return out
