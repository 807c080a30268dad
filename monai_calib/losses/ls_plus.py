# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""LS+: label smoothing informed by a baseline's class-wise accuracy (Sambyal et al., MICCAI 2024).

Also :func:`class_prior_from_predictions`, which computes the prior (per-class recall) from a
baseline's validation predictions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import LossReduction

from monai_calib._utils.validation import check_finite_number, normalize_class_target

from ._fused import FusedClassificationLoss, log_softmax_rows, upstream_weights

__all__ = ["LSPlusLoss", "class_prior_from_predictions"]

#: margin of the prior clamp ``[1/K + delta, 1 - delta]``
PRIOR_CLAMP_DELTA = 1e-3


def class_prior_from_predictions(
    y_true: torch.Tensor | np.ndarray | Sequence[int],
    y_pred: torch.Tensor | np.ndarray | Sequence[int],
    num_classes: int | None = None,
) -> torch.Tensor:
    r"""Per-class recall (class-wise accuracy) of a baseline, the prior :math:`c` of LS+.

    .. math::

        c_k = \frac{\sum_i \mathbf 1[\hat y_i = k,\ y_i = k]}{\sum_i \mathbf 1[y_i = k]}

    LS+ takes it from a hard-label CE baseline of the same architecture on the **validation**
    set (the authors average it over 3 seeds: average the returned vectors).

    Inputs:
        - **y_true**: class indices ``(N,)`` / ``(N, 1)`` or one-hot ``(N, K)``.
        - **y_pred**: predicted class indices ``(N,)`` / ``(N, 1)``, or scores ``(N, K)``
          (probabilities or logits; the argmax is taken).

    Args:
        y_true: ground-truth labels (tensor, array or sequence).
        y_pred: predictions (tensor, array or sequence).
        num_classes: :math:`K`. Defaults to ``y_pred.shape[1]`` for scores, else
            ``y_true.shape[1]`` for one-hot labels, else ``max(labels, predictions) + 1``.

    Returns:
        float32 tensor of shape ``(K,)`` with values in ``[0, 1]``.

    Raises:
        ValueError: empty or mismatched inputs, labels/predictions outside ``[0, K)``, or a class
            absent from ``y_true`` (its recall is undefined; the error names the classes).
    """
    yt = torch.as_tensor(y_true)
    yp = torch.as_tensor(y_pred)
    if yt.numel() == 0:
        raise ValueError(f"y_true must hold at least one sample, got shape {tuple(yt.shape)}.")
    scores = yp.ndim == 2 and yp.shape[1] > 1
    if num_classes is None:
        if scores:
            num_classes = int(yp.shape[1])
        elif yt.ndim == 2 and yt.shape[1] > 1:
            num_classes = int(yt.shape[1])
        else:
            num_classes = int(max(int(yt.max()), int(yp.max()))) + 1
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if scores:
        if yp.shape[1] != num_classes:
            raise ValueError(
                f"y_pred scores must have shape (N, {num_classes}), got {tuple(yp.shape)}."
            )
        pred = yp.argmax(dim=1)
    else:
        pred = normalize_class_target(yp, num_classes, name="y_pred")
    true = normalize_class_target(yt, num_classes, batch_size=pred.shape[0], name="y_true")
    support = torch.bincount(true, minlength=num_classes)
    absent = torch.nonzero(support == 0).flatten().tolist()
    if absent:
        raise ValueError(
            f"y_true holds no sample of classes {absent} (num_classes={num_classes}); their "
            "recall is undefined. Use a validation set that covers every class, or set those "
            "prior entries by hand."
        )
    hits = torch.bincount(true[pred == true], minlength=num_classes)
    return (hits.double() / support.double()).float()


