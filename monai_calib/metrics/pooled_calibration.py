# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``PooledCalibrationErrorMetric``: dataset-level (pooled) calibration error as a MONAI metric.

MONAI's :class:`monai.metrics.CalibrationErrorMetric` computes one calibration error per image and
per channel and averages those numbers. This metric pools every sample (every voxel of every image
of every rank) into one reliability diagram, which is the quantity the calibration literature
reports, and it also accepts ``(B, K)`` classification outputs. ``per_image=True`` switches to a
MONAI compatibility mode that reproduces MONAI's per-image numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CalibrationErrorMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from monai_calib._utils.validation import check_num_bins, look_up_argument
from monai_calib.enums import (
    Binning,
    CalibrationNorm,
    CalibrationReduction,
    CalibrationTarget,
    LabelReduction,
)

from ._cumulative import StorageCumulativeMetric
from ._inputs import prepare_multiclass, prepare_multilabel
from .calibration_error import (
    calibration_error_from_statistics,
    calibration_statistics,
)

__all__ = ["PooledCalibrationErrorMetric"]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, K, *spatial)`` -> ``(N, K)`` with one row per voxel (a view for ``(B, K)``)."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _onehot_like(y: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """One-hot ``y_pred``-shaped target from indices ``(B, 1, *spatial)`` / ``(B, *spatial)``."""
    if tuple(y.shape) == tuple(y_pred.shape):
        return y
    _, labels = prepare_multiclass(y_pred, y, check_sum=False)
    onehot = torch.nn.functional.one_hot(labels, y_pred.shape[1]).movedim(-1, 1)
    return onehot.to(y_pred.dtype)


class PooledCalibrationErrorMetric(StorageCumulativeMetric):
    r"""Pooled (dataset-level) binned calibration error: ECE, adaptive ECE, SCE, MCE, RMSCE.

    **Why it matters.** A calibrated model's confidence matches its accuracy: among predictions
    made with 80% confidence, 80% are correct. The calibration error measures the gap on a
    reliability diagram built from *all* evaluated samples (images, or voxels of dense outputs,
    over all iterations and all DDP ranks):

    .. math::

        \mathrm{CE} = \sum_{b=1}^{M} \frac{n_b}{N}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|
        \quad(\text{reduction="expected", norm="l1"})

    with :math:`n_b` samples in bin :math:`b`, bin accuracy :math:`\mathrm{acc}_b` and mean
    confidence :math:`\mathrm{conf}_b`; ``"average"`` takes the unweighted mean over non-empty
    bins, ``"maximum"`` the largest gap, ``norm="l2"`` the root mean square (see
    :func:`~monai_calib.metrics.calibration_error_from_statistics`).

    **Three modes.**

    - ``binning="equal_width"`` (default): *streaming*. Each call reduces its batch to fixed-size
      sufficient statistics (per bin: count, sum of confidences, sum of correctness) and adds
      them to one running sum, so memory does not grow with samples, voxels or iterations.
      ``aggregate()`` all-gathers the per-rank sums (one ``(1, C, M, 3)`` tensor per rank) and
      adds them: the result is exactly the calibration error of the union of all ranks' data.
    - ``binning="equal_mass"``: *exact, buffered*. Adaptive bins depend on all confidences, so
      the probabilities and labels are buffered (one row per sample/voxel) and all-gathered at
      ``aggregate()``; memory is O(N K). Meant for classification sets (MedMNIST-sized), not
      for millions of voxels.
    - ``per_image=True``: **MONAI compatibility mode**. Each batch is computed by
      :class:`monai.metrics.CalibrationErrorMetric` itself (``right=False``), so the numbers are
      MONAI's: per image and per channel the marginal (one-vs-rest) L1 calibration error with
      MONAI's bin edges (``linspace(0, 1 + eps_float32, M + 1)``, ``bucketize`` on the float32
      probabilities, left-closed bins, the index clamped to ``M - 1``, float32 sums), then
      ``metric_reduction`` over the ``(images, channels)`` matrix, skipping NaN (images/channels
      without voxels). This mode adds index labels (one-hot encoded here), the input checks and
      DDP gathering. The pooled modes use right-closed bins :math:`(b/M, (b+1)/M]` instead (0.0
      in the first bin).

    **Targets and label reductions.** ``target="top_label"`` (max probability vs correctness of
    the argmax, ``C = 1``), ``"classwise"`` (per class :math:`k`, :math:`p_k` vs
    :math:`1[y = k]`: with ``label_reduction="macro"`` this is the static calibration error SCE)
    or ``"marginal"`` (multi-label sigmoid outputs, per label :math:`p_k` vs :math:`y_k`). For
    ``"classwise"``/``"marginal"`` the ``C = K`` per-class errors :math:`\mathrm{CE}_c` are
    combined by ``label_reduction``:

    .. math::

        \text{macro}: \frac{1}{C}\sum_c \mathrm{CE}_c \qquad
        \text{weighted}: \sum_c \frac{\pi_c}{\sum_{c'} \pi_{c'}} \mathrm{CE}_c \qquad
        \text{micro}: \mathrm{CE}\Big(\textstyle\sum_c S_c\Big)

    where :math:`\pi_c` is the number of positives of class :math:`c` and micro pools the
    per-class reliability diagrams :math:`S_c` (every (sample, class) pair is one binary
    prediction); ``"none"`` returns the ``(C,)`` per-class errors. Classes that are NaN (no
    sample) are skipped by ``macro``/``weighted``.

    Args:
        num_bins: number of bins ``M``. Defaults to 15 (MONAI's metric defaults to 20: pass
            ``num_bins=20`` to compare).
        binning: ``"equal_width"`` (default, streaming) or ``"equal_mass"`` (adaptive, buffered).
        target: ``"top_label"``, ``"classwise"`` or ``"marginal"``. Defaults to ``None``, which
            means ``"top_label"`` in the pooled modes and ``"marginal"`` with ``per_image=True``
            (the only target of the compatibility mode).
        reduction: bin reduction ``"expected"`` (default), ``"average"`` or ``"maximum"``
            (MONAI's ``calibration_reduction``).
        norm: ``"l1"`` (default) or ``"l2"`` (pooled modes only).
        logits: ``y_pred`` holds logits: softmax over dim 1 (sigmoid for ``"marginal"``).
            Pooled modes only; the compatibility mode takes probabilities, like MONAI.
        label_reduction: ``"macro"`` (default), ``"micro"``, ``"weighted"`` or ``"none"``; used
            by ``"classwise"``/``"marginal"`` (``"top_label"`` has a single group).
        per_image: MONAI compatibility mode (see above). Defaults to False.
        include_background: keep class/channel 0. Defaults to True. ``False`` drops channel 0
            from the per-class errors (``"classwise"``/``"marginal"``/``per_image``); it is
            rejected for ``"top_label"``, where no channel can be dropped.
        metric_reduction: compatibility mode only: MONAI ``MetricReduction`` applied over the
            per-image, per-channel errors. Defaults to ``"mean"``.
        get_not_nans: ``aggregate()`` returns ``(value, not_nans)``, ``not_nans`` being the
            number of non-NaN values that were reduced (classes, or images x channels).

    Inputs:
        - ``y_pred``: ``(B, K)`` or ``(B, K, *spatial)`` probabilities (rows summing to 1 over
          dim 1, or independent per-label probabilities for ``"marginal"``), or logits with
          ``logits=True``; a list of channel-first tensors is accepted as in MONAI.
          Compatibility mode: ``(B, C, *spatial)`` probabilities (at least one spatial dim).
        - ``y``: class indices ``(B,)`` / ``(B, 1, *spatial)`` / ``(B, *spatial)`` or one-hot of
          ``y_pred``'s shape; multi-hot of ``y_pred``'s shape for ``"marginal"``.
          Compatibility mode: one-hot (or binary) of ``y_pred``'s shape, or indices
          ``(B, 1, *spatial)`` (converted to one-hot).

    Returns (``__call__``):
        equal-width: the batch statistics ``(1, C, M, 3)``; equal-mass: the batch's
        ``(probabilities (N, K), labels)`` rows; compatibility mode: MONAI's float32 per-image
        errors ``(B, C)``.

    Raises:
        ValueError: invalid options; incompatible options (``per_image=True`` with
            ``binning="equal_mass"``, ``norm="l2"``, ``logits=True`` or a target other than
            ``"marginal"``; ``include_background=False`` with ``"top_label"``); bad inputs (see
            :func:`~monai_calib.metrics.calibration_error`).
        RuntimeError: ``aggregate()``/``statistics()`` before any data.

    Example:
        >>> metric = PooledCalibrationErrorMetric(num_bins=15)
        >>> for probs, labels in loader:  # probs (B, K), labels (B,)
        ...     metric(probs, labels)
        >>> ece = metric.aggregate()
        >>> stats = metric.statistics()  # (1, 15, 3), for plot_reliability_diagram

    References:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
        Nixon et al., "Measuring Calibration in Deep Learning", CVPR Workshops 2019.
        Kull et al., "Beyond temperature scaling", NeurIPS 2019 (classwise ECE).

    See Also:
        :py:func:`monai_calib.metrics.calibration_error`,
        :py:class:`monai.metrics.CalibrationErrorMetric`,
        :py:class:`monai_calib.handlers.PooledCalibrationError`.
    """

    def __init__(
        self,
        num_bins: int = 15,
        binning: Binning | str = "equal_width",
        target: CalibrationTarget | str | None = None,
        reduction: CalibrationReduction | str = "expected",
        norm: CalibrationNorm | str = "l1",
        logits: bool = False,
        label_reduction: LabelReduction | str = "macro",
        per_image: bool = False,
        include_background: bool = True,
        metric_reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        self.num_bins = check_num_bins(num_bins)
        self.binning = look_up_argument(binning, Binning, "binning")
        self.reduction = look_up_argument(reduction, CalibrationReduction, "reduction")
        self.norm = look_up_argument(norm, CalibrationNorm, "norm")
        self.label_reduction = look_up_argument(label_reduction, LabelReduction, "label_reduction")
        self.metric_reduction = MetricReduction(metric_reduction)
        self.per_image = bool(per_image)
        self.logits = bool(logits)
        self.include_background = bool(include_background)
        self.get_not_nans = bool(get_not_nans)
        default_target = "marginal" if self.per_image else "top_label"
        self.target = look_up_argument(
            default_target if target is None else target, CalibrationTarget, "target"
        )
        if self.per_image:
            bad = {
                "binning": (self.binning, "equal_width"),
                "norm": (self.norm, "l1"),
                "target": (self.target, "marginal"),
                "logits": (self.logits, False),
            }
            for name, (value, expected) in bad.items():
                if value != expected:
                    raise ValueError(
                        f"per_image=True (MONAI compatibility mode) requires {name}="
                        f"{expected!r}, got {value!r}."
                    )
            self._storage = "items"
            self._monai_metric = CalibrationErrorMetric(
                num_bins=self.num_bins,
                include_background=self.include_background,
                calibration_reduction=self.reduction,
            )
        elif self.binning == "equal_width":
            self._storage = "sum"
        else:
            self._storage = "concat"
        if not self.include_background and self.target == "top_label":
            raise ValueError(
                'include_background=False needs target="classwise" or "marginal" (or '
                'per_image=True); target="top_label" has no class channel to drop.'
            )

    # ------------------------------------------------------------------ per-iteration
    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce one batch to what is accumulated (see the class docstring, Returns)."""
        if y is None:
            raise ValueError("y (the ground truth) is required, got None.")
        if self.per_image:
            return self._per_image_errors(y_pred, y)
        if self.binning == "equal_width":
            stats = calibration_statistics(
                y_pred, y, num_bins=self.num_bins, target=self.target, logits=self.logits
            )
            return stats.unsqueeze(0)
        if self.target == "marginal":
            probs, truth = prepare_multilabel(y_pred, y, logits=self.logits)
            return _rows(probs), _rows(truth)
        probs, labels = prepare_multiclass(y_pred, y, logits=self.logits)
        return _rows(probs), labels.reshape(-1)

    def _per_image_errors(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """MONAI's per-image, per-channel marginal calibration error ``(B, C)`` (float32)."""
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(
                f"y_pred and y must be torch.Tensors, got {type(y_pred).__name__} and "
                f"{type(y).__name__}."
            )
        if y_pred.ndim < 3:
            raise ValueError(
                "per_image=True (MONAI compatibility mode) needs y_pred of shape "
                f"(B, C, spatial...), got shape {tuple(y_pred.shape)}."
            )
        if not y_pred.is_floating_point():
            raise TypeError(f"y_pred must be a floating point tensor, got dtype {y_pred.dtype}.")
        y = _onehot_like(y, y_pred)
        if tuple(y.shape) != tuple(y_pred.shape):
            raise ValueError(
                f"y must be one-hot of y_pred's shape {tuple(y_pred.shape)} or class indices "
                f"(B, 1, spatial...), got shape {tuple(y.shape)}."
            )
        # MONAI's own per-image computation (background removal included), so that this mode
        # reproduces MONAI by construction; only the input checks above are ours
        return self._monai_metric._compute_tensor(y_pred, y)

    # ------------------------------------------------------------------ aggregation
    def statistics(self, binning: Binning | str | None = None) -> torch.Tensor:
        """Per-bin sufficient statistics of everything seen so far (all ranks).

        Args:
            binning: ``None`` (default) uses the metric's own binning. An equal-mass metric can
                also return ``"equal_width"`` statistics of its buffer (what the reliability
                diagram draws); a streaming equal-width metric cannot re-bin (ValueError).

        Returns:
            float64 ``(C, num_bins, 3)`` per-bin ``[count, sum of confidences, sum of
            correctness]`` (``C = 1`` for ``"top_label"``, ``K`` otherwise; background included).
            Equal-width mode returns the streamed sum; equal-mass mode returns the statistics of
            the adaptive bins of the buffered data (not additive). This is what
            :func:`monai_calib.visualize.plot_reliability_diagram` draws.

        Raises:
            RuntimeError: in the compatibility mode (it keeps per-image errors only) or before
                any data.
            ValueError: ``binning="equal_mass"`` on a streaming equal-width metric.
        """
        if self.per_image:
            raise RuntimeError(
                "statistics() is not available with per_image=True (MONAI compatibility mode "
                "keeps one error per image and channel, not pooled bins)."
            )
        binning = self.binning if binning is None else look_up_argument(binning, Binning, "binning")
        if self.binning == "equal_width" and binning != "equal_width":
            raise ValueError(
                'a streaming binning="equal_width" metric keeps equal-width statistics only; '
                f'statistics(binning={binning!r}) needs binning="equal_mass" (buffered).'
            )
        data = self._require_buffer()
        if self.binning == "equal_width":
            return data[0]
        probs, truth = data
        return calibration_statistics(
            probs, truth, num_bins=self.num_bins, target=self.target, binning=binning
        )

    def _reduce_labels(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.include_background:
            stats = stats[1:]
        kwargs = {"reduction": self.reduction, "norm": self.norm}
        if self.label_reduction == "micro":
            value = calibration_error_from_statistics(
                stats.sum(0, keepdim=True), average=False, **kwargs
            )[0]
            return value, (~torch.isnan(value)).sum()
        per_class = calibration_error_from_statistics(stats, average=False, **kwargs)
        valid = ~torch.isnan(per_class)
        if self.label_reduction == "none":
            return per_class, valid.sum()
        if self.label_reduction == "weighted":
            weights = stats[..., 2].sum(-1) * valid
        else:
            weights = valid.double()
        total = weights.sum()
        if total <= 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=stats.device), valid.sum()
        value = (torch.where(valid, per_class, torch.zeros_like(per_class)) * weights).sum() / total
        return value, valid.sum()

    def aggregate(  # type: ignore[override]
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Calibration error of everything seen so far, on every rank.

        Args:
            reduction: compatibility mode only: overrides ``metric_reduction`` (MONAI
                ``MetricReduction``, NaN entries skipped). Ignored by the pooled modes.

        Returns:
            0-d float64 tensor (``(C,)`` for ``label_reduction="none"``; the reduced per-image
            matrix in the compatibility mode), or ``(value, not_nans)`` with ``get_not_nans``.
        """
        if self.per_image:
            data = self._require_buffer()
            f, not_nans = do_metric_reduction(data, reduction or self.metric_reduction)
            return (f, not_nans) if self.get_not_nans else f
        value, not_nans = self._reduce_labels(self.statistics())
        return (value, not_nans) if self.get_not_nans else value
