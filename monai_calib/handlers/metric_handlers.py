# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite metric handlers for the pooled calibration metrics (MONAI ``IgniteMetricHandler``).

Usable as ``key_val_metric`` / ``additional_metrics`` of MONAI's ``SupervisedEvaluator`` and from
bundle configs (``"_target_": "monai_calib.handlers.PooledCalibrationError"``). The evaluator's
post-transforms must leave *probabilities* in ``pred`` (``Activationsd(softmax=True)``, no
argmax), or set ``logits=True``. Each handler forwards its keyword arguments to its metric class.

**Checkpoint selection when lower is better.** MONAI's workflows treat a larger key metric as
better. Whether a metric is better higher or lower is recorded once, in
:mod:`monai_calib.metrics.registry`: pass ``metric_cmp_fn=metric_cmp_fn("ece")`` (in a bundle:
``"$monai_calib.metrics.registry.metric_cmp_fn(@select_metric)"``) to the evaluator, and
``CheckpointSaver(..., key_metric_negative_sign=True)`` for a lower-is-better metric so that the
best checkpoint (and its file name score) is the one with the *smallest* value.
``lower_is_better_cmp`` is that comparison for ECE, Brier and NLL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

from monai_calib.metrics.pooled_calibration import PooledCalibrationErrorMetric
from monai_calib.metrics.registry import lower_is_better_cmp
from monai_calib.metrics.retention_metric import RetentionAUCMetric
from monai_calib.metrics.score_metrics import BrierScoreMetric, NLLMetric

__all__ = ["NLL", "BrierScore", "PooledCalibrationError", "RetentionAUC", "lower_is_better_cmp"]


class _MetricHandler(IgniteMetricHandler):
    """An ``IgniteMetricHandler`` of ``metric_class(**metric_kwargs)``."""

    metric_class: type[CumulativeIterationMetric]

    def __init__(
        self,
        output_transform: Callable = lambda x: x,
        save_details: bool = False,
        **metric_kwargs: Any,
    ) -> None:
        super().__init__(
            metric_fn=self.metric_class(**metric_kwargs),
            output_transform=output_transform,
            save_details=save_details,
        )


class PooledCalibrationError(_MetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.PooledCalibrationErrorMetric`.

    Computes the pooled (dataset-level) calibration error of every sample of an epoch (all ranks):
    ECE by default, adaptive ECE with ``binning="equal_mass"``, SCE with ``target="classwise"``,
    MCE with ``reduction="maximum"``; ``per_image=True`` reproduces MONAI's
    :class:`monai.handlers.CalibrationError` (MONAI compatibility mode). Lower is better: see the
    module docstring for checkpoint selection (``metric_cmp_fn("ece")`` and
    ``CheckpointSaver(key_metric_negative_sign=True)``).

    Args:
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, typically
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: store details in ``engine.state.metric_details[name]``: the pooled per-bin
            statistics ``(C, num_bins, 3)`` (what
            :func:`monai_calib.visualize.plot_reliability_diagram` draws), or the per-image,
            per-channel errors in the compatibility mode. Defaults to True.
        metric_kwargs: ``num_bins``, ``binning``, ``target``, ``reduction``, ``norm``,
            ``logits``, ``label_reduction``, ``per_image``, ``include_background``,
            ``metric_reduction``: see :class:`~monai_calib.metrics.PooledCalibrationErrorMetric`.

    Example:
        >>> from monai.handlers import from_engine
        >>> from monai_calib.metrics.registry import metric_cmp_fn
        >>> evaluator = SupervisedEvaluator(
        ...     ...,
        ...     key_val_metric={"val_ece": PooledCalibrationError(
        ...         output_transform=from_engine(["pred", "label"]))},
        ...     metric_cmp_fn=metric_cmp_fn("ece"),
        ... )
    """

    metric_class = PooledCalibrationErrorMetric

    def __init__(
        self,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        **metric_kwargs: Any,
    ) -> None:
        super().__init__(output_transform, save_details, **metric_kwargs)

    def compute(self) -> Any:
        """The epoch's calibration error (a float, or a tensor for ``label_reduction="none"``)."""
        result = super().compute()
        metric: PooledCalibrationErrorMetric = self.metric_fn  # type: ignore[assignment]
        if self.save_details and not metric.per_image:
            # Replace the raw buffer by the statistics of the reliability diagram.
            self._engine.state.metric_details[self._name] = metric.statistics()  # type: ignore
        return result


class BrierScore(_MetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.BrierScoreMetric` (pooled, streaming).

    Lower is better (see the module docstring for checkpoint selection).

    Args:
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``.
        metric_kwargs: ``logits``, ``multilabel``: see
            :class:`~monai_calib.metrics.BrierScoreMetric`.
    """

    metric_class = BrierScoreMetric


class NLL(_MetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.NLLMetric` (pooled, streaming).

    Lower is better (see the module docstring for checkpoint selection).

    Args:
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``.
        metric_kwargs: ``logits``, ``multilabel``, ``eps``: see
            :class:`~monai_calib.metrics.NLLMetric`.
    """

    metric_class = NLLMetric


class RetentionAUC(_MetricHandler):
    """Ignite handler of :class:`~monai_calib.metrics.RetentionAUCMetric` (buffered).

    Higher is better: MONAI's default ``metric_cmp_fn`` and ``CheckpointSaver`` apply as they
    are.

    Args:
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``.
        metric_kwargs: ``grid``, ``num_points``, ``uncertainty``, ``logits``: see
            :class:`~monai_calib.metrics.RetentionAUCMetric`.
    """

    metric_class = RetentionAUCMetric