def _class_tables(
    prior: torch.Tensor, dtype: torch.dtype, mix: float, cache: dict[Any, torch.Tensor] | None
) -> torch.Tensor:
    """``(K, 3)`` columns ``w_k``, ``mix * r_k``, ``mix * sum_j t_j log t_j`` for class ``k``.

    ``c = prior`` in ``dtype``, ``r = (1 - c) / (K - 1)``, ``w = (1 - mix) + mix (c - r)``. They
    depend only on the prior, the dtype and ``mix``, so ``cache`` (the module's) keeps them
    until the prior buffer is replaced (``.to``) or changed in place (``load_state_dict``).
    """
    # the cache holds the prior itself: identity (not an address that could be reused) and
    # the in-place version counter tell whether it is still the same tensor with the same values
    key = (prior._version, dtype, mix)
    if cache is not None and cache.get("prior") is prior and cache.get("key") == key:
        return cache["tables"]
    k = prior.shape[0]
    c = prior.to(dtype)
    r = (1.0 - c) / (k - 1)
    w_cls = (1.0 - mix) + mix * (c - r)  # weight of log p_y
    neg_ent_t = c * torch.log(c) + (1.0 - c) * torch.log(r)  # sum_k t_k log t_k
    tables = torch.stack([w_cls, mix * r, mix * neg_ent_t], dim=1)
    if cache is not None:
        cache.clear()
        cache["prior"], cache["key"], cache["tables"] = prior, key, tables  # type: ignore[assignment]
    return tables


