# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Accuracy-retention AUC (R-AUC) as a MONAI cumulative metric (buffered, DDP-gathered)."""

from __future__ import annotations

from typing import Any

import torch

from monai_calib._utils.validation import look_up_argument
from monai_calib.enums import RetentionGrid, Uncertainty

from ._cumulative import StorageCumulativeMetric
from ._inputs import prepare_multiclass
from .retention import retention_curve

__all__ = ["RetentionAUCMetric"]


class RetentionAUCMetric(StorageCumulativeMetric):
    r"""Area under the accuracy-retention curve over all samples seen (higher is better).

    At retained fraction :math:`f` the :math:`\lfloor fN\rfloor` most certain predictions are
    kept and the rest are replaced by the ground truth; with :math:`\mathrm{acc}(f)` the
    resulting accuracy on the grid :math:`f_1 < \dots < f_n`:

    .. math::

        \mathrm{R\text{-}AUC} = \sum_{j=1}^{n-1} \frac{(f_{j+1} - f_j)\,
        (\mathrm{acc}(f_j) + \mathrm{acc}(f_{j+1}))}{2}

    (see :func:`monai_calib.metrics.retention_curve`). The ranking needs every sample, so the
    probabilities (one row per sample/voxel) and labels are buffered and all-gathered across
    ranks at ``aggregate()``: memory is O(N K). Ties in the uncertainty keep the gathered order
    (rank 0's samples first).

    Args:
        grid: ``"log"`` (default, LS+ reference: :math:`f_j = \log j / \log n`) or ``"linear"``.
        num_points: grid size ``n >= 2``. Defaults to 200.
        uncertainty: ``"max_prob"`` (default, :math:`1 - \max_k p_k`), ``"entropy"`` or
            ``"predicted_class"`` (reference-bug reproduction only).
        logits: ``y_pred`` holds logits (softmax over dim 1). Defaults to False.

    Inputs:
        - ``y_pred``: ``(B, K)`` or ``(B, K, *spatial)`` probabilities or logits, ``K >= 2``.
        - ``y``: class indices ``(B,)`` / ``(B, 1, *spatial)`` / ``(B, *spatial)`` or one-hot.

    Raises:
        ValueError: invalid options or inputs (see :func:`monai_calib.metrics.retention_curve`).
        RuntimeError: ``aggregate()``/``curve()`` before any data.
    """

    _storage = "concat"

    def __init__(
        self,
        grid: RetentionGrid | str = "log",
        num_points: int = 200,
        uncertainty: Uncertainty | str = "max_prob",
        logits: bool = False,
    ) -> None:
        super().__init__()
        self.grid = look_up_argument(grid, RetentionGrid, "grid")
        self.uncertainty = look_up_argument(uncertainty, Uncertainty, "uncertainty")
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
            raise ValueError(f"num_points must be an int >= 2, got {num_points!r}.")
        self.num_points = num_points
        self.logits = bool(logits)

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate the batch and return its rows ``(probabilities (N, K), labels (N,))``."""
        if y is None:
            raise ValueError("y (the ground truth) is required, got None.")
        probs, labels = prepare_multiclass(y_pred, y, logits=self.logits)
        if not self.logits and probs.dtype != y_pred.dtype:
            # half-precision probabilities are stored as given (an exact round trip), so that
            # aggregate() re-validates their row sums with the half-precision tolerance
            probs = probs.to(y_pred.dtype)
        return probs.movedim(1, -1).reshape(-1, probs.shape[1]), labels.reshape(-1)

    def curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fractions, accuracies)`` of all data seen (all ranks), float64 ``(num_points,)``."""
        probs, labels = self._require_buffer()
        return retention_curve(
            probs,
            labels,
            grid=self.grid,
            num_points=self.num_points,
            uncertainty=self.uncertainty,
        )

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """R-AUC (a fraction in [0, 1]) of all data seen on all ranks, 0-d float64 tensor."""
        fractions, accuracies = self.curve()
        return torch.trapezoid(accuracies, fractions)
