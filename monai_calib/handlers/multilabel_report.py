# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Multi-label evaluation: a streaming macro-AUC handler and a full calibration report.

Both read per-label probabilities: the evaluator's post-transform must be the one that matches
the training loss (:math:`q = \\sigma(z)` for BCE, :math:`q = \\sigma(z)^2` for LDACE, see
:class:`monai_calib.transforms.SquaredSigmoidd`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.handlers.utils import from_engine

from monai_calib.metrics._cumulative import StorageCumulativeMetric

from .report import CalibrationReport, write_curve_files, write_metrics_files

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "MULTILABEL_METRICS",
    "MultiLabelAUC",
    "MultiLabelCalibrationReport",
    "multilabel_report",
]

_PRED_LABEL = from_engine(["pred", "label"])

# Column order of the report (also the order of its metrics.csv).
MULTILABEL_METRICS = (
    "hamming",
    "auc_macro",
    "auc_micro",
    "ece",
    "ece_micro",
    "ece_weighted",
    "ace",
    "mce",
    "brier",
    "nll",
)


def _check_pair(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"y_pred and y must be torch.Tensors, got {type(y_pred).__name__} and "
            f"{type(y).__name__}."
        )
    if y_pred.ndim != 2 or tuple(y.shape) != tuple(y_pred.shape):
        raise ValueError(
            "y_pred must have shape (N, K) and y (multi-hot labels) the same shape, got "
            f"{tuple(y_pred.shape)} and {tuple(y.shape)}."
        )
    return y_pred, y


