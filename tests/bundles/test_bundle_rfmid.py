# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The RFMiD multi-label bundle: configs resolve, metadata verifies, one-epoch train / evaluate /
inference for BCE, LDACE and LDACE+CCL on a synthetic folder in RFMiD's official layout
(``Training_Set/Training/<ID>.png`` + ``RFMiD_Training_Labels.csv``, ...), and clear errors for
a missing data root, a missing image or a non-0/1 label cell."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_rfmid_folder

from monai_calib.bundles import BUNDLE_NAMES, overlays

BUNDLE = "rfmid_multilabel"
DEFAULTS = {"max_epochs": 1, "batch_size": 8, "image_size": 28, "seed": 0}
LOSSES = ("bce", "ldace", "ldace_ccl")
DISEASES = ("DR", "ARMD", "MH", "DN", "MYA", "BRVO")
SIZES = (24, 12, 12)


def test_bundle_is_listed_and_has_every_overlay():
    assert BUNDLE in BUNDLE_NAMES
    assert set(overlays(BUNDLE)) == set(LOSSES)
    # one file each, shared by the multi-label family
    assert overlays(BUNDLE) == overlays("chestmnist_multilabel")


def test_config_ids_and_official_layout(bundle):
    parser = bundle.parser(["train.json"])
    # own ids; the ids every bundle has: test_bundles_common.COMMON_IDS
    assert {"image_dirs", "csv_files", "label_columns", "grad_clip_norm"} <= set(parser.get())
    parser["data_root"] = "/data/rfmid"
    assert parser.get_parsed_content("image_dirs")["test"] == "/data/rfmid/Test_Set/Test"
    assert parser.get_parsed_content("csv_files")["train"] == (
        "/data/rfmid/Training_Set/RFMiD_Training_Labels.csv"
    )
    assert parser.get_parsed_content("grad_clip_norm") == 0.1


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rfmid")
    write_rfmid_folder(root, sizes=SIZES, diseases=DISEASES, seed=2)
    return str(root)


@pytest.mark.parametrize("loss", LOSSES)
def test_train_evaluate_inference_one_epoch(bundle, loss, tmp_path, data_root):
    from monai_calib.handlers import multilabel_report

    overlay = f"loss_{loss}.json"
    run = {"data_root": data_root, "output_dir": str(tmp_path), "loss_name": loss}
    metrics = bundle.train_and_evaluate(loss, tmp_path, data_root=data_root)
    assert (tmp_path / "models" / "model.pt").is_file()
    saved = np.load(tmp_path / "eval" / "predictions.npz")
    # test labels in CSV order
    with open(Path(data_root) / "Test_Set" / "RFMiD_Testing_Labels.csv") as f:
        rows = list(csv.reader(f))
    expected_labels = np.array([[float(c) for c in r[2:]] for r in rows[1:]], dtype=np.float32)
    np.testing.assert_array_equal(saved["labels"], expected_labels)
    ref = multilabel_report(torch.from_numpy(saved["probs"]), torch.from_numpy(saved["labels"]))
    assert metrics == pytest.approx(ref, abs=1e-12)
    assert metrics["n"] == SIZES[2]
    assert np.load(tmp_path / "eval" / "reliability_statistics.npy").shape == (6, 15, 3)
    assert (tmp_path / "eval" / "reliability_per_label.png").stat().st_size > 1000

    bundle.run(["inference.json", overlay], **run)
    with open(tmp_path / "inference" / "predictions.csv") as f:
        pred_rows = list(csv.reader(f))
    assert tuple(pred_rows[0][3:]) == DISEASES and len(pred_rows) == 1 + SIZES[2]
    probs = torch.tensor([[float(v) for v in r[3:]] for r in pred_rows[1:]])
    torch.testing.assert_close(probs, torch.from_numpy(saved["probs"]), atol=1e-5, rtol=0)
    if loss != "bce":  # sigmoid^2 of finite logits is strictly inside (0, 1)
        assert float(probs.min()) > 0.0 and float(probs.max()) < 1.0


def test_label_columns_override(bundle, tmp_path, data_root):
    parser = bundle.parser(
        ["train.json"], data_root=data_root, label_columns=["MH", "DR"], image_size=28
    )
    assert parser.get_parsed_content("num_classes") == 2
    assert parser.get_parsed_content("label_names") == ["MH", "DR"]
    item = parser.get_parsed_content("validate#dataset")[0]
    assert item["image"].shape == (3, 28, 28) and item["label"].shape == (2,)
    parser.update({"label_columns": None, "include_disease_risk": True})
    parser.parse()
    assert parser.get_parsed_content("label_names") == ["Disease_Risk", *DISEASES]


def test_missing_data_root_is_explained(bundle, tmp_path):
    with pytest.raises(Exception) as info:
        bundle.run(["train.json", "loss_bce.json"], data_root=None, output_dir=str(tmp_path))
    msg = bundle.error_text(info.value)
    assert "RFMiD_Training_Labels.csv" in msg and "data_root" in msg


def test_missing_image_and_bad_cell_are_named(bundle, tmp_path):
    write_rfmid_folder(tmp_path, sizes=(6, 4, 4), diseases=DISEASES, seed=3)
    (tmp_path / "Evaluation_Set" / "Validation" / "3.png").unlink()
    run = {"data_root": str(tmp_path), "output_dir": str(tmp_path / "o")}
    with pytest.raises(Exception) as info:
        bundle.run(["train.json", "loss_bce.json"], **run)
    msg = bundle.error_text(info.value)
    assert "'3'" in msg and "missing" in msg

    csv_path = tmp_path / "Training_Set" / "RFMiD_Training_Labels.csv"
    lines = csv_path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[3] = "2"
    lines[2] = ",".join(cells)
    csv_path.write_text("\n".join(lines) + "\n")
    (tmp_path / "Evaluation_Set" / "Validation" / "3.png").write_bytes(
        (tmp_path / "Evaluation_Set" / "Validation" / "1.png").read_bytes()
    )
    with pytest.raises(Exception) as info:
        bundle.run(["train.json", "loss_bce.json"], **run)
    msg = bundle.error_text(info.value)
    assert "0 or 1" in msg and "'2'" in msg and DISEASES[1] in msg
