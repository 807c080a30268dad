# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Plots: valid PNGs of the expected size, axis labels, and the numbers they show (ECE in the
text box, bar heights, R-AUC in the legend, group sizes) equal to the functional metrics."""

from __future__ import annotations

import re

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from monai_calib.metrics import (
    PooledCalibrationErrorMetric,
    RetentionAUCMetric,
    calibration_error,
    calibration_error_from_statistics,
    calibration_statistics,
    retention_auc,
    retention_curve,
)
from monai_calib.visualize import (
    plot_confidence_density,
    plot_reliability_diagram,
    plot_reliability_panels,
    plot_retention_curve,
)

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def _probs(n: int = 500, k: int = 4, seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, k, (n,), generator=g)
    return p, y


def _ece_in_text(ax) -> float:
    texts = [t.get_text() for t in ax.texts if t.get_text().startswith("ECE")]
    assert len(texts) == 1
    return float(re.search(r"ECE = ([0-9.]+)%", texts[0]).group(1)) / 100.0


def _png_shape(fig, path) -> tuple[int, ...]:
    fig.savefig(path)
    return mpimg.imread(str(path)).shape


def test_reliability_diagram_from_predictions(tmp_path):
    p, y = _probs()
    fig, (ax_rel, ax_hist) = plot_reliability_diagram(p, y, num_bins=10, title="model")
    assert isinstance(fig, Figure)
    assert _png_shape(fig, tmp_path / "rel.png") == (600, 500, 4)  # 5 x 6 in at 100 dpi
    assert ax_rel.get_ylabel() == "Accuracy"
    assert ax_hist.get_xlabel() == "Confidence"
    assert ax_hist.get_ylabel() == "Fraction"
    assert ax_rel.get_title() == "model"
    ece = calibration_error(p, y, num_bins=10).item()
    assert _ece_in_text(ax_rel) == pytest.approx(ece, abs=5e-5)
    # accuracy bars: one per non-empty bin, heights = plain per-bin accuracy
    conf, pred = p.max(1)
    correct = (pred == y).double()
    bins = torch.clamp(torch.ceil(conf * 10) - 1, 0, 9).long()
    acc = [correct[bins == b].mean().item() for b in range(10) if (bins == b).any()]
    heights = [bar.get_height() for bar in ax_rel.containers[0]]
    np.testing.assert_allclose(heights, acc, atol=1e-12)
    fractions = [bar.get_height() for bar in ax_hist.containers[0]]
    np.testing.assert_allclose(fractions, torch.bincount(bins, minlength=10) / len(y), atol=1e-12)


def test_reliability_diagram_from_statistics_and_metric_agree(tmp_path):
    p, y = _probs(seed=1)
    metric = PooledCalibrationErrorMetric(num_bins=15)
    metric(p[:200], y[:200])
    metric(p[200:], y[200:])
    _, (a1, _) = plot_reliability_diagram(metric)
    _, (a2, _) = plot_reliability_diagram(calibration_statistics(p, y))
    assert _ece_in_text(a1) == _ece_in_text(a2)
    assert _ece_in_text(a1) == pytest.approx(metric.aggregate().item(), abs=5e-5)
    h1 = [b.get_height() for b in a1.containers[0]]
    h2 = [b.get_height() for b in a2.containers[0]]
    np.testing.assert_allclose(h1, h2, atol=1e-12)
    # an equal-mass metric is drawn at equal-width positions (its buffer is re-binned)
    adaptive = PooledCalibrationErrorMetric(num_bins=15, binning="equal_mass")
    adaptive(p, y)
    _, (a3, _) = plot_reliability_diagram(adaptive)
    assert _ece_in_text(a3) == _ece_in_text(a2)


def test_reliability_diagram_axes_options_and_class_selection(tmp_path):
    p, y = _probs(seed=2)
    stats = calibration_statistics(p, y, num_bins=10, target="classwise")  # (4, 10, 3)
    fig = Figure(figsize=(8, 4), dpi=50)
    ax_a, ax_b = fig.subplots(1, 2)
    fig_out, axes = plot_reliability_diagram(stats, class_index=2, ax=(ax_a, ax_b))
    assert fig_out is fig and axes == (ax_a, ax_b)
    assert _png_shape(fig, tmp_path / "pair.png") == (200, 400, 4)
    per_class = calibration_error_from_statistics(stats, average=False)
    assert _ece_in_text(ax_a) == pytest.approx(per_class[2].item(), abs=5e-5)
    pooled = calibration_error_from_statistics(stats.sum(0, keepdim=True))
    fig2, ax_single = plot_reliability_diagram(stats, show_histogram=False)
    assert ax_single.get_xlabel() == "Confidence"
    assert _ece_in_text(ax_single) == pytest.approx(pooled.item(), abs=5e-5)
    assert len(fig2.axes) == 1


def test_reliability_diagram_errors():
    p, y = _probs(n=20)
    with pytest.raises(TypeError, match="statistics"):
        plot_reliability_diagram([1, 2, 3])
    with pytest.raises(ValueError, match=r"\(C, num_bins, 3\)"):
        plot_reliability_diagram(torch.zeros(4, 10, 2))
    with pytest.raises(ValueError, match="class_index"):
        plot_reliability_diagram(calibration_statistics(p, y), class_index=3)
    with pytest.raises(TypeError, match="ax"):
        plot_reliability_diagram(p, y, ax="axes")
    with pytest.raises(ValueError, match="pair"):
        fig = Figure()
        plot_reliability_diagram(p, y, ax=tuple(fig.subplots(1, 3)))


def test_confidence_density(tmp_path):
    p, y = _probs(seed=3, scale=1.5)
    fig, ax = plot_confidence_density(p, y, num_bins=20)
    assert _png_shape(fig, tmp_path / "density.png") == (400, 550, 4)
    assert ax.get_xlabel() == "Confidence"
    assert ax.get_ylabel() == "Density"
    n_correct = int((p.argmax(1) == y).sum())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"Correct (n={n_correct})", f"Incorrect (n={len(y) - n_correct})"]
    # density=True: each filled histogram has unit area
    for patch in ax.patches[:2]:
        xy = patch.get_xy()
        assert abs(_trapezoid(xy[:, 1], xy[:, 0])) == pytest.approx(1.0, rel=1e-6)
    _, ax_counts = plot_confidence_density(p, y, density=False)
    assert ax_counts.get_ylabel() == "Count"
    with pytest.raises(ValueError, match="num_bins"):
        plot_confidence_density(p, y, num_bins=0)


def test_retention_curves(tmp_path):
    p1, y = _probs(seed=4)
    p2 = torch.softmax(torch.log(p1) * 0.3, dim=1)  # same argmax, different confidence
    metric = RetentionAUCMetric()
    metric(p2, y)
    fig, ax = plot_retention_curve(
        {"sharp": retention_curve(p1, y), "metric": metric}, title="retention"
    )
    assert _png_shape(fig, tmp_path / "retention.png") == (450, 550, 4)
    assert ax.get_xlabel() == "Retained fraction"
    assert ax.get_ylabel() == "Accuracy"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    expected = [retention_auc(p1, y).item(), retention_auc(p2, y).item()]
    for text, name, value in zip(legend, ("sharp", "metric"), expected, strict=True):
        assert text == f"{name} (R-AUC = {value:.4f})"
    assert len(ax.get_lines()) == 2
    _, ax_raw = plot_retention_curve(p1, y, label="raw", grid="linear", num_points=30)
    value = retention_auc(p1, y, grid="linear", num_points=30).item()
    assert ax_raw.get_legend().get_texts()[0].get_text() == f"raw (R-AUC = {value:.4f})"
    with pytest.raises(ValueError, match="empty"):
        plot_retention_curve({})
    with pytest.raises(TypeError, match="y is required"):
        plot_retention_curve(p1)
    with pytest.raises(TypeError, match="pair"):
        plot_retention_curve({"bad": 3})
    with pytest.raises(TypeError, match="mapping"):
        plot_retention_curve([1, 2])


def test_reliability_panels_compact_grid(tmp_path):
    """Per-label panels (the multi-label report): each panel's ECE is its own group's."""
    p, y = _probs(seed=5)
    stats = calibration_statistics(p, y, num_bins=10, target="classwise")  # (4, 10, 3)
    per_class = calibration_error_from_statistics(stats, average=False)
    panels = [(f"class {i}", stats[i : i + 1]) for i in range(4)]
    fig, axes = plot_reliability_panels(panels, ncols=3, show_histogram=False, title="model")
    assert len(axes) == 4 and len(fig.axes) == 4
    assert _png_shape(fig, tmp_path / "panels.png") == (640, 960, 4)  # 3 x 2 panels of 3.2 in
    assert fig._suptitle.get_text() == "model"
    for i, ax in enumerate(axes):
        assert ax.get_title() == f"class {i}"
        assert _ece_in_text(ax) == pytest.approx(per_class[i].item(), abs=5e-5)
        assert ax.get_ylabel() == ("Accuracy" if i % 3 == 0 else "")
        assert (ax.get_legend() is not None) == (i == 0)


def test_reliability_panels_with_histograms(tmp_path):
    """Methods side by side (compare): a diagram and a histogram per panel, from any source."""
    p, y = _probs(seed=6)
    metric = PooledCalibrationErrorMetric(num_bins=15)
    metric(p, y)
    sharp = torch.softmax(torch.log(p) * 2.0, dim=1)
    fig, axes = plot_reliability_panels(
        {"metric": metric, "sharp": calibration_statistics(sharp, y)}
    )
    assert _png_shape(fig, tmp_path / "methods.png") == (550, 800, 4)  # 2 panels of 4 x 5.5 in
    assert [pair[0].get_title() for pair in axes] == ["metric", "sharp"]
    assert _ece_in_text(axes[0][0]) == pytest.approx(metric.aggregate().item(), abs=5e-5)
    assert _ece_in_text(axes[1][0]) == pytest.approx(calibration_error(sharp, y).item(), abs=5e-5)
    assert all(pair[1].get_ylabel() == "Fraction" for pair in axes)
    with pytest.raises(ValueError, match="empty"):
        plot_reliability_panels([])
    with pytest.raises(ValueError, match="ncols"):
        plot_reliability_panels({"a": metric}, ncols=0)
    with pytest.raises(TypeError, match="statistics"):
        plot_reliability_panels({"a": [1, 2]})


def test_plots_do_not_touch_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    p, y = _probs(n=50)
    plot_reliability_diagram(p, y)
    plot_confidence_density(p, y)
    plot_retention_curve(p, y)
    plot_reliability_panels({"a": calibration_statistics(p, y)}, show_histogram=False)
    assert plt.get_fignums() == before
