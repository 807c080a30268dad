# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MiT loss: learnable global temperature with a dual-averaged entropy weight (Pan & Wang, 2025)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch import nn

from monai_calib._utils.distributed import all_reduce_sum, is_dist_ready
from monai_calib._utils.validation import (
    check_finite_number,
    check_logits_2d,
    check_temperature,
    reduce_per_sample,
)

from ._fused import per_sample_grad, scaled_ce_entropy_backward, scaled_ce_entropy_forward
from ._stateful import StatefulLossBase

__all__ = ["MiTLoss"]


class MiTLoss(StatefulLossBase):
    """MiT loss: cross-entropy on temperature-scaled logits minus a dual-averaged entropy bonus.

    A single learnable temperature :math:`T` scales the logits, and the predictive entropy is
    rewarded with a weight :math:`\\lambda_t` that is the running mean of the (normalised,
    positive part of the) gap between the label entropy :math:`H^*` and the batch-mean predictive
    entropy. With label counts :math:`n` (Laplace prior: initialised to ones) updated by the
    current batch before they are read:

    .. math::
        T &= \\mathrm{clip}(\\mathrm{softplus}(\\tau) + 10^{-6},\\; T_{\\min},\\; T_{\\max}),
            \\qquad p_i = \\mathrm{softmax}(z_i / T)\\\\
        \\pi &= n / \\textstyle\\sum_k n_k, \\qquad
            H^* = -\\textstyle\\sum_k \\pi_k \\log \\max(\\pi_k, 10^{-12}), \\qquad
            H_{\\max} = \\log(K + 10^{-12})\\\\
        \\bar H &= \\frac1B \\textstyle\\sum_i H(p_i), \\qquad
            d_t = \\max\\Big(0, \\frac{H^* - \\mathrm{sg}(\\bar H)}{\\max(H_{\\max}, 10^{-12})}
            \\Big)\\\\
        \\lambda_t &= \\mathrm{clip}\\Big(\\frac{(t-1)\\lambda_{t-1} + d_t}{t},\\; 0,\\;
            \\lambda_{\\max}\\Big), \\qquad
        \\mathcal L = \\frac1B \\textstyle\\sum_i \\big(-\\log p_{i, y_i}\\big)
            - \\lambda_t \\bar H.

    :math:`\\lambda_t` is a constant for autograd; gradients reach the network (through
    :math:`z`) and the raw temperature :math:`\\tau` (``raw_temperature``) through both the
    cross-entropy and :math:`\\bar H`.

    **The optimizer must include** ``loss.parameters()`` (e.g.
    ``Adam(list(net.parameters()) + list(loss.parameters()))``), otherwise :math:`T` never moves.

    **Temperature initialisation.** From scratch, start at :math:`T = 1` (the default
    ``init_temperature``) without a fit: the logits of a randomly initialised network say little or
    nothing about the labels, and a fit only reproduces the label prior. On a pretrained or
    fine-tuned network, initialise :math:`T` by temperature scaling as the reference does (it fits
    inside the loss constructor, over the training loader, on an ImageNet-pretrained backbone with a
    new head): ``monai_calib.handlers.MiTTemperatureInit`` does it when training starts, on the
    loader you give it (the training loader by default, as the reference; held-out validation logits
    are preferred when available), and skips an uninformative fit. By hand:
    ``loss.set_temperature(fit_temperature(val_logits, val_labels))``.

    **State.** Persistent buffers ``label_counts`` ``(K,)``, ``dual_lambda`` ``()`` and ``step``
    ``()`` (long) follow ``.to(device)`` and ``state_dict``. They change only in training mode;
    in eval mode the committed :math:`\\lambda` and counts are used and nothing is staged. See
    :py:class:`~monai_calib.losses._stateful.StatefulLossBase` for staging and
    ``update_state_in_forward``. Under ``torch.distributed`` (with ``sync_dist=True``) the batch
    label counts, the entropy sums and the batch sizes are summed over ranks in one all-reduce,
    so :math:`H^*`, :math:`d_t` and :math:`\\lambda_t` are identical on every rank (the reference
    is single-GPU); the :math:`\\bar H` term of the loss stays the local batch mean. The
    all-reduce is a collective: in training mode every rank must call ``forward`` the same number
    of times. ``label_counts`` is a float32 buffer, exact up to :math:`2^{24}` samples per class.

    **Reference mode.** ``reference_mode=True`` restores the published behaviour of updating the
    state on every call, including evaluation calls (the reference code has no ``self.training``
    guard, so test labels leak into the counts and :math:`\\lambda`). Other reference quirks are
    deliberately *not* reproduced: the reference stores the backbone inside the loss (so its
    ``state_dict`` holds a copy of the model and the notebook's optimizer lists every backbone
    parameter twice, giving two Adam updates per step), and its temperature fit lives in the
    handler above, not in the loss. The reference's initial :math:`\\lambda` of 0.1 has no
    effect (its step counter starts at 0, so :math:`\\lambda_1 = d_1`); this class starts at
    :math:`\\lambda_0 = 0`, :math:`t = 0`, which gives the same sequence.

    **Speed.** One autograd node per call: the temperature, cross-entropy and entropy (one
    log-softmax), the state update (no graph), the loss terms and the reduction run inside a
    fused autograd function with a hand-written backward that repeats autograd's operations
    (same values; first-order gradients only: ``create_graph=True`` double backward is not
    supported).

    Returns a tensor (not the reference's ``(loss, stats)`` tuple); detached statistics of the
    last call are in ``last_stats``: ``loss`` (mean-reduced), ``ce``, ``entropy``
    (:math:`\\bar H`), ``target_entropy`` (:math:`H^*`), ``dual_lambda`` (the :math:`\\lambda`
    used) and ``temperature``.

    Reference:
        Pan & Wang, "MiT: ...", Measurement Science and Technology 36(10) 105404, 2025,
        doi:10.1088/1361-6501/ae08d8. Code: https://github.com/JEFfersusu/MiT_loss.

    Example::

        loss_fn = MiTLoss(num_classes=7)  # from scratch: T = 1
        # pretrained / fine-tuned network only: start from the temperature-scaling fit
        loss_fn.set_temperature(fit_temperature(val_logits, val_labels))
        opt = torch.optim.Adam(list(net.parameters()) + list(loss_fn.parameters()), lr=1e-4)
        loss = loss_fn(net(x), y)
    """

    def __init__(
        self,
        num_classes: int,
        init_temperature: float = 1.0,
        lambda_max: float = 0.5,
        temperature_min: float = 1e-3,
        temperature_max: float = 500.0,
        reference_mode: bool = False,
        sync_dist: bool = True,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        """
        Args:
            num_classes: number of classes ``K`` (>= 2).
            init_temperature: initial temperature, in ``[temperature_min, temperature_max]``.
                Defaults to ``1.0``.
            lambda_max: upper clip of the dual variable :math:`\\lambda`. Defaults to ``0.5``.
            temperature_min: lower hard clamp of :math:`T`. Defaults to ``1e-3``.
            temperature_max: upper hard clamp of :math:`T`. Defaults to ``500.0``.
            reference_mode: update the state on every call, evaluation included, as the
                published code does. Defaults to ``False``.
            sync_dist: sum label counts and entropy statistics over ranks when
                ``torch.distributed`` is initialised. Defaults to ``True``.
            reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample
                :math:`-\\log p_{i,y_i} - \\lambda_t H(p_i)`, shape ``(B,)``). Defaults to
                ``"mean"``.

        Raises:
            TypeError: ``num_classes`` is not an int.
            ValueError: ``num_classes < 2``; non-positive or non-finite temperature bounds or
                ``temperature_min >= temperature_max``; ``init_temperature`` outside the bounds;
                ``lambda_max`` negative or non-finite; unsupported ``reduction``.
        """
        super().__init__(num_classes, reduction=reduction)
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
        init_temperature = check_finite_number(
            init_temperature, "init_temperature", low=0.0, low_open=True
        )
        if not (temperature_min <= init_temperature <= temperature_max):
            raise ValueError(
                f"init_temperature must be in [{temperature_min}, {temperature_max}], got "
                f"{init_temperature}."
            )
        self.lambda_max = check_finite_number(lambda_max, "lambda_max", low=0.0)
        self.temperature_min = float(temperature_min)
        self.temperature_max = float(temperature_max)
        self.reference_mode = bool(reference_mode)
        self.sync_dist = bool(sync_dist)
        self.raw_temperature = nn.Parameter(torch.zeros(()))
        self.set_temperature(init_temperature)
        self.register_buffer("label_counts", torch.ones(num_classes), persistent=True)
        self.register_buffer("dual_lambda", torch.zeros(()), persistent=True)
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=True)
        self._h_max = max(math.log(num_classes + 1e-12), 1e-12)

    def _temperature(self) -> torch.Tensor:
        """Temperature in the graph (differentiable w.r.t. ``raw_temperature``)."""
        t = F.softplus(self.raw_temperature) + 1e-6
        return t.clamp(self.temperature_min, self.temperature_max)

    @property
    def temperature(self) -> torch.Tensor:
        """Current temperature :math:`T`, a detached 0-d tensor."""
        with torch.no_grad():
            return self._temperature().detach()

    @torch.no_grad()
    def set_temperature(self, value: float) -> None:
        """Set :math:`T` by writing the inverse softplus into ``raw_temperature``.

        ``raw = log(max(expm1(value), 1e-12))``, so ``temperature`` reads back ``value + 1e-6``
        (the softplus floor), up to the parameter's float precision. A value outside
        ``[temperature_min, temperature_max]`` is clamped to that range, with a warning, so the
        parameter holds the temperature forward uses (note that forward's clamp passes no
        gradient to a temperature sitting exactly at a bound).

        Args:
            value: the temperature, e.g. from ``monai_calib.calibration.fit_temperature``.

        Raises:
            ValueError: ``value`` is not finite and > 0.
        """
        value = check_temperature(value, "temperature value")
        if not (self.temperature_min <= value <= self.temperature_max):
            clamped = min(max(value, self.temperature_min), self.temperature_max)
            warnings.warn(
                f"temperature {value} is outside [{self.temperature_min}, {self.temperature_max}];"
                f" clamped to {clamped}.",
                stacklevel=2,
            )
            value = clamped
        if value < 30.0:
            raw = math.log(max(math.expm1(value), 1e-12))
        else:  # log(expm1(v)) without overflow
            raw = value + math.log1p(-math.exp(-value))
        self.raw_temperature.fill_(raw)

    def scale_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Return ``logits / T`` (the inference transform matching training), same dtype.

        Raises:
            TypeError, ValueError: ``logits`` is not a finite floating ``(B, K)`` tensor.
        """
        check_logits_2d(logits, "logits")
        return (logits / self.temperature.to(logits.device)).to(logits.dtype)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss; see :py:meth:`StatefulLossBase._prepare` for the inputs and errors.

        Returns:
            the loss, a scalar for ``"mean"``/``"sum"`` or ``(B,)`` for ``"none"``, in the
            accumulation dtype (float32 for half-precision input).
        """
        z, y = self._prepare(input, target)
        update = self.training or self.reference_mode
        aux: dict[str, torch.Tensor] = {}
        # one autograd node for T, CE, entropy, the state update (no graph) and the reduction
        loss = _MiTFunction.apply(z, self.raw_temperature, y, self, update, aux)
        ce_d, ent_d, lam_d = aux["ce"], aux["entropy"], aux["lam"]
        target_entropy = aux["target_entropy"]
        temperature_d = aux["temperature"]
        if not update:  # lam is the buffer, which a later training call overwrites
            lam_d = lam_d.clone()

        def stats() -> dict[str, torch.Tensor]:
            ce_mean = ce_d.mean()
            ent_mean = ent_d.mean()
            return {
                "loss": ce_mean - lam_d.to(ce_d.dtype) * ent_mean,
                "ce": ce_mean,
                "entropy": ent_mean,
                "target_entropy": target_entropy,
                "dual_lambda": lam_d,
                "temperature": temperature_d,
            }

        self._defer_stats(stats)
        if update:
            self._stage(
                {"label_counts": aux["counts"], "dual_lambda": aux["lam"], "step": aux["step"]}
            )
        return loss

    def _dual_update(
        self, y: torch.Tensor, ent: torch.Tensor, update: bool, aux: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The :math:`\\lambda` of this call (no graph); fills ``aux`` with the new state.

        ``ent`` is the per-sample entropy without a graph. With ``update``, the counts include
        this batch and ``aux`` receives ``counts``, ``lam`` and ``step`` to stage.
        """
        counts = self.label_counts
        if update:
            # counts + long bincount: the exact integers are promoted to the counts' dtype
            batch_counts = torch.bincount(y, minlength=self.num_classes)
            ent_sum = ent.sum()
            if ent_sum.dtype != counts.dtype:
                ent_sum = ent_sum.to(counts.dtype)
            if self.sync_dist and is_dist_ready():
                packed = all_reduce_sum(
                    torch.cat(
                        [
                            batch_counts.to(counts.dtype),
                            ent_sum[None],
                            counts.new_tensor([y.shape[0]]),
                        ]
                    )
                )
                batch_counts, ent_sum, n = packed[: self.num_classes], packed[-2], packed[-1]
            else:  # no packing (same values: n is exact in float32)
                n = float(y.shape[0])
            counts = counts + batch_counts
        pi = counts / counts.sum()
        target_entropy = -(pi * pi.clamp_min(1e-12).log()).sum()
        aux["target_entropy"] = target_entropy
        if update:
            lam_old = self.dual_lambda
            scalar = _NUMPY_SCALARS.get(lam_old.dtype)
            if (
                scalar is not None
                and isinstance(n, float)
                and counts.dtype == lam_old.dtype
                and lam_old.device.type == "cpu"
            ):
                # the same IEEE operations on host scalars of the buffers' dtype as the 0-d
                # tensor ops below (so the same bits), without ~10 small kernels
                mean_ent = scalar(ent_sum.item()) / scalar(n)
                d = (scalar(target_entropy.item()) - mean_ent) / scalar(self._h_max)
                d = np.maximum(d, scalar(0.0))
                step_value = int(self.step) + 1
                t = scalar(step_value)
                lam_value = ((t - scalar(1)) * scalar(lam_old.item()) + d) / t
                lam_value = np.minimum(np.maximum(lam_value, scalar(0.0)), scalar(self.lambda_max))
                lam = lam_old.new_full((), float(lam_value))
                step = self.step.new_full((), step_value)
            else:
                mean_ent = ent_sum / n
                d = ((target_entropy - mean_ent) / self._h_max).clamp_min(0.0)
                step = self.step + 1
                t = step.to(lam_old.dtype)
                lam = ((t - 1) * lam_old + d.to(t.dtype)) / t
                lam = lam.clamp_(0.0, self.lambda_max)
            aux["counts"], aux["lam"], aux["step"] = counts, lam, step
        else:
            lam = self.dual_lambda
            aux["lam"] = lam
        return lam


class _MiTFunction(torch.autograd.Function):
    """MiT's per-sample ``CE - lambda * H`` of ``softmax(z / T)``, reduced, in one node.

    The state update runs inside ``forward`` (no graph); ``backward`` rebuilds the upstream
    gradients of CE and entropy that autograd would pass through the reduction and the
    ``- lambda * H`` term (same operations, so the same bits) and applies the fused backward
    of :func:`~monai_calib.losses._fused.scaled_ce_entropy_backward`.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: torch.Tensor,
        raw_temperature: torch.Tensor,
        y: torch.Tensor,
        module: MiTLoss,
        update: bool,
        aux: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        # T = clamp(softplus(raw) + 1e-6, T_min, T_max), as MiTLoss._temperature
        pre_clamp = F.softplus(raw_temperature) + 1e-6
        temperature = pre_clamp.clamp(module.temperature_min, module.temperature_max)
        t_z = temperature if temperature.dtype == z.dtype else temperature.to(z.dtype)
        logp, ce, ent = scaled_ce_entropy_forward(z, t_z, y)
        lam = module._dual_update(y, ent, update, aux)
        lam_c = lam if lam.dtype == ce.dtype else lam.to(ce.dtype)
        per_sample = ce - lam_c * ent
        loss = reduce_per_sample(per_sample, module.reduction)
        aux["ce"], aux["entropy"], aux["temperature"] = ce, ent, temperature
        ctx.save_for_backward(logp, t_z, y, ent, lam_c, raw_temperature)
        ctx.reduction = module.reduction
        ctx.t_dtype = temperature.dtype
        ctx.pre_clamp = ctx.t_inside = None
        if ctx.needs_input_grad[1]:
            # the clamp passes the gradient only strictly inside the bounds, compared in the
            # temperature's dtype (autograd's clamp backward)
            if pre_clamp.device.type in _HOST_MASK_DEVICES:
                lo, hi = _bounds_in_dtype(module, temperature.dtype)
                ctx.t_inside = lo < pre_clamp.item() < hi
            else:  # no host synchronisation: the mask is built in backward, as autograd does
                ctx.pre_clamp = pre_clamp
                ctx.bounds = (module.temperature_min, module.temperature_max)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor):  # type: ignore[override]
        logp, t_z, y, ent, lam_c, raw_temperature = ctx.saved_tensors
        g = per_sample_grad(grad_output, ctx.reduction, y.shape[0])
        grad_z, grad_t = scaled_ce_entropy_backward(
            logp,
            t_z,
            y,
            ent,
            g,
            g.neg() * lam_c,  # what autograd's sub and mul nodes would pass to the entropy
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        grad_raw = None
        if grad_t is not None:  # the backward of to(dtype), clamp, + 1e-6 and softplus
            if grad_t.dtype != ctx.t_dtype:
                grad_t = grad_t.to(ctx.t_dtype)
            if ctx.pre_clamp is not None:
                lo, hi = ctx.bounds
                grad_t = torch.where(
                    ctx.pre_clamp.gt(lo).logical_and_(ctx.pre_clamp.lt(hi)),
                    grad_t,
                    torch.scalar_tensor(0.0, dtype=grad_t.dtype, device=grad_t.device),
                )
            elif not ctx.t_inside:
                grad_t = grad_t.new_zeros(())
            grad_raw = torch.ops.aten.softplus_backward(grad_t, raw_temperature, 1.0, 20.0)
        return grad_z, grad_raw, None, None, None, None


def _bounds_in_dtype(module: MiTLoss, dtype: torch.dtype) -> tuple[float, float]:
    """``(T_min, T_max)`` rounded to ``dtype`` as a comparison with a tensor rounds them."""
    key = (dtype, module.temperature_min, module.temperature_max)
    cached = _BOUNDS_CACHE.get(key)
    if cached is None:
        b = torch.tensor([module.temperature_min, module.temperature_max], dtype=dtype)
        cached = _BOUNDS_CACHE[key] = (float(b[0]), float(b[1]))
    return cached


_BOUNDS_CACHE: dict[tuple[torch.dtype, float, float], tuple[float, float]] = {}
_NUMPY_SCALARS = {torch.float32: np.float32, torch.float64: np.float64}
#: devices whose clamp mask is read on the host (elsewhere it is built without a sync)
_HOST_MASK_DEVICES = ("cpu",)
