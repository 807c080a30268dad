# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""TET loss: cross-entropy at a fixed temperature minus an entropy bonus (Pan, JIIM 2026).

The forward and backward passes are fused in a :class:`torch.autograd.Function` (one
``log_softmax``, hand-written gradient) so the loss costs little more than plain cross-entropy;
the kernels and the input handling it shares with DCA, MDCA and LS+ are in
:mod:`monai_calib.losses._fused`.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import LossReduction

from monai_calib._utils.validation import check_finite_number

from ._fused import FusedClassificationLoss, log_softmax_rows, rowdot, upstream_weights

__all__ = ["TETLoss"]


class _TETFunction(torch.autograd.Function):
    """Fused TET loss. Gradient w.r.t. the scaled logits ``s = z / T`` (per sample):

    ``p - e_y + lambda * p * (a - <p, a>)`` with ``a_k = log(p_k + eps) + p_k / (p_k + eps)``.
    It is computed in ``forward`` (when ``z`` requires grad) and scaled in ``backward``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        y: torch.Tensor,
        temperature: float,
        entropy_weight: float,
        eps: float,
    ) -> torch.Tensor:
        logp = log_softmax_rows(z, 1.0 / temperature)
        yi = y.unsqueeze(1)
        ce = logp.gather(1, yi).squeeze(1).neg_()
        # buffers are reused in place: on large batches the allocations cost as much as the math
        p = logp.exp_()  # logp is not needed any more
        if entropy_weight != 0.0:
            log_pe = p + eps
            ratio = torch.div(p, log_pe) if z.requires_grad else None
            log_pe.log_()
            neg_ent = rowdot(p, log_pe)  # -H_eps(p), shape (B,)
            per_sample = torch.add(ce, neg_ent, alpha=entropy_weight)
            if z.requires_grad:
                a = log_pe.add_(ratio)  # type: ignore[arg-type]
                del ratio
                pa = rowdot(p, a).unsqueeze(1)
                # p + lambda * p * (a - <p, a>), written into a's buffer
                grad = torch.addcmul(p, p, a.sub_(pa), value=entropy_weight, out=a)
        else:
            per_sample = ce
            grad = p
        if z.requires_grad:
            ctx.save_for_backward(grad, yi)
        ctx.temperature = temperature
        return per_sample

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor):  # type: ignore[override]
        grad, yi = ctx.saved_tensors
        g = upstream_weights(grad_output, grad.dtype) / ctx.temperature
        dz = grad * g
        dz.scatter_add_(1, yi, g.expand_as(yi).neg())
        return dz, None, None, None, None


class TETLoss(FusedClassificationLoss):
    r"""TET loss: cross-entropy on temperature-scaled logits minus an entropy bonus.

    With :math:`p_i = \mathrm{softmax}(z_i / T)`,

    .. math::

        \ell_i = -\log p_{i, y_i} - \lambda\, H_\epsilon(p_i), \qquad
        H_\epsilon(p) = -\sum_k p_k \log(p_k + \epsilon),

    and the ``"mean"`` loss is :math:`\frac1B \sum_i \ell_i` (the CE term is PyTorch's mean
    cross-entropy on ``z / T``; the entropy is subtracted, so predictive entropy is maximised).
    :math:`\epsilon` sits inside the log of the entropy only. The temperature is fixed;
    :math:`T < 1` sharpens during training, so at inference the logits should be divided by the
    same :math:`T` (``apply_temperature_at_inference=True``, read by the inference
    post-transform through :attr:`temperature`).

    Forward and backward are fused in one ``torch.autograd.Function`` (one ``log_softmax`` and a
    hand-written gradient); it supports first-order gradients only (no double backward).

    Inputs:
        - **input**: logits of shape ``(B, K)``, ``K >= 2``; float16/bfloat16 are promoted to
          float32 for the computation.
        - **target**: class indices ``(B,)`` or ``(B, 1)``, or one-hot ``(B, K)``.
        - **output**: scalar for ``"mean"``/``"sum"``; ``(B,)`` per-sample losses for ``"none"``
          (their mean is the ``"mean"`` loss). Float32 for half-precision input, else the
          input's dtype.

    Args:
        temperature: fixed temperature :math:`T > 0`. Defaults to ``0.5``.
        entropy_weight: :math:`\lambda \ge 0`. Defaults to ``0.1``.
        eps: :math:`\epsilon \ge 0` inside the entropy's log. Defaults to ``1e-10``.
        apply_temperature_at_inference: whether inference should use ``softmax(z / T)``
            (the family's notebook convention) rather than ``softmax(z)``. Only stored here.
            Defaults to ``True``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Raises:
        ValueError: ``temperature`` not finite and > 0, negative or non-finite
            ``entropy_weight`` or ``eps``, unknown ``reduction``; bad input (see
            :func:`~monai_calib._utils.validation.check_logits_2d` and
            :func:`~monai_calib._utils.validation.normalize_class_target`).

    Example::

        loss_fn = TETLoss()
        loss = loss_fn(torch.randn(8, 3, requires_grad=True), torch.randint(0, 3, (8,)))

    References:
        Pan, "TET loss", J. Imaging Informatics in Medicine (2026), doi 10.1007/s10278-025-01816-9;
        code: https://github.com/JEFfersusu/TET_loss
    """

    def __init__(
        self,
        temperature: float = 0.5,
        entropy_weight: float = 0.1,
        eps: float = 1e-10,
        apply_temperature_at_inference: bool = True,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=reduction)
        self._temperature = check_finite_number(temperature, "temperature", low=0.0, low_open=True)
        self.entropy_weight = check_finite_number(entropy_weight, "entropy_weight", low=0.0)
        self.eps = check_finite_number(eps, "eps", low=0.0)
        self.apply_temperature_at_inference = bool(apply_temperature_at_inference)

    @property
    def temperature(self) -> torch.Tensor:
        """The fixed temperature :math:`T`, a 0-d float64 tensor (as ``MiTLoss.temperature``)."""
        return torch.tensor(self._temperature, dtype=torch.float64)

    function = _TETFunction

    def function_args(self) -> tuple[Any, ...]:
        return (self._temperature, self.entropy_weight, self.eps)

    def extra_repr(self) -> str:
        return (
            f"temperature={self._temperature}, entropy_weight={self.entropy_weight}, "
            f"eps={self.eps}, reduction={self.reduction!r}"
        )
