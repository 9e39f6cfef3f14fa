"""report.html: a run on one self-contained page, to open in any browser or send by mail.

Everything is inline: styles in the page, plots as base64 PNG data URIs, no scripts, no
fetches, so the file shows the same with no server and no network. Sections follow the
pipeline (summary, steps, devices and their LUTs, training curve, search table and
Pareto plot, exported model and its card, environment, config), and a section whose step
has not finished says so instead of disappearing.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from nas.atomic import write_atomic
from nas.experiment.rundir import Run
from nas.export.latency import measured_ms

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.status-finished,.status-done,.status-cached{color:#17692a;font-weight:600} .status-failed{color:#b00020;font-weight:600}
.status-running,.status-interrupted{color:#9a6700;font-weight:600} .muted{color:#777}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:12px} img{max-width:100%;border:1px solid #eee}
code{background:#f3f3f3;padding:0 .2em}
"""


def write_report(run: Run) -> Path:
    """Render runs/<id>/report.html from the run's files; returns its path."""
    path = run.path / "report.html"
    write_atomic(path, render(run))
    return path


def render(run: Run) -> str:
    state = run.read()
    steps = {s: _step(run.path / s) for s in ("profile", "train", "search", "export", "compress")}
    parts = [f"<h1>{_e(state['name'])}: run {_e(run.id)}</h1>",
             _summary(state, steps), _steps(state), _devices(run, steps["profile"]), _training(run, steps["train"]),
             _search(run, steps["search"]), _precision(steps["search"]), _export(steps["export"]),
             _compress(steps["compress"], steps["export"]), _environment(run), _config(run)]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>hwnas run {_e(run.id)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(p for p in parts if p) + "</body></html>\n")


# ---------------------------------------------------------------------- sections
def _summary(state: dict[str, Any], steps: dict[str, Any]) -> str:
    rows = [("status", f"<span class='status-{_e(state['status'])}'>{_e(state['status'])}</span>"),
            ("created", _e(state.get("created", ""))), ("finished", _e(state.get("finished") or "-"))]
    if state.get("error"):
        rows.append(("error", _e(state["error"])))
    search = (steps["search"] or {}).get("result", {}).get("summary")
    if search and search.get("best"):
        best, problem = search["best"], search.get("problem") or {}
        metrics, budgets = problem.get("metrics") or {}, "; ".join(problem.get("constraints") or []) or "none"
        note = f"<span class='muted'>(meets every budget: {_e(budgets)})</span>"
        rows.append(("best arch", f"<code>{_e(best['arch_id'])}</code> {note}"))
        rows += [(name, f"{_num(value)} {_e(_unit(metrics.get(name)))}") for name, value in best["metrics"].items()]
    return "<h2>Summary</h2>" + _kv(rows)


def _steps(state: dict[str, Any]) -> str:
    rows = []
    for name in ("profile", "train", "search", "export", "compress"):
        s = state["steps"].get(name, {})
        status = s.get("status", "not started")
        how = f"from run {s['cached_from']}" if s.get("cached_from") else ""
        seconds = f"{s['seconds']:.1f}" if isinstance(s.get("seconds"), (int, float)) else ""
        rows.append([name, f"<span class='status-{_e(status)}'>{_e(status)}</span>", seconds, _e(s.get("key", "")),
                     _e(how)])
    return "<h2>Steps</h2>" + _table(["step", "status", "seconds", "input hash", "note"], rows, raw=True)


