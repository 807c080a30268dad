# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MedMNISTDataset: the shipped BreastMNIST copy, the real RetinaMNIST file, synthetic files in
MedMNIST's npz layout, and clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_medmnist_npz

from monai_calib.data import MedMNISTDataset, default_medmnist_root, medmnist_info

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "medmnist"


def test_shipped_breastmnist_is_the_official_file():
    path = Path(default_medmnist_root()) / "breastmnist.npz"
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    import medmnist

    assert md5 == medmnist.INFO["breastmnist"]["MD5"]


@pytest.mark.parametrize("split,n", [("train", 546), ("val", 78), ("test", 156)])
def test_shipped_breastmnist_items_match_the_arrays(split, n):
    ds = MedMNISTDataset("breastmnist", split)
    raw = np.load(Path(default_medmnist_root()) / "breastmnist.npz")
    assert len(ds) == n == len(raw[f"{split}_labels"])
    for i in (0, n // 2, n - 1):
        item = ds[i]
        assert item["image"].shape == (1, 28, 28) and item["image"].dtype == np.float32
        np.testing.assert_allclose(item["image"][0], raw[f"{split}_images"][i] / 255.0, rtol=1e-6)
        assert int(item["label"]) == int(raw[f"{split}_labels"][i, 0])
        assert item["label"].dtype == torch.long


@pytest.mark.skipif(not (SHARED / "retinamnist.npz").is_file(), reason="shared data not present")
def test_real_retinamnist_rgb_channels_first():
    ds = MedMNISTDataset("retinamnist", "val", root=str(SHARED))
    raw = np.load(SHARED / "retinamnist.npz")
    assert len(ds) == 120 and ds.num_classes == 5 and ds.num_channels == 3
    np.testing.assert_allclose(
        ds[3]["image"], np.moveaxis(raw["val_images"][3], -1, 0) / 255.0, rtol=1e-6
    )


def test_multilabel_flag_gives_float_multi_hot(tmp_path):
    write_medmnist_npz(tmp_path, "chestmnist", sizes=(6, 3, 3), num_classes=14, multi_label=True)
    ds = MedMNISTDataset("chestmnist", "train", root=str(tmp_path))
    item = ds[0]
    assert item["label"].shape == (14,) and item["label"].dtype == torch.float32
    assert medmnist_info("chestmnist")["multi_label"] is True


def test_larger_size_file_name_and_as_rgb(tmp_path):
    write_medmnist_npz(tmp_path, "breastmnist", sizes=(4, 2, 2), image_size=64)
    ds = MedMNISTDataset("breastmnist", "test", root=str(tmp_path), size=64, as_rgb=True)
    assert ds[1]["image"].shape == (3, 64, 64)
    np.testing.assert_array_equal(ds[1]["image"][0], ds[1]["image"][2])


def test_transform_is_applied_to_the_dict(tmp_path):
    write_medmnist_npz(tmp_path, "breastmnist", sizes=(4, 2, 2))
    ds = MedMNISTDataset(
        "breastmnist", "val", root=str(tmp_path), transform=lambda d: {**d, "seen": True}
    )
    assert ds[0]["seen"] is True


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dataset_flag": "nosuchmnist"}, "breastmnist"),
        ({"split": "training"}, "'train', 'val', 'test'"),
        ({"size": 32}, r"\[28, 64, 128, 224\]"),
        ({"root": "/nonexistent/folder"}, "does not exist"),
    ],
)
def test_bad_options_name_the_valid_choices(kwargs, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        MedMNISTDataset(**kwargs)


def test_missing_file_names_it_and_lists_what_is_there(tmp_path):
    write_medmnist_npz(tmp_path, "breastmnist", sizes=(4, 2, 2))
    with pytest.raises(FileNotFoundError, match=r"retinamnist\.npz.*breastmnist\.npz"):
        MedMNISTDataset("retinamnist", root=str(tmp_path))


def _rewrite(path: str, **arrays: np.ndarray) -> None:
    """Replace some arrays of a MedMNIST npz file, keeping the others."""
    with np.load(path) as d:
        data = {k: d[k] for k in d.files}
    data.update(arrays)
    np.savez_compressed(path, **data)


def _labels(values, dtype=np.uint8) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(-1, 1)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("train_labels", _labels([0, 0.5, 1, 1], np.float32), r"train_labels.*integer.*0\.5"),
        ("train_labels", _labels([0, 1, 2, 1]), r"train_labels.*\[0, 2\).*2"),
        ("train_labels", _labels([0, -1, 1, 1], np.int64), r"train_labels.*\[0, 2\).*-1"),
        ("train_labels", np.zeros((4, 2), np.uint8), r"train_labels.*\(4, 1\).*\(4, 2\)"),
        ("train_images", np.full((4, 28, 28), 1000.0, np.float32), r"train_images.*uint8.*float32"),
        ("train_images", np.zeros((4, 20, 20), np.uint8), r"train_images.*\(4, 28, 28\).*20, 20"),
        ("train_images", np.zeros((4, 28, 28, 3), np.uint8), r"train_images.*\(4, 28, 28\)"),
        ("train_images", np.full((4, 28, 28), 300, np.int32), r"train_images.*\[0, 255\].*300"),
    ],
)
def test_bad_contents_name_the_file_key_and_value(tmp_path, key, value, match):
    path = write_medmnist_npz(tmp_path, "breastmnist", sizes=(4, 2, 2))
    _rewrite(path, **{key: value})
    with pytest.raises(ValueError, match=match) as info:
        MedMNISTDataset("breastmnist", "train", root=str(tmp_path))
    assert path in str(info.value)
    MedMNISTDataset("breastmnist", "val", root=str(tmp_path))  # checked when its split is opened


def test_empty_split_is_an_error(tmp_path):
    path = write_medmnist_npz(tmp_path, "breastmnist", sizes=(4, 2, 2))
    _rewrite(path, test_images=np.zeros((0, 28, 28), np.uint8), test_labels=_labels([]))
    with pytest.raises(ValueError, match=r"test split .* is empty") as info:
        MedMNISTDataset("breastmnist", "test", root=str(tmp_path))
    assert path in str(info.value)


def test_multilabel_values_must_be_zero_or_one(tmp_path):
    path = write_medmnist_npz(
        tmp_path, "chestmnist", sizes=(4, 2, 2), num_classes=14, multi_label=True
    )
    bad = np.zeros((4, 14), np.uint8)
    bad[2, 5] = 2
    _rewrite(path, train_labels=bad)
    with pytest.raises(ValueError, match=r"train_labels.*0 or 1.*2"):
        MedMNISTDataset("chestmnist", "train", root=str(tmp_path))
    _rewrite(path, train_labels=np.zeros((4, 13), np.uint8))
    with pytest.raises(ValueError, match=r"train_labels.*\(4, 14\).*\(4, 13\)"):
        MedMNISTDataset("chestmnist", "train", root=str(tmp_path))


def test_integer_valued_float_labels_and_flat_labels_are_accepted(tmp_path):
    path = write_medmnist_npz(tmp_path, "breastmnist", sizes=(4, 2, 2))
    _rewrite(path, train_labels=_labels([0, 1, 1, 0], np.float64))
    assert [int(d["label"]) for d in MedMNISTDataset("breastmnist", root=str(tmp_path))] == [
        0, 1, 1, 0,
    ]  # fmt: skip
    _rewrite(path, train_labels=np.asarray([1, 0, 0, 1], np.int64))
    assert int(MedMNISTDataset("breastmnist", root=str(tmp_path))[0]["label"]) == 1
