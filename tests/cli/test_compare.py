# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``python -m monai_calib compare``: regimes, temperature-scaled rows, paired-bootstrap verdict,
settings block, and the converged regime overlay of every classification bundle."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.handlers import CheckpointSaver
from synthetic import write_medmnist_npz

from monai_calib.bundles import bundle_dir, overlay_file
from monai_calib.metrics import calibration_error, paired_bootstrap

CLASSIFICATION_BUNDLES = ("medmnist_classification", "pad_ufes20_classification")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("medmnist")
    write_medmnist_npz(root, "breastmnist", sizes=(40, 24, 30))
    return str(root)


@pytest.fixture(scope="module")
def converged(tmp_path_factory, data_root):
    from monai_calib.cli.compare import main

    out = tmp_path_factory.mktemp("compare")
    rc = main(
        [
            "--data-root", data_root, "--losses", "ce,mit", "--seeds", "2", "--epochs", "1",
            "--regime", "converged", "--batch-size", "16", "--bootstrap", "300",
            "--output", str(out), "--threads", "1",
        ]
    )  # fmt: skip
    assert rc == 0
    return out


def test_report_opens_with_a_verdict_and_lists_every_row(converged):
    report = (converged / "report.md").read_text()
    assert report.index("## Verdict") < report.index("## Results") < report.index("## Settings")
    assert "30 test images" in report
    for label in ("CE", "MiT", "CE + TS", "MiT + TS"):
        assert f"| {label} |" in report
    assert "MiT: ECE " in report and "vs CE" in report
    assert "MiT + TS: ECE " in report and "vs CE + TS" in report
    assert "±" in report  # two seeds
    assert "Gap (conf − acc)" in report and "ECE ↓" in report


