# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The MedMNIST classification bundle: configs resolve, metadata verifies, and one-epoch
train / evaluate / inference runs work for CE and every stateful-loss overlay on synthetic data in
MedMNIST's npz layout."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_medmnist_npz

from monai_calib.bundles import bundle_dir, overlays

BUNDLE = "medmnist_classification"
DEFAULTS = {"max_epochs": 1, "batch_size": 16, "seed": 0}
OVERLAYS = overlays(BUNDLE)
SCHEMA = Path(bundle_dir(BUNDLE)).parent / "schema" / "meta_schema_monai_calib.json"


def test_every_overlay_the_issue_names_exists():
    expected = {"ce", "ls", "focal", "dca", "mdca", "ls_plus", "tet", "mit", "mit_init", "cct_eal"}
    assert expected <= set(OVERLAYS)
    for loss, path in OVERLAYS.items():  # the run folders and compare's rows are named after it
        assert json.loads(Path(path).read_text())["loss_name"] == loss


def test_mit_overlays_start_at_one_or_keep_the_authors_fit():
    """``loss_mit`` (from scratch): T = 1, no fit; ``loss_mit_init``: the authors' fit first."""
    mit = json.loads(Path(OVERLAYS["mit"]).read_text())
    init = json.loads(Path(OVERLAYS["mit_init"]).read_text())
    handlers = lambda cfg: [h["_target_"] for h in cfg["loss_handlers"]]  # noqa: E731
    assert handlers(mit) == ["monai_calib.handlers.LossStateUpdater"]
    assert handlers(init) == [
        "monai_calib.handlers.MiTTemperatureInit",
        "monai_calib.handlers.LossStateUpdater",
    ]
    assert "init_temperature" not in mit["loss_def"]  # MiTLoss's default, T = 1
    same = ("loss_def", "probability_transform")
    assert {k: init[k] for k in same} == {k: mit[k] for k in same}