class _LSPlusFunction(torch.autograd.Function):
    """Per-sample loss ``-w_y log p_y - mix r_y sum_k log p_k + mix * sum_k t_k log t_k``.

    The gradient is ``p - q`` with ``q = (1 - mix) e_y + mix t``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        y: torch.Tensor,
        prior: torch.Tensor,
        mix: float,
        cache: dict[Any, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        # per-class (w, mix r, mix sum_k t_k log t_k) rows, fetched for the batch in one index
        rows = _class_tables(prior, z.dtype, mix, cache)[y]
        w_y = rows[:, 0]
        logp = log_softmax_rows(z)
        yi = y.unsqueeze(1)
        per_sample = logp.gather(1, yi).squeeze(1).mul_(w_y).neg_()
        if mix != 0.0:
            mr_y = rows[:, 1]
            per_sample = per_sample - mr_y * logp.sum(dim=1) + rows[:, 2]
            ctx.save_for_backward(logp, yi, w_y.unsqueeze(1), mr_y.unsqueeze(1))
        else:
            ctx.save_for_backward(logp, yi, w_y.unsqueeze(1), None)
        return per_sample

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor):  # type: ignore[override]
        logp, yi, w, mr = ctx.saved_tensors
        g = upstream_weights(grad_output, logp.dtype)
        p = logp.exp()
        dz = p.mul_(g) if mr is None else torch.addcmul((g * mr).neg_(), p, g, out=p)
        dz.scatter_add_(1, yi, (g * w).neg_())
        return dz, None, None, None, None


class LSPlusLoss(FusedClassificationLoss):
    r"""LS+: cross-entropy mixed with a KL term towards a class-prior-informed soft label.

    For a sample of class :math:`y` the soft label is :math:`t_y = c_y`,
    :math:`t_k = (1 - c_y)/(K - 1)` for :math:`k \ne y`, where :math:`c` is the class prior
    (a baseline's validation recall, see :func:`class_prior_from_predictions`), and

    .. math::

        \ell_i = (1 - m)\,\mathrm{CE}(e_{y_i}, p_i) + m\,\mathrm{KL}(t_i \,\|\, p_i),
        \qquad p_i = \mathrm{softmax}(z_i),

    with :math:`m` = ``mix`` (0.5 in the paper). Since :math:`\mathrm{KL}(t\|p) =
    \mathrm{CE}(t, p) - H(t)` with :math:`H(t)` constant, the gradient equals that of CE against
    :math:`q = (1-m)e_y + m\,t`. The KL is computed exactly (no clipping); the authors' Keras code
    clips both KL arguments to ``[1e-7, 1]`` and the CE prediction to ``[1e-7, 1 - 1e-7]``,
    which only matters for probabilities below 1e-7.

    The prior is clamped to :math:`[1/K + \delta, 1 - \delta]` with :math:`\delta` = 1e-3
    (``PRIOR_CLAMP_DELTA``), with a warning when a value is changed: :math:`c_k = 1` collapses to
    a hard label (the authors replaced such values by hand) and :math:`c_k \le 1/K` would make a
    non-target class at least as likely as the target. The clamped prior is a buffer
    ``class_prior`` (float64, so a prior given in decimals is kept exactly; follows
    ``.to(device)``, saved in ``state_dict``).

    Inputs:
        - **input**: logits ``(B, K)`` with ``K = len(class_prior)``; float16/bfloat16 computed
          in float32.
        - **target**: class indices ``(B,)`` / ``(B, 1)`` or one-hot ``(B, K)``.
        - **output**: scalar (``"mean"``, ``"sum"``) or ``(B,)`` (``"none"``).

    Args:
        class_prior: per-class prior :math:`c \in [0, 1]^K`, ``K >= 2``.
        mix: :math:`m \in [0, 1]`. Defaults to ``0.5``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Raises:
        ValueError: prior not 1-D with ``K >= 2`` entries in ``[0, 1]``, ``mix`` outside
            ``[0, 1]``, unknown ``reduction``; input with a class count other than ``K``; bad
            targets.

    References:
        Sambyal, Niyaz, Shrivastava, Krishnan, Bathula, "LS+: Informed Label Smoothing for
        Improving Calibration in Medical Image Classification", MICCAI 2024;
        https://github.com/abhisheksambyal/lsplus
    """

    class_prior: torch.Tensor

    def __init__(
        self,
        class_prior: Sequence[float] | torch.Tensor,
        mix: float = 0.5,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=reduction)
        self.mix = check_finite_number(mix, "mix", low=0.0, high=1.0)
        self.register_buffer("class_prior", self._validate_prior(class_prior), persistent=True)
        self._tables_cache: dict[Any, torch.Tensor] = {}

    @staticmethod
    def _validate_prior(prior: Sequence[float] | torch.Tensor) -> torch.Tensor:
        if isinstance(prior, torch.Tensor):
            c = prior.detach().to(dtype=torch.float64, device="cpu").clone()
        else:  # straight to float64: a float32 detour would round 0.6 to 0.6000000238
            c = torch.as_tensor(prior, dtype=torch.float64)
        if c.ndim != 1 or c.shape[0] < 2:
            raise ValueError(
                f"class_prior must be a 1-D sequence of K >= 2 values, got shape {tuple(c.shape)}."
            )
        if not bool(torch.isfinite(c).all()) or bool((c < 0).any()) or bool((c > 1).any()):
            raise ValueError(f"class_prior values must be in [0, 1], got {c.tolist()}.")
        k = c.shape[0]
        lo, hi = 1.0 / k + PRIOR_CLAMP_DELTA, 1.0 - PRIOR_CLAMP_DELTA
        clamped = c.clamp(lo, hi)
        if bool((clamped != c).any()):
            warnings.warn(
                f"class_prior {c.tolist()} clamped to [1/K + {PRIOR_CLAMP_DELTA}, "
                f"1 - {PRIOR_CLAMP_DELTA}] = [{lo:.4f}, {hi:.4f}] (K={k}): {clamped.tolist()}.",
                stacklevel=3,
            )
        return clamped

    def set_class_prior(self, prior: Sequence[float] | torch.Tensor) -> None:
        """Replace the prior (validated and clamped as in ``__init__``); keeps the device."""
        new = self._validate_prior(prior).to(self.class_prior.device)
        if new.shape == self.class_prior.shape:
            self.class_prior.copy_(new)
        else:
            self.class_prior = new

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss; see the class docstring for shapes."""
        k = self.class_prior.shape[0]
        if isinstance(input, torch.Tensor) and input.ndim == 2 and input.shape[1] != k:
            raise ValueError(
                f"input must have shape (B, {k}) to match class_prior (K={k}), got shape "
                f"{tuple(input.shape)}."
            )
        return super().forward(input, target)

    function = _LSPlusFunction

    def function_args(self) -> tuple[Any, ...]:
        return (self.class_prior, self.mix, self._tables_cache)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.class_prior.shape[0]}, mix={self.mix}, reduction={self.reduction!r}"
        )
