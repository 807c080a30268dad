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

from monai_calib._utils.distributed import all_reduce_sum
from monai_calib._utils.validation import check_finite_number

from ._fused import FusedClassificationLoss, log_softmax_rows, upstream_weights

__all__ = ["DCALoss"]


class _DCAFunction(torch.autograd.Function):
    """Per-sample loss ``CE_i + beta * |C - A|`` (``C`` mean top-1 probability, ``A`` accuracy).

    With upstream gradients ``g_i`` and ``G = sum_i g_i``, the gradient is
    ``g_i (p_i - e_{y_i}) + G * beta * sign(C - A) / B * conf_i (e_{m_i} - p_i)``, ``m_i`` the
    argmax; ``A`` is a constant (no gradient through the accuracy). With ``sync``, ``C``, ``A``
    and ``B`` are those of the batch concatenated over ranks and ``G`` is summed over ranks.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        y: torch.Tensor,
        beta: float,
        sync: bool = False,
    ) -> torch.Tensor:
        logp = log_softmax_rows(z)
        yi = y.unsqueeze(1)
        ce = logp.gather(1, yi).squeeze(1).neg_()
        log_conf, m = logp.max(dim=1)
        conf = log_conf.exp_()
        count = float(z.shape[0])
        if sync:
            # global sums of confidence, hits and samples: C and A of the concatenated batch
            total = all_reduce_sum(
                torch.stack([conf.sum(), (m == y).to(z.dtype).sum(), z.new_tensor(count)])
            )
            count = total[2]  # a tensor: no host synchronisation
            diff = (total[0] - total[1]) / count
        else:
            acc = (m == y).to(z.dtype).mean()
            diff = conf.mean() - acc
        per_sample = ce + beta * diff.abs()
        if z.requires_grad:
            ctx.save_for_backward(logp.exp_(), conf, m.unsqueeze(1), yi, torch.sign(diff))
        ctx.beta, ctx.sync, ctx.count = beta, sync, count
        return per_sample

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor):  # type: ignore[override]
        p, conf, mi, yi, sign = ctx.saved_tensors
        g = upstream_weights(grad_output, p.dtype)
        g_sum = g.sum()
        if ctx.sync:
            # every rank's penalty depends on this rank's confidences: sum their upstream weights
            g_sum = all_reduce_sum(g_sum)
        b = (g_sum * ctx.beta / ctx.count * sign) * conf.unsqueeze(1)  # (B, 1)
        dz = p * (g - b)
        dz.scatter_add_(1, yi, g.expand_as(yi).neg())
        dz.scatter_add_(1, mi, b)
        return dz, None, None, None


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

    **DDP.** With ``sync_dist=True`` (default), a process group of more than one rank and a call
    that builds a graph, :math:`C` and :math:`A` are the global means over the ranks' batches
    (one all-reduce in ``forward``, one scalar all-reduce in ``backward``), and the penalty's
    gradient reaches every rank's samples. Each rank's loss is its local CE mean plus the global
    penalty, so after ``DistributedDataParallel`` averages the gradients, one step equals one
    step of a single process on the concatenated batch when the shards have equal sizes (with
    unequal sizes, the penalty is still exact and the CE part is DDP's usual mean of the
    ranks' means). Every rank must then call ``forward`` and ``backward``. Calls without a
    graph (e.g. validation under ``torch.no_grad``) use the local batch and no collective;
    ``sync_dist=False`` or a single process gives the per-rank (authors') loss.

    Inputs:
        - **input**: logits ``(B, K)``, ``K >= 2``; float16/bfloat16 computed in float32.
        - **target**: class indices ``(B,)`` / ``(B, 1)`` or one-hot ``(B, K)``.
        - **output**: scalar (``"mean"``, ``"sum"``) or ``(B,)`` (``"none"``).

    Args:
        beta: weight :math:`\beta \ge 0` of the penalty. Defaults to ``10.0`` (``loss_fn.py`` of
            the authors' repository; their demo notebook uses 25, the MDCA repository 1).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.
        sync_dist: under ``torch.distributed``, compute :math:`C` and :math:`A` over the batch
            concatenated over ranks (see **DDP** above). Defaults to ``True``.

    Raises:
        ValueError: ``beta`` negative, NaN or inf, unknown ``reduction``, bad input shapes or
            values.

    References:
        Liang, Zhang, Wang, Xu, Li, "Improved Trainable Calibration Method for Neural Networks on
        Medical Imaging Classification", BMVC 2020; https://github.com/GB-TonyLiang/DCA
    """

    def __init__(
        self,
        beta: float = 10.0,
        reduction: LossReduction | str = LossReduction.MEAN,
        sync_dist: bool = True,
    ) -> None:
        super().__init__(reduction=reduction)
        self.beta = check_finite_number(beta, "beta", low=0.0)
        self.sync_dist = bool(sync_dist)

    function = _DCAFunction
    batch_statistics = True

    def function_args(self) -> tuple[Any, ...]:
        return (self.beta,)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}, sync_dist={self.sync_dist}"