def test_mit_init_overlay_fits_on_the_validation_split_when_told(bundle, tmp_path, data_root):
    """The override the bundle README documents: the handler fits on the validation loader.

    (The synthetic images' intensity encodes the class, so even the random network's logits
    carry information here and the fit collapses towards T = 0: the bound applies.)
    """
    wf = bundle.run(
        ["train.json", "loss_mit_init.json"],
        data_root=data_root,
        output_dir=str(tmp_path),
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


def test_verify_metadata_rejects_missing_key(bundle, tmp_path):
    from monai.bundle import verify_metadata

    meta = json.loads(Path(bundle.meta).read_text())
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


def _check_eval_outputs(eval_dir: Path):
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("acc", "auc", "ece", "ace", "sce", "mce", "nll", "brier", "r_auc"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    with open(eval_dir / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][: len(metrics)] == list(metrics)
    for png in ("reliability.png", "confidence_density.png", "retention.png"):
        assert (eval_dir / png).stat().st_size > 1000
    # MONAI's MetricsSaver: the evaluator's own metrics on the test split, one "name,value" row each
    with open(eval_dir / "evaluator" / "metrics.csv") as f:
        saved = dict(csv.reader(f))
    assert {"test_auc", "test_ece", "test_nll", "test_brier"} <= set(saved)
    assert float(saved["test_ece"]) == pytest.approx(metrics["ece"], abs=1e-6)
    return metrics


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluation_logs_name_the_split_and_no_best_metric(
    bundle, ce_run, data_root, tmp_path, split
):
    """A one-off evaluation is no model selection: the logged metrics carry the evaluated split's
    name (``test_auc``, not ``val_auc``) and no "Got new best metric" / "best value" line."""

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    # the evaluator's own logger ("Got new best metric") and StatsHandler's ("Metrics --")
    names = ("ignite.engine.engine.SupervisedEvaluator", "monai.handlers.StatsHandler")
    collect = Collect()
    for name in names:
        logging.getLogger(name).addHandler(collect)
    eval_dir = tmp_path / "eval"
    try:
        bundle.run(
            ["train.json", "loss_ce.json", "evaluate.json"], data_root=data_root,
            output_dir=str(ce_run), eval_split=split, eval_dir=str(eval_dir), report_plots=False,
        )  # fmt: skip
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(collect)
    log = "\n".join(collect.lines)
    assert "Engine run finished" in log  # the evaluator's log was collected
    assert "Got new best metric" not in log and "best value" not in log
    line = next(line for line in collect.lines if "Metrics --" in line)
    logged = dict(re.findall(r"(\w+): ([-0-9.e]+)", line.split("Metrics --")[1]))
    assert set(logged) == {f"{split}_{k}" for k in ("auc", "ece", "nll", "brier")}
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert float(logged[f"{split}_auc"]) == pytest.approx(metrics["auc"], abs=1e-4)
    with open(eval_dir / "evaluator" / "metrics.csv") as f:
        assert {f"{split}_auc", f"{split}_ece"} <= set(dict(csv.reader(f)))


@pytest.mark.parametrize("loss", ["ce", "mit", "cct_eal", "ls_plus", "tet"])
def test_train_evaluate_inference_one_epoch(bundle, loss, tmp_path, data_root, ce_run):
    out = ce_run if loss == "ce" else tmp_path / loss
    extra = {"loss_name": loss, "data_root": data_root, "output_dir": str(out)}
    if loss == "ls_plus":
        extra["baseline_checkpoint"] = str(ce_run / "models" / "model.pt")
    overlay = f"loss_{loss}.json"
    if loss != "ce":
        bundle.run(["train.json", overlay], **extra)
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

    bundle.run(["train.json", overlay, "evaluate.json"], **extra)
    metrics = _check_eval_outputs(out / "eval")
    assert metrics["n"] == 20

    bundle.run(["inference.json", overlay], **extra)
    with open(out / "inference" / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 20
    probs = torch.tensor([[float(v) for v in r[3:]] for r in rows[1:]])
    torch.testing.assert_close(probs.sum(1), torch.ones(20), atol=1e-4, rtol=0)

    # the inference probabilities are the evaluation probabilities (same transform, same weights)
    saved = np.load(out / "eval" / "predictions.npz")
    torch.testing.assert_close(probs, torch.from_numpy(saved["probs"]), atol=1e-5, rtol=0)


def test_unknown_dataset_flag_lists_choices(bundle, tmp_path, data_root):
    with pytest.raises(Exception) as info:
        bundle.run(
            ["train.json", "loss_ce.json"],
            data_root=data_root,
            output_dir=str(tmp_path),
            dataset_flag="nosuchmnist",
        )
    msg = bundle.error_text(info.value)
    assert "ValueError: dataset_flag must be one of" in msg and "'retinamnist'" in msg


def test_missing_data_file_is_named(bundle, tmp_path):
    with pytest.raises(Exception) as info:
        bundle.run(
            ["train.json"],
            data_root=str(tmp_path),
            output_dir=str(tmp_path),
            dataset_flag="retinamnist",
        )
    assert "FileNotFoundError: MedMNIST file 'retinamnist.npz'" in bundle.error_text(info.value)


def test_config_ids_users_override_exist(bundle):
    parser = bundle.parser(["train.json"])
    # own ids; the ids every bundle has: test_bundles_common.COMMON_IDS
    assert {"dataset_flag"} <= set(parser.get())
    assert os.path.isdir(parser.get_parsed_content("bundle_root"))


def test_track_meta_off_trains_the_same_network_and_is_restored(bundle, tmp_path, data_root):
    """The bundle switches MONAI's metadata tracking off while it runs (per-sample augmentation
    ~2.5x faster); with it on (``--track_meta true``) the trained weights are bit-identical, and
    MONAI's default is back on after the run."""
    from monai.bundle import ConfigWorkflow
    from monai.data import get_track_meta

    weights = {}
    for track in (False, True):
        out = tmp_path / str(track)
        overrides = {**bundle.defaults, "data_root": data_root, "output_dir": str(out)}
        wf = ConfigWorkflow(
            config_file=bundle.files(["train.json"]),
            meta_file=bundle.meta,
            logging_file=bundle.logging,
            workflow_type=None,
            track_meta=track,
            **overrides,
        )
        wf.initialize()
        assert get_track_meta() is track
        wf.run()
        wf.finalize()
        assert get_track_meta() is True
        weights[track] = torch.load(out / "models" / "model.pt", weights_only=True)["model"]
    assert weights[False].keys() == weights[True].keys()
    for key, value in weights[False].items():
        assert torch.equal(value, weights[True][key]), key
