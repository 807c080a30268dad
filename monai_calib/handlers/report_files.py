# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The files of an evaluation report: their names, and the one writer and reader of each.

The report handlers (:class:`~monai_calib.handlers.CalibrationReport`,
:class:`~monai_calib.handlers.MultiLabelCalibrationReport`,
:class:`~monai_calib.handlers.SegmentationCalibrationReport`) write them; ``python -m
monai_calib compare`` and the bundles' tests read them back.

- :data:`METRICS_JSON` / :data:`METRICS_CSV`: the report's numbers (a flat dict of floats; a
  header row and one row with 6 decimals).
- :data:`PREDICTIONS`: ``probs`` ``(N, K)`` float32 and ``labels`` (int64 class indices or
  float32 multi-hot), so figures and post-hoc calibration can be redone without re-running.
- :data:`RELIABILITY_STATISTICS`: ``(C, num_bins, 3)`` equal-width statistics of
  :func:`monai_calib.metrics.calibration_statistics`.
- :data:`RETENTION_CURVE`: ``fractions`` and ``accuracies`` of the accuracy-retention curve.
- the figures :data:`RELIABILITY_PNG`, :data:`RELIABILITY_PER_LABEL_PNG`,
  :data:`CONFIDENCE_DENSITY_PNG`, :data:`RETENTION_PNG`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from monai_calib.metrics.calibration_error import calibration_statistics
from monai_calib.metrics.retention import retention_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CONFIDENCE_DENSITY_PNG",
    "METRICS_CSV",
    "METRICS_JSON",
    "PREDICTIONS",
    "RELIABILITY_PER_LABEL_PNG",
    "RELIABILITY_PNG",
    "RELIABILITY_STATISTICS",
    "RETENTION_CURVE",
    "RETENTION_PNG",
    "read_metrics",
    "read_retention_curve",
    "read_statistics",
    "save_figure",
    "write_curve_files",
    "write_metrics_files",
    "write_predictions",
    "write_statistics",
]

METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
PREDICTIONS = "predictions.npz"
RELIABILITY_STATISTICS = "reliability_statistics.npy"
RETENTION_CURVE = "retention_curve.npz"
RELIABILITY_PNG = "reliability.png"
RELIABILITY_PER_LABEL_PNG = "reliability_per_label.png"
CONFIDENCE_DENSITY_PNG = "confidence_density.png"
RETENTION_PNG = "retention.png"


def write_metrics_files(output_dir: str | os.PathLike, results: dict[str, float]) -> None:
    """Write ``metrics.json`` and a one-row ``metrics.csv`` of a report (``output_dir`` created)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, METRICS_JSON), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(output_dir, METRICS_CSV), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(results))
        w.writerow([f"{v:.6f}" for v in results.values()])


def read_metrics(report_dir: str | os.PathLike) -> dict[str, float]:
    """The numbers of a report folder (its ``metrics.json``)."""
    with open(os.path.join(report_dir, METRICS_JSON)) as f:
        return json.load(f)


def write_predictions(
    output_dir: str | os.PathLike, probs: torch.Tensor, labels: torch.Tensor | np.ndarray
) -> None:
    """Write ``predictions.npz``: float32 ``probs``; ``labels`` int64 (indices) or float32."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    dtype = np.float32 if np.issubdtype(labels.dtype, np.floating) else np.int64
    np.savez_compressed(
        os.path.join(output_dir, PREDICTIONS),
        probs=probs.detach().cpu().numpy().astype(np.float32),
        labels=labels.astype(dtype),
    )


def write_statistics(output_dir: str | os.PathLike, stats: torch.Tensor) -> None:
    """Write ``reliability_statistics.npy`` (per-bin statistics ``(C, num_bins, 3)``)."""
    np.save(os.path.join(output_dir, RELIABILITY_STATISTICS), stats.detach().cpu().numpy())


def write_curve_files(
    output_dir: str | os.PathLike,
    probs: torch.Tensor,
    labels: torch.Tensor,
    num_bins: int = 15,
    target: str = "top_label",
) -> None:
    """Write the files ``compare`` draws its figures from, for any bundle.

    ``reliability_statistics.npy``: the ``(C, num_bins, 3)`` equal-width statistics (count,
    confidence sum, correctness sum) of :func:`monai_calib.metrics.calibration_statistics`;
    ``retention_curve.npz``: ``fractions`` and ``accuracies`` of the accuracy-retention curve
    (written only for ``target="top_label"``).
    """
    write_statistics(
        output_dir, calibration_statistics(probs, labels, num_bins=num_bins, target=target)
    )
    if target == "top_label":
        fractions, accuracies = retention_curve(probs, labels)
        np.savez(
            os.path.join(output_dir, RETENTION_CURVE),
            fractions=np.asarray(fractions.cpu()),
            accuracies=np.asarray(accuracies.cpu()),
        )


def save_figure(output_dir: str | os.PathLike, name: str, fig: Figure, dpi: float = 100) -> Path:
    """Save ``fig`` as ``output_dir/name`` (tight bounding box) and return the path."""
    path = Path(output_dir) / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def read_statistics(report_dir: str | os.PathLike) -> torch.Tensor:
    """The ``(C, num_bins, 3)`` statistics of a report folder (float64 tensor)."""
    return torch.from_numpy(np.load(os.path.join(report_dir, RELIABILITY_STATISTICS)))


def read_retention_curve(report_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(fractions, accuracies)`` of a report folder, or None when it has no curve."""
    path = os.path.join(report_dir, RETENTION_CURVE)
    if not os.path.isfile(path):
        return None
    d = np.load(path)
    return torch.from_numpy(d["fractions"]), torch.from_numpy(d["accuracies"])
