"""The model card: card.json (data) and MODEL_CARD.md (the same for people).

What a deployer asks of a found network, each figure with where it came from: the arch
and its exact counts, predicted latency and energy per device (LUT, predictor file or
analytic estimate, with their metadata), latency measured here, inherited accuracy,
the budgets it meets, fine-tuning results, and provenance (run id, seeds, versions).
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.atomic import write_atomic
from nas.errors import NasError
from nas.export.bundle import CARD_FILE, CARD_MD, DAMAGED
from nas.export.latency import measured_ms
from nas.jsonfile import read_json

SCHEMA = "hwnas.model-card/1"


CARD_LIBRARIES = ("hwnas", "python", "torch", "onnx", "onnxruntime", "safetensors", "numpy")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def measured_figures(card: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What the card measured itself, under the search's metric names: the latency on this
    machine and the accuracy inherited from the supernet (budgets fall back to these)."""
    out: dict[str, dict[str, Any]] = {}
    measured = card.get("measured_latency")
    if measured:
        out[f"latency@{measured['device']}"] = {"value": measured_ms(measured), "unit": "ms",
                                                "source": "measured at export"}
    accuracy = card.get("accuracy")
    if accuracy:
        out["accuracy"] = {"value": accuracy["value"], "unit": "fraction", "source": accuracy["source"]}
    return out


def write_card(out: Path, card: dict[str, Any]) -> None:
    write_atomic(Path(out) / CARD_FILE, json.dumps(card, indent=2) + "\n")
    write_atomic(Path(out) / CARD_MD, render(card))


def read_card(out: Path) -> dict[str, Any]:
    card = read_json(Path(out) / CARD_FILE, f"{Path(out) / CARD_FILE}: missing; the export has no model card; export again",
                     damaged=DAMAGED)
    if card.get("schema") != SCHEMA:
        raise NasError(f"{Path(out) / CARD_FILE}: schema {card.get('schema')!r} is not {SCHEMA!r}; export again")
    return card


def _num(value: float, unit: str) -> str:
    from nas.search.units import format_quantity

    return format_quantity(value, unit)


def _int8_lines(q: Mapping[str, Any] | None) -> list[str]:
    if not q:
        return []
    f, cal, ver = q["float"], q["calibration"], q["verification"]

    def ms(value):
        return f"{value:.4g} ms" if value else "not measured"

    acc = q.get("accuracy")
    lines = ["", "## int8", "",
             (f"`{q['file']}` (quantization parameters: `{q['params_file']}`): int8 layers "
              f"{', '.join(str(x['index']) for x in q['layers'])} of the network "
              f"({'; '.join(x['key'] for x in q['layers'])}). Post-training quantization, {cal['method']} ranges "
              f"on {cal['images']} {cal['source']}{', 7-bit weights (reduce_range)' if cal['reduce_range'] else ''}."),
             "", "| | float32 (`model.onnx`) | int8 |", "|---|---:|---:|",
             (f"| accuracy | {f['accuracy']:.4f} | {acc['value']:.4f} |" if acc and f.get("accuracy") is not None
              else "| accuracy | - | - |"),
             f"| measured latency | {ms(f['measured_latency_ms'])} "
             f"| {ms(measured_ms(q['measured_latency']) if q.get('measured_latency') else None)} |",
             f"| size on disk | {_num(f['size_bytes'], 'bytes')} | {_num(q['size_bytes'], 'bytes')} |", "",
             (f"Verified before writing: onnxruntime and the torch integer simulation agree on top-1 for "
              f"{ver['top1_agreement']:.2%} of {ver['images']} {ver['inputs']} (max logit difference "
              f"{ver['max_logit_diff']:.3g}).")]
    return lines


