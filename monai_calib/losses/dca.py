# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DCA loss: cross-entropy plus the batch difference between confidence and accuracy.

Liang et al., "Improved Trainable Calibration Method for Neural Networks on Medical Imaging
Classification", BMVC 2020. Forward and backward are fused in a ``torch.autograd.Function``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import LossReduction

from monai_calib._utils.validation import check_finite_number

from ._fused import FusedClassificationLoss, log_softmax_rows, upstream_weights

__all__ = ["DCALoss"]


class _DCAFunction(torch.autograd.Function):
    """Per-sample loss ``CE_i + beta * |C - A|`` (``C`` mean top-1 probability, ``A`` accuracy).

    With upstream gradients ``g_i`` and ``G = sum_i g_i``, the gradient is
    ``g_i (p_i - e_{y_i}) + G * beta * sign(C - A) / B * conf_i (e_{m_i} - p_i)``, ``m_i`` the
    argmax; ``A`` is a constant (no gradient through the accuracy).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        y: torch.Tensor,
        beta: float,
    ) -> torch.Tensor:
        logp = log_softmax_rows(z)
        yi = y.unsqueeze(1)
        ce = logp.gather(1, yi).squeeze(1).neg_()
        log_conf, m = logp.max(dim=1)
        conf = log_conf.exp_()
        acc = (m == y).to(z.dtype).mean()
        diff = conf.mean() - acc
        per_sample = ce + beta * diff.abs()
        if z.requires_grad:
            ctx.save_for_backward(logp.exp_(), conf, m.unsqueeze(1), yi, torch.sign(diff))
        ctx.beta = beta
        return per_sample

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor):  # type: ignore[override]
        p, conf, mi, yi, sign = ctx.saved_tensors
        batch = p.shape[0]
        g = upstream_weights(grad_output, p.dtype)
        b = (g.sum() * ctx.beta / batch * sign) * conf.unsqueeze(1)  # (B, 1)
        dz = p * (g - b)
        dz.scatter_add_(1, yi, g.expand_as(yi).neg())
        dz.scatter_add_(1, mi, b)
        return dz, None, None


class DCALoss(FusedClassificationLoss):
    r"""Difference between Confidence and Accuracy (DCA) loss.

    .. math::

        \mathcal L = \frac1B\sum_i -\log p_{i,y_i}
        + \beta \left|\frac1B\sum_i \max_k p_{ik}
        - \frac1B\sum_i \mathbf 1[\arg\max_k p_{ik} = y_i]\right|,
        \qquad p_i = \mathrm{softmax}(z_i).

    The accuracy is a constant for autograd: the penalty's gradient flows only through the mean
    confidence (as in the authors' code). At :math:`C = A` the gradient of :math:`|C - A|` is
    taken as 0 (``torch.sign``). With ``reduction="none"`` the batch-level penalty is spread
    evenly: :math:`\ell_i = -\log p_{i,y_i} + \beta|C - A|`, so the mean of the vector is the
    ``"mean"`` loss and ``"sum"`` is its sum. The CE weight :math:`\alpha` of the paper is 1.

    Inputs:
        - **input**: logits ``(B, K)``, ``K >= 2``; float16/bfloat16 computed in float32.
        - **target**: class indices ``(B,)`` / ``(B, 1)`` or one-hot ``(B, K)``.
        - **output**: scalar (``"mean"``, ``"sum"``) or ``(B,)`` (``"none"``).

    Args:
        beta: weight :math:`\beta \ge 0` of the penalty. Defaults to ``10.0`` (``loss_fn.py`` of
            the authors' repository; their demo notebook uses 25, the MDCA repository 1).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Raises:
        ValueError: ``beta`` negative, NaN or inf, unknown ``reduction``, bad input shapes or
            values.

    References:
        Liang, Zhang, Wang, Xu, Li, "Improved Trainable Calibration Method for Neural Networks on
        Medical Imaging Classification", BMVC 2020; https://github.com/GB-TonyLiang/DCA
    """

    def __init__(
        self, beta: float = 10.0, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=reduction)
        self.beta = check_finite_number(beta, "beta", low=0.0)

    function = _DCAFunction

    def function_args(self) -> tuple[Any, ...]:
        return (self.beta,)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"