def _devices(run: Run, profile: dict[str, Any] | None) -> str:
    if profile is None:
        return "<h2>Devices and cost sources</h2><p class='muted'>The profile step has not finished.</p>"
    rows = []
    for metric, spec in profile["result"]["sources"].items():
        if "lut" in spec:
            meta = _json(run.path / "profile" / Path(spec["lut"]).with_suffix(".json")) or {}
            cal = meta.get("calibration") or {}
            noise = (meta.get("noise") or {}).get("median_spread")
            detail = (f"LUT {spec['lut']}: {meta.get('entries', '?')} blocks"
                      + (f", median noise {noise:.1%}" if isinstance(noise, float) else "")
                      + (f", calibration residual {cal['residual_rmspe']:.1f} % RMSPE on {cal.get('n')} archs"
                         if "residual_rmspe" in cal else ""))
        elif "like" in spec:
            detail = f"stand-in: the LUT of {spec['like']}"
        elif "analytic" in spec:
            detail = "analytic estimate: the device's power model over its LUT latency"
        elif "predictor" in spec:
            detail = f"learned predictor {spec['predictor']}"
        else:
            detail = f"table {spec.get('table')}, column {spec.get('column')} ({spec.get('unit')})"
        rows.append([metric, detail])
    if not rows:
        return ""
    return "<h2>Devices and cost sources</h2>" + _table(["metric", "source"], rows)


def _training(run: Run, train: dict[str, Any] | None) -> str:
    history = _json(run.path / "train" / "history.json")
    if not history:
        note = "not needed by this experiment" if train is None and not (run.path / "train").exists() else \
            "no finished epoch yet"
        return f"<h2>Supernet training</h2><p class='muted'>{note}.</p>"
    keys = [k for k in history[-1] if k != "epoch" and isinstance(history[-1][k], (int, float))]
    table = _table(["epoch", *keys], [[r.get("epoch"), *(_num(r.get(k)) for k in keys)] for r in history], raw=True)
    curves = [k for k in keys if "acc" in k]
    return "<h2>Supernet training</h2>" + (_img(_curve(history, curves)) if curves else "") + table


def _search(run: Run, search: dict[str, Any] | None) -> str:
    if search is None:
        return "<h2>Search</h2><p class='muted'>The search step has not finished.</p>"
    s = search["result"]["summary"]
    rows = [("controller", _e(s.get("controller"))), ("queries", _num(s.get("queries"))),
            ("feasible", _num(s.get("feasible")))]
    if s.get("hypervolume"):
        rows.append(("hypervolume", _num(s["hypervolume"].get("value"))))
    constraints = (s.get("problem") or {}).get("constraints") or []
    if constraints:
        rows.append(("budgets", _e("; ".join(str(c) for c in constraints))))
    out = "<h2>Search</h2>" + _kv(rows)
    png = run.path / "search" / "front.png"
    if png.is_file():
        out += _img(png.read_bytes())
    front = s.get("front") or []
    if front:
        metrics = list(front[0]["metrics"])
        title = "Pareto front" if len((s.get("problem") or {}).get("objectives") or []) > 1 else \
            "Best feasible archs"
        out += f"<h3>{title}</h3>" + _table(["arch id", *metrics],
                                                [[f"<code>{_e(r['arch_id'])}</code>", *(_num(r['metrics'][m]) for m in metrics)]
                                                 for r in front[:30]], raw=True)
    return out


