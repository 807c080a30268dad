# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The MedMNIST classification bundle: configs resolve, metadata verifies, and one-epoch
train / evaluate / inference runs work for CE and every stateful-loss overlay on synthetic data in
MedMNIST's npz layout."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from synthetic import write_medmnist_npz

from monai_calib.bundles import bundle_dir

BUNDLE = Path(bundle_dir("medmnist_classification"))
CONFIGS = BUNDLE / "configs"
SCHEMA = BUNDLE.parent / "schema" / "meta_schema_monai_calib.json"
LOSSES = sorted(p.stem[len("loss_") :] for p in CONFIGS.glob("loss_*.json"))


def test_every_overlay_the_issue_names_exists():
    expected = {"ce", "ls", "focal", "dca", "mdca", "ls_plus", "tet", "mit", "mit_init", "cct_eal"}
    assert expected <= set(LOSSES)
    for loss in LOSSES:  # the run folders and compare's rows are named after loss_name
        assert json.loads((CONFIGS / f"loss_{loss}.json").read_text())["loss_name"] == loss


def test_mit_overlays_start_at_one_or_keep_the_authors_fit():
    """``loss_mit`` (from scratch): T = 1, no fit; ``loss_mit_init``: the authors' fit first."""
    mit = json.loads((CONFIGS / "loss_mit.json").read_text())
    init = json.loads((CONFIGS / "loss_mit_init.json").read_text())
    handlers = lambda cfg: [h["_target_"] for h in cfg["loss_handlers"]]  # noqa: E731
    assert handlers(mit) == ["monai_calib.handlers.LossStateUpdater"]
    assert handlers(init) == [
        "monai_calib.handlers.MiTTemperatureInit",
        "monai_calib.handlers.LossStateUpdater",
    ]
    assert "init_temperature" not in mit["loss_def"]  # MiTLoss's default, T = 1
    same = ("loss_def", "probability_transform")
    assert {k: init[k] for k in same} == {k: mit[k] for k in same}


def test_mit_init_overlay_fits_on_the_validation_split_when_told(tmp_path, data_root):
    """The override the bundle README documents: the handler fits on the validation loader.

    (The synthetic images' intensity encodes the class, so even the random network's logits
    carry information here and the fit collapses towards T = 0: the bound applies.)
    """
    wf = _run(
        ["train.json", "loss_mit_init.json"],
        tmp_path,
        data_root,
        loss_name="mit_init",
        **{"loss_handlers#0#data_loader": "@validate#dataloader"},
    )
    handler = wf.parser.get_parsed_content("loss_handlers")[0]
    assert handler.data_loader is wf.parser.get_parsed_content("validate#dataloader")
    assert handler.num_samples == 20  # the validation split
    assert handler.nll is not None and handler.prior_entropy is not None
    if handler.skipped:
        assert handler.prior_entropy - handler.nll < handler.min_nll_gain
    else:
        assert 0.1 <= handler.applied_temperature <= 10.0


def test_verify_metadata_rejects_missing_key(tmp_path):
    from monai.bundle import verify_metadata

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    del meta["required_packages_version"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="required_packages_version"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("medmnist")
    write_medmnist_npz(root, "breastmnist", sizes=(40, 20, 20))
    return str(root)


def _run(files, out_dir, data_root, **extra):
    overrides = {
        "data_root": data_root,
        "max_epochs": 1,
        "batch_size": 16,
        "output_dir": str(out_dir),
        "seed": 0,
        **extra,
    }
    wf = ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in files],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type=None,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ce")
    _run(["train.json", "loss_ce.json"], out, data_root, loss_name="ce")
    return out


def _check_eval_outputs(eval_dir: Path):
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("acc", "auc", "ece", "ace", "sce", "mce", "nll", "brier", "r_auc"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    with open(eval_dir / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][: len(metrics)] == list(metrics)
    for png in ("reliability.png", "confidence_density.png", "retention.png"):
        assert (eval_dir / png).stat().st_size > 1000
    return metrics


@pytest.mark.parametrize("loss", ["ce", "mit", "cct_eal", "ls_plus", "tet"])
def test_train_evaluate_inference_one_epoch(loss, tmp_path, data_root, ce_run):
    out = ce_run if loss == "ce" else tmp_path / loss
    extra = {"loss_name": loss}
    if loss == "ls_plus":
        extra["baseline_checkpoint"] = str(ce_run / "models" / "model.pt")
    overlay = f"loss_{loss}.json"
    if loss != "ce":
        _run(["train.json", overlay], out, data_root, **extra)
    ckpt = out / "models" / "model.pt"
    assert ckpt.is_file()
    state = torch.load(ckpt, weights_only=True)
    assert {"model", "loss"} <= set(state)
    if loss == "mit":
        # the loss state travels with the checkpoint
        assert {"raw_temperature", "label_counts", "dual_lambda", "step"} <= set(state["loss"])
        assert int(state["loss"]["step"]) > 0
    if loss == "cct_eal":
        assert {"raw_temperatures", "label_ema"} <= set(state["loss"])

    _run(["train.json", overlay, "evaluate.json"], out, data_root, **extra)
    metrics = _check_eval_outputs(out / "eval")
    assert metrics["n"] == 20

    _run(["inference.json", overlay], out, data_root, **extra)
    with open(out / "inference" / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 20
    probs = torch.tensor([[float(v) for v in r[3:]] for r in rows[1:]])
    torch.testing.assert_close(probs.sum(1), torch.ones(20), atol=1e-4, rtol=0)

    # the inference probabilities are the evaluation probabilities (same transform, same weights)
    import numpy as np

    saved = np.load(out / "eval" / "predictions.npz")
    torch.testing.assert_close(probs, torch.from_numpy(saved["probs"]), atol=1e-5, rtol=0)


def _chain(exc: BaseException) -> str:
    """Messages of an exception and its causes (ConfigWorkflow wraps the original error)."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_unknown_dataset_flag_lists_choices(tmp_path, data_root):
    with pytest.raises(Exception) as info:
        _run(["train.json", "loss_ce.json"], tmp_path, data_root, dataset_flag="nosuchmnist")
    msg = _chain(info.value)
    assert "ValueError: dataset_flag must be one of" in msg and "'retinamnist'" in msg


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(Exception) as info:
        _run(["train.json"], tmp_path, str(tmp_path), dataset_flag="retinamnist")
    assert "FileNotFoundError: MedMNIST file 'retinamnist.npz'" in _chain(info.value)


def test_config_ids_users_override_exist():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")])
    for key in (
        "bundle_root",
        "dataset_flag",
        "data_root",
        "image_size",
        "max_epochs",
        "batch_size",
        "learning_rate",
        "seed",
        "device",
        "output_dir",
    ):
        assert key in parser.get(), key
    assert os.path.isdir(parser.get_parsed_content("bundle_root"))
