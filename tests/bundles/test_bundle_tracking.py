# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Experiment tracking (``--tracking``, ``_shared/mlflow.json``): one bundle per task
family trains 2 tiny epochs and evaluates with MLflow tracking into a local SQLite store in
``tmp_path``; the store, read back with ``MlflowClient``, holds the training run (parameters, the
training loss per epoch, the validation metrics per epoch, the executed config) and the evaluation
run (the test metrics, the report files and figures)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from monai.utils import path_to_sqlite_uri
from synthetic import write_medmnist_npz
from test_bundle_cell_segmentation import DEFAULTS as SEG_DEFAULTS
from test_bundle_cell_segmentation import write_dsb2018_folder

from monai_calib.bundles import shared_dir
from monai_calib.handlers import report_files

mlflow = pytest.importorskip("mlflow", reason="tracking needs the extra: pip install '.[tracking]'")
pytest.importorskip("sqlalchemy", reason="tracking needs the extra: pip install '.[tracking]'")
pytest.importorskip("alembic", reason="tracking needs the extra: pip install '.[tracking]'")

BUNDLE = "medmnist_classification"  # the conftest ``bundle`` fixture; the families below
EPOCHS = 2


def write_medmnist(root: Path) -> None:
    write_medmnist_npz(root, "breastmnist", sizes=(32, 16, 16))


def write_chestmnist(root: Path) -> None:
    write_medmnist_npz(root, "chestmnist", sizes=(32, 16, 16), multi_label=True, num_classes=14)


FAMILIES = {
    "medmnist_classification": ("ce", write_medmnist, {"batch_size": 16, "seed": 0}),
    "chestmnist_multilabel": ("bce", write_chestmnist, {"batch_size": 16, "seed": 0}),
    "cell_segmentation": ("dice_ce", write_dsb2018_folder, dict(SEG_DEFAULTS)),
}


def tracking_file(name: str) -> str:
    return os.path.join(shared_dir(name), "mlflow.json")


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_train_and_evaluate_land_in_a_local_mlflow_store(bundle, tmp_path, name):
    loss, write_data, defaults = FAMILIES[name]
    runner = type(bundle)(name, {**defaults, "max_epochs": EPOCHS})
    data, out = tmp_path / "data", tmp_path / "runs" / f"{name}_run"
    write_data(data)
    store = tmp_path / "store" / "mlruns.db"
    files = ["train.json", f"loss_{loss}.json"]
    common = {
        "data_root": str(data),
        "output_dir": str(out),
        "tracking": tracking_file(name),
        "tracking_uri": path_to_sqlite_uri(store),
    }
    train = runner.run(files, **common)
    evaluate = runner.run([*files, "evaluate.json"], **common)

    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(store))
    experiment = client.get_experiment_by_name(name)  # named after the bundle
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {out.name, f"{out.name}_test"}
    assert all(r.info.status == "FINISHED" for r in runs.values())

    # training run: parameters
    run = runs[out.name]
    parser = train.parser
    params = run.data.params
    assert params["loss_name"] == loss
    assert params["max_epochs"] == str(EPOCHS)
    for key in ("learning_rate", "batch_size", "seed", "select_metric"):
        assert params[key] == str(parser.get_parsed_content(key))

    # the training loss per epoch is the mean of that epoch's iteration losses
    epoch_loss = history(client, run.info.run_id, "train_loss")
    iteration_loss = history(client, run.info.run_id, "train_loss_iteration")
    assert [s for s, _ in epoch_loss] == list(range(1, EPOCHS + 1))
    per_epoch = len(iteration_loss) // EPOCHS
    assert per_epoch >= 1 and len(iteration_loss) == per_epoch * EPOCHS
    assert [s for s, _ in iteration_loss] == list(range(1, len(iteration_loss) + 1))
    for epoch, value in epoch_loss:
        chunk = [v for _, v in iteration_loss[(epoch - 1) * per_epoch : epoch * per_epoch]]
        assert value == pytest.approx(np.mean(chunk), rel=1e-6)

    # every validation metric at every epoch; the last equals the validator's final state
    validator = parser.get_parsed_content("validate#evaluator")
    val_keys = {f"val_{k}" for k in parser.get_parsed_content("val_metrics")}
    assert val_keys == set(validator.state.metrics)
    for key in val_keys:
        steps = history(client, run.info.run_id, key)
        assert [s for s, _ in steps] == list(range(1, EPOCHS + 1))
        assert steps[-1][1] == pytest.approx(float(validator.state.metrics[key]), rel=1e-6)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert len(artifacts) == 1 and artifacts[0].startswith("config_")  # the executed config

    # evaluation run: the evaluator's metrics (the report's numbers included) and the report files
    run = runs[f"{out.name}_test"]
    assert run.data.params["eval_split"] == "test"
    metrics = evaluate.parser.get_parsed_content("validate#evaluator").state.metrics
    assert {k: float(v) for k, v in metrics.items()} == pytest.approx(run.data.metrics, rel=1e-6)
    eval_dir = out / "eval"
    written = {
        getattr(report_files, n)
        for n in report_files.__all__
        if n.isupper() and (eval_dir / getattr(report_files, n)).is_file()
    }
    assert any(f.endswith(".png") for f in written) and report_files.METRICS_JSON in written
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {a for a in artifacts if not a.startswith("config_")} == written
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "download")))
    for f in written:  # the same bytes as the files the report wrote
        assert (local / f).read_bytes() == (eval_dir / f).read_bytes()


@pytest.mark.slow
def test_two_process_training_logs_one_run_from_rank_0(bundle, tmp_path):
    """``multi_gpu_train.json`` + tracking through torchrun (gloo): only rank 0 logs, one run;
    ``train_loss`` per epoch (averaged over both ranks by ignite's ``Average``)."""
    name = "cell_segmentation"
    runner = type(bundle)(name, {**SEG_DEFAULTS, "num_test": 1, "num_val": 2})
    data, out = tmp_path / "data", tmp_path / "runs" / "ddp"
    write_dsb2018_folder(data)
    store = tmp_path / "store" / "mlruns.db"
    runner.run_cli(
        ["train.json", "loss_dice_ce.json", "multi_gpu_train.json"],
        nproc=2,
        data_root=data,
        output_dir=out,
        max_epochs=EPOCHS,
        tracking=tracking_file(name),
        tracking_uri=path_to_sqlite_uri(store),
    )
    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(store))
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [(out.name, "FINISHED")]
    run_id = runs[0].info.run_id
    for key in ("train_loss", "val_dice", "val_mean_iou", "val_ece"):
        assert [s for s, _ in history(client, run_id, key)] == list(range(1, EPOCHS + 1)), key
