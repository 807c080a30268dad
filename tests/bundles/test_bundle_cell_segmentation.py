# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The 2D cell (nuclei) segmentation bundle: configs resolve, metadata verifies, one-epoch train /
evaluate / inference works for DiceCE, ML and CAML on synthetic PNGs in the DSB2018 layout, and
the evaluation report agrees with calibration_error and MONAI's DiceMetric recomputed here."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_calib.bundles import overlays

BUNDLE = "cell_segmentation"
DEFAULTS = {
    "max_epochs": 1,
    "batch_size": 2,
    "num_samples": 2,
    "image_size": 64,
    "num_test": 2,
    "num_val": 1,
    "seed": 0,
}
OVERLAYS = overlays(BUNDLE)
SIZES = [(72, 80), (64, 64), (80, 70), (66, 90), (70, 70)]


def write_dsb2018_folder(root: Path, seed: int = 0) -> list[str]:
    """Synthetic nuclei images (RGB / RGBA of mixed sizes) and uint16 instance maps, DSB layout."""
    rng = np.random.RandomState(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows, ids = [], []
    for i, (h, w) in enumerate(SIZES):
        image_id = f"{i:02d}synthetic{rng.randint(10**6):06d}"
        yy, xx = np.mgrid[:h, :w]
        label = np.zeros((h, w), np.uint16)
        for k in range(1, 7):
            cy, cx, r = rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(3, 7)
            label[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (label == 0)] = k
        channels = 4 if i % 2 else 3
        img = rng.normal(30, 10, (h, w, channels))
        img[label > 0, :3] += 150
        if channels == 4:
            img[..., 3] = 255
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            root / "images" / f"{image_id}.png"
        )
        Image.fromarray(label).save(root / "labels" / f"{image_id}.png")
        fg = float((label > 0).mean())
        rows.append([image_id, h, w, channels, int(label.max()), f"{fg:.4f}"])
        ids.append(image_id)
    with open(root / "index.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image_id", "height", "width", "channels", "n_nuclei", "foreground_fraction"])
        wr.writerows(rows)
    return ids


def test_the_three_overlays_exist():
    assert set(OVERLAYS) == {"dice_ce", "ml", "caml"}
    # one file each, shared by the segmentation family
    assert OVERLAYS == overlays("organ_segmentation")
    assert json.loads(Path(OVERLAYS["dice_ce"]).read_text())["loss_def"] == {
        "_target_": "monai.losses.DiceCELoss",
        "to_onehot_y": True,
        "softmax": True,
    }


def test_config_ids_users_override_exist(bundle):
    parser = bundle.parser(["train.json"])
    # own ids; the ids every bundle has: test_bundles_common.COMMON_IDS
    assert {"patch_size"} <= set(parser.get())
    assert os.path.isdir(parser.get_parsed_content("bundle_root"))
    assert parser.get_parsed_content("select_metric") == "dice"
    assert parser.get_parsed_content("lower_is_better") is False


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsb")
    write_dsb2018_folder(root)
    return str(root)


def test_split(bundle, data_root):
    from monai_calib.data import dsb2018_split

    parser = bundle.parser(["train.json"], **DEFAULTS, data_root=data_root)
    lists = {k: [d["id"] for d in v] for k, v in parser.get_parsed_content("datalists").items()}
    assert lists["test"] == dsb2018_split(data_root, num_test=2, seed=0)["test"]
    assert [len(lists[k]) for k in ("train", "val", "test")] == [2, 1, 2]
    assert len({i for v in lists.values() for i in v}) == 5


