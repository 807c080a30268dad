# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Multi-label evaluation: a streaming macro-AUC handler and a full calibration report.

Both read per-label probabilities: the evaluator's post-transform must be the one that matches
the training loss (:math:`q = \\sigma(z)` for BCE, :math:`q = \\sigma(z)^2` for LDACE, see
:class:`monai_calib.transforms.SquaredSigmoidd`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.handlers.ignite_metric import IgniteMetricHandler

from monai_calib._utils.validation import check_threshold
from monai_calib.metrics._cumulative import StorageCumulativeMetric
from monai_calib.metrics.calibration_error import calibration_statistics
from monai_calib.metrics.multilabel import multilabel_auc
from monai_calib.metrics.reports import (
    MULTILABEL_METRICS,
    check_multilabel_pair,
    multilabel_report,
)
from monai_calib.visualize import plot_reliability_diagram, plot_reliability_panels

from .report import CalibrationReport
from .report_files import RELIABILITY_PER_LABEL_PNG, RELIABILITY_PNG, save_figure

__all__ = [
    "MULTILABEL_METRICS",
    "MultiLabelAUC",
    "MultiLabelCalibrationReport",
    "multilabel_report",
]


class _MultiLabelAUCMetric(StorageCumulativeMetric):
    """Buffers ``(probabilities, labels)`` chunks; ``aggregate()`` = :func:`multilabel_auc`."""

    _storage = "concat"

    def __init__(self, average: str = "macro") -> None:
        super().__init__()
        if average not in ("macro", "micro"):
            raise ValueError(f"average must be 'macro' or 'micro', got {average!r}.")
        self.average = average

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise ValueError("y (the ground truth) is required, got None.")
        y_pred, y = check_multilabel_pair(y_pred, y)
        return y_pred.detach().float(), y.detach().float()

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        probs, labels = self._require_buffer()
        return multilabel_auc(probs, labels, average=self.average)


class MultiLabelAUC(IgniteMetricHandler):
    r"""Multi-label ROC AUC of an epoch (all ranks), macro- or micro-averaged.

    .. math::

        \mathrm{AUC}_{\text{macro}} = \frac{1}{|\mathcal K|}\sum_{k \in \mathcal K}
        \mathrm{AUC}_k

    over the labels :math:`\mathcal K` that have both classes in the epoch
    (:func:`~monai_calib.metrics.multilabel_auc`). Unlike ``monai.handlers.ROCAUC``, whose macro
    mean becomes NaN as soon as one label has no positive (common for rare labels such as
    RFMiD's in a validation split, which would stop ``CheckpointSaver`` from ever saving), such
    a label is skipped with a warning. Higher is better.

    Inputs (through ``output_transform``):
        probabilities ``(B, K)`` (or a list of ``(K,)`` decollated items) and multi-hot labels of
        the same shape.

    Args:
        average: ``"macro"`` (default) or ``"micro"``.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``.

    Raises:
        ValueError: unknown ``average``; on update, shapes that are not ``(B, K)`` pairs.
    """

    def __init__(self, average: str = "macro", output_transform: Callable = lambda x: x) -> None:
        super().__init__(
            metric_fn=_MultiLabelAUCMetric(average=average),
            output_transform=output_transform,
            save_details=False,
        )


class MultiLabelCalibrationReport(CalibrationReport):
    """Collects an evaluator's per-label probabilities and labels and writes a report.

    At the end of each evaluation run it writes into ``output_dir``:

    - ``metrics.json`` / ``metrics.csv``: ``n`` and :data:`MULTILABEL_METRICS` (flat floats,
      see :func:`multilabel_report`);
    - ``reliability_statistics.npy``: the ``(K, num_bins, 3)`` per-label equal-width statistics
      ``calibration_statistics(probs, labels, target="marginal")``. ``compare`` draws them with
      :func:`~monai_calib.visualize.plot_reliability_diagram`, which pools the groups when no
      ``class_index`` is given: its panel is the micro-pooled diagram (every (sample, label)
      pair one point) and its ECE box equals ``ece_micro``;
    - ``predictions.npz``: ``probs`` ``(N, K)`` float32 and ``labels`` ``(N, K)`` float32;
    - with ``plots``: ``reliability.png`` (micro-pooled, with histogram) and
      ``reliability_per_label.png`` (one reliability panel per label, titled with its name and
      showing its own ECE).

    The numbers are also put in ``engine.state.metrics`` under ``prefix + name``. Under
    ``torch.distributed`` the predictions of all ranks are gathered and rank 0 writes.

    Args:
        output_dir: folder for the files (created).
        threshold: Hamming decision threshold on the probability. Defaults to 0.5.
        label_names: names of the ``K`` labels for the per-label panels (default ``label k``).
        ncols: panels per row of the per-label figure. Defaults to 5.
        kwargs: ``output_transform``, ``num_bins`` (15; of the calibration errors and the
            diagrams), ``prefix`` (``"test_"``), ``plots`` (True), ``title``: see
            :class:`~monai_calib.handlers.report.ReportHandler` (keywords only).

    Raises:
        ValueError: ``num_bins < 1``, ``threshold`` outside ``[0, 1]``, ``ncols < 1``; at the
            end of a run, no predictions, predictions that are not ``(N, K)``, or a
            ``label_names`` of another length than ``K``.
    """

    curve_target = "marginal"

    def __init__(
        self,
        output_dir: str,
        *,
        threshold: float = 0.5,
        label_names: Sequence[str] | None = None,
        ncols: int = 5,
        **kwargs: Any,
    ) -> None:
        if int(ncols) < 1:
            raise ValueError(f"ncols must be >= 1, got {ncols!r}.")
        super().__init__(output_dir, **kwargs)
        self.threshold = check_threshold(threshold)
        self.label_names = list(label_names) if label_names is not None else None
        self.ncols = int(ncols)

    def _labels_of(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The gathered multi-hot labels as float ``(N, K)``, checked against the predictions."""
        labels = labels.float().reshape(probs.shape) if labels.numel() == probs.numel() else labels
        check_multilabel_pair(probs, labels)
        if self.label_names is not None and len(self.label_names) != probs.shape[1]:
            raise ValueError(
                f"label_names has {len(self.label_names)} names but the predictions have "
                f"{probs.shape[1]} labels."
            )
        return labels

    def _report(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return multilabel_report(probs, labels, num_bins=self.num_bins, threshold=self.threshold)

    def _plot(self) -> None:
        stats = calibration_statistics(
            self.probs, self.labels, num_bins=self.num_bins, target="marginal"
        )
        fig, _ = plot_reliability_diagram(stats, title=self.figure_title)
        save_figure(self.output_dir, RELIABILITY_PNG, fig)
        names = self.label_names or [f"label {i}" for i in range(stats.shape[0])]
        panels = [(str(name), stats[i : i + 1]) for i, name in enumerate(names)]
        fig, _ = plot_reliability_panels(
            panels, ncols=self.ncols, show_histogram=False, title=self.figure_title
        )
        save_figure(self.output_dir, RELIABILITY_PER_LABEL_PNG, fig, dpi=80)
