# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The ChestMNIST multi-label bundle: configs resolve, metadata verifies, and ``compare`` trains
and evaluates BCE / LDACE / LDACE+CCL for one epoch on synthetic data in ChestMNIST's npz layout
((N, 14) multi-hot labels); inference reproduces the evaluation probabilities, which are the
loss's own probability of the checkpoint's logits, and the report equals the functional metrics.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_medmnist_npz

from monai_calib.bundles import BUNDLE_NAMES, overlays

BUNDLE = "chestmnist_multilabel"
LOSSES = ("bce", "ldace", "ldace_ccl")
N_TEST = 16


def test_bundle_is_listed_and_has_every_overlay():
    assert BUNDLE in BUNDLE_NAMES
    assert set(overlays(BUNDLE)) == set(LOSSES)


def test_config_ids_users_override_exist(bundle):
    parser = bundle.parser(["train.json"])
    # own ids; the ids every bundle has: test_bundles_common.COMMON_IDS
    assert {"dataset_flag", "download", "grad_clip_norm"} <= set(parser.get())
    assert parser.get_parsed_content("num_classes") == 14
    clip = [h for h in parser.get("train#handlers") if "GradientClipping" in h["_target_"]]
    assert clip == [
        {"_target_": "monai_calib.handlers.GradientClipping", "max_norm": "@grad_clip_norm"}
    ]
    assert parser.get_parsed_content("grad_clip_norm") == 0.1


@pytest.mark.parametrize(
    "loss, expected",
    [("bce", "Activationsd"), ("ldace", "SquaredSigmoidd"), ("ldace_ccl", "SquaredSigmoidd")],
)
def test_overlay_probability_transform(bundle, loss, expected):
    parser = bundle.parser(["train.json", f"loss_{loss}.json"])
    t = parser.get_parsed_content("probability_transform")
    assert type(t).__name__ == expected
    z = torch.linspace(-4, 4, 14)
    q = t({"pred": z})["pred"]
    ref = torch.sigmoid(z) if loss == "bce" else torch.sigmoid(z) ** 2
    torch.testing.assert_close(torch.as_tensor(q), ref)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("chestmnist")
    write_medmnist_npz(
        root, "chestmnist", sizes=(32, 16, N_TEST), multi_label=True, num_classes=14, seed=1
    )
    return str(root)


@pytest.fixture(scope="module")
def compare_out(tmp_path_factory, data_root):
    from monai_calib.cli.compare import main

    out = tmp_path_factory.mktemp("compare")
    rc = main(
        [
            "--bundle", "chestmnist_multilabel", "--data-root", data_root, "--epochs", "1",
            "--batch-size", "16", "--output", str(out), "--losses", ",".join(LOSSES),
        ]
    )  # fmt: skip
    assert rc == 0
    return out


def test_compare_report_has_multilabel_columns(compare_out):
    report = (compare_out / "report.md").read_text()
    for title in ("Hamming", "AUC (macro)", "AUC (micro)", "ECE", "ACE", "MCE", "Brier", "NLL"):
        assert f"| {title} " in report or f" {title} |" in report, title
    from monai_calib.cli.compare import method_name

    for loss in LOSSES:
        assert f"| {method_name(loss)} |" in report
    assert (compare_out / "reliability.png").stat().st_size > 1000
    summary = json.loads((compare_out / "summary.json").read_text())
    assert set(summary["losses"]) == set(LOSSES)
    assert {"hamming", "auc_macro", "ece_micro", "ece_weighted"} <= set(summary["losses"]["bce"])


