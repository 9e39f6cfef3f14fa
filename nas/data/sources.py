"""Readers for the image datasets hwnas trains on, all from local files (no downloads).

Each reader returns labelled uint8 images as N x C x H x W tensors per split it finds
("train", and "val"/"test" where the source defines them). Sources:

- ``digits``: the 8x8 handwritten digits bundled with scikit-learn (1,797 real scans),
  the built-in default so that a fresh install can train without internet access;
- a CIFAR-10/100 folder in the standard python-pickle batch format;
- an image folder with one subfolder per class (read with PIL);
- a ``.npz`` file of arrays.

CIFAR batches are pickles, so they are read with an unpickler that can only rebuild
plain containers and numpy arrays: a doctored file cannot run code.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nas.errors import DataError, NasError

LAYOUTS = ("'digits' (built in), a CIFAR-10/100 python folder (data_batch_1..5 + test_batch, or train + test), "
           "an image folder (one subfolder per class, optionally inside train/ val/ test/) or a .npz file "
           "(x_train, y_train [, x_val, y_val] [, x_test, y_test], or x, y)")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")


@dataclass(frozen=True)
class LabelledImages:
    """uint8 images (N x C x H x W) with int64 labels (N)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray | torch.Tensor) -> LabelledImages:
        index = torch.as_tensor(index, dtype=torch.int64)
        return LabelledImages(self.images[index], self.labels[index])


@dataclass(frozen=True)
class RawDataset:
    """What a source holds: its splits (always "train"), class count and a name."""

    name: str
    classes: int
    splits: dict[str, LabelledImages]


def read_source(source: str, resolution: int) -> RawDataset:
    """The dataset named by `source`: 'digits' or a local path (see LAYOUTS).

    `resolution` only matters for image folders, whose pictures differ in size and are
    scaled (shorter side) and centre-cropped to it while they are read.
    """
    if source == "digits":
        return read_digits()
    kind, path = check_source(source)
    if kind == "npz":
        return read_npz(path)
    if kind == "cifar":
        return read_cifar(path)
    return read_folder(path, resolution)


