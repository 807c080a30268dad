# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The 3D organ segmentation bundle: configs resolve, metadata verifies, and one-epoch train /
evaluate / inference runs work for DiceCE, ML and CAML on synthetic NIfTI ellipsoid phantoms in
the Medical Segmentation Decathlon layout (dataset.json, imagesTr/, labelsTr/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_calib.bundles import overlays

BUNDLE = "organ_segmentation"
DEFAULTS = {
    "max_epochs": 1,
    "batch_size": 2,
    "num_samples": 1,
    "image_size": 16,
    "pixdim": [2.5, 2.5, 2.5],
    "num_test": 1,
    "num_val": 1,
    "seed": 0,
}
SHAPE = (32, 28, 24)


def write_msd_phantoms(root: Path, n: int = 5, seed: int = 0) -> None:
    """``n`` noisy ellipsoid "organ" phantoms as NIfTI, 2 mm voxels, with an MSD dataset.json.

    Every other volume is stored in LPS-like orientation (flipped first two axes, negative affine
    diagonal), so ``Orientationd("RAS")`` has work to do.
    """
    rng = np.random.RandomState(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    training = []
    for i in range(n):
        center = np.array(SHAPE) / 2 + rng.uniform(-3, 3, 3)
        radii = rng.uniform(5, 9, 3)
        label = (((grid - center) / radii) ** 2).sum(-1) <= 1.0
        image = 100.0 * label + rng.normal(0.0, 30.0, SHAPE) + 50.0
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        if i % 2:
            affine[0, 0] = affine[1, 1] = -2.0
        name = f"phantom_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "Phantom",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "organ"},
        "numTraining": n,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))


def test_the_three_overlays_exist():
    assert set(overlays(BUNDLE)) == {"dice_ce", "ml", "caml"}


def test_config_ids_users_override_exist(bundle):
    parser = bundle.parser(["train.json"])
    # own ids; the ids every bundle has: test_bundles_common.COMMON_IDS
    assert {"roi_size", "pixdim"} <= set(parser.get())
    assert os.path.isdir(parser.get_parsed_content("bundle_root"))
    assert parser.get_parsed_content("select_metric") == "dice"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("msd")
    write_msd_phantoms(root)
    return str(root)


def test_split_is_seeded_and_disjoint(bundle, data_root):
    parser = bundle.parser(["train.json"], **DEFAULTS, data_root=data_root)
    lists = parser.get_parsed_content("datalists")
    names = {k: [os.path.basename(d["image"]) for d in v] for k, v in lists.items()}
    assert [len(names[k]) for k in ("train", "val", "test")] == [3, 1, 1]
    assert len({i for v in names.values() for i in v}) == 5
    for k, v in lists.items():
        for d in v:
            assert os.path.isfile(d["image"]) and os.path.isfile(d["label"]), k


@pytest.mark.parametrize("loss", ["dice_ce", "ml", "caml"])
def test_train_evaluate_inference_one_epoch(bundle, loss, tmp_path, data_root):
    ov = {"data_root": data_root, "output_dir": str(tmp_path), "loss_name": loss}
    overlay = f"loss_{loss}.json"
    metrics = bundle.train_and_evaluate(loss, tmp_path, data_root=data_root)
    for key in ("dice", "mean_iou", "ece", "sce", "mce", "nll", "brier", "ece_per_image"):
        assert key in metrics and 0.0 <= metrics[key] == metrics[key], key
    assert metrics["n"] == 1
    stats = np.load(tmp_path / "eval" / "reliability_statistics.npy")
    # every voxel of the resampled test volume is counted once
    parser = bundle.parser(["train.json"], **DEFAULTS, **ov)
    item = parser.get_parsed_content("load_transforms")(
        parser.get_parsed_content("datalists#test")[0]
    )
    assert tuple(item["label"].shape[1:]) != SHAPE  # resampled to 2.5 mm
    assert stats.shape == (1, 15, 3) and stats[0, :, 0].sum() == item["label"][0].numel()
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 1000

    bundle.run(["inference.json", overlay], **ov)
    segs = sorted((tmp_path / "inference").glob("*_seg.nii.gz"))
    probs = sorted((tmp_path / "inference").glob("*_prob.nii.gz"))
    assert len(segs) == len(probs) == 1
    seg = nib.load(segs[0])
    test_image = nib.load(Path(data_root) / "imagesTr" / segs[0].name.replace("_seg", ""))
    # inverted to the input's grid (orientation and spacing undone)
    assert seg.shape[:3] == SHAPE
    np.testing.assert_allclose(seg.affine, test_image.affine, atol=1e-5)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
    p = np.asarray(nib.load(probs[0]).dataobj)
    np.testing.assert_allclose(p.reshape(-1, 2).sum(-1), 1.0, atol=1e-4)


def test_missing_data_root_is_explained(bundle, tmp_path):
    with pytest.raises(Exception) as err:
        bundle.run(
            ["train.json", "loss_dice_ce.json"], data_root=str(tmp_path), output_dir=str(tmp_path)
        )
    msgs = [str(e) for e in bundle.exceptions(err.value)]
    assert any("pass --data_root PATH" in m and "not found" in m for m in msgs), msgs
