# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""CCL: Canonical Calibration Loss, the auxiliary multi-label calibration term of LDACE+CCL."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_calib._utils.validation import check_num_bins, reduce_per_sample

from .ldace import check_clip_eps, clipped_sigmoid, prepare_multilabel_logits

__all__ = ["CanonicalCalibrationLoss"]

_BIN_EPS = 1e-7  # the reference's denominator guard n + 1e-7


def _ccl_per_label(q: torch.Tensor, y: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Per-label CCL, shape ``(K,)``: ``sum_m (n_km / B) |mean_q_km - mean_y_km|``.

    Bins are ``((m - 1)/M, m/M]`` (``bucketize`` with ``right=False`` against ``m/M``); values
    ``<= 0`` fall outside every bin and are ignored, as in the reference. Membership is hard (no
    gradient); the gradient flows through the per-bin mean of ``q`` only. One ``scatter_add``
    per statistic over the flattened ``(label, bin)`` index: no loop over labels or bins.
    """
    b, k = q.shape
    if num_bins == 1:
        bin_idx = torch.zeros_like(q, dtype=torch.long)
        valid = q.detach() > 0
    else:
        edges = torch.arange(num_bins + 1, device=q.device, dtype=q.dtype) / num_bins
        bin_idx = torch.bucketize(q.detach(), edges, right=False) - 1
        valid = bin_idx >= 0
        bin_idx = bin_idx.clamp_min(0)
    label_idx = torch.arange(k, device=q.device).unsqueeze(0) * num_bins
    flat_idx = (label_idx + bin_idx).reshape(-1)
    w = valid.to(q.dtype)
    zeros = q.new_zeros(k * num_bins)
    n = zeros.scatter_add(0, flat_idx, w.reshape(-1))
    sum_q = zeros.scatter_add(0, flat_idx, (q * w).reshape(-1))
    sum_y = zeros.scatter_add(0, flat_idx, (y * w).reshape(-1))
    denom = n + _BIN_EPS
    gap = (sum_q / denom - sum_y / denom).abs()
    return ((n / b) * gap).reshape(k, num_bins).sum(dim=1)


class CanonicalCalibrationLoss(_Loss):
    r"""Canonical Calibration Loss (CCL): per-label binned calibration gap on :math:`q = p^2`.

    With :math:`p = \mathrm{clip}(\sigma(z), \epsilon, 1 - \epsilon)` and the LDACE inference
    probability :math:`q = p^2` (shape ``(B, K)``), each label :math:`k` is its own binary
    calibration problem over the batch. With :math:`M` equal-width right-closed bins
    :math:`((m-1)/M, m/M]`, the count :math:`n_{km}`, and
    :math:`\bar q_{km} = \sum q / (n_{km} + 10^{-7})`,
    :math:`\bar y_{km} = \#\text{positives} / (n_{km} + 10^{-7})`,

    .. math::

        \mathrm{CCL} = \frac{1}{K} \sum_{k=1}^{K} \sum_{m=1}^{M} \frac{n_{km}}{B}
            \big|\bar q_{km} - \bar y_{km}\big|.

    Bin membership is hard and the gradient flows through :math:`\bar q` only. With the
    reference's :math:`M = 1` this is prevalence matching per label,
    :math:`\frac1K \sum_k |\frac1B \sum_b q_{bk} - \frac1B \sum_b y_{bk}|` (up to the
    :math:`10^{-7}` guard), the multi-label analogue of MDCA on :math:`q`.

    CCL is a batch-level quantity. Following the package rule for batch-level terms,
    ``reduction="none"`` spreads it evenly over the samples: it returns a ``(B,)`` vector whose
    every entry is the CCL value, so its mean is the ``"mean"`` loss and ``"sum"`` is
    :math:`B \cdot \mathrm{CCL}`. Under DDP it is computed on each rank's batch (as the
    single-GPU reference does on its batch); nothing is all-reduced.

    Inputs:
        - **input**: logits of shape ``(B, K)``, ``K >= 1``; float16/bfloat16 are promoted to
          float32 for the computation.
        - **target**: multi-hot labels of shape ``(B, K)`` with values in {0, 1}.
        - **output**: scalar for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"`` (see above).

    Args:
        num_bins: :math:`M \ge 1`. Defaults to ``1`` (the reference configuration).
        clip_eps: :math:`\epsilon`, the probability clip, in ``[0, 0.5)``. Defaults to ``1e-7``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Raises:
        ValueError: ``num_bins < 1``, ``clip_eps`` outside ``[0, 0.5)``, unknown ``reduction``;
            bad logits or target (see :class:`~monai_calib.losses.LDACELoss`).
        TypeError: non-integer ``num_bins``; non-tensor or non-floating-point logits.

    Example::

        loss_fn = CanonicalCalibrationLoss(num_bins=1)
        loss = loss_fn(torch.randn(8, 14, requires_grad=True), torch.randint(0, 2, (8, 14)))

    References:
        Pal, Panda, Garain, ICASSP 2025 (see :class:`~monai_calib.losses.LDACELoss`).
    """

    def __init__(
        self,
        num_bins: int = 1,
        clip_eps: float = 1e-7,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.num_bins = check_num_bins(num_bins)
        self.clip_eps = check_clip_eps(clip_eps)

    def batch_value(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The scalar CCL of clipped sigmoid probabilities ``p`` and multi-hot ``y`` (validated).

        For :class:`~monai_calib.losses.LDACECCLoss`, which shares one sigmoid pass with LDACE.
        """
        return _ccl_per_label(p.square(), y, self.num_bins).mean()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss; see the class docstring for shapes."""
        z, y = prepare_multilabel_logits(input, target)
        ccl = self.batch_value(clipped_sigmoid(z, self.clip_eps), y)
        return reduce_per_sample(ccl.expand(z.shape[0]), self.reduction)

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, clip_eps={self.clip_eps}, reduction={self.reduction!r}"