@pytest.mark.parametrize("loss", LOSSES)
def test_eval_report_and_inference(bundle, loss, compare_out, data_root):
    from monai_calib.metrics import (
        brier_score,
        calibration_error,
        hamming_loss,
        multilabel_auc,
        negative_log_likelihood,
    )

    run_dir = compare_out / "runs" / f"{loss}_seed0"
    eval_dir = run_dir / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    saved = np.load(eval_dir / "predictions.npz")
    probs = torch.from_numpy(saved["probs"]).double()
    labels = torch.from_numpy(saved["labels"]).double()
    assert probs.shape == labels.shape == (N_TEST, 14)
    # labels are the file's test labels, in order
    raw = np.load(Path(data_root) / "chestmnist.npz")["test_labels"]
    np.testing.assert_array_equal(saved["labels"], raw.astype(np.float32))

    # the report's numbers are the functional metrics of the saved predictions
    assert metrics["hamming"] == pytest.approx(float(hamming_loss(probs, labels)), abs=1e-12)
    assert metrics["auc_macro"] == pytest.approx(float(multilabel_auc(probs, labels)), abs=1e-12)
    ce = calibration_error
    assert metrics["ece"] == pytest.approx(float(ce(probs, labels, target="marginal")), abs=1e-12)
    assert metrics["ace"] == pytest.approx(
        float(ce(probs, labels, target="marginal", binning="equal_mass")), abs=1e-12
    )
    assert metrics["mce"] == pytest.approx(
        float(ce(probs, labels, target="marginal", reduction="maximum")), abs=1e-12
    )
    assert metrics["ece_micro"] == pytest.approx(
        float(ce(probs.reshape(-1, 1), labels.reshape(-1, 1), target="marginal")), abs=1e-12
    )
    assert metrics["brier"] == pytest.approx(
        float(brier_score(probs, labels, multilabel=True)), abs=1e-12
    )
    assert metrics["nll"] == pytest.approx(
        float(negative_log_likelihood(probs, labels, multilabel=True)), abs=1e-12
    )
    assert np.load(eval_dir / "reliability_statistics.npy").shape == (14, 15, 3)
    assert (eval_dir / "reliability_per_label.png").stat().st_size > 1000
    with open(eval_dir / "metrics.csv") as f:
        assert next(csv.reader(f)) == list(metrics)

    # the evaluation probabilities are the loss's own probability of the checkpoint's logits
    parser = bundle.parser(
        ["inference.json", f"loss_{loss}.json"],
        data_root=data_root,
        device="$torch.device('cpu')",
        amp=False,
    )
    net = parser.get_parsed_content("network_def")
    state = torch.load(run_dir / "models" / "model.pt", weights_only=True)
    net.load_state_dict(state["model"])
    net.eval()
    ds = parser.get_parsed_content("dataset")
    with torch.no_grad():
        z = net(torch.stack([torch.as_tensor(ds[i]["image"]) for i in range(len(ds))]))
    expected = torch.sigmoid(z) if loss == "bce" else torch.sigmoid(z) ** 2
    torch.testing.assert_close(probs.float(), expected, atol=1e-5, rtol=0)

    # inference writes the same probabilities, one column per finding
    bundle.run(
        ["inference.json", f"loss_{loss}.json"],
        data_root=data_root,
        output_dir=str(run_dir),
        loss_name=loss,
        seed=0,
    )
    with open(run_dir / "inference" / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][3:5] == ["atelectasis", "cardiomegaly"] and len(rows) == 1 + N_TEST
    inf = torch.tensor([[float(v) for v in r[3:]] for r in rows[1:]])
    torch.testing.assert_close(inf, probs.float(), atol=1e-5, rtol=0)


def test_missing_chestmnist_file_is_named(bundle, tmp_path):
    with pytest.raises(Exception) as info:
        bundle.run(
            ["train.json", "loss_bce.json"],
            data_root=str(tmp_path),
            max_epochs=1,
            output_dir=str(tmp_path / "o"),
        )
    msg = bundle.error_text(info.value)
    assert "chestmnist.npz" in msg and "data_root" in msg


def test_single_label_flag_is_rejected(bundle, tmp_path, data_root):
    with pytest.raises(Exception) as info:
        bundle.run(
            ["train.json", "loss_bce.json"],
            data_root=data_root,
            dataset_flag="breastmnist",
            output_dir=str(tmp_path),
        )
    msg = bundle.error_text(info.value)
    assert "ValueError: dataset_flag must be a multi-label MedMNIST flag" in msg
    assert "multi-label" in msg
