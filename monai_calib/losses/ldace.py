# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""LDACE: Label Dependency Aware Cross Entropy for multi-label classification (Pal et al. 2025).

The module also holds the input handling shared with :mod:`monai_calib.losses.ccl`
(:func:`prepare_multilabel_logits`, :func:`clipped_sigmoid`, :func:`check_clip_eps`).
"""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_calib._utils.validation import (
    accumulation_dtype,
    check_finite_number,
    check_logits_2d,
    check_multilabel_target,
    reduce_per_sample,
)

__all__ = ["LDACELoss"]


def check_clip_eps(clip_eps: float) -> float:
    """Validate the probability clip :math:`\\epsilon \\in [0, 0.5)` (``ValueError`` otherwise)."""
    return check_finite_number(clip_eps, "clip_eps", low=0.0, high=0.5, high_open=True)


def prepare_multilabel_logits(
    input: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(B, K)`` logits (``K >= 1``) and a same-shape multi-hot target.

    Returns the logits in the accumulation dtype (float32 for fp16/bf16) and the target as a
    tensor of the same dtype and device.
    """
    check_logits_2d(input, name="input", min_classes=1)
    dtype = accumulation_dtype(input)
    y = check_multilabel_target(target, input.shape, name="target", device=input.device)
    return input.to(dtype), y.to(dtype)


def clipped_sigmoid(z: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """``clamp(sigmoid(z), eps, 1 - eps)``; the clamp has zero gradient outside the range."""
    p = torch.sigmoid(z)
    if clip_eps > 0.0:
        p = p.clamp(clip_eps, 1.0 - clip_eps)
    return p


def _ldace_per_sample(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample LDACE, the mean of the pair-wise BCE over the ``K(K+1)/2`` unordered pairs.

    ``sum_ij W_ij l_ij = (sum_ij l_ij + sum_i l_ii) / 2`` for the symmetric ``l`` and ``W`` with 1
    on the diagonal and 1/2 elsewhere. With ``L = log(1 - p p^T)`` (``log1p``, accurate for small
    products) and ``log P_ij = log p_i + log p_j`` (exact for the clipped ``p``),

    ``sum_ij l_ij = -2 (sum_i y_i)(sum_j y_j log p_j) - (sum_ij L_ij - y^T L y)``,

    so only one ``(B, K, K)`` matrix is built (memory ``O(B K^2)``) and the rest is ``O(B K)``.
    """
    k = p.shape[1]
    log_p = torch.log(p)
    big_l = torch.log1p(-(p.unsqueeze(2) * p.unsqueeze(1)))  # (B, K, K)
    yly = torch.bmm(big_l, y.unsqueeze(2)).squeeze(2).mul(y).sum(dim=1)  # y^T L y
    both = 2.0 * y.sum(dim=1) * (y * log_p).sum(dim=1)  # pairs with y_i = y_j = 1
    full = -(both + big_l.sum(dim=(1, 2)) - yly)
    # diagonal l_ii = BCE(p_i^2, y_i)
    diag = -(2.0 * y * log_p + (1.0 - y) * torch.diagonal(big_l, dim1=1, dim2=2)).sum(dim=1)
    return (full + diag) * (1.0 / (k * (k + 1)))  # (total / 2) / (K (K + 1) / 2)


class LDACELoss(_Loss):
    r"""Label Dependency Aware Cross Entropy (LDACE) for multi-label classification.

    With :math:`p = \mathrm{clip}(\sigma(z), \epsilon, 1 - \epsilon)` (sigmoid per label), each
    sample forms the pair-wise joint prediction :math:`P = p p^\top` and the label co-occurrence
    :math:`Y = y y^\top`, and

    .. math::

        \ell_{ij} = -\big[Y_{ij} \log P_{ij} + (1 - Y_{ij}) \log(1 - P_{ij})\big], \qquad
        \mathcal L = \frac{1}{B \cdot K(K+1)/2} \sum_b \sum_{i,j} W_{ij}\, \ell^{(b)}_{ij},

    with :math:`W_{ii} = 1` and :math:`W_{ij} = 1/2` for :math:`i \ne j`: a mean over samples
    and over the :math:`K(K+1)/2` unordered label pairs, diagonal included. A pair with both
    labels present costs :math:`-\log p_i - \log p_j`; any other pair costs
    :math:`-\log(1 - p_i p_j)`; the diagonal term is :math:`\mathrm{BCE}(p_i^2, y_i)`. The
    matching inference probability is therefore :math:`q_i = \sigma(z_i)^2`, not
    :math:`\sigma(z_i)`.

    The clip matches the reference code, including its side effect: ``clamp`` has zero gradient
    where :math:`\sigma(z)` lies outside :math:`[\epsilon, 1 - \epsilon]`, i.e. for
    :math:`|z| \gtrsim 16.1` at the default :math:`\epsilon = 10^{-7}`, so a logit that is
    confidently wrong by that much receives no gradient. ``clip_eps=0`` disables the clip
    (finite logits then still give a finite loss unless :math:`\sigma` saturates to 0 or 1 in
    the working precision).

    Computed in one vectorised pass; memory :math:`O(B K^2)`.

    Inputs:
        - **input**: logits of shape ``(B, K)``, ``K >= 1``; float16/bfloat16 are promoted to
          float32 for the computation.
        - **target**: multi-hot labels of shape ``(B, K)`` with values in {0, 1} (float, int or
          bool).
        - **output**: scalar for ``"mean"``/``"sum"``; ``(B,)`` per-sample losses (each the mean
          over the label pairs) for ``"none"``, whose mean is the ``"mean"`` loss.

    Args:
        clip_eps: :math:`\epsilon`, the probability clip, in ``[0, 0.5)``. Defaults to ``1e-7``
            (the reference value).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Raises:
        ValueError: ``clip_eps`` outside ``[0, 0.5)``, unknown ``reduction``; logits that are not
            2-d or not finite, a target of another shape or with values other than 0/1.
        TypeError: non-tensor or non-floating-point logits, non-tensor target.

    Example::

        loss_fn = LDACELoss()
        loss = loss_fn(torch.randn(8, 14, requires_grad=True), torch.randint(0, 2, (8, 14)))

    References:
        Pal, Panda, Garain, "Label Dependency Aware Loss for Reliable Multi-Label Medical Image
        Classification", ICASSP 2025; code: https://github.com/theimageprocessingguy/LDACE-CCL
    """

    def __init__(
        self, clip_eps: float = 1e-7, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.clip_eps = check_clip_eps(clip_eps)

    def per_sample(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample LDACE ``(B,)`` of clipped sigmoid probabilities ``p`` and multi-hot ``y``.

        For :class:`~monai_calib.losses.LDACECCLoss`, which shares one sigmoid pass with CCL.
        """
        return _ldace_per_sample(p, y)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss; see the class docstring for shapes."""
        z, y = prepare_multilabel_logits(input, target)
        per_sample = self.per_sample(clipped_sigmoid(z, self.clip_eps), y)
        return reduce_per_sample(per_sample, self.reduction)

    def extra_repr(self) -> str:
        return f"clip_eps={self.clip_eps}, reduction={self.reduction!r}"
