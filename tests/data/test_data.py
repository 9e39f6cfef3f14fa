"""Datasets from local files: digits, CIFAR batches, image folders, .npz; splits, augmentation, batches."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data import Augment, BatchPlan, load_dataset
from nas.errors import NasError


def _digit_arrays(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.rint(d.images[:n] * 255 / 16).astype(np.uint8), d.target[:n]


# ----------------------------------------------------------------------------- digits and splits
def test_digits_are_upsampled_real_images_with_stratified_deterministic_splits():
    data = load_dataset("digits", 32, 3)
    assert data.classes == 10 and data.resolution == 32
    sizes = {s: len(data.split(s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.2 * 1797, abs=10)
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    assert torch.equal(data.train.images[:, 0], data.train.images[:, 2])  # grey copied to every channel
    for split in ("val", "test"):  # every class present in proportion
        counts = torch.bincount(data.split(split).labels, minlength=10)
        assert counts.min() >= 0.6 * counts.float().mean()
    again = load_dataset("digits", 32, 3)
    assert torch.equal(again.test.images, data.test.images) and torch.equal(again.val.labels, data.val.labels)
    other = load_dataset("digits", 32, 3, split_seed=1)
    assert not torch.equal(other.test.labels, data.test.labels)
    x = data.normalize(data.to_float(data.train.images))
    assert x.mean().abs() < 0.05 and (x.std((0, 2, 3)) - 1).abs().max() < 0.05


def test_noise_makes_a_fixed_harder_copy_of_every_split():
    clean = load_dataset("digits", 16, 1)
    noisy = load_dataset("digits", 16, 1, noise=0.5)
    assert torch.equal(clean.test.labels, noisy.test.labels)
    diff = (clean.test.images.float() - noisy.test.images.float()).abs().mean()
    assert diff > 40  # std 0.5 of the range, clipped
    assert torch.equal(noisy.test.images, load_dataset("digits", 16, 1, noise=0.5).test.images)


# ----------------------------------------------------------------------------- CIFAR
def _write_batch(path, images: np.ndarray, labels: np.ndarray, key: bytes = b"labels") -> None:
    with open(path, "wb") as fh:
        pickle.dump({b"data": images.reshape(len(images), -1), key: labels.tolist(), b"batch_label": b"x"}, fh, protocol=2)


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [(rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 20)) for _ in range(6)]
    for i, (x, y) in enumerate(batches[:5]):
        _write_batch(folder / f"data_batch_{i + 1}", x, y)
    _write_batch(folder / "test_batch", *batches[5])
    data = load_dataset(str(tmp_path), 32, 3, val_fraction=0.1)
    assert data.name == "cifar10" and data.classes == 10
    assert len(data.test) == 20 and torch.equal(data.test.images, torch.from_numpy(batches[5][0]))
    assert len(data.train) + len(data.val) == 100
    seen = {bytes(x.numpy()) for x in torch.cat([data.train.images, data.val.images])}
    assert seen == {bytes(x) for b in batches[:5] for x in b[0]}


def test_cifar100_train_and_test_files(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        _write_batch(tmp_path / name, rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8),
                     np.arange(30) % 3 + (name == "test") * 87, key=b"fine_labels")
    data = load_dataset(str(tmp_path), 16, 3)
    assert data.name == "cifar100" and data.classes == 90 and data.train.images.shape[-1] == 16


def test_cifar_reader_refuses_pickles_that_would_run_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "train", "wb") as fh:
        pickle.dump({b"data": Evil(), b"fine_labels": [0]}, fh)
    (tmp_path / "test").write_bytes((tmp_path / "train").read_bytes())
    with pytest.raises(NasError, match="not a CIFAR python batch"):
        load_dataset(str(tmp_path), 32)
    assert not marker.exists()


def test_malformed_cifar_batch_names_the_expected_layout(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(NasError, match="data_batch_1..5 and test_batch"):
        load_dataset(str(tmp_path), 32)
    for i in range(2, 6):
        (tmp_path / f"data_batch_{i}").write_bytes((tmp_path / "data_batch_1").read_bytes())
    (tmp_path / "test_batch").write_bytes((tmp_path / "data_batch_1").read_bytes())
    with pytest.raises(NasError, match=r"N x 3072 uint8"):
        load_dataset(str(tmp_path), 32)


# ----------------------------------------------------------------------------- image folders
def _write_pngs(folder, classes: dict[str, list[tuple[int, int, int]]], size=(12, 10)) -> None:
    from PIL import Image

    for name, colours in classes.items():
        (folder / name).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", size, colour).save(folder / name / f"{i}.png")


def test_image_folder_with_one_subfolder_per_class(tmp_path):
    _write_pngs(tmp_path, {"cat": [(250, 0, 0)] * 6, "dog": [(0, 0, 250)] * 6})
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    data = load_dataset(str(tmp_path), 8, 3, test_fraction=0.34, val_fraction=0.25)
    assert data.classes == 2 and data.train.images.shape[1:] == (3, 8, 8)
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 12
    red = data.train.images[data.train.labels == 0].float().mean((0, 2, 3))
    assert red[0] > 200 and red[2] < 20  # class 0 is 'cat' (name order), red


def test_image_folder_with_predefined_splits(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        _write_pngs(tmp_path / split, {"a": [(10, 10, 10)] * n, "b": [(200, 200, 200)] * n}, size=(20, 30))
    data = load_dataset(str(tmp_path), 16, 1, val_fraction=0.25)
    assert len(data.test) == 4 and len(data.train) + len(data.val) == 8
    assert data.test.images.shape[1:] == (1, 16, 16)


def test_image_folder_errors_name_the_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasError, match="one subfolder per class"):
        load_dataset(str(tmp_path / "empty"), 8)
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.txt").write_text("")
    with pytest.raises(NasError, match="no images"):
        load_dataset(str(tmp_path / "noimg"), 8)
    _write_pngs(tmp_path / "split" / "test", {"a": [(0, 0, 0)]})
    with pytest.raises(NasError, match="no train/ folder"):
        load_dataset(str(tmp_path / "split"), 8)
    _write_pngs(tmp_path / "corrupt", {"a": [(0, 0, 0)], "b": [(9, 9, 9)]})
    (tmp_path / "corrupt" / "b" / "1.png").write_bytes(b"not a png")
    with pytest.raises(NasError, match=r"1.png: not a readable image"):
        load_dataset(str(tmp_path / "corrupt"), 8)
    _write_pngs(tmp_path / "mismatch" / "train", {"a": [(0, 0, 0)], "b": [(9, 9, 9)]})
    _write_pngs(tmp_path / "mismatch" / "test", {"a": [(0, 0, 0)]})
    with pytest.raises(NasError, match="differ from train/'s"):
        load_dataset(str(tmp_path / "mismatch"), 8)


# ----------------------------------------------------------------------------- npz
def test_npz_channels_last_uint8_with_test_split(tmp_path):
    x, y = _digit_arrays(200)
    rgb = np.repeat(x[..., None], 3, axis=3)
    np.savez(tmp_path / "d.npz", x_train=rgb[:150], y_train=y[:150], x_test=rgb[150:], y_test=y[150:])
    data = load_dataset(str(tmp_path / "d.npz"), 8, 3)
    assert len(data.test) == 50 and torch.equal(data.test.images[:, 1], torch.from_numpy(x[150:]))


def test_npz_float_images_in_one_array_are_split(tmp_path):
    x, y = _digit_arrays(200)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32) / 255, y=y)
    data = load_dataset(str(tmp_path / "d.npz"), 16, 3)
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 200
    assert data.train.images.shape[1:] == (3, 16, 16)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 8, 8, 5), np.uint8), "y": np.zeros(4, int)}, "C = 1 or 3"),
    ({"x": np.full((4, 8, 8), 3.0), "y": np.zeros(4, int)}, "float in 0..1"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, int)}, "one integer per image"),
    ({"images": np.zeros((4, 8, 8), np.uint8)}, "expected x_train"),
    ({"x_train": np.zeros((4, 8, 8), np.uint8)}, "without y_train"),
])
def test_malformed_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(NasError, match=message):
        load_dataset(str(tmp_path / "bad.npz"), 8)


def test_missing_or_unknown_paths_name_every_layout(tmp_path):
    with pytest.raises(NasError, match=r"does not exist.*digits.*CIFAR.*image folder.*\.npz"):
        load_dataset(str(tmp_path / "nope"), 8)
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(NasError, match="not a .npz file"):
        load_dataset(str(tmp_path / "data.csv"), 8)
    (tmp_path / "broken.npz").write_text("not a zip")
    with pytest.raises(NasError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "broken.npz"), 8)


# ----------------------------------------------------------------------------- augmentation and batches
def test_crop_and_flip_match_a_per_image_reference():
    x = torch.rand(6, 3, 9, 9)
    aug = Augment(crop_padding=2, flip=True)
    draw = aug.draw(np.random.default_rng(3), x.shape)
    out = aug.apply(x, draw)
    assert draw.flip.any() and not draw.flip.all()
    for n in range(6):
        ref = F.pad(x[n], (2, 2, 2, 2))[:, draw.dy[n]:draw.dy[n] + 9, draw.dx[n]:draw.dx[n] + 9]
        assert torch.equal(out[n], ref.flip(2) if draw.flip[n] else ref)


def test_augmenting_slices_equals_augmenting_the_whole_batch():
    x = torch.rand(8, 1, 6, 6)
    aug = Augment(crop_padding=1, flip=True, noise=0.1)
    draw = aug.draw(np.random.default_rng(0), x.shape)
    whole = aug.apply(x, draw)
    parts = torch.cat([aug.apply(x[s], draw.take(s)) for s in (slice(0, 3), slice(3, 8))])
    assert torch.equal(whole, parts)
    assert not torch.equal(Augment().apply(x, Augment().draw(np.random.default_rng(0), x.shape)), whole)


def test_batch_plan_splits_each_global_batch_over_processes_and_accumulation():
    single = BatchPlan(100, 24, seed=5, micro_batches=4)
    ranks = [BatchPlan(100, 24, seed=5, world=2, rank=r, micro_batches=4) for r in range(2)]
    order = single.order(3)
    assert np.array_equal(order, ranks[1].order(3)) and not np.array_equal(order, single.order(4))
    assert single.steps_per_epoch == 4 and single.micro_batch == 6 and (single.accumulate, ranks[0].accumulate) == (4, 2)
    batch = single.global_batch(order, 2)
    assert [batch[s].tolist() for s in single.local_slices()] == \
        [batch[s].tolist() for p in ranks for s in p.local_slices()]
    with pytest.raises(NasError, match="must divide"):
        BatchPlan(100, 10, seed=0, micro_batches=4)
    with pytest.raises(NasError, match="cannot be shared by 4 processes"):
        BatchPlan(100, 8, seed=0, world=4, micro_batches=2)
    with pytest.raises(NasError, match="exceeds"):
        BatchPlan(10, 16, seed=0)
