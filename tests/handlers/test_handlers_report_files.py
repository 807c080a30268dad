# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""handlers.report_files: the one writer/reader of the report files, and the handlers using it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from monai_calib.handlers import CalibrationReport, report_files
from monai_calib.handlers.report_files import (
    CONFIDENCE_DENSITY_PNG,
    METRICS_CSV,
    METRICS_JSON,
    PREDICTIONS,
    RELIABILITY_PNG,
    RELIABILITY_STATISTICS,
    RETENTION_CURVE,
    RETENTION_PNG,
    read_metrics,
    read_retention_curve,
    read_statistics,
    write_curve_files,
    write_metrics_files,
    write_predictions,
)
from monai_calib.metrics import calibration_statistics, retention_curve


def _probs(n: int = 60, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, k, generator=g), 1), torch.randint(
        0, k, (n,), generator=g
    )


def test_metrics_files_round_trip(tmp_path):
    results = {"n": 3.0, "ece": 0.1234567891, "nll": float("nan")}
    write_metrics_files(tmp_path / "new", results)
    saved = json.loads((tmp_path / "new" / "metrics.json").read_text())
    assert saved == pytest.approx(results, nan_ok=True)
    with open(tmp_path / "new" / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["n", "ece", "nll"], ["3.000000", "0.123457", "nan"]]
    assert read_metrics(tmp_path / "new") == pytest.approx(results, nan_ok=True)


def test_predictions_dtypes(tmp_path):
    p, y = _probs()
    write_predictions(tmp_path, p.double(), y)
    d = np.load(tmp_path / PREDICTIONS)
    assert d["probs"].dtype == np.float32 and d["labels"].dtype == np.int64
    np.testing.assert_array_equal(d["probs"], p.numpy())
    np.testing.assert_array_equal(d["labels"], y.numpy())
    write_predictions(tmp_path, p, (p > 0.5).double())  # multi-hot labels stay float
    assert np.load(tmp_path / PREDICTIONS)["labels"].dtype == np.float32
    write_predictions(tmp_path, p, y.numpy().astype(np.int32))  # numpy labels too
    assert np.load(tmp_path / PREDICTIONS)["labels"].dtype == np.int64


def test_curve_files_hold_the_metric_functions_outputs(tmp_path):
    p, y = _probs(seed=1)
    (tmp_path / "a").mkdir()
    write_curve_files(tmp_path / "a", p, y, num_bins=10)
    torch.testing.assert_close(
        read_statistics(tmp_path / "a"), calibration_statistics(p, y, num_bins=10), rtol=0, atol=0
    )
    fractions, accuracies = read_retention_curve(tmp_path / "a")
    ref = retention_curve(p, y)
    torch.testing.assert_close(fractions, ref[0], rtol=0, atol=0)
    torch.testing.assert_close(accuracies, ref[1], rtol=0, atol=0)
    (tmp_path / "b").mkdir()
    multi_hot = (torch.rand(60, 3, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    write_curve_files(tmp_path / "b", p, multi_hot, target="marginal")
    assert read_statistics(tmp_path / "b").shape == (3, 15, 3)
    assert read_retention_curve(tmp_path / "b") is None  # top-label only


def test_classification_report_writes_exactly_the_named_files(tmp_path):
    p, y = _probs(n=50)
    engine = Engine(lambda e, b: b)
    CalibrationReport(str(tmp_path / "eval"), title="ce").attach(engine)
    engine.run([{"pred": p[:30], "label": y[:30]}, {"pred": p[30:], "label": y[30:]}])
    written = {f.name for f in (tmp_path / "eval").iterdir()}
    assert written == {
        METRICS_JSON,
        METRICS_CSV,
        PREDICTIONS,
        RELIABILITY_STATISTICS,
        RETENTION_CURVE,
        RELIABILITY_PNG,
        CONFIDENCE_DENSITY_PNG,
        RETENTION_PNG,
    }
    assert read_metrics(tmp_path / "eval")["n"] == 50.0
    assert engine.state.metrics["test_n"] == 50.0
    assert set(report_files.__all__) >= {"write_metrics_files", "write_curve_files"}
