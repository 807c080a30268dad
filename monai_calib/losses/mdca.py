# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MDCA loss: a classification loss plus the multi-class difference of confidence and accuracy.

Hebbalaguppe et al., "A Stitch in Time Saves Nine: A Train-Time Regularizing Loss for Improved
Neural Network Calibration", CVPR 2022. Forward and backward are fused in a
``torch.autograd.Function``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import LossReduction

from monai_calib._utils.distributed import all_reduce_sum
from monai_calib._utils.validation import check_finite_number, look_up_argument
from monai_calib.enums import MDCABaseLoss

from ._fused import FusedClassificationLoss, log_softmax_rows, upstream_weights

__all__ = ["MDCALoss"]


class _MDCAFunction(torch.autograd.Function):
    """Per-sample loss ``base_i + beta * (1/K) sum_k |P_k - F_k|``.

    The base-loss gradient is ``w_i p_i - v_i e_{y_i} - u_i 1`` (per base, see ``backward``).
    The penalty's gradient w.r.t. ``z_i`` is
    ``G * beta / (K B) * p_i * (s - <p_i, s>)`` with ``s_k = sign(P_k - F_k)``. With ``sync``,
    ``P``, ``F`` and ``B`` are those of the batch concatenated over ranks and ``G`` is summed
    over ranks.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        y: torch.Tensor,
        beta: float,
        base: str,
        gamma: float,
        smoothing: float,
        sync: bool = False,
    ) -> torch.Tensor:
        batch, k = z.shape
        logp = log_softmax_rows(z)
        yi = y.unsqueeze(1)
        logp_y = logp.gather(1, yi).squeeze(1)
        coef = None  # focal: dL/dz_i = coef_i * (p_i - e_y)
        if base == "nll":
            base_loss = -logp_y
        elif base == "focal":
            one_minus = -torch.expm1(logp_y)  # 1 - p_y, accurate near p_y = 1
            weight = one_minus.pow(gamma)
            base_loss = -weight * logp_y
            if z.requires_grad:
                # dL/dlogp_y = gamma (1-p)^(gamma-1) p log p - (1-p)^gamma; the first term -> 0
                # as p -> 1 for gamma > 0, so it is written as 0 where 1 - p == 0 (masked fills
                # write the same values as the where(1 - p > 0, ., 1 or 0) they replace)
                at_one = one_minus <= 0
                safe = one_minus.masked_fill(at_one, 1.0)
                first = gamma * safe.pow(gamma - 1.0) * logp_y.exp() * logp_y
                coef = weight - first.masked_fill_(at_one, 0.0)
        else:  # label_smoothing, MDCA repo convention: 1 - alpha on y, alpha / (K - 1) elsewhere
            off = smoothing / (k - 1)
            base_loss = -(1.0 - smoothing - off) * logp_y - off * logp.sum(dim=1)
        p = logp.exp_()
        count = float(batch)
        if sync:
            # class sums of probabilities and labels, and the size, of the concatenated batch
            total = all_reduce_sum(
                torch.cat(
                    [
                        p.sum(dim=0),
                        torch.bincount(y, minlength=k).to(z.dtype),
                        z.new_tensor([count]),
                    ]
                )
            )
            count = total[-1]  # a tensor: no host synchronisation
            diff = (total[:k] - total[k : 2 * k]) / count
        else:
            mean_p = p.mean(dim=0)
            freq = torch.bincount(y, minlength=k).to(z.dtype) / batch
            diff = mean_p - freq
        per_sample = base_loss + (beta / k) * diff.abs().sum()
        if z.requires_grad:
            ps = torch.mv(p, torch.sign(diff)) if beta != 0.0 else None
            ctx.save_for_backward(p, yi, torch.sign(diff), ps, coef)
        ctx.beta, ctx.base, ctx.smoothing = beta, base, smoothing
        ctx.sync, ctx.count = sync, count
        return per_sample

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor):  # type: ignore[override]
        p, yi, sign, ps, coef = ctx.saved_tensors
        k = p.shape[1]
        g = upstream_weights(grad_output, p.dtype)
        # base part: w_i * p_i - v_i * e_y - u_i * 1
        w = g if coef is None else g * coef.unsqueeze(1)
        v = w
        u = None
        if ctx.base == "label_smoothing":
            off = ctx.smoothing / (k - 1)
            v = g * (1.0 - ctx.smoothing - off)
            u = g * off
        if ctx.beta != 0.0:
            g_sum = g.sum()
            if ctx.sync:
                # every rank's penalty depends on this rank's probabilities
                g_sum = all_reduce_sum(g_sum)
            kappa = g_sum * (ctx.beta / (k * ctx.count))
            # p_i * (w_i - kappa <p_i, s> + kappa s)
            dz = p * torch.addcmul(w - kappa * ps.unsqueeze(1), kappa, sign.unsqueeze(0))
        else:
            dz = p * w
        if u is not None:
            dz.sub_(u)
        dz.scatter_add_(1, yi, v.expand_as(yi).neg())
        return dz, None, None, None, None, None, None


class MDCALoss(FusedClassificationLoss):
    r"""Multi-class Difference in Confidence and Accuracy (MDCA) loss.

    .. math::

        \mathcal L = \frac1B\sum_i \ell^{\text{base}}_i
        + \beta \cdot \frac1K \sum_{k=1}^{K}
        \left|\frac1B\sum_i p_{ik} - \frac1B\sum_i \mathbf 1[y_i = k]\right|,
        \qquad p_i = \mathrm{softmax}(z_i),

    with the base loss

    - ``"nll"``: :math:`-\log p_{i,y_i}`;
    - ``"focal"``: :math:`-(1 - p_{i,y_i})^{\gamma}\log p_{i,y_i}`;
    - ``"label_smoothing"``: :math:`-\sum_k q_{ik}\log p_{ik}` with :math:`q_{i,y_i} = 1-\alpha`
      and :math:`q_{ik} = \alpha / (K-1)` for :math:`k \ne y_i` (the MDCA repository's
      convention; PyTorch's ``label_smoothing`` spreads :math:`\alpha/K` over *all* classes).

    The penalty is a batch-level term; with ``reduction="none"`` it is added to every sample's
    base loss, so the mean of the vector is the ``"mean"`` loss. The gradient of
    :math:`|\cdot|` at 0 is taken as 0.

    **DDP.** With ``sync_dist=True`` (default), a process group of more than one rank and a call
    that builds a graph, the class means of :math:`p_{ik}` and of the labels are global means
    over the ranks' batches (one all-reduce in ``forward``, one scalar all-reduce in
    ``backward``), and the penalty's gradient reaches every rank's samples. Each rank's loss is
    its local base-loss mean plus the global penalty, so after ``DistributedDataParallel``
    averages the gradients, one step equals one step of a single process on the concatenated
    batch when the shards have equal sizes (with unequal sizes, the penalty is still exact and
    the base part is DDP's usual mean of the ranks' means). Every rank must then call
    ``forward`` and ``backward``. Calls without a graph (e.g. validation under
    ``torch.no_grad``) use the local batch and no collective; ``sync_dist=False`` or a single
    process gives the per-rank (authors') loss.

    Inputs:
        - **input**: logits ``(B, K)``, ``K >= 2``; float16/bfloat16 computed in float32.
        - **target**: class indices ``(B,)`` / ``(B, 1)`` or one-hot ``(B, K)``.
        - **output**: scalar (``"mean"``, ``"sum"``) or ``(B,)`` (``"none"``).

    Args:
        beta: penalty weight :math:`\beta \ge 0`. Defaults to ``1.0`` (the repository's scripts).
        base_loss: ``"nll"`` | ``"focal"`` | ``"label_smoothing"``. Defaults to ``"nll"``.
        gamma: focal exponent :math:`\gamma \ge 0` (``"focal"`` only). Defaults to ``1.0``.
        smoothing: :math:`\alpha \in [0, 1)` (``"label_smoothing"`` only). Defaults to ``0.1``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.
        sync_dist: under ``torch.distributed``, compute the class means of the probabilities and
            labels over the batch concatenated over ranks (see **DDP** above). Defaults to
            ``True``.

    Raises:
        ValueError: unknown ``base_loss`` or ``reduction``, negative or non-finite
            ``beta``/``gamma``, ``smoothing`` outside ``[0, 1)``, bad input shapes or values.

    References:
        Hebbalaguppe, Prakash, Madan, Arora, "A Stitch in Time Saves Nine: A Train-Time
        Regularizing Loss for Improved Neural Network Calibration", CVPR 2022;
        https://github.com/mdca-loss/MDCA-Calibration
    """

    def __init__(
        self,
        beta: float = 1.0,
        base_loss: MDCABaseLoss | str = MDCABaseLoss.NLL,
        gamma: float = 1.0,
        smoothing: float = 0.1,
        reduction: LossReduction | str = LossReduction.MEAN,
        sync_dist: bool = True,
    ) -> None:
        super().__init__(reduction=reduction)
        self.beta = check_finite_number(beta, "beta", low=0.0)
        self.base_loss = look_up_argument(base_loss, MDCABaseLoss, "base_loss")
        self.gamma = check_finite_number(gamma, "gamma", low=0.0)
        self.smoothing = check_finite_number(
            smoothing, "smoothing", low=0.0, high=1.0, high_open=True
        )
        self.sync_dist = bool(sync_dist)

    function = _MDCAFunction
    batch_statistics = True

    def function_args(self) -> tuple[Any, ...]:
        return (self.beta, self.base_loss, self.gamma, self.smoothing)

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, base_loss={self.base_loss.value!r}, gamma={self.gamma}, "
            f"smoothing={self.smoothing}, reduction={self.reduction!r}, sync_dist={self.sync_dist}"
        )
