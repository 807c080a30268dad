# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""CCT-EAL: class-conditional temperature with entropy alignment (Pan et al., ICASSP 2026)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch import nn

from monai_calib._utils.distributed import (
    all_reduce_sum,
    all_reduce_sum_differentiable,
    is_dist_ready,
)
from monai_calib._utils.validation import (
    accumulation_dtype,
    check_finite_number,
    look_up_argument,
    normalize_class_target,
    reduce_per_sample,
)
from monai_calib.enums import CCTEALInferenceRule

from ._fused import (
    per_sample_grad,
    scaled_ce_and_entropy,
    scaled_ce_entropy_backward,
    scaled_ce_entropy_forward,
    statistics_over_ranks,
)
from ._stateful import StatefulLossBase

__all__ = ["CCTEALLoss", "cct_eal_inference_temperature"]


def cct_eal_inference_temperature(
    logits: torch.Tensor,
    temperatures: torch.Tensor,
    rule: CCTEALInferenceRule | str,
    dim: int = 1,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Temperature of every position under a CCT-EAL inference rule, size 1 along ``dim``.

    .. math::
        \\text{none: } 1, \\quad
        \\text{predicted: } T_{\\arg\\max_c z_c}, \\quad
        \\text{expected: } \\textstyle\\sum_c \\mathrm{softmax}(z)_c\\, T_c, \\quad
        \\text{oracle: } T_y.

    The one implementation of the rules, used by :py:meth:`CCTEALLoss.scale_logits` and by the
    inference transform :class:`~monai_calib.transforms.CCTEALProbability`.

    Args:
        logits: float logits with the classes in ``dim``, e.g. ``(B, K)`` or ``(K, H, W)``.
        temperatures: the per-class temperatures ``(K,)`` (cast to ``logits``' dtype).
        rule: a :class:`~monai_calib.enums.CCTEALInferenceRule` (validated by the caller).
        dim: the class dimension. Defaults to ``1``.
        target: class indices of shape ``logits.shape`` without ``dim``, for ``"oracle"`` only.

    Returns:
        the temperatures, ``logits``' shape with size 1 in ``dim``.
    """
    if rule == CCTEALInferenceRule.NONE:
        return torch.ones_like(logits.narrow(dim, 0, 1))
    temps = temperatures.to(device=logits.device, dtype=logits.dtype)
    if rule == CCTEALInferenceRule.PREDICTED:
        return temps[logits.argmax(dim=dim, keepdim=True)]
    if rule == CCTEALInferenceRule.EXPECTED:
        return (torch.softmax(logits, dim=dim).movedim(dim, -1) @ temps).unsqueeze(dim)
    if target is None:
        raise ValueError(
            'rule="oracle" scales by the temperature of the true class and needs '
            "target; got target=None (use a label-free rule for inference)."
        )
    return temps[target].unsqueeze(dim)


class CCTEALLoss(StatefulLossBase):
    """CCT-EAL loss: cross-entropy with a per-class temperature plus an entropy-alignment term.

    Each class :math:`c` has a learnable temperature; during training, sample :math:`i` is scaled
    by the temperature of its *label* (that is the method). The mean predictive entropy is pulled
    towards the entropy :math:`H^*` of an EMA of the label distribution, which is updated with
    the current batch before it is read:

    .. math::
        T_c &= \\mathrm{clip}(\\mathrm{softplus}(\\tau_c),\\; T_{\\min},\\; T_{\\max}),
            \\qquad p_i = \\mathrm{softmax}(z_i / T_{y_i})\\\\
        f &\\leftarrow m f + (1 - m)\\, \\hat f, \\qquad
            \\hat f_k = \\frac{\\#\\{i : y_i = k\\}}{\\max(B, 1)}, \\qquad
            H^* = -\\textstyle\\sum_k \\max(f_k, \\epsilon) \\log \\max(f_k, \\epsilon)\\\\
        H_{\\text{pred}} &= \\frac1B \\textstyle\\sum_i H(p_i), \\qquad
        \\mathcal L = \\frac1B \\textstyle\\sum_i \\big(-\\log p_{i, y_i}\\big)
            + \\alpha_t\\, (H_{\\text{pred}} - H^*)^2.

    :math:`H^*` is a constant for autograd; :math:`H_{\\text{pred}}` is in the graph.
    Gradients reach the network and ``raw_temperatures`` (:math:`\\tau`, initialised to
    :math:`\\log(e - 1)` so that every :math:`T_c = 1`). **The optimizer must include**
    ``loss.parameters()``.

    **Warm-up.** :math:`\\alpha_t` is set by :py:meth:`set_progress`
    (:math:`\\alpha_t = \\alpha_{\\max} \\cdot \\text{progress} / w` for progress :math:`< w`, else
    :math:`\\alpha_{\\max}`). As in the reference, the constructor sets
    :math:`\\alpha_t = \\alpha_{\\max}`, so **there is no warm-up unless something calls**
    ``set_progress`` (the project's progress handler does, every iteration, with
    ``global_step / total_steps``).

    **Frozen temperatures (replicated pitfall).** The clamp to :math:`[T_{\\min}, T_{\\max}]` is
    hard, as in the reference: once :math:`\\mathrm{softplus}(\\tau_c)` leaves the interval, the
    gradient w.r.t. :math:`\\tau_c` is exactly zero and :math:`\\tau_c` stops moving (only
    weight decay can bring it back). :math:`\\tau_c` also only receives gradient from samples of
    class :math:`c`, so rare classes barely move. On balanced data :math:`H^* \\approx \\log K`
    (the maximum), so the alignment term pushes predictions towards uniform: expect
    under-confidence with large :math:`\\alpha_{\\max}`.

    **Label-free inference.** The reference scales evaluation logits by :math:`T_y`, which uses
    the label (it does not change the argmax but leaks the label into ECE/NLL/Brier). Use
    :py:meth:`scale_logits` with a label-free rule: ``"predicted"`` (default,
    :math:`T_{\\arg\\max z}`), ``"expected"`` (:math:`\\sum_c \\mathrm{softmax}(z)_c T_c`) or
    ``"none"``; ``"oracle"`` (:math:`T_y`) exists only to reproduce the authors' numbers.

    **State.** Persistent buffers ``label_ema`` ``(K,)`` (uniform at start), ``alpha`` ``()``
    and ``progress`` ``()`` follow ``.to(device)`` and ``state_dict``. ``label_ema`` changes only
    in training mode (or always with ``reference_mode=True``, the published behaviour where the
    caller passes ``update_stats``); staging follows
    :py:class:`~monai_calib.losses._stateful.StatefulLossBase`. Under ``torch.distributed`` (with
    ``sync_dist=True``) the batch label histogram and batch size are summed over ranks, so
    :math:`\\hat f` is the global batch frequency and ``label_ema`` is identical on all ranks
    (the reference is single-GPU). The all-reduce is a collective: every rank must call
    ``forward`` in training mode the same number of times.

    **DDP.** With ``sync_dist=True`` and a call that builds a graph, :math:`H_{\\text{pred}}` is
    also the mean over the batch concatenated over ranks, computed with a differentiable
    all-reduce whose backward sums the gradients over ranks, so the alignment term's gradient
    reaches every rank's samples (and temperatures). Each rank's loss is its local CE mean plus
    the global alignment term; after ``DistributedDataParallel`` averages the network's
    gradients (and :class:`~monai_calib.handlers.LossStateUpdater` the temperatures'), one step
    equals one step of a single process on the concatenated batch when the shards have equal
    sizes (with unequal sizes the alignment term is still exact and the CE part is DDP's usual
    mean of the ranks' means). Every rank must then call ``forward`` and ``backward``. Calls
    without a graph (e.g. under ``torch.no_grad``) use the local :math:`H_{\\text{pred}}` and no
    collective for it.

    **Speed.** One autograd node per call: the temperature, cross-entropy and entropy (one
    log-softmax), the state update (no graph), the loss terms and the reduction run inside a
    fused autograd function with a hand-written backward that repeats autograd's operations
    (same values; first-order gradients only: ``create_graph=True`` double backward is not
    supported).

    Returns a tensor (not the reference's ``(loss, stats)`` tuple); detached statistics of the
    last call are in ``last_stats``: ``loss`` (mean-reduced), ``ce``, ``entropy``
    (:math:`H_{\\text{pred}}`), ``target_entropy`` (:math:`H^*`), ``alpha`` and
    ``mean_temperature`` (batch mean of :math:`T_{y_i}`, the reference's ``T_mean``).

    Reference:
        Pan et al., "CCT-EAL: Class-Conditional Temperature with Entropy Alignment Loss", ICASSP
        2026. Code: https://github.com/JEFfersusu/CCT-EAL.

    Example::

        loss_fn = CCTEALLoss(num_classes=7)
        opt = torch.optim.Adam(list(net.parameters()) + list(loss_fn.parameters()), lr=1e-4)
        for step, (x, y) in enumerate(loader):
            loss_fn.set_progress(step / total_steps)
            loss = loss_fn(net(x), y)
        probs = torch.softmax(loss_fn.scale_logits(net(x_test)), dim=1)
    """

    def __init__(
        self,
        num_classes: int,
        alpha_max: float = 8.0,
        warmup_ratio: float = 0.3,
        momentum: float = 0.9,
        temperature_min: float = 0.75,
        temperature_max: float = 1.5,
        inference_rule: CCTEALInferenceRule | str = CCTEALInferenceRule.PREDICTED,
        reference_mode: bool = False,
        sync_dist: bool = True,
        eps: float = 1e-12,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        """
        Args:
            num_classes: number of classes ``K`` (>= 2).
            alpha_max: weight of the alignment term after warm-up. Defaults to ``8.0``.
            warmup_ratio: fraction ``w`` of training over which :math:`\\alpha` ramps up
                linearly (see :py:meth:`set_progress`). Defaults to ``0.3``.
            momentum: EMA momentum ``m`` of the label distribution, per training call.
                Defaults to ``0.9``.
            temperature_min: lower hard clamp of every :math:`T_c`. Defaults to ``0.75``.
            temperature_max: upper hard clamp of every :math:`T_c`. Defaults to ``1.5``.
            inference_rule: default rule of :py:meth:`scale_logits`, one of ``"none"``,
                ``"predicted"``, ``"expected"``, ``"oracle"``. Defaults to ``"predicted"``.
            reference_mode: update ``label_ema`` on every call, evaluation included, as the
                reference does with its default ``update_stats=True``. Defaults to ``False``.
            sync_dist: sum the batch label histogram, and the predictive entropies of a call
                that builds a graph, over ranks when ``torch.distributed`` is initialised (see
                **DDP** above). Defaults to ``True``.
            eps: floor of the EMA frequencies inside the entropy. Defaults to ``1e-12``.
            reduction: ``"mean"``, ``"sum"`` or ``"none"``. With ``"none"`` the result has
                shape ``(B,)``: per-sample CE plus the (batch-level) alignment term, so its mean
                is the ``"mean"`` loss. Defaults to ``"mean"``.

        Raises:
            TypeError: ``num_classes`` is not an int.
            ValueError: ``num_classes < 2``; ``alpha_max < 0``; ``warmup_ratio`` or
                ``momentum`` outside ``[0, 1]``; bad temperature bounds; NaN or inf values;
                ``eps`` outside ``(0, 1)``; unknown ``inference_rule``; unsupported ``reduction``.
        """
        super().__init__(num_classes, reduction=reduction)
        alpha_max = check_finite_number(alpha_max, "alpha_max", low=0.0)
        warmup_ratio = check_finite_number(warmup_ratio, "warmup_ratio", low=0.0, high=1.0)
        momentum = check_finite_number(momentum, "momentum", low=0.0, high=1.0)
        temperature_min = check_finite_number(
            temperature_min, "temperature_min", low=0.0, low_open=True
        )
        temperature_max = check_finite_number(
            temperature_max, "temperature_max", low=0.0, low_open=True
        )
        if not temperature_min < temperature_max:
            raise ValueError(
                "temperature_min and temperature_max must satisfy 0 < temperature_min < "
                f"temperature_max < inf, got {temperature_min} and {temperature_max}."
            )
        eps = check_finite_number(eps, "eps", low=0.0, high=1.0, low_open=True, high_open=True)
        self.alpha_max = float(alpha_max)
        self.warmup_ratio = float(warmup_ratio)
        self.momentum = float(momentum)
        self.temperature_min = float(temperature_min)
        self.temperature_max = float(temperature_max)
        self.inference_rule = look_up_argument(
            inference_rule, CCTEALInferenceRule, "inference_rule"
        )
        self.reference_mode = bool(reference_mode)
        self.sync_dist = bool(sync_dist)
        self.eps = float(eps)
        self.raw_temperatures = nn.Parameter(torch.full((num_classes,), math.log(math.e - 1.0)))
        self.register_buffer(
            "label_ema", torch.full((num_classes,), 1.0 / num_classes), persistent=True
        )
        self.register_buffer("alpha", torch.tensor(self.alpha_max), persistent=True)
        self.register_buffer("progress", torch.zeros(()), persistent=True)

    def _temperatures(self) -> torch.Tensor:
        """Per-class temperatures in the graph, shape ``(K,)``."""
        return F.softplus(self.raw_temperatures).clamp(self.temperature_min, self.temperature_max)

    @property
    def temperatures(self) -> torch.Tensor:
        """Current per-class temperatures :math:`T_c`, a detached ``(K,)`` tensor."""
        with torch.no_grad():
            return self._temperatures().detach()

    @torch.no_grad()
    def set_progress(self, progress: float) -> None:
        """Set the training progress and the warm-up weight :math:`\\alpha`.

        .. math::
            \\alpha = \\begin{cases} \\alpha_{\\max} \\cdot \\text{progress} / \\max(w, 10^{-6})
                & \\text{progress} < w\\\\ \\alpha_{\\max} & \\text{otherwise}\\end{cases}

        with progress clipped to ``[0, 1]`` and ``w = warmup_ratio``. Call it every iteration
        with ``global_step / total_steps``.

        Args:
            progress: fraction of training done.

        Raises:
            ValueError: ``progress`` is NaN.
        """
        progress = float(progress)
        if math.isnan(progress):
            raise ValueError("progress must be a number in [0, 1], got NaN.")
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.warmup_ratio:
            alpha = self.alpha_max * progress / max(self.warmup_ratio, 1e-6)
        else:
            alpha = self.alpha_max
        self.progress.fill_(progress)
        self.alpha.fill_(alpha)

    def scale_logits(
        self,
        logits: torch.Tensor,
        rule: CCTEALInferenceRule | str | None = None,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Divide each row of ``logits`` by a temperature chosen by ``rule`` (no label needed).

        .. math::
            \\text{none: } T = 1, \\quad
            \\text{predicted: } T = T_{\\arg\\max_c z_c}, \\quad
            \\text{expected: } T = \\textstyle\\sum_c \\mathrm{softmax}(z)_c\\, T_c, \\quad
            \\text{oracle: } T = T_y.

        ``"oracle"`` needs ``target`` and uses the label, which leaks it into probability-based
        metrics; use it only to reproduce the reference's numbers. The temperatures are
        detached (this is an inference transform).

        Inputs:
            logits: ``(B, K)``.
            target: class indices ``(B,)`` / ``(B, 1)`` or one-hot ``(B, K)``; only for
                ``"oracle"``.

        Args:
            rule: one of ``"none"``, ``"predicted"``, ``"expected"``, ``"oracle"``; defaults to
                ``self.inference_rule``.

        Returns:
            scaled logits, same shape and dtype as ``logits``.

        Raises:
            ValueError: unknown ``rule``; ``"oracle"`` without ``target``; bad shapes or values.
        """
        rule = (
            self.inference_rule
            if rule is None
            else look_up_argument(rule, CCTEALInferenceRule, "rule")
        )
        self._check_logits(logits, "logits")
        if rule == CCTEALInferenceRule.NONE:
            return logits.clone()
        z = logits.to(accumulation_dtype(logits))
        y = None
        if rule == CCTEALInferenceRule.ORACLE and target is not None:
            y = normalize_class_target(
                target, self.num_classes, batch_size=z.shape[0], device=z.device
            )
        t = cct_eal_inference_temperature(z, self.temperatures, rule, dim=1, target=y)
        return (z / t).to(logits.dtype)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss; see :py:meth:`StatefulLossBase._prepare` for the inputs and errors.

        Returns:
            the loss, a scalar for ``"mean"``/``"sum"`` or ``(B,)`` for ``"none"``, in the
            accumulation dtype (float32 for half-precision input).
        """
        z, y = self._prepare(input, target)
        update = self.training or self.reference_mode
        raw = self.raw_temperatures
        # entropies in a graph (through z or T) under DDP: H_pred over ranks, in the graph
        if statistics_over_ranks(self.sync_dist, z) or statistics_over_ranks(self.sync_dist, raw):
            temps = self._temperatures()
            if temps.dtype != z.dtype:
                temps = temps.to(z.dtype)
            return self._forward_over_ranks(z, temps, y, update)
        aux: dict[str, torch.Tensor] = {}
        # one autograd node for the temperatures, CE, entropy, the state update (no graph),
        # the alignment term and the reduction
        loss = _CCTEALFunction.apply(z, raw, y, self, update, aux)
        ce_d, penalty_d, h_d, t_d = aux["ce"], aux["penalty"], aux["h_pred"], aux["t_sample"]
        target_entropy = aux["target_entropy"]
        alpha_d = aux["alpha"].clone()  # may be the buffer itself, which set_progress changes
        self._record(ce_d, penalty_d, h_d, t_d, target_entropy, alpha_d)
        if update:
            self._stage({"label_ema": aux["ema"]})
        return loss

    def _record(
        self,
        ce_d: torch.Tensor,
        penalty_d: torch.Tensor,
        h_d: torch.Tensor,
        t_d: torch.Tensor,
        target_entropy: torch.Tensor,
        alpha_d: torch.Tensor,
    ) -> None:
        """Defer this call's ``last_stats`` (computed only when read) from detached pieces."""

        def stats() -> dict[str, torch.Tensor]:
            ce_mean = ce_d.mean()
            return {
                "loss": ce_mean + penalty_d,
                "ce": ce_mean,
                "entropy": h_d,
                "target_entropy": target_entropy,
                "alpha": alpha_d,
                "mean_temperature": t_d.mean(),
            }

        self._defer_stats(stats)

    def _ema_update(self, y: torch.Tensor, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(label EMA including this batch when update, target entropy H*)``, no graph."""
        ema = self.label_ema
        if update:
            batch_counts = torch.bincount(y, minlength=self.num_classes).to(ema.dtype)
            if self.sync_dist and is_dist_ready():
                packed = all_reduce_sum(
                    torch.cat([batch_counts, ema.new_tensor([float(y.shape[0])])])
                )
                batch_freq = packed[: self.num_classes] / packed[-1].clamp_min(1.0)
            else:  # no packing (same values: B >= 1 is exact in float32)
                batch_freq = batch_counts / float(y.shape[0])
            ema = self.momentum * ema + (1.0 - self.momentum) * batch_freq
        f = ema.clamp_min(self.eps)
        return ema, -(f * f.log()).sum()

    def _forward_over_ranks(
        self, z: torch.Tensor, temps: torch.Tensor, y: torch.Tensor, update: bool
    ) -> torch.Tensor:
        """``forward`` of a call whose :math:`H_{\\text{pred}}` is reduced over ranks (DDP)."""
        t_sample = temps[y].unsqueeze(1)
        ce, ent = scaled_ce_and_entropy(z, t_sample, y)
        # H_pred of the concatenated batch, in the graph: the backward sums over ranks
        total = all_reduce_sum_differentiable(
            torch.stack([ent.sum(), ent.new_tensor(ent.shape[0])])
        )
        h_pred = total[0] / total[1]
        with torch.no_grad():
            ema, target_entropy = self._ema_update(y, update)

        alpha = self.alpha.to(ce.dtype)
        penalty = alpha * (h_pred - target_entropy.to(ce.dtype)).square()
        per_sample = ce + penalty
        loss = reduce_per_sample(per_sample, self.reduction)
        ce_d, penalty_d, h_d, t_d = (
            ce.detach(),
            penalty.detach(),
            h_pred.detach(),
            t_sample.detach(),
        )
        alpha_d = alpha.detach().clone()  # may be the buffer itself, which set_progress changes
        self._record(ce_d, penalty_d, h_d, t_d, target_entropy, alpha_d)
        if update:
            self._stage({"label_ema": ema})
        return loss


class _CCTEALFunction(torch.autograd.Function):
    """CCT-EAL's per-sample ``CE + alpha (H_pred - H*)^2`` of ``softmax(z / T_y)``, reduced.

    One autograd node for the gather of the per-sample temperatures, the fused CE + entropy,
    the label-EMA update (no graph), the alignment term and the reduction. ``backward``
    rebuilds the upstream gradients that autograd would pass through the reduction, the
    broadcast add, ``alpha * square``, the batch mean of the entropy and the temperature gather
    (the same operations, so the same bits) and applies
    :func:`~monai_calib.losses._fused.scaled_ce_entropy_backward`.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: torch.Tensor,
        raw_temperatures: torch.Tensor,
        y: torch.Tensor,
        module: CCTEALLoss,
        update: bool,
        aux: dict[str, Any],
    ) -> torch.Tensor:
        # T_c = clamp(softplus(raw_c), T_min, T_max), as CCTEALLoss._temperatures
        pre_clamp = F.softplus(raw_temperatures)
        temps = pre_clamp.clamp(module.temperature_min, module.temperature_max)
        if temps.dtype != z.dtype:
            temps = temps.to(z.dtype)
        t_sample = temps[y].unsqueeze(1)
        logp, ce, ent = scaled_ce_entropy_forward(z, t_sample, y)
        h_pred = ent.mean()
        ema, target_entropy = module._ema_update(y, update)
        alpha = module.alpha
        if alpha.dtype != ce.dtype:
            alpha = alpha.to(ce.dtype)
        te_c = target_entropy if target_entropy.dtype == ce.dtype else target_entropy.to(ce.dtype)
        scalar = _NUMPY_SCALARS.get(ce.dtype) if ce.device.type == "cpu" else None
        if scalar is not None:
            # alpha * (H_pred - H*)^2 on host scalars of the loss's dtype: the same IEEE
            # operations as the 0-d tensor ops of the other branch (square is x * x)
            gap = scalar(h_pred.item()) - scalar(te_c.item())
            alpha_v = scalar(alpha.item())
            penalty: Any = float(alpha_v * (gap * gap))
        else:
            gap = h_pred - te_c
            alpha_v = alpha
            penalty = alpha * gap.square()
        loss = reduce_per_sample(ce + penalty, module.reduction)
        aux.update(
            ce=ce,
            penalty=penalty,
            h_pred=h_pred,
            t_sample=t_sample,
            alpha=alpha,
            ema=ema,
            target_entropy=target_entropy,
        )
        ctx.save_for_backward(logp, t_sample, y, ent, alpha, pre_clamp, raw_temperatures)
        ctx.scalar, ctx.gap, ctx.alpha_v = scalar, gap, alpha_v
        ctx.reduction = module.reduction
        ctx.bounds = (module.temperature_min, module.temperature_max)
        ctx.t_dtype = pre_clamp.dtype
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor):  # type: ignore[override]
        logp, t_sample, y, ent, alpha, pre_clamp, raw = ctx.saved_tensors
        batch = y.shape[0]
        g = per_sample_grad(grad_output, ctx.reduction, batch)
        # the broadcast add sums the gradient of the 0-d penalty (autograd's sum_to)
        g_penalty = g.sum([0], keepdim=True).view(())
        # alpha * gap^2 -> gap (pow_backward: grad * (2 * gap^1)) -> mean over the batch
        scalar = ctx.scalar
        if scalar is not None:
            g_gap = (scalar(g_penalty.item()) * ctx.alpha_v) * (ctx.gap * scalar(2.0))
            g_ent: Any = float(g_gap / scalar(batch))
        else:
            g_gap = (g_penalty * alpha) * (ctx.gap.pow(1) * 2.0)
            g_ent = g_gap.expand(batch) / batch
        grad_z, grad_t = scaled_ce_entropy_backward(
            logp,
            t_sample,
            y,
            ent,
            g,
            g_ent,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        grad_raw = None
        if grad_t is not None:
            # the gather's backward accumulates into the class temperatures; then the
            # backward of to(dtype), the clamp (strictly inside the bounds) and softplus
            grad_temps = grad_t.new_zeros(pre_clamp.shape[0]).index_put_(
                (y,), grad_t.squeeze(1), accumulate=True
            )
            if grad_temps.dtype != ctx.t_dtype:
                grad_temps = grad_temps.to(ctx.t_dtype)
            lo, hi = ctx.bounds
            grad_temps = torch.where(
                pre_clamp.gt(lo).logical_and_(pre_clamp.lt(hi)),
                grad_temps,
                torch.scalar_tensor(0.0, dtype=grad_temps.dtype, device=grad_temps.device),
            )
            grad_raw = torch.ops.aten.softplus_backward(grad_temps, raw, 1.0, 20.0)
        return grad_z, grad_raw, None, None, None, None


_NUMPY_SCALARS = {torch.float32: np.float32, torch.float64: np.float64}
