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