@pytest.mark.parametrize("loss", ["dice_ce", "ml", "caml"])
def test_train_evaluate_inference_one_epoch(bundle, loss, tmp_path, data_root):
    ov = {"data_root": data_root, "output_dir": str(tmp_path), "loss_name": loss}
    overlay = f"loss_{loss}.json"
    metrics = bundle.train_and_evaluate(loss, tmp_path, data_root=data_root)
    ckpt = tmp_path / "models" / "model.pt"
    for key in ("dice", "mean_iou", "ece", "sce", "mce", "nll", "brier", "ece_per_image"):
        assert key in metrics and 0.0 <= metrics[key] == metrics[key], key
    assert metrics["n"] == 2
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 1000

    # recompute the test probabilities here and check the report against independent metrics
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    from monai_calib.metrics import calibration_error

    parser = bundle.parser(["train.json", overlay, "evaluate.json"], **DEFAULTS, **ov)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    net.eval()
    inferer = parser.get_parsed_content("validate#inferer")
    rows_p, rows_y = [], []
    dice = DiceMetric(include_background=False)
    for item in parser.get_parsed_content("validate#dataset"):
        with torch.no_grad():
            prob = torch.softmax(inferer(item["image"][None].float(), net), 1)
        lab = item["label"][None].long()
        dice(one_hot(prob.argmax(1, keepdim=True), 2, dim=1), one_hot(lab, 2, dim=1))
        rows_p.append(prob.movedim(1, -1).reshape(-1, 2))
        rows_y.append(lab.reshape(-1))
    ece = float(calibration_error(torch.cat(rows_p), torch.cat(rows_y)))
    assert metrics["ece"] == pytest.approx(ece, abs=1e-5)
    assert metrics["dice"] == pytest.approx(float(dice.aggregate()), abs=1e-5)
    stats = np.load(tmp_path / "eval" / "reliability_statistics.npy")
    assert stats.shape == (1, 15, 3) and stats[0, :, 0].sum() == sum(len(y) for y in rows_y)

    bundle.run(["inference.json", overlay], **ov)
    test_ids = [d["id"] for d in parser.get_parsed_content("datalists#test")]
    # MONAI's MetricsSaver: the evaluator's metrics, and per-image Dice named by image id
    with open(tmp_path / "eval" / "evaluator" / "metrics.csv") as f:
        saved = dict(csv.reader(f))
    assert float(saved["test_dice"]) == pytest.approx(metrics["dice"], abs=1e-5)
    with open(tmp_path / "eval" / "evaluator" / "test_dice_raw.csv") as f:
        assert [r[0] for r in list(csv.reader(f))[1:]] == test_ids
    for image_id in test_ids:
        seg = np.asarray(Image.open(tmp_path / "inference" / f"{image_id}_seg.png"))
        image = Image.open(Path(data_root) / "images" / f"{image_id}.png")
        assert seg.shape == (image.height, image.width)  # (H, W), not transposed
        assert set(np.unique(seg)) <= {0, 255}
        assert (tmp_path / "inference" / f"{image_id}_prob.nii.gz").is_file()


def test_missing_data_is_explained(bundle, tmp_path):
    files = ["train.json", "loss_dice_ce.json"]
    with pytest.raises(Exception) as err:
        bundle.run(files, data_root=str(tmp_path), output_dir=str(tmp_path))
    assert "index.csv" in bundle.error_text(err.value)
    # no default data folder: data_root must be passed
    assert bundle.parser(["train.json"]).get("data_root") is None
    with pytest.raises(Exception) as err:
        bundle.run(files, output_dir=str(tmp_path))
    msg = bundle.error_text(err.value)
    assert "ValueError: data_root is not set" in msg and "pass --data_root PATH" in msg


def test_compare_runs_on_the_bundle(tmp_path, data_root, capsys):
    from monai_calib.cli.compare import main

    rc = main(
        [
            "--bundle", "cell_segmentation", "--epochs", "1", "--losses", "dice_ce,ml",
            "--data-root", data_root, "--output", str(tmp_path), "--batch-size", "2",
            "--image-size", "64", "--override", "num_test=2", "--override", "num_val=1",
            "--override", "num_samples=1",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"dice", "mean_iou", "ece"} <= set(summary["losses"]["ml"])
    report = (tmp_path / "report.md").read_text()
    assert "Dice" in report and "mIoU" in report
    assert (tmp_path / "reliability.png").stat().st_size > 1000
    # segmentation quality first: the table's columns after the method, and the per-run line
    header = next(line for line in report.splitlines() if line.startswith("| method |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:3] == ["Dice ↑", "mIoU ↑"]
    assert summary["columns"][:2] == ["dice", "mean_iou"]
    out = capsys.readouterr().out
    for loss in ("dice_ce", "ml"):
        done = next(line for line in out.splitlines() if f"] {loss} seed 0: done in" in line)
        dice = summary["losses"][loss]["dice"]["mean"]
        assert f"(dice={dice:.4f}, mean_iou=" in done