def _ts_reference(run_dir: Path) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Temperature scaling written plainly: T on a fine log grid minimising the validation NLL."""
    val = np.load(run_dir / "eval_val" / "predictions.npz")
    test = np.load(run_dir / "eval" / "predictions.npz")
    lv = torch.log(torch.from_numpy(val["probs"]).double().clamp_min(1e-12))
    yv = torch.from_numpy(val["labels"]).long()
    grid = torch.exp(torch.linspace(math.log(0.05), math.log(20.0), 20001, dtype=torch.float64))
    nll = torch.stack([torch.nn.functional.cross_entropy(lv / t, yv) for t in grid])
    t = float(grid[nll.argmin()])
    lt = torch.log(torch.from_numpy(test["probs"]).double().clamp_min(1e-12))
    return t, torch.softmax(lt / t, 1), torch.from_numpy(test["labels"]).long()


@pytest.mark.parametrize("seed", [0, 1])
def test_ts_rows_are_temperature_scaling_fitted_on_validation(converged, seed):
    with open(converged / "results.csv") as f:
        rows = {(r["loss"], int(r["seed"])): r for r in csv.DictReader(f)}
    assert {k[0] for k in rows} == {"ce", "mit", "ce+ts", "mit+ts"}
    for loss in ("ce", "mit"):
        t, probs, labels = _ts_reference(converged / "runs" / f"{loss}_seed{seed}")
        row = rows[(loss + "+ts", seed)]
        assert float(row["temperature"]) == pytest.approx(t, rel=2e-3)
        ece = float(calibration_error(probs, labels))
        assert float(row["ece"]) == pytest.approx(ece, abs=2e-3)
        acc = float((probs.argmax(1) == labels).double().mean())
        assert float(row["acc"]) == pytest.approx(acc, abs=1e-9)  # TS keeps the argmax
        gap = float(probs.max(1).values.mean()) - acc
        assert float(row["gap"]) == pytest.approx(gap, abs=2e-3)


def test_intervals_are_the_paired_bootstrap_of_the_saved_predictions(converged):
    summary = json.loads((converged / "summary.json").read_text())
    comps = {(c["row"], c["reference"]): c for c in summary["comparisons"]}
    assert set(comps) == {("mit", "ce"), ("ce+ts", "ce"), ("mit+ts", "ce+ts")}

    def preds(row: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        base = row.removesuffix("+ts")
        sub = "eval_ts" if row.endswith("+ts") else "eval"
        d = np.load(converged / "runs" / f"{base}_seed{seed}" / sub / "predictions.npz")
        return d["probs"].astype(np.float64), d["labels"]

    for (a, b), comp in comps.items():
        pa = [preds(a, s)[0] for s in (0, 1)]
        pb = [preds(b, s)[0] for s in (0, 1)]
        y = [preds(a, s)[1] for s in (0, 1)]
        for stat in ("ece", "acc", "nll"):
            ref = paired_bootstrap(pa, pb, y, statistic=stat, num_samples=300)
            got = comp[stat]
            assert got["difference"] == pytest.approx(ref.difference, abs=1e-6)
            assert (got["low"], got["high"]) == pytest.approx((ref.low, ref.high), abs=1e-6)
            assert got["significant"] == (ref.low > 0 or ref.high < 0)
    assert summary["n_test"] == 30
    ece = summary["losses"]["mit"]["ece"]
    assert ece["sd"] == pytest.approx(float(np.std(ece["values"], ddof=1)))
    means = {row: v["ece"]["mean"] for row, v in summary["losses"].items()}
    assert summary["best"] == min(means, key=means.get)


def test_settings_are_complete_enough_for_a_methods_section(converged):
    s = json.loads((converged / "summary.json").read_text())["settings"]
    assert s["regime"] == "converged" and s["selection"] == "last epoch"
    assert s["dataset"] == "breastmnist" and s["image_size"] == 28 and s["epochs"] == 1
    assert "MultiStepLR" in s["schedule"] and "Adam" in s["optimizer"]
    assert "ResNet" in s["network"] and s["augmentation"] == "none"
    assert s["torch_threads"] == 1 and s["seeds"] == [0, 1] and s["device"] == "cpu"
    assert {"torch", "monai", "ignite", "medmnist", "monai_calib"} <= set(s["versions"])
    report = (converged / "report.md").read_text()
    for key in ("network", "optimizer", "schedule", "selection", "torch threads", "versions"):
        assert f"- {key}: " in report
    assert (converged / "reliability.png").stat().st_size > 1000


def test_one_seed_has_no_sd_and_no_ts_rows_when_turned_off(tmp_path, data_root):
    from monai_calib.cli.compare import main

    rc = main(
        [
            "--data-root", data_root, "--losses", "ce,ls", "--epochs", "1", "--batch-size", "16",
            "--no-ts", "--bootstrap", "100", "--output", str(tmp_path), "--no-plots",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["losses"]) == {"ce", "ls"}
    assert summary["losses"]["ce"]["ece"]["sd"] is None
    assert [(c["row"], c["reference"]) for c in summary["comparisons"]] == [("ls", "ce")]
    report = (tmp_path / "report.md").read_text()
    assert "±" not in report and "+ TS" not in report
    assert summary["settings"]["selection"] == "best validation AUC"
    assert summary["settings"]["regime"] == "default"


def test_unknown_regime_lists_the_choices(tmp_path, capsys):
    from monai_calib.cli.compare import main

    assert main(["--regime", "bogus", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--regime" in err and "'converged'" in err and "'default'" in err


@pytest.mark.parametrize("bundle", CLASSIFICATION_BUNDLES)
def test_converged_regime_overlay_resolves(bundle):
    configs = Path(bundle_dir(bundle)) / "configs"
    parser = ConfigParser()
    overlays = [overlay_file(bundle, "ce"), overlay_file(bundle, "converged", "regime")]
    parser.read_config([str(configs / "train.json"), *overlays])
    parser.update({"dataset_flag": "breastmnist"} if "medmnist" in bundle else {})
    assert parser.get_parsed_content("regime") == "converged"
    assert parser.get_parsed_content("selection_rule") == "last epoch"
    net = parser["network_def"]
    assert net["_target_"] == "monai.networks.nets.ResNet"
    assert net["layers"] == [2, 2, 2, 2] and net["block_inplanes"] == [16, 32, 64, 128]
    assert parser["lr_scheduler"]["_target_"].endswith("MultiStepLR")
    epochs = parser.get_parsed_content("max_epochs")
    assert parser.get_parsed_content("lr_scheduler#milestones") == [epochs // 2, 3 * epochs // 4]
    savers = parser["checkpoint_handlers"]
    assert len(savers) == 1 and savers[0]["save_final"]
    assert savers[0]["final_filename"] == "model.pt"
    assert parser["model_selection_handlers"] == []  # no best-on-validation checkpoint
    assert parser["augmentation"] == []
    handlers = parser.get_parsed_content("validate#handlers")
    assert not any(isinstance(h, CheckpointSaver) for h in handlers)
    assert [
        type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms
    ] == ["EnsureTyped"]


def test_converged_regime_saves_the_last_epoch_model(tmp_path, data_root):
    configs = Path(bundle_dir("medmnist_classification")) / "configs"
    wf = ConfigWorkflow(
        config_file=[
            str(configs / "train.json"),
            overlay_file("medmnist_classification", "ce"),
            overlay_file("medmnist_classification", "converged", "regime"),
        ],
        meta_file=str(configs / "metadata.json"),
        workflow_type=None,
        data_root=data_root,
        max_epochs=2,
        batch_size=16,
        output_dir=str(tmp_path),
    )
    wf.initialize()
    wf.run()
    final = {k: v.clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    wf.finalize()
    saved = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["model"]
    assert set(saved) == set(final)
    for k in final:
        torch.testing.assert_close(saved[k], final[k], rtol=0, atol=0)