def check_source(source: str) -> tuple[str, Path]:
    """("npz" | "cifar" | "folder", path) of a dataset path, from its layout alone (no
    image is read), so that a config naming a folder of something else (`/etc`) is
    refused when it is checked, not after a run has started."""
    path = Path(source).expanduser()
    if not path.exists():
        raise NasError(f"dataset path {path} does not exist; --data takes {LAYOUTS}")
    if path.is_file():
        if path.suffix != ".npz":
            raise NasError(f"dataset file {path} is not a .npz file; --data takes {LAYOUTS}")
        return "npz", path
    for folder in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if any((folder / f).is_file() for f in CIFAR10_FILES + CIFAR100_FILES):
            return "cifar", folder
    split_dirs = [s for s in ("train", "val", "test") if (path / s).is_dir()]
    if split_dirs and "train" not in split_dirs:
        raise NasError(f"{path}: has {', '.join(split_dirs)}/ but no train/ folder; expected {LAYOUTS}")
    train = path / "train" if split_dirs else path
    try:
        classes = [p for p in train.iterdir() if p.is_dir()]
        bare = [c.name for c in classes if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in c.iterdir())]
    except OSError as exc:
        raise DataError(f"{train}: cannot read ({exc.strerror}); --data takes {LAYOUTS}") from None
    if not classes:
        raise NasError(f"{train}: no class subfolders; expected {LAYOUTS}")
    if bare:
        raise DataError(f"{train}: class folder {bare[0]!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                        f"expected {LAYOUTS}")
    return "folder", path


# ----------------------------------------------------------------------------- digits
def read_digits() -> RawDataset:
    """scikit-learn's bundled 8x8 digits (grey levels 0..16) as one 'train' split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawDataset("digits", 10, {"train": _labelled(images, bunch.target, "digits")})


# ----------------------------------------------------------------------------- CIFAR
class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes and numpy arrays only; anything else is refused.
    (`_codecs.encode` turns text into bytes: protocol-2 pickles store bytes that way.)"""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":  # files written by numpy 1.x
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    layout = "a dict with b'data' (N x 3072 uint8) and b'labels' or b'fine_labels'"
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OverflowError) as exc:
        raise DataError(f"{path}: not a CIFAR python batch ({exc}); expected {layout}") from None
    except MemoryError:  # an allowed array rebuilt with an absurd shape
        raise DataError(f"{path}: not a CIFAR python batch (it asks for an array too large for memory); "
                        f"expected {layout}") from None
    if not isinstance(batch, dict):
        raise NasError(f"{path}: not a CIFAR python batch; expected {layout}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    labels = batch.get("labels", batch.get("fine_labels"))
    data = batch.get("data")
    if labels is None or not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise NasError(f"{path}: not a CIFAR python batch; expected {layout}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels)


def read_cifar(folder: Path) -> RawDataset:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) python batches."""
    if (folder / "data_batch_1").is_file():
        missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
        if missing:
            raise NasError(f"{folder}: CIFAR-10 folder lacks {', '.join(missing)}; expected data_batch_1..5 and test_batch")
        parts = [_cifar_batch(folder / f) for f in CIFAR10_FILES[:5]]
        train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        test = _cifar_batch(folder / "test_batch")
        name = "cifar10"
    else:
        missing = [f for f in CIFAR100_FILES if not (folder / f).is_file()]
        if missing:
            raise NasError(f"{folder}: CIFAR folder lacks {', '.join(missing)}; expected data_batch_1..5 + test_batch "
                           "(CIFAR-10) or train + test (CIFAR-100)")
        train, test = _cifar_batch(folder / "train"), _cifar_batch(folder / "test")
        name = "cifar100"
    splits = {"train": _labelled(*train, str(folder)), "test": _labelled(*test, str(folder))}
    classes = max(int(s.labels.max()) for s in splits.values()) + 1
    return RawDataset(name, classes, splits)


# ----------------------------------------------------------------------------- image folders
def read_folder(root: Path, resolution: int) -> RawDataset:
    """root/<class>/*.png..., or root/train|val|test/<class>/...; classes in name order
    (the layout is checked by check_source first)."""
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()} or {"train": root}
    classes = sorted(p.name for p in split_dirs["train"].iterdir() if p.is_dir())  # check_source saw them
    splits = {}
    for split, folder in split_dirs.items():
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if found != classes:
            raise NasError(f"{folder}: class folders {found} differ from train/'s {classes}")
        files = [(f, label) for label, c in enumerate(classes) for f in sorted((folder / c).iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise NasError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders; expected {LAYOUTS}")
        images = np.stack([_read_image(f, resolution) for f, _ in _progress(files, f"reading {folder.name}")])
        splits[split] = _labelled(images, np.array([label for _, label in files]), str(folder))
    return RawDataset(root.name, len(classes), splits)


def _read_image(path: Path, resolution: int) -> np.ndarray:
    """An RGB image scaled so its shorter side is `resolution`, centre-cropped square, C x H x W."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise NasError("reading an image folder needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = resolution / min(img.size)
            w, h = max(resolution, round(img.width * scale)), max(resolution, round(img.height * scale))
            img = img.resize((w, h), Image.BILINEAR)
            left, top = (w - resolution) // 2, (h - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as exc:
        raise NasError(f"{path}: not a readable image ({exc})") from None


def _progress(items: list, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", leave=False, disable=len(items) < 2000)


# ----------------------------------------------------------------------------- npz
def read_npz(path: Path) -> RawDataset:
    """Arrays x_train/y_train (+ x_val/y_val, x_test/y_test) or x/y; images uint8 (0..255) or
    float (0..1), N x H x W, N x H x W x C or N x C x H x W with C = 1 or 3; labels 0..K-1."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise NasError(f"{path}: not a readable .npz file ({exc}); expected {LAYOUTS}") from None
    pairs = {"train": ("x_train", "y_train"), "val": ("x_val", "y_val"), "test": ("x_test", "y_test")}
    if "x" in arrays and "x_train" not in arrays:
        pairs = {"train": ("x", "y")}
    splits = {}
    for split, (xk, yk) in pairs.items():
        if (xk in arrays) != (yk in arrays):
            raise NasError(f"{path}: has {xk if xk in arrays else yk} without {yk if xk in arrays else xk}")
        if xk in arrays:
            splits[split] = _labelled(_to_nchw(arrays[xk], f"{path}:{xk}"), arrays[yk], f"{path}:{yk}")
    if "train" not in splits:
        raise NasError(f"{path}: holds {sorted(arrays)}; expected x_train + y_train (+ x_val, y_val, x_test, y_test) or x + y")
    classes = max(int(s.labels.max()) for s in splits.values()) + 1
    return RawDataset(path.stem, classes, splits)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise NasError(f"{where}: images of shape {x.shape}; expected N x H x W, N x H x W x C or N x C x H x W, C = 1 or 3")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{where}: images hold NaN or infinite values; they would train to a NaN loss")
    if not np.issubdtype(x.dtype, np.floating) or x.size and (x.min() < 0 or x.max() > 1):
        raise NasError(f"{where}: images must be uint8 (0..255) or float in 0..1, got {x.dtype}")
    return np.rint(x * 255).astype(np.uint8)


def _labelled(images: np.ndarray, labels: np.ndarray, where: str) -> LabelledImages:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise NasError(f"{where}: labels must be one integer per image ({len(images)}), got shape {labels.shape}")
    if len(labels) == 0 or labels.min() < 0:
        raise NasError(f"{where}: labels must be 0..K-1 and the split must not be empty")
    return LabelledImages(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)))