def render(card: Mapping[str, Any]) -> str:
    """MODEL_CARD.md from card.json."""
    c = card["costs"]
    versions, created = card["provenance"]["versions"], card["provenance"]["created"]
    shape = " x ".join(map(str, card["input"]["shape"][1:]))
    lines = [f"# Model card: {card['space']} arch {card['arch_id']}", "",
             (f"Exported by hwnas {versions['hwnas']} on {created}. Load it with `nas.export.load(FOLDER)` "
              "(weights: model.safetensors) or run model.onnx in any ONNX runtime."), "",
             "## Architecture", "",
             f"Space `{card['space']}`, input {shape} (batch axis dynamic), {card['classes']} classes.", "",
             "```json", json.dumps(card["arch"], sort_keys=True), "```", "",
             "| params | MACs | peak activation memory | weight bytes (BN folded) |", "|---:|---:|---:|---:|",
             (f"| {c['params']:,} | {c['macs']:,} | {_num(c['peak_activation_bytes'], 'bytes')} | "
              f"{_num(c['weight_bytes'], 'bytes')} |"), ""]
    pre = card["input"].get("preprocessing")
    lines += ["Preprocessing: " + (f"{pre['scale']}; mean {pre['mean']}, std {pre['std']} ({pre['dataset']})"
                                   if pre else "none recorded (weights not trained by hwnas)"), ""]
    o = card["onnx"]
    lines += ["## ONNX", "", (f"opset {o['opset']}, verified with onnxruntime: max abs difference from PyTorch "
                              f"{o['max_abs_diff']:.2e} (tolerance {o['tolerance']:g}) on random inputs at batch "
                              f"sizes {', '.join(map(str, o['batches']))}."), ""]
    lines += ["## Accuracy", ""]
    acc = card.get("accuracy")
    lines.append(f"- supernet-inherited, after BN recalibration: **{acc['value']:.4f}** on the {acc['split']} split "
                 f"({acc['source']})" if acc else "- no supernet given: weights are freshly initialised (untrained)")
    ft = card.get("finetune")
    if ft:
        lines.append(f"- fine-tuned {ft['epochs']} epochs on {ft['data']}"
                     f"{' with distillation from ' + ft['distill_from'] if ft.get('distill_from') else ''}: "
                     f"**{ft['accuracy']:.4f}** on the {ft['split']} split (before: {ft['accuracy_before']:.4f})")
        q = ft.get("int8")
        if q:
            acc = f"{q['accuracy']['value']:.4f}" if q.get("accuracy") else "not measured"
            lines.append(f"- its int8 model `{q['file']}`{' (fine-tuned quantization-aware)' if ft['settings'].get('qat') else ''}: "
                         f"accuracy {acc} in onnxruntime, top-1 agreement with the torch simulation "
                         f"{q['verification']['top1_agreement']:.2%}")
    lines += _int8_lines(card.get("int8"))
    lines += ["", "## Latency and energy", "", "| device | metric | value | source |", "|---|---|---:|---|"]
    m = card.get("measured_latency")
    if m:
        lines.append(f"| {m['device']} (this machine, {m['cpu']}) | latency, measured | {measured_ms(m):.4g} ms "
                     f"({m.get('statistic', 'median')}; median {m['median_ms']:.4g}, p10 {m['p10_ms']:.4g}, p90 {m['p90_ms']:.4g}) | onnxruntime, {m['runtime']['threads']} thread(s), "
                     f"batch {m['runtime']['batch']} |")
    for p in card["predictions"]:
        src = p["source"]
        if p["estimate"]:
            over = "measured" if src["latency_source"]["source"].startswith("measured") else "LUT"
            label = f"ESTIMATE: analytic power model over the {over} latency"
        else:
            label = f"{src['kind']} `{src['file']}`" + (f" (stand-in: {src['from_device']}'s)" if src.get("from_device") else "")
        lines.append(f"| {p['device'] or '-'} | {p['metric']} | {p['value']:.4g} {p['unit']} | {label} |")
    if card.get("skipped"):
        lines += ["", "Not predicted: " + "; ".join(
            f"{s.get('device') or s.get('source')} {s.get('metric', '')}: {s['reason']}".replace("  ", " ")
            for s in card["skipped"])]
    if card.get("budgets"):
        lines += ["", "## Budgets", "", "| budget | value | met | source |", "|---|---:|---|---|"]
        for b in card["budgets"]:
            value = _num(b["value"], b["unit"]) if "value" in b else "-"
            met = {True: "yes", False: "**no**", None: "unknown"}[b["met"]]
            lines.append(f"| `{b['budget']}` | {value} | {met} | {b.get('source') or b.get('reason', '')} |")
    if card.get("pruning"):
        lines += pruning_lines(card["pruning"])
    p = card["provenance"]
    lines += ["", "## Provenance", "", f"- search run: {p.get('search_run') or '-'}",
              *(f"- re-measured on the search's front before export: {m} {v['measured_ms']:.4g} ms "
                f"(predicted {v['predicted_ms']:.4g} ms)" for m, v in (p.get("verified_latency") or {}).items()),
              f"- seeds: {json.dumps(p.get('seeds', {}), sort_keys=True)}",
              f"- weights: {p.get('weights')}",
              f"- library versions: {', '.join(f'{k} {v}' for k, v in p['versions'].items())}", ""]
    return "\n".join(lines)


def pruning_lines(pruning: Mapping[str, Any]) -> list[str]:
    """The card's account of a prune (nas.prune): parent, rounds, predicted vs measured."""
    parent = pruning["parent"]
    lines = ["", "## Pruning", "",
             f"Pruned from `{parent['folder']}` (arch.json SHA-256 {parent['arch_sha256']}, {parent['layers']} layers, "
             f"val accuracy {parent['accuracy']:.4f}) to {pruning['layers']} layers in {len(pruning['rounds'])} rounds "
             f"({pruning['blocks_profiled']} blocks profiled on demand, {pruning['prune_seconds']:.0f} s); budgets "
             f"{'met' if pruning['met'] else '**not met**'}. LUT latency {pruning['parent_predicted_ms']:.4g} -> "
             f"{pruning['predicted_ms']:.4g} ms" + (f", measured {pruning['measured_lut_scale_ms']:.4g} ms on the LUT's "
                                                      "scale" if pruning.get("measured_lut_scale_ms") else "") + ".", "",
             "| round | pruned | change | cost | accuracy (proxy, tuned) |", "|---:|---|---|---:|---|"]
    for r in pruning["rounds"]:
        lines.append(f"| {r['round']} | {r['unit']} | {r['change']} | {_num(r['cost_before'], r['unit_of_cost'])} -> "
                     f"{_num(r['cost_after'], r['unit_of_cost'])} | {r['accuracy']:.4f}, {r['accuracy_tuned']:.4f} |")
    checks = pruning.get("measurement_checks") or []
    if checks:
        lines += ["", "Latency measured end to end with the LUT's protocol and yardstick after the rounds met the "
                      "budget on the LUT; a miss corrects the LUT by measured / predicted and pruning goes on. "
                      + ("The budget is met on measurement." if pruning.get("measured_met") else
                         "**The budget is not met on measurement: pruning could go no further.**"), "",
                  "| check | after round | LUT ms | correction | LUT target ms | measured ms | bound ms | met |",
                  "|---:|---:|---:|---:|---:|---:|---:|---|"]
        for c in checks:
            lines.append(f"| {c['check']} | {c['after_round']} | {c['predicted_ms']:.4g} | {c['correction']:.4f} | "
                         f"{c['target_ms']:.4g} | {c['measured_ms']:.4g} | {c['bound_ms']:.4g} | "
                         f"{'yes' if c['met'] else 'no'} |")
    return lines
