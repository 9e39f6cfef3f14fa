"""`hwnas bench predictors`: the predictor figures of docs/benchmarks.md, from public device tables.

Latency and energy columns go through the leave-one-device-out protocol of
nas.predictors.loo (fit at n rows and transfer at K rows, model and variant chosen
nested, mean and worst device). Accuracy columns, which belong to no device, are
scored by plain splits: n_train random rows train, every other row tests. Timing: fit
time at the largest n_train, and predicting 100,000 random archs.
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
from nas.predictors.predictor import fit_predictor, infer_metric
from nas.predictors.tables import ARCH_COLUMNS, ArchTable, read_tables
from nas.predictors.loo import (FIT_CANDIDATES, INNER_TEST_ROWS, PROTOCOL_TEXT, TRANSFER_CANDIDATES, Protocol, World,
                                device_groups)
from nas.predictors.transfer import N_PRETRAIN
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


def _report(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    full = regression_report(predicted, measured)
    return {k: full[k] for k in REPORT_KEYS}


def _mean(reports: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in reports])) for k in reports[0]}


def bench_accuracy(table: ArchTable, columns: Sequence[str], n_trains: Sequence[int], splits: int,
                   models: Sequence[str], log=print) -> list[dict[str, Any]]:
    """Per-column fit results: n_train random rows train, every other row with a value tests."""
    results = []
    for column in columns:
        rows, y, col = table.rows(column, positive=True)
        entry: dict[str, Any] = {"space": table.space.name, "column": column, "rows": int(len(rows)),
                                 "dropped_missing": col.missing, "fit": {}}
        for model in models:
            for n in n_trains:
                reports = []
                for seed in range(splits):
                    predictor = fit_predictor(table, column, n, seed, model)
                    test = np.array([table.arch_ids[i] not in predictor.used_arch_ids for i in rows])
                    reports.append(_report(predictor.predict(table.subset(rows[test])), y[test]))
                entry["fit"].setdefault(model, {})[str(n)] = _mean(reports)
                log(f"{table.space.name} {column} {model} n={n}: Spearman {entry['fit'][model][str(n)]['spearman_rho']:.3f}")
        results.append(entry)
    return results


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


def bench_predictors(paths: Sequence[Path], n_trains: Sequence[int] = (100, 900), ks: Sequence[int] = (5, 10, 20, 50),
                     seeds: int = 3, fit_candidates: Sequence[str] = FIT_CANDIDATES,
                     transfer_candidates: Sequence[str] = TRANSFER_CANDIDATES, n_pretrain: int = N_PRETRAIN,
                     accuracy_models: Sequence[str] = ("auto",), log=print, progress: bool = True) -> dict[str, Any]:
    """The leave-one-device-out protocol per space over the cost columns of the tables,
    plain splits over accuracy columns, and timing of the default fit."""
    by_space: dict[str, tuple[SearchSpace, list[Path]]] = {}
    for path in paths:
        space = detect_space(Path(path))
        by_space.setdefault(space.name, (space, []))[1].append(Path(path))
    loo, accuracy, timings = {}, [], {}
    for name, (space, files) in by_space.items():
        table = read_tables(files, space)
        costs = [c for c in table.value_columns if infer_metric(c)[0] in ("latency", "energy")]
        accs = [c for c in table.value_columns if infer_metric(c)[0] == "accuracy"]
        if costs:
            if len(set(device_groups(costs).values())) < 2:
                raise NasError(f"{name}: the tables hold one device's columns; leaving a device out needs two or more")
            log(PROTOCOL_TEXT.format(n_pretrain=n_pretrain, inner=INNER_TEST_ROWS, seeds=list(range(seeds))))
            world = World(table, costs, n_pretrain)
            loo[name] = Protocol(world, tuple(range(seeds))).run(n_trains, ks, fit_candidates, transfer_candidates,
                                                                 log=log, progress=progress)
            timings[name] = timing(space, table, costs[0], max(n_trains))
            t = timings[name]
            log(f"{name}: fit n={max(n_trains)} {t['fit_seconds']:.2f} s ({t['fit_cpu_seconds']:.2f} s CPU), "
                f"predict 100k archs {t['predict_seconds']:.2f} s ({t['predict_cpu_seconds']:.2f} s CPU)")
        if accs:
            accuracy += bench_accuracy(table, accs, n_trains, seeds, accuracy_models, log)
    return {"loo": loo, "accuracy": accuracy, "timing": timings,
            "protocol": {"n_trains": list(n_trains), "ks": list(ks), "seeds": seeds, "fit_candidates": list(fit_candidates),
                         "transfer_candidates": list(transfer_candidates), "n_pretrain": n_pretrain,
                         "inner_test_rows": INNER_TEST_ROWS, "tables": [str(p) for p in paths]}}
