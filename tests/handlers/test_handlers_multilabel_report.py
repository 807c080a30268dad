# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""multilabel_report / MultiLabelCalibrationReport / MultiLabelAUC against plain float64
computations and scikit-learn."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import roc_auc_score

from monai_calib.handlers import (
    MULTILABEL_METRICS,
    MultiLabelAUC,
    MultiLabelCalibrationReport,
    multilabel_report,
)


def _data(n=300, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, k, generator=g) < torch.linspace(0.1, 0.6, k)).double()
    # informative, miscalibrated, tie-free probabilities
    p = torch.sigmoid(2.0 * (y - 0.5) + torch.randn(n, k, generator=g, dtype=torch.float64))
    p = (0.8 * p + 0.1) ** 1.3
    return p, y


def _bins_equal_width(q, m):
    # (b/M, (b+1)/M], 0 in the first bin
    return np.clip(np.ceil(q * m) - 1, 0, m - 1).astype(int)


def _gaps(q, t, bins, m):
    out = []
    for b in range(m):
        sel = bins == b
        if sel.any():
            out.append((sel.sum(), abs(t[sel].mean() - q[sel].mean())))
    return out


def _ece(q, t, bins, m):
    return sum(n * g for n, g in _gaps(q, t, bins, m)) / len(q)


def _reference(p, y, m=15, thr=0.5):
    p, y = p.numpy(), y.numpy()
    n, k = p.shape
    per = [_ece(p[:, j], y[:, j], _bins_equal_width(p[:, j], m), m) for j in range(k)]
    mce = [
        max(g for _, g in _gaps(p[:, j], y[:, j], _bins_equal_width(p[:, j], m), m))
        for j in range(k)
    ]
    ace = []
    for j in range(k):
        order = np.argsort(p[:, j], kind="stable")
        bins = np.empty(n, dtype=int)
        bins[order] = (np.arange(n) * m) // n
        ace.append(_ece(p[:, j], y[:, j], bins, m))
    pos = y.sum(0)
    flat_q, flat_t = p.reshape(-1), y.reshape(-1)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "n": float(n),
        "hamming": float(((p >= thr) != (y == 1)).mean()),
        "auc_macro": float(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(k)])),
        "auc_micro": float(roc_auc_score(flat_t, flat_q)),
        "ece": float(np.mean(per)),
        "ece_micro": float(_ece(flat_q, flat_t, _bins_equal_width(flat_q, m), m)),
        "ece_weighted": float((np.asarray(per) * pos).sum() / pos.sum()),
        "ace": float(np.mean(ace)),
        "mce": float(np.mean(mce)),
        "brier": float(((p - y) ** 2).mean()),
        "nll": float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_report_matches_plain_computation(seed):
    p, y = _data(seed=seed)
    got = multilabel_report(p, y)
    ref = _reference(p, y)
    assert list(got) == ["n", *MULTILABEL_METRICS]
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_report_threshold_and_bins():
    p, y = _data(seed=3)
    got = multilabel_report(p, y, num_bins=10, threshold=0.3)
    ref = _reference(p, y, m=10, thr=0.3)
    for key in ("hamming", "ece", "ace", "mce", "ece_micro"):
        assert got[key] == pytest.approx(ref[key], rel=1e-9), key


def test_report_rejects_bad_shapes():
    p, y = _data()
    with pytest.raises(ValueError, match="same shape"):
        multilabel_report(p, y[:, :3])
    with pytest.raises(ValueError):
        multilabel_report(p * 2, y)


def _engine(batches, handler, name=None):
    engine = Engine(lambda e, b: b)
    if name is None:
        handler.attach(engine)
    else:
        handler.attach(engine, name)
    engine.run(batches, max_epochs=1)
    return engine


def _batches(p, y, size=64, decollate=False):
    out = []
    for i in range(0, len(p), size):
        bp, by = p[i : i + size].float(), y[i : i + size].float()
        if decollate:
            out.append([{"pred": a, "label": b} for a, b in zip(bp, by, strict=True)])
        else:
            out.append({"pred": bp, "label": by})
    return out