def multilabel_report(
    y_pred: torch.Tensor, y: torch.Tensor, num_bins: int = 15, threshold: float = 0.5
) -> dict[str, float]:
    r"""All numbers of the multi-label report for probabilities ``(N, K)`` and multi-hot labels.

    With per-label probabilities :math:`q_{nk}`, labels :math:`y_{nk}`, per-label equal-width
    statistics :math:`S_k` (:func:`~monai_calib.metrics.calibration_statistics` with
    ``target="marginal"``) and :math:`\mathrm{CE}(S)` the binned error of
    :func:`~monai_calib.metrics.calibration_error_from_statistics`:

    .. math::

        \mathrm{ece} = \frac{1}{K}\sum_k \mathrm{ECE}(S_k), \quad
        \mathrm{ece\_micro} = \mathrm{ECE}\Big(\sum_k S_k\Big), \quad
        \mathrm{ece\_weighted} = \sum_k \frac{\pi_k}{\sum_j \pi_j} \mathrm{ECE}(S_k)

    (:math:`\pi_k` the number of positives of label :math:`k`); ``ace`` is the macro mean of
    the per-label equal-mass (adaptive) ECE, ``mce`` the macro mean of the per-label maximum
    calibration error; ``hamming`` the Hamming loss at ``q >= threshold``
    (:func:`~monai_calib.metrics.hamming_loss`); ``auc_macro`` / ``auc_micro`` the rank-based
    ROC AUC (:func:`~monai_calib.metrics.multilabel_auc`; a label with one class only is left
    out of the macro mean with a warning); ``brier`` and ``nll`` the mean over samples and labels
    of :math:`(q - y)^2` and of the binary cross-entropy (probabilities clipped to
    :math:`[10^{-7}, 1 - 10^{-7}]`). Every value is a plain fraction (not %).

    Inputs:
        - ``y_pred``: ``(N, K)`` probabilities in ``[0, 1]``.
        - ``y``: ``(N, K)`` multi-hot labels in {0, 1}.

    Args:
        num_bins: bins of the equal-width and equal-mass errors. Defaults to 15.
        threshold: Hamming decision threshold. Defaults to 0.5.

    Returns:
        ``{"n": N, "hamming": ..., "auc_macro": ..., ...}`` (keys: ``"n"`` then
        :data:`MULTILABEL_METRICS`), Python floats.

    Raises:
        ValueError / TypeError: bad shapes, probabilities outside [0, 1], non-binary labels
            (from the metric functions).
    """
    from monai_calib.metrics import (
        brier_score,
        calibration_error_from_statistics,
        calibration_statistics,
        hamming_loss,
        multilabel_auc,
        negative_log_likelihood,
    )

    p, t = _check_pair(y_pred, y)
    p = p.double()
    t = t.double()
    stats = calibration_statistics(p, t, num_bins=num_bins, target="marginal")
    per_label = calibration_error_from_statistics(stats, average=False)
    positives = stats[..., 2].sum(-1)
    weighted = (
        float((per_label * positives).sum() / positives.sum())
        if float(positives.sum()) > 0
        else math.nan
    )
    mass = calibration_statistics(p, t, num_bins=num_bins, target="marginal", binning="equal_mass")
    return {
        "n": float(p.shape[0]),
        "hamming": float(hamming_loss(p, t, threshold=threshold)),
        "auc_macro": float(multilabel_auc(p, t, average="macro")),
        "auc_micro": float(multilabel_auc(p, t, average="micro")),
        "ece": float(per_label.mean()),
        "ece_micro": float(calibration_error_from_statistics(stats.sum(0, keepdim=True))),
        "ece_weighted": weighted,
        "ace": float(calibration_error_from_statistics(mass)),
        "mce": float(calibration_error_from_statistics(stats, reduction="maximum")),
        "brier": float(brier_score(p, t, multilabel=True)),
        "nll": float(negative_log_likelihood(p, t, multilabel=True)),
    }


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
        y_pred, y = _check_pair(y_pred, y)
        return y_pred.detach().float(), y.detach().float()

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        from monai_calib.metrics import multilabel_auc

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
        output_transform: maps ``engine.state.output`` to ``(probabilities, labels)``; the default
            reads the decollated ``pred`` / ``label`` items, which must already be probabilities.
        num_bins: bins of the calibration errors and diagrams. Defaults to 15.
        threshold: Hamming decision threshold on the probability. Defaults to 0.5.
        prefix: prefix of the keys put into ``engine.state.metrics``. Defaults to ``"test_"``.
        plots: write the PNG figures. Defaults to True.
        title: title of the figures (e.g. the loss name).
        label_names: names of the ``K`` labels for the per-label panels (default ``label k``).
        ncols: panels per row of the per-label figure. Defaults to 5.

    Raises:
        ValueError: ``num_bins < 1``, ``threshold`` outside ``[0, 1]``, ``ncols < 1``; at the
            end of a run, no predictions, predictions that are not ``(N, K)``, or a
            ``label_names`` of another length than ``K``.
    """

    def __init__(
        self,
        output_dir: str,
        output_transform: Callable = _PRED_LABEL,
        num_bins: int = 15,
        threshold: float = 0.5,
        prefix: str = "test_",
        plots: bool = True,
        title: str | None = None,
        label_names: Sequence[str] | None = None,
        ncols: int = 5,
    ) -> None:
        super().__init__(
            output_dir=output_dir,
            output_transform=output_transform,
            num_bins=num_bins,
            prefix=prefix,
            plots=plots,
            title=title,
        )
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}.")
        if int(ncols) < 1:
            raise ValueError(f"ncols must be >= 1, got {ncols!r}.")
        self.threshold = float(threshold)
        self.label_names = list(label_names) if label_names is not None else None
        self.ncols = int(ncols)

    def __call__(self, engine: Engine) -> None:
        probs, labels = self._gathered()
        if probs.numel() == 0:
            raise ValueError(
                "MultiLabelCalibrationReport received no predictions during the evaluation run."
            )
        labels = labels.float().reshape(probs.shape) if labels.numel() == probs.numel() else labels
        _check_pair(probs, labels)
        if self.label_names is not None and len(self.label_names) != probs.shape[1]:
            raise ValueError(
                f"label_names has {len(self.label_names)} names but the predictions have "
                f"{probs.shape[1]} labels."
            )
        self.results = multilabel_report(
            probs, labels, num_bins=self.num_bins, threshold=self.threshold
        )
        for name, value in self.results.items():
            engine.state.metrics[self.prefix + name] = value
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == 0:
            self.write(probs, labels)

    def write(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Write the files listed in the class docstring for gathered ``(N, K)`` tensors."""
        import os

        write_metrics_files(self.output_dir, self.results)
        np.savez_compressed(
            os.path.join(self.output_dir, "predictions.npz"),
            probs=probs.numpy().astype(np.float32),
            labels=labels.numpy().astype(np.float32),
        )
        write_curve_files(self.output_dir, probs, labels, self.num_bins, target="marginal")
        if self.plots:
            self._plot(probs, labels)
        self.logger.info(f"multi-label calibration report written to {self.output_dir}")

    def _plot(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        import os

        from matplotlib.figure import Figure

        from monai_calib.metrics import calibration_statistics
        from monai_calib.visualize import plot_reliability_diagram

        stats = calibration_statistics(probs, labels, num_bins=self.num_bins, target="marginal")
        fig, _ = plot_reliability_diagram(stats, title=self.title)
        fig.savefig(os.path.join(self.output_dir, "reliability.png"), dpi=100, bbox_inches="tight")

        k = stats.shape[0]
        ncols = min(self.ncols, k)
        nrows = math.ceil(k / ncols)
        fig = Figure(figsize=(3.2 * ncols, 3.2 * nrows))
        names = self.label_names or [f"label {i}" for i in range(k)]
        for i in range(k):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            plot_reliability_diagram(stats, class_index=i, ax=ax, title=str(names[i]))
            if i % ncols:
                ax.set_ylabel("")
            if ax.get_legend() is not None and i:
                ax.get_legend().remove()
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        fig.savefig(
            os.path.join(self.output_dir, "reliability_per_label.png"), dpi=80, bbox_inches="tight"
        )
