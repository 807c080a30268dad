# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Streaming Brier score and negative log-likelihood as MONAI cumulative metrics."""

from __future__ import annotations

from typing import Any

import torch

from ._cumulative import StorageCumulativeMetric
from .scores import brier_statistics, check_eps, nll_statistics

__all__ = ["BrierScoreMetric", "NLLMetric"]


class _PooledScoreMetric(StorageCumulativeMetric):
    """Accumulates ``[sum, count]`` of a per-sample score; ``aggregate()`` = ``sum / count``."""

    _storage = "sum"

    def __init__(self, logits: bool = False, multilabel: bool = False) -> None:
        super().__init__()
        self.logits = bool(logits)
        self.multilabel = bool(multilabel)

    def _statistics(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """Return the batch's ``[sum, count]`` as a ``(1, 2)`` float64 tensor."""
        if y is None:
            raise ValueError("y (the ground truth) is required, got None.")
        return self._statistics(y_pred, y).unsqueeze(0)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Pooled score over everything seen so far on all ranks (0-d float64 tensor).

        Raises:
            RuntimeError: before any data.
        """
        s = self._require_buffer()[0]
        return s[0] / s[1]


class BrierScoreMetric(_PooledScoreMetric):
    r"""Pooled Brier score, streamed at fixed memory (exact under DDP).

    .. math::

        \mathrm{BS} = \frac{1}{N}\sum_{i=1}^{N}\sum_{k=1}^{K}\big(p_{ik} - 1[y_i = k]\big)^2

    (summed over classes, not divided by ``K``; with ``multilabel=True`` the mean over samples and
    labels of :math:`(p_{ik} - y_{ik})^2`), over all samples of all calls and all ranks: every
    call adds its ``[sum, count]`` (see :func:`monai_calib.metrics.brier_statistics`) to a running
    sum, which ``aggregate()`` all-gathers and divides. Lower is better.

    Args:
        logits: ``y_pred`` holds logits (softmax over dim 1, sigmoid with ``multilabel``).
            Defaults to False.
        multilabel: independent per-label probabilities with multi-hot targets. Defaults to False.

    Inputs:
        - ``y_pred``: ``(B, K)`` or ``(B, K, *spatial)`` probabilities (every voxel is a sample)
          or logits; or a list of channel-first tensors.
        - ``y``: class indices ``(B,)`` / ``(B, 1, *spatial)`` / ``(B, *spatial)`` or one-hot of
          ``y_pred``'s shape (multi-hot for ``multilabel``).

    Raises:
        ValueError / TypeError: bad inputs, as :func:`monai_calib.metrics.brier_score`.
        RuntimeError: ``aggregate()`` before any data.

    References:
        Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather
        Review 1950.
    """

    def _statistics(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return brier_statistics(y_pred, y, logits=self.logits, multilabel=self.multilabel)


class NLLMetric(_PooledScoreMetric):
    r"""Pooled negative log-likelihood of the true class, streamed at fixed memory.

    .. math::

        \mathrm{NLL} = -\frac{1}{N}\sum_{i=1}^{N} \log \max(p_{i y_i}, \epsilon)

    (``log_softmax`` without clipping for ``logits=True``; binary cross-entropy averaged over
    samples and labels with ``multilabel=True``; see
    :func:`monai_calib.metrics.negative_log_likelihood`). Exact under DDP. Lower is better.

    Args:
        logits: ``y_pred`` holds logits. Defaults to False.
        multilabel: independent per-label probabilities with multi-hot targets. Defaults to False.
        eps: probability clip, 1e-7 (LS+ reference). Must be in [0, 0.5).

    Inputs:
        as :class:`BrierScoreMetric`.

    Raises:
        ValueError: ``eps`` outside [0, 0.5); bad inputs as
            :func:`monai_calib.metrics.negative_log_likelihood`.
        RuntimeError: ``aggregate()`` before any data.
    """

    def __init__(self, logits: bool = False, multilabel: bool = False, eps: float = 1e-7) -> None:
        super().__init__(logits=logits, multilabel=multilabel)
        self.eps = check_eps(eps)

    def _statistics(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nll_statistics(
            y_pred, y, logits=self.logits, multilabel=self.multilabel, eps=self.eps
        )