def _precision(search: dict[str, Any] | None) -> str:
    """Which layers ended int8 on the front, and each precision decision's paired effect there."""
    effects = ((search or {}).get("result") or {}).get("precision")
    if not effects:
        return ""  # a space without precision decisions, or a search not finished
    units, best = effects.get("metrics") or {}, (effects.get("best") or {}).get("arch_id")
    decisions = [e["decision"] for e in effects["effects"]]
    short = [d.removesuffix(".precision") for d in decisions]
    shown = [m for m in units if m in ("accuracy",) or m.startswith(("latency", "energy"))][:3]
    rows = []
    for r in effects["front"]:
        mark = " (exported)" if r["arch_id"] == best else ""
        rows.append([f"<code>{_e(r['arch_id'])}</code>{_e(mark)}", *(_num(r["metrics"].get(m)) for m in shown),
                     *(("<b>int8</b>" if r["decisions"].get(d) == "int8" else "fp32") for d in decisions),
                     f"{len(r['int8_layers'])} / {r['layers']}"])
    exported = effects.get("best") or {}
    if exported and exported.get("arch_id") not in {r["arch_id"] for r in effects["front"]}:
        rows.append([f"<code>{_e(exported['arch_id'])}</code> (exported; not on the front)", *("" for _ in shown),
                     *(("<b>int8</b>" if exported["decisions"].get(d) == "int8" else "fp32") for d in decisions),
                     f"{len(exported['int8_layers'])} / {exported['layers']}"])
    out = ("<h2>Precision</h2><p>Front archs (up to six, spread along the front) and the precision of each "
           "precision decision; the last column counts int8 layers among the active ones.</p>"
           + _table(["arch id", *shown, *short, "int8 layers"], rows, raw=True))
    metrics = list(units)
    rows = [[e["decision"], e["archs"], e["int8_on_front"],
             *(_delta(e["int8_minus_fp32"].get(m), units.get(m)) for m in metrics)] for e in effects["effects"]]
    out += ("<h3>What each precision choice costs on the front</h3><p>Each front arch re-scored with one "
            "precision decision flipped, everything else kept (accuracy quantized for int8 layers, latency from the "
            "precision-aware LUT): the median over the front archs where the decision shapes the network of "
            "<b>int8 minus fp32</b>. Negative latency, energy or memory: int8 saves it; negative accuracy: int8 "
            f"costs it. {_num(effects.get('queries'))} extra queries.</p>"
            + _table(["decision", "archs", "int8 on front", *(f"Δ {m}" for m in metrics)], rows))
    return out


def _delta(value: Any, unit: str | None) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if unit == "fraction":  # accuracy: percentage points read better than a difference of fractions
        return f"{100 * value:+.2f} pp"
    unit = "" if unit in (None, "", "count") else f" {unit}"
    return f"{value:+.4g}{unit}"


def _export(export: dict[str, Any] | None) -> str:
    if export is None:
        return "<h2>Exported model</h2><p class='muted'>The export step has not finished (or is turned off).</p>"
    card = export["result"].get("card") or {}
    costs, onnx = card.get("costs") or {}, card.get("onnx") or {}
    rows = [("arch id", f"<code>{_e(card.get('arch_id'))}</code>"),
            ("folder", (f"<code>export/{_e(export['result'].get('folder', 'model'))}</code> (weights, ONNX, "
                        "MODEL_CARD.md, card.json)"))]
    rows += [(k, _num(costs[k])) for k in ("params", "macs", "peak_activation_bytes", "weight_bytes") if k in costs]
    if onnx:
        diff, tol = onnx.get("max_abs_diff"), onnx.get("tolerance")
        rows.append(("ONNX", f"opset {_e(onnx.get('opset'))}, max |PyTorch - onnxruntime| {_num(diff)}"
                             + (f" (tolerance {_num(tol)}: verified)" if isinstance(tol, (int, float)) else "")))
    accuracy = card.get("accuracy") or {}
    if accuracy.get("value") is not None:
        rows.append(("accuracy", f"{_num(accuracy['value'])} on the {_e(accuracy.get('split'))} split"))
    measured = card.get("measured_latency") or {}
    if measured:
        rows.append(("latency measured here", f"{_num(measured_ms(measured))} ms ({_e(measured.get('statistic', 'median'))})"))
    out = "<h2>Exported model</h2>" + _kv(rows)
    predictions = card.get("predictions") or []
    if predictions:
        out += "<h3>Predicted costs</h3>" + _table(
            ["device", "metric", "value", "unit", "source"],
            [[p.get("device"), p.get("metric"), _num(p.get("value")), p.get("unit"),
              ((p.get("source") or {}).get("kind") or "") + (" (estimate)" if p.get("estimate") else "")]
             for p in predictions])
    budgets = card.get("budgets") or []
    if budgets:  # every budget the search ran under, re-checked from the search's own sources
        out += "<h3>Budgets on the card</h3>" + _table(
            ["budget", "value", "unit", "met", "source"],
            [[b.get("budget"), _num(b.get("value")), _unit(b), {True: "met", False: "NOT met"}.get(b.get("met"), "unknown"),
              b.get("source") or b.get("reason", "")] for b in budgets])
    return out + f"<details><summary>card.json</summary><pre>{_e(json.dumps(card, indent=2))}</pre></details>"


