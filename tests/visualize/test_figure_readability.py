# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Figures read at a glance (issue 14): the legend never covers a bar, histograms of a panel grid
share one y scale, bins show their counts, dashed lines are labelled, over- and under-confidence
gaps look different, titles show the methods' names, the retention figure says its ordering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from monai_calib.bundles import METHOD_NAMES, method_name, overlays
from monai_calib.metrics import calibration_statistics, retention_curve
from monai_calib.visualize import (
    plot_confidence_density,
    plot_reliability_diagram,
    plot_reliability_panels,
    plot_retention_curve,
)


def _binary(n: int = 400, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g) < torch.sigmoid(0.7 * z)).long()
    p1 = torch.sigmoid(z)
    return torch.stack([1 - p1, p1], 1), y


def _multiclass(n: int = 600, k: int = 4, temperature: float = 1.0, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    keep = torch.rand(n, generator=g) < 0.6
    y = torch.where(keep, logits.argmax(1), torch.randint(0, k, (n,), generator=g))
    return torch.softmax(logits / temperature, 1), y


def _boxes(fig, artists):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def _patches(ax):
    return [p for c in ax.containers for p in c.patches]


@pytest.mark.parametrize(
    "case",
    ["binary", "under_confident", "over_confident"],
)
def test_legend_does_not_overlap_bars_or_title(case):
    p, y = {
        "binary": _binary,
        "under_confident": lambda: _multiclass(temperature=4.0),
        "over_confident": lambda: _multiclass(temperature=0.5),
    }[case]()
    fig, (ax, ax_hist) = plot_reliability_diagram(p, y, title="CE")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    legend = ax.get_legend()
    assert legend is not None
    legend_box, title_box, *bar_boxes = _boxes(fig, [legend, ax.title, *_patches(ax)])
    assert bar_boxes  # the diagram has bars
    for box in bar_boxes:
        assert not legend_box.overlaps(box)
    assert not legend_box.overlaps(title_box)
    # the histogram's legend stays above its bars too
    hist_legend, *hist_bars = _boxes(fig, [ax_hist.get_legend(), *ax_hist.containers[0].patches])
    assert not any(hist_legend.overlaps(b) for b in hist_bars if b.height > 0)


def test_bin_counts_annotated_and_shaded():
    p, y = _multiclass()
    _, (ax, _) = plot_reliability_diagram(p, y, num_bins=10)
    conf = p.max(1).values
    bins = torch.clamp(torch.ceil(conf * 10) - 1, 0, 9).long()
    counts = torch.bincount(bins, minlength=10)
    expected = {round((b + 0.5) / 10, 6): int(c) for b, c in enumerate(counts) if c > 0}
    shown = {round(t.get_position()[0], 6): t.get_text() for t in ax.texts if t.get_gid()}
    assert shown == {x: str(c) for x, c in expected.items()}
    # fuller bins are drawn more opaque: the opacity order follows the count order
    alphas = [bar.get_facecolor()[3] for bar in ax.containers[0]]
    nonzero = [c for c in counts.tolist() if c > 0]
    assert alphas[int(np.argmax(nonzero))] == pytest.approx(1.0)
    assert np.all(np.diff(np.array(alphas)[np.argsort(nonzero)]) >= -1e-12)
    assert min(alphas) < 0.5  # a sparse bin looks lighter


def test_large_counts_are_abbreviated():
    p, y = _multiclass()
    stats = calibration_statistics(p, y, num_bins=10) * 10_000.0
    _, ax = plot_reliability_diagram(stats, show_histogram=False)
    texts = [t.get_text() for t in ax.texts if t.get_gid()]
    assert texts and all(t[-1] in "kM" and len(t) <= 4 for t in texts)


def test_over_and_under_confidence_gaps_differ_and_are_in_the_legend():
    p, y = _multiclass(temperature=1.0)
    _, (ax, _) = plot_reliability_diagram(p, y, num_bins=10)
    conf = p.max(1).values
    correct = (p.argmax(1) == y).double()
    bins = torch.clamp(torch.ceil(conf * 10) - 1, 0, 9).long()
    over = under = 0
    for b in range(10):
        m = bins == b
        if m.any():
            over += int(conf[m].mean() > correct[m].mean())
            under += int(conf[m].mean() < correct[m].mean())
    assert over and under  # the data has both kinds
    over_bars, under_bars = ax.containers[1], ax.containers[2]
    assert len(over_bars) == over and len(under_bars) == under
    o, u = over_bars.patches[0], under_bars.patches[0]
    assert to_rgba(o.get_edgecolor()) != to_rgba(u.get_edgecolor())
    assert o.get_hatch() != u.get_hatch()
    # distinct hues, not two shades of one colour
    assert np.abs(np.array(o.get_edgecolor()[:3]) - np.array(u.get_edgecolor()[:3])).max() > 0.4
    labels = [t.get_text().lower() for t in ax.get_legend().get_texts()]
    assert any("over-confident" in t for t in labels)
    assert any("under-confident" in t for t in labels)
    handles = ax.get_legend().legend_handles
    legend_hatches = {h.get_hatch() for h in handles if getattr(h, "get_hatch", lambda: None)()}
    assert {o.get_hatch(), u.get_hatch()} <= legend_hatches


def test_panel_histograms_share_y_scale_and_fit_every_bar():
    sharp, y = _multiclass(temperature=0.3)
    flat, _ = _multiclass(temperature=3.0)
    panels = {"ce": calibration_statistics(sharp, y), "ls": calibration_statistics(flat, y)}
    _, axes = plot_reliability_panels(panels)
    limits = {pair[1].get_ylim() for pair in axes}
    assert len(limits) == 1
    tallest = max(b.get_height() for pair in axes for b in pair[1].containers[0])
    assert limits.pop()[1] >= tallest
    # one legend for the grid, on the first panel
    assert [pair[0].get_legend() is not None for pair in axes] == [True, False]


def test_density_dashed_lines_are_labelled():
    p, y = _multiclass()
    _, ax = plot_confidence_density(p, y)
    correct = p.max(1).values[p.argmax(1) == y]
    wrong = p.max(1).values[p.argmax(1) != y]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2
    labels = [line.get_label() for line in dashed]
    assert labels == [
        f"Mean confidence, correct ({correct.mean():.2f})",
        f"Mean confidence, incorrect ({wrong.mean():.2f})",
    ]
    from matplotlib.legend import Legend

    legends = [a for a in ax.get_children() if isinstance(a, Legend)]
    shown = [t.get_text() for leg in legends for t in leg.get_texts()]
    assert set(labels) <= set(shown)


def test_retention_says_samples_are_ordered_by_confidence():
    p, y = _multiclass()
    fig, ax = plot_retention_curve({"CE": retention_curve(p, y)})
    notes = [t.get_text() for t in ax.texts]
    xlabel = " ".join([ax.get_xlabel(), *notes]).lower()
    assert "ordered by confidence" in xlabel and "most confident" in xlabel
    # the note sits below the x label, not on the plot
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    note = next(t for t in ax.texts if "confidence" in t.get_text())
    label_box, note_box = _boxes(fig, [ax.xaxis.label, note])
    assert note_box.y1 <= label_box.y0 + 1e-6


def test_method_display_names():
    assert method_name("mit") == "MiT"
    assert method_name("cct_eal") == "CCT-EAL"
    assert method_name("ce+ts") == "CE + TS"
    assert method_name("my model") == "my model"
    # every shipped loss overlay has a display name
    for bundle in ("medmnist_classification", "cell_segmentation", "chestmnist_multilabel"):
        assert set(overlays(bundle)) <= set(METHOD_NAMES)


def test_report_figures_use_display_names(tmp_path):
    from monai_calib.handlers import CalibrationReport

    report = CalibrationReport(str(tmp_path), title="cct_eal+ts")
    assert report.title == "cct_eal+ts"
    assert report.figure_title == "CCT-EAL + TS"
    assert CalibrationReport(str(tmp_path)).figure_title is None
