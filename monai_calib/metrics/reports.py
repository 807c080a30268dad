# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Every number of an evaluation report, computed from the project's metrics.

- :func:`classification_report` and :func:`multilabel_report` take gathered predictions and
  call the functional metrics (rank-local: under DDP the caller gathers first, see
  :class:`monai_calib.handlers.CalibrationReport`).
- :class:`SegmentationReportMetric` streams dense predictions image by image into the metric
  classes (:class:`~monai_calib.metrics.PooledCalibrationErrorMetric`,
  :class:`~monai_calib.metrics.BrierScoreMetric`, :class:`~monai_calib.metrics.NLLMetric`,
  MONAI's :class:`~monai.metrics.DiceMetric` / :class:`~monai.metrics.MeanIoU`), whose own
  cross-rank reduction makes the result exact under DDP at fixed memory.

The keys of each report are listed, in table order, by :data:`CLASSIFICATION_METRICS`,
:data:`MULTILABEL_METRICS` and :data:`SEGMENTATION_METRICS`; their titles and directions are in
:mod:`monai_calib.metrics.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from monai.metrics import CumulativeIterationMetric, DiceMetric, MeanIoU, compute_roc_auc
from monai.networks.utils import one_hot

from monai_calib._utils.validation import check_num_bins, check_threshold, normalize_class_target

from ._cumulative import StorageCumulativeMetric
from .calibration_error import (
    calibration_error,
    calibration_error_from_statistics,
    calibration_statistics,
)
from .multilabel import hamming_loss, multilabel_auc
from .pooled_calibration import PooledCalibrationErrorMetric
from .retention import retention_auc
from .score_metrics import BrierScoreMetric, NLLMetric
from .scores import brier_score, negative_log_likelihood

__all__ = [
    "CLASSIFICATION_METRICS",
    "MULTILABEL_METRICS",
    "SEGMENTATION_METRICS",
    "SegmentationReportMetric",
    "check_multilabel_pair",
    "classification_report",
    "multilabel_report",
]

# Keys of each report after "n", in table order (also the order of metrics.json / metrics.csv).
CLASSIFICATION_METRICS = ("acc", "auc", "ece", "ace", "sce", "mce", "nll", "brier", "r_auc")
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
SEGMENTATION_METRICS = ("dice", "mean_iou", "ece", "sce", "mce", "nll", "brier", "ece_per_image")


def classification_report(
    y_pred: torch.Tensor, y: torch.Tensor, num_bins: int = 15
) -> dict[str, float]:
    """All of the classification report's numbers.

    ``acc`` accuracy, ``auc`` macro one-vs-rest ROC AUC (MONAI ``compute_roc_auc``), ``ece``
    equal-width top-label ECE, ``ace`` equal-mass (adaptive) ECE, ``sce`` class-wise ECE, ``mce``
    maximum calibration error, ``nll``, ``brier`` (summed over classes), ``r_auc`` area under the
    accuracy-retention curve (log grid, ordered by ``1 - max p``). Each is a plain fraction (not
    %), from :func:`~monai_calib.metrics.calibration_error`,
    :func:`~monai_calib.metrics.negative_log_likelihood`,
    :func:`~monai_calib.metrics.brier_score` and :func:`~monai_calib.metrics.retention_auc`.

    Inputs:
        - ``y_pred``: ``(N, K)`` probabilities.
        - ``y``: class indices ``(N,)`` / ``(N, 1)`` or one-hot ``(N, K)``.

    Args:
        num_bins: bins of the binned calibration errors. Defaults to 15.

    Returns:
        ``{"n": N, "acc": ..., ...}`` (keys: ``"n"`` then :data:`CLASSIFICATION_METRICS`),
        Python floats.

    Raises:
        ValueError / TypeError: ``y_pred`` not ``(N, K)``, bad labels or probabilities (from the
            metric functions).
    """
    if not isinstance(y_pred, torch.Tensor) or y_pred.ndim != 2:
        shape = tuple(y_pred.shape) if isinstance(y_pred, torch.Tensor) else type(y_pred).__name__
        raise ValueError(f"y_pred must have shape (N, K), got {shape}.")
    p = y_pred.detach().double()  # metrics take no gradient (compute_roc_auc calls numpy())
    k = p.shape[1]
    idx = normalize_class_target(y, k, batch_size=p.shape[0], name="y")
    onehot = torch.nn.functional.one_hot(idx, k).double()
    top = calibration_statistics(p, idx, num_bins=num_bins)  # binned once for ECE and MCE
    return {
        "n": float(p.shape[0]),
        "acc": float((p.argmax(1) == idx).double().mean()),
        "auc": float(compute_roc_auc(p, onehot, average="macro")),
        "ece": float(calibration_error_from_statistics(top)),
        "ace": float(calibration_error(p, idx, num_bins=num_bins, binning="equal_mass")),
        "sce": float(calibration_error(p, idx, num_bins=num_bins, target="classwise")),
        "mce": float(calibration_error_from_statistics(top, reduction="maximum")),
        "nll": float(negative_log_likelihood(p, idx)),
        "brier": float(brier_score(p, idx)),
        "r_auc": float(retention_auc(p, idx)),
    }


def check_multilabel_pair(
    y_pred: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that ``y_pred`` is ``(N, K)`` and ``y`` a tensor of the same shape; return both.

    Raises:
        TypeError: either is not a tensor.
        ValueError: shapes other than two equal ``(N, K)``.
    """
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
        threshold: Hamming decision threshold, a finite number in ``[0, 1]``. Defaults to 0.5.

    Returns:
        ``{"n": N, "hamming": ..., "auc_macro": ..., ...}`` (keys: ``"n"`` then
        :data:`MULTILABEL_METRICS`), Python floats.

    Raises:
        ValueError / TypeError: bad shapes, probabilities outside [0, 1], non-binary labels
            (from the metric functions); ``threshold`` NaN/Inf or outside ``[0, 1]``.
    """
    threshold = check_threshold(threshold)
    p, t = check_multilabel_pair(y_pred, y)
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


class _ImageMeanMetric(StorageCumulativeMetric):
    """MONAI's ``reduction="mean"`` of a per-image metric, streamed at fixed memory.

    MONAI first averages each image's non-NaN channels, then the images that have at least one
    non-NaN channel; the running ``[sum of those image means, their count, number of images]``
    gives exactly that number for any split of the images into batches or ranks (NaN, where
    MONAI gives 0, when no image has a value).

    Args:
        metric: a MONAI cumulative metric whose call returns per-image, per-channel values
            ``(B, C)`` (``DiceMetric``, ``MeanIoU``, ``PooledCalibrationErrorMetric`` with
            ``per_image=True``); its own buffer is emptied after every call.
    """

    _storage = "sum"

    def __init__(self, metric: CumulativeIterationMetric) -> None:
        super().__init__()
        self.metric = metric

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        f = self.metric(y_pred, y)
        self.metric.reset()
        f = f.detach().double().cpu().reshape(f.shape[0], -1)
        ok = ~torch.isnan(f)
        n = ok.sum(1)
        per_image = torch.where(ok, f, torch.zeros_like(f)).sum(1) / n.clamp(min=1)
        keep = n > 0
        count = torch.tensor(float(f.shape[0]), dtype=torch.float64)
        return torch.stack([per_image[keep].sum(), keep.sum().double(), count]).unsqueeze(0)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """The mean over images (0-d float64), NaN when no image has a value."""
        s = self._require_buffer()[0]
        return s[0] / s[1] if s[1] > 0 else torch.tensor(math.nan, dtype=torch.float64)

    def images(self) -> int:
        """Number of images seen (all ranks)."""
        return int(self._require_buffer()[0][2])


def _as_items(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A batch tensor or a decollated list -> a list of channel-first items (sizes may differ)."""
    if isinstance(x, torch.Tensor):
        return list(x)
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [torch.as_tensor(t) for t in x]
    raise TypeError(f"expected a tensor or a list of tensors, got {type(x).__name__}.")


class SegmentationReportMetric:
    r"""Segmentation and pooled voxel calibration numbers, streamed image by image.

    Every image (channel-first probabilities ``(K, *spatial)`` and its label; images may differ
    in size) is added to the metric classes below, whose states have a fixed size (independent
    of the number of images and voxels) and are reduced across ranks on :meth:`aggregate`:

    - ``dice`` / ``mean_iou``: MONAI's :class:`~monai.metrics.DiceMetric` /
      :class:`~monai.metrics.MeanIoU` on the one-hot argmax prediction and one-hot label
      (``include_background`` as given, ``ignore_empty=True``), with their ``reduction="mean"``
      (per-image channel mean, then the mean over images; images without any foreground are
      skipped; NaN, where MONAI gives 0, when no image has foreground), streamed.
    - ``ece``, ``mce``: pooled top-label calibration error over **all voxels of all images**
      from the equal-width statistics of a
      :class:`~monai_calib.metrics.PooledCalibrationErrorMetric`:

      .. math::

          \mathrm{ECE} = \sum_{b=1}^{M} \frac{n_b}{N}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|

      with :math:`N` the number of voxels; ``mce`` is :math:`\max_b` of the gap and ``sce`` the
      mean over classes of the class-wise (one-vs-rest) ECE.
    - ``nll``, ``brier``: voxel means of :math:`-\log\max(p_y, 10^{-7})` and
      :math:`\sum_k (p_k - 1[y=k])^2` (:class:`~monai_calib.metrics.NLLMetric`,
      :class:`~monai_calib.metrics.BrierScoreMetric`).
    - ``ece_per_image``: MONAI's :class:`monai.metrics.CalibrationErrorMetric` (per image and per
      channel, marginal, ``num_bins_per_image`` bins, channels as ``include_background``, then
      the mean), through :class:`~monai_calib.metrics.PooledCalibrationErrorMetric` with
      ``per_image=True``, streamed like Dice.

    Under ``torch.distributed`` every rank calls :meth:`aggregate`; a rank without images takes
    part in the reductions and contributes nothing.

    Args:
        num_bins: equal-width bins of the pooled ECE / MCE / SCE. Defaults to 15.
        num_bins_per_image: bins of ``ece_per_image`` (MONAI's default is 20).
        include_background: keep class 0 in Dice, IoU and ``ece_per_image``. Defaults to False.

    Inputs (:meth:`update`, per item of the batch):
        - probabilities ``(K, *spatial)``, ``K >= 2``, summing to 1 over the channel axis;
        - label: class indices ``(1, *spatial)`` or one-hot ``(K, *spatial)``.

    Raises:
        ValueError: ``num_bins`` / ``num_bins_per_image`` < 1; a single-class input; different
            numbers of predictions and labels; :meth:`aggregate` without any image.
        TypeError: inputs that are neither tensors nor lists of tensors.
    """

    def __init__(
        self, num_bins: int = 15, num_bins_per_image: int = 20, include_background: bool = False
    ) -> None:
        self.num_bins = check_num_bins(num_bins)
        self.num_bins_per_image = check_num_bins(num_bins_per_image, "num_bins_per_image")
        self.include_background = bool(include_background)
        self.reset()

    def reset(self) -> None:
        """Start from zero."""
        bg = self.include_background
        self.dice = _ImageMeanMetric(DiceMetric(include_background=bg))
        self.mean_iou = _ImageMeanMetric(MeanIoU(include_background=bg))
        self.ece_per_image = _ImageMeanMetric(
            PooledCalibrationErrorMetric(
                num_bins=self.num_bins_per_image, per_image=True, include_background=bg
            )
        )
        self.top_label = PooledCalibrationErrorMetric(num_bins=self.num_bins)
        self.classwise = PooledCalibrationErrorMetric(num_bins=self.num_bins, target="classwise")
        self.brier = BrierScoreMetric()
        self.nll = NLLMetric()

    def _metrics(self) -> tuple[StorageCumulativeMetric, ...]:
        return (
            self.dice,
            self.mean_iou,
            self.ece_per_image,
            self.top_label,
            self.classwise,
            self.brier,
            self.nll,
        )

    def state_size(self) -> int:
        """Number of numbers in this rank's running state (fixed once ``K`` is known)."""
        # the raw per-rank buffers: get_buffer() would start a cross-rank sync
        return sum(b.numel() for m in self._metrics() for buf in m._buffers or () for b in buf)

    def update(
        self,
        y_pred: torch.Tensor | Sequence[torch.Tensor],
        y: torch.Tensor | Sequence[torch.Tensor],
    ) -> None:
        """Add a batch (or a list of channel-first items) of probabilities and labels."""
        preds, labels = _as_items(y_pred), _as_items(y)
        if len(preds) != len(labels):
            raise ValueError(
                f"got {len(preds)} predictions but {len(labels)} labels in one iteration."
            )
        for p, lab in zip(preds, labels, strict=True):
            p = p.detach().float()[None]
            lab = lab.detach().to(p.device)[None]
            k = p.shape[1]
            if k < 2:
                raise ValueError(
                    f"probabilities must have K >= 2 channels (softmax), got shape "
                    f"{tuple(p.shape[1:])}."
                )
            idx = lab.argmax(1, keepdim=True) if lab.shape == p.shape else lab.round().long()
            onehot = one_hot(idx, k, dim=1)
            pred_1h = one_hot(p.argmax(1, keepdim=True), k, dim=1)
            self.dice(pred_1h, onehot)
            self.mean_iou(pred_1h, onehot)
            self.ece_per_image(p, onehot)
            for metric in (self.top_label, self.classwise, self.brier, self.nll):
                metric(p, idx)

    def statistics(self, target: Literal["top_label", "classwise"] = "top_label") -> torch.Tensor:
        """Summed equal-width statistics (all ranks): ``(1, M, 3)`` top-label or ``(K, M, 3)``."""
        metric = self.top_label if target == "top_label" else self.classwise
        return metric.statistics()

    def aggregate(self) -> dict[str, float]:
        """The report's numbers: ``"n"`` (images) then :data:`SEGMENTATION_METRICS`."""
        # the image count of all ranks: every rank joins this gather, also one without images,
        # so that all ranks raise alike when none has any (a rank-local check would raise on
        # the empty rank alone and leave the others blocked in the next gather)
        counts = self.dice.get_buffer()
        if counts is None:
            raise ValueError(f"{type(self).__name__} received no images.")
        top = self.statistics()
        return {
            "n": float(counts[0][2]),
            "dice": float(self.dice.aggregate()),
            "mean_iou": float(self.mean_iou.aggregate()),
            "ece": float(calibration_error_from_statistics(top)),
            "sce": float(calibration_error_from_statistics(self.statistics("classwise"))),
            "mce": float(calibration_error_from_statistics(top, reduction="maximum")),
            "nll": float(self.nll.aggregate()),
            "brier": float(self.brier.aggregate()),
            "ece_per_image": float(self.ece_per_image.aggregate()),
        }