def _compress(compress: dict[str, Any] | None, export: dict[str, Any] | None) -> str:
    """The pruned model beside the export: accuracy and latency before and after, per round."""
    if compress is None:
        return ""
    card = compress["result"].get("card") or {}
    pruning, before = card.get("pruning") or {}, (export or {}).get("result", {}).get("card") or {}
    finetune = compress["result"].get("finetune") or {}
    latency = lambda c: measured_ms(c["measured_latency"]) if c.get("measured_latency") else None  # noqa: E731
    rows = [["exported model", _num((before.get("accuracy") or {}).get("value")), _num(pruning.get("parent_predicted_ms")),
             _num(latency(before)), _num((before.get("costs") or {}).get("params"))],
            ["pruned, fine-tuned", _num(finetune.get("accuracy")), _num(pruning.get("predicted_ms")),
             _num(latency(card)), _num((card.get("costs") or {}).get("params"))]]
    out = ("<h2>Compressed model</h2>" + _kv([
        ("folder", "<code>compress/model</code> (weights, ONNX, MODEL_CARD.md, card.json)"),
        ("budgets", "; ".join(f"{_e(b['budget'])}: {'met' if b.get('met') else 'NOT met'}" for b in card.get("budgets", []))),
        ("rounds", f"{len(pruning.get('rounds', []))} ({_num(pruning.get('blocks_profiled'))} blocks profiled on demand, "
                   f"{_num(pruning.get('prune_seconds'))} s)")])
        + _table(["model", "val accuracy", "LUT latency (ms)", "measured latency (ms)", "params"], rows))
    out += "<h3>Rounds</h3>" + _table(
        ["round", "pruned", "change", "cost before", "cost after", "accuracy (proxy)", "accuracy (tuned)"],
        [[r["round"], r["unit"], r["change"], _num(r["cost_before"]), _num(r["cost_after"]), _num(r["accuracy"]),
          _num(r["accuracy_tuned"])] for r in pruning.get("rounds", [])])
    return out


def _environment(run: Run) -> str:
    env = _json(run.path / "environment.json") or {}
    libs = env.pop("libraries", {})
    if isinstance(env.get("parallelism"), dict):  # one readable line: threads, why, cpus, wait policy, load
        from nas.threads import Parallelism

        try:
            env["parallelism"] = Parallelism(**env["parallelism"]).summary()
        except (TypeError, ValueError, IndexError):  # a record of another version: shown as it is
            pass
    rows = [(k, _e(json.dumps(v) if isinstance(v, (list, dict)) else str(v))) for k, v in env.items()]
    rows += [(k, _e(v)) for k, v in libs.items()]
    return "<h2>Environment</h2>" + _kv(rows)


def _config(run: Run) -> str:
    path = run.path / "config.yaml"
    return f"<h2>Config</h2><pre>{_e(path.read_text())}</pre>" if path.is_file() else ""


# ---------------------------------------------------------------------- helpers
def _curve(history: list[dict[str, Any]], keys: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    epochs = [r["epoch"] for r in history]
    for key in keys:
        ax.plot(epochs, [r.get(key) for r in history], "-o", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("supernet accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _unit(metric: dict[str, Any] | None) -> str:
    unit = (metric or {}).get("unit", "")
    return "" if unit in ("", "count", "fraction") else unit


def _img(png: bytes) -> str:
    return f"<p><img alt='plot' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"


def _step(folder: Path) -> dict[str, Any] | None:
    return _json(folder / "step.json")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e("-" if value is None else value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _kv(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _table(header: list[str], rows: list[list[Any]], raw: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
