# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite metric handlers for the pooled calibration metrics (MONAI ``IgniteMetricHandler``).

Usable as ``key_val_metric`` / ``additional_metrics`` of MONAI's ``SupervisedEvaluator`` and from
bundle configs (``"_target_": "monai_calib.handlers.PooledCalibrationError"``). The evaluator's
post-transforms must leave *probabilities* in ``pred`` (``Activationsd(softmax=True)``, no
argmax), or set ``logits=True``.

**Checkpoint selection when lower is better.** MONAI's workflows treat a larger key metric as
better. For ECE, Brier or NLL as the key metric pass ``metric_cmp_fn=lower_is_better_cmp`` (in a
bundle: ``"$monai_calib.handlers.lower_is_better_cmp"`` or ``"$lambda cur, prev: cur < prev"``)
to the evaluator, and ``CheckpointSaver(..., key_metric_negative_sign=True)`` so that the best
checkpoint (and its file name score) is the one with the *smallest* value. Every handler here has
a ``higher_is_better`` class attribute saying which applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.utils import MetricReduction

from monai_calib.enums import (
    Binning,
    CalibrationNorm,
    CalibrationReduction,
    CalibrationTarget,
    LabelReduction,
    RetentionGrid,
    Uncertainty,
)
from monai_calib.metrics.pooled_calibration import PooledCalibrationErrorMetric
from monai_calib.metrics.retention_metric import RetentionAUCMetric
from monai_calib.metrics.score_metrics import BrierScoreMetric, NLLMetric

__all__ = ["NLL", "BrierScore", "PooledCalibrationError", "RetentionAUC", "lower_is_better_cmp"]


def lower_is_better_cmp(current: float, prev: float) -> bool:
    """Key-metric comparison for metrics where lower is better (ECE, Brier, NLL).

    Pass it as ``metric_cmp_fn`` to :class:`monai.engines.SupervisedEvaluator` (the default
    compares with ``>``), together with ``CheckpointSaver(key_metric_negative_sign=True)``.
    MONAI always accepts the first epoch's value, so no initial ``+inf`` is needed.

    Args:
        current: the key metric of the current epoch.
        prev: the best key metric so far.

    Returns:
        ``current < prev``.
    """
    return bool(current < prev)


class PooledCalibrationError(IgniteMetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.PooledCalibrationErrorMetric`.

    Computes the pooled (dataset-level) calibration error of every sample of an epoch (all ranks):
    ECE by default, adaptive ECE with ``binning="equal_mass"``, SCE with ``target="classwise"``,
    MCE with ``reduction="maximum"``; ``per_image=True`` reproduces MONAI's
    :class:`monai.handlers.CalibrationError` (MONAI compatibility mode). Lower is better: see the
    module docstring for checkpoint selection (``lower_is_better_cmp`` and
    ``CheckpointSaver(key_metric_negative_sign=True)``).

    Args:
        num_bins, binning, target, reduction, norm, logits, label_reduction, per_image,
        include_background, metric_reduction: see
            :class:`~monai_calib.metrics.PooledCalibrationErrorMetric`.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, typically
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: store details in ``engine.state.metric_details[name]``: the pooled per-bin
            statistics ``(C, num_bins, 3)`` (what
            :func:`monai_calib.visualize.plot_reliability_diagram` draws), or the per-image,
            per-channel errors in the compatibility mode. Defaults to True.

    Example:
        >>> from monai.handlers import from_engine
        >>> evaluator = SupervisedEvaluator(
        ...     ...,
        ...     key_val_metric={"val_ece": PooledCalibrationError(
        ...         output_transform=from_engine(["pred", "label"]))},
        ...     metric_cmp_fn=lower_is_better_cmp,
        ... )
    """

    higher_is_better: bool = False

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
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PooledCalibrationErrorMetric(
            num_bins=num_bins,
            binning=binning,
            target=target,
            reduction=reduction,
            norm=norm,
            logits=logits,
            label_reduction=label_reduction,
            per_image=per_image,
            include_background=include_background,
            metric_reduction=metric_reduction,
        )
        super().__init__(
            metric_fn=metric_fn, output_transform=output_transform, save_details=save_details
        )

    def compute(self) -> Any:
        """The epoch's calibration error (a float, or a tensor for ``label_reduction="none"``)."""
        result = super().compute()
        metric: PooledCalibrationErrorMetric = self.metric_fn  # type: ignore[assignment]
        if self.save_details and not metric.per_image:
            # Replace the raw buffer by the statistics of the reliability diagram.
            self._engine.state.metric_details[self._name] = metric.statistics()  # type: ignore
        return result


class BrierScore(IgniteMetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.BrierScoreMetric` (pooled, streaming).

    Lower is better (see the module docstring for checkpoint selection).

    Args:
        logits: ``y_pred`` holds logits. Defaults to False.
        multilabel: independent per-label probabilities with multi-hot targets.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``.
    """

    higher_is_better: bool = False

    def __init__(
        self,
        logits: bool = False,
        multilabel: bool = False,
        output_transform: Callable = lambda x: x,
    ) -> None:
        metric_fn = BrierScoreMetric(logits=logits, multilabel=multilabel)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)


class NLL(IgniteMetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.NLLMetric` (pooled, streaming).

    Lower is better (see the module docstring for checkpoint selection).

    Args:
        logits: ``y_pred`` holds logits. Defaults to False.
        multilabel: independent per-label probabilities with multi-hot targets.
        eps: probability clip (1e-7).
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``.
    """

    higher_is_better: bool = False

    def __init__(
        self,
        logits: bool = False,
        multilabel: bool = False,
        eps: float = 1e-7,
        output_transform: Callable = lambda x: x,
    ) -> None:
        metric_fn = NLLMetric(logits=logits, multilabel=multilabel, eps=eps)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)


class RetentionAUC(IgniteMetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.RetentionAUCMetric` (buffered).

    Higher is better: MONAI's default ``metric_cmp_fn`` and ``CheckpointSaver`` apply as they
    are.

    Args:
        grid, num_points, uncertainty, logits: see
            :class:`~monai_calib.metrics.RetentionAUCMetric`.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``.
    """

    higher_is_better: bool = True

    def __init__(
        self,
        grid: RetentionGrid | str = "log",
        num_points: int = 200,
        uncertainty: Uncertainty | str = "max_prob",
        logits: bool = False,
        output_transform: Callable = lambda x: x,
    ) -> None:
        metric_fn = RetentionAUCMetric(
            grid=grid, num_points=num_points, uncertainty=uncertainty, logits=logits
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)