@pytest.mark.parametrize("decollate", [False, True])
def test_report_handler_writes_files(tmp_path, decollate):
    p, y = _data(n=200, k=4)
    names = ["a", "b", "c", "d"]
    rep = MultiLabelCalibrationReport(str(tmp_path), title="bce", label_names=names, ncols=3)
    engine = _engine(_batches(p, y, decollate=decollate), rep)
    expected = multilabel_report(p.float(), y.float())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == list(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-12), key
        assert engine.state.metrics["test_" + key] == pytest.approx(value, rel=1e-12)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(expected)
    assert [float(v) for v in rows[1]] == pytest.approx(list(expected.values()), abs=1e-6)

    stats = np.load(tmp_path / "reliability_statistics.npy")
    assert stats.shape == (4, 15, 3)
    np.testing.assert_array_equal(stats[..., 0].sum(1), np.full(4, 200.0))
    np.testing.assert_allclose(stats[..., 2].sum(1), y.numpy().sum(0))
    assert not (tmp_path / "retention_curve.npz").exists()  # top-label only
    saved = np.load(tmp_path / "predictions.npz")
    np.testing.assert_array_equal(saved["probs"], p.float().numpy())
    np.testing.assert_array_equal(saved["labels"], y.float().numpy())
    for png in ("reliability.png", "reliability_per_label.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_compare_panel_draws_micro_pooled_statistics(tmp_path):
    """compare draws reliability_statistics.npy without class_index: the pooled diagram, whose
    ECE is the report's ece_micro."""
    from monai_calib.metrics import calibration_error_from_statistics
    from monai_calib.visualize import plot_reliability_diagram
    from monai_calib.visualize.reliability import reliability_statistics

    p, y = _data(n=150, k=6)
    rep = MultiLabelCalibrationReport(str(tmp_path), plots=False)
    _engine(_batches(p, y), rep)
    stats = torch.from_numpy(np.load(tmp_path / "reliability_statistics.npy"))
    pooled = reliability_statistics(stats)
    assert pooled.shape == (1, 15, 3)
    assert float(calibration_error_from_statistics(pooled)) == pytest.approx(
        rep.results["ece_micro"], rel=1e-12
    )
    plot_reliability_diagram(stats, title="ldace")  # does not raise for C = 6


def test_report_handler_errors(tmp_path):
    with pytest.raises(ValueError, match="threshold"):
        MultiLabelCalibrationReport(str(tmp_path), threshold=1.5)
    with pytest.raises(ValueError, match="ncols"):
        MultiLabelCalibrationReport(str(tmp_path), ncols=0)
    p, y = _data(n=20, k=3)
    rep = MultiLabelCalibrationReport(str(tmp_path), label_names=["x"], plots=False)
    with pytest.raises(ValueError, match="label_names"):
        _engine(_batches(p, y), rep)
    rep = MultiLabelCalibrationReport(str(tmp_path), plots=False)
    with pytest.raises(ValueError, match="no predictions"):
        rep(Engine(lambda e, b: b))


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_auc_handler_matches_sklearn(average):
    p, y = _data(n=180, k=4, seed=5)
    engine = _engine(
        _batches(p, y, size=50, decollate=True),
        MultiLabelAUC(
            average=average,
            output_transform=lambda out: ([d["pred"] for d in out], [d["label"] for d in out]),
        ),
        name="auc",
    )
    pn, yn = p.float().numpy(), y.numpy()
    if average == "macro":
        ref = np.mean([roc_auc_score(yn[:, j], pn[:, j]) for j in range(4)])
    else:
        ref = roc_auc_score(yn.reshape(-1), pn.reshape(-1))
    assert engine.state.metrics["auc"] == pytest.approx(ref, rel=1e-9)


def test_auc_handler_skips_label_without_positives():
    p, y = _data(n=100, k=4, seed=2)
    y[:, 1] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = _engine(
            _batches(p, y), MultiLabelAUC(output_transform=lambda o: (o["pred"], o["label"])), "auc"
        )
    pn, yn = p.float().numpy(), y.numpy()
    ref = np.mean([roc_auc_score(yn[:, j], pn[:, j]) for j in (0, 2, 3)])
    assert engine.state.metrics["auc"] == pytest.approx(ref, rel=1e-9)
    assert not math.isnan(engine.state.metrics["auc"])


def test_auc_handler_bad_average():
    with pytest.raises(ValueError, match="average"):
        MultiLabelAUC(average="weighted")
