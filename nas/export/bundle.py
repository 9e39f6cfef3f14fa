"""The export folder: its file names, arch.json, and how the folder is written and read.

    OUT/arch.json          space name (+ file), space fingerprint, arch, the arch's LayerSpecs, input, file hashes
    OUT/model.safetensors  weights (tensors only: nothing in it can run code)
    OUT/model.onnx         the same network for deployment runtimes, verified with onnxruntime
    OUT/model_int8.onnx    archs with int8 layers: the int8 QDQ model, verified against the torch
                           integer simulation (nas.export.int8); OUT/quant_int8.npz its scales,
                           zero points, int8 weights and int32 biases
    OUT/card.json          the model card as data; OUT/MODEL_CARD.md the same for people
    OUT/finetune/          checkpoints of `hwnas finetune`; finetuned.safetensors/.onnx when done
                           (and finetuned_int8.onnx + finetuned_quant_int8.npz for int8 archs)

A whole export is written into a temporary sibling folder and renamed into place, so
OUT is either the previous export or the complete new one. Every file is checked
against the SHA-256 arch.json records before use, so a truncated or altered file is
an error rather than a silently different model.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nas.atomic import write_atomic
from nas.errors import DataError, NasError
from nas.jsonfile import read_json
from nas.space.layers import LayerSpec

SCHEMA = "hwnas.export/1"
ARCH_FILE, CARD_FILE, CARD_MD = "arch.json", "card.json", "MODEL_CARD.md"
DAMAGED = "the file is damaged, export again"
WEIGHTS_FILE, ONNX_FILE = "model.safetensors", "model.onnx"
FINETUNED_WEIGHTS, FINETUNED_ONNX, FINETUNE_DIR = "finetuned.safetensors", "finetuned.onnx", "finetune"
# the int8 model of the fine-tuned weights (archs with int8 layers), re-exported by nas.export.int8
FINETUNED_INT8_ONNX, FINETUNED_INT8_PARAMS = "finetuned_int8.onnx", "finetuned_quant_int8.npz"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def layers_hash(layers: Sequence[LayerSpec]) -> str:
    """Hash of one network's blocks: equal hashes build equal modules."""
    return _digest("\n".join(s.key for s in layers))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_record(out: Path) -> dict[str, Any]:
    """arch.json of an export folder, checked for the fields every reader relies on."""
    out = Path(out)
    if not out.is_dir():
        raise NasError(f"{out}: no such export folder; create one with 'hwnas export --space S --arch A -o {out}'")
    record = read_json(out / ARCH_FILE, f"{out / ARCH_FILE}: missing; not an hwnas export folder (hwnas export writes "
                       "arch.json)", damaged=DAMAGED)
    if record.get("schema") != SCHEMA:
        raise DataError(f"{out / ARCH_FILE}: schema {record.get('schema')!r} is not {SCHEMA!r}")
    for key, kind in (("space", str), ("arch", dict), ("layers", list), ("layers_hash", str), ("files", dict),
                      ("input", dict)):
        if not isinstance(record.get(key), kind):
            raise DataError(f"{out / ARCH_FILE}: field {key!r} is missing or not a {kind.__name__}; export again")
    return record


def checked_file(out: Path, record: dict[str, Any], name: str) -> Path:
    """OUT/name after checking it against the hash arch.json records for it."""
    path = Path(out) / name
    expected = record["files"].get(name)
    if expected is None:
        raise DataError(f"{out / ARCH_FILE} records no file {name!r}")
    if not path.is_file():
        raise DataError(f"{path}: missing from the export; export again")
    if file_sha256(path) != expected:
        raise DataError(f"{path}: damaged or changed since export (SHA-256 differs from {ARCH_FILE}); export again")
    return path


def record_file(out: Path, record: dict[str, Any], name: str) -> None:
    """Enter OUT/name's hash into the record (the caller writes arch.json)."""
    record["files"][name] = file_sha256(Path(out) / name)


def write_record(folder: Path, files: Sequence[str], *, space: str, space_file: str | None,
                 space_fingerprint: str | None, arch: dict[str, Any], arch_id: str, layers: Sequence[LayerSpec],
                 input: dict[str, Any], classes: int, created: str, **extra: Any) -> dict[str, Any]:
    """Write FOLDER/arch.json for a network written there, and return it: the one place an
    export record is built, for a searched arch (nas.export.export) and a pruned network
    (nas.prune.bundle) alike. `files` (already in FOLDER) are entered with their SHA-256;
    `extra` fields (a prune's `pruned`) follow the common ones."""
    record = {"schema": SCHEMA, "space": space, "space_file": space_file, "space_fingerprint": space_fingerprint,
              "arch": dict(arch), "arch_id": arch_id, "layers": [s.to_dict() for s in layers],
              "layers_hash": layers_hash(layers), "input": input, "classes": classes, "files": {}, "created": created,
              **extra}
    for name in files:
        record_file(folder, record, name)
    write_json(Path(folder) / ARCH_FILE, record)
    return record


@contextmanager
def staged_folder(out: Path, replace: bool) -> Iterator[Path]:
    """A temporary sibling folder to write a whole export into; it replaces `out` when the
    block succeeds and vanishes when it fails. An existing non-empty `out` needs `replace`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NasError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not replace:
        raise NasError(f"{out} is not empty; pass --force to replace it or choose another -o folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes folders private; an export is meant to be shared
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
