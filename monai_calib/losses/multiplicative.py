# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Multiplicative Loss (ML): batch Dice loss times cross-entropy (Yokoi & Hotta, arXiv 2510.12258).

The Dice factor is MONAI's :class:`monai.losses.DiceLoss` with ``batch=True``; the cross-entropy
factor follows :class:`monai.losses.DiceCELoss` (plain ``torch`` CE on the logits).
:class:`monai_calib.losses.CAMLLoss` subclasses :class:`MultiplicativeLoss` and reuses its input
preparation and factors (:meth:`MultiplicativeLoss.factors`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks import one_hot
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_calib._utils.validation import (
    accumulation_dtype,
    check_finite,
    check_finite_number,
    normalize_dense_class_target,
)

__all__ = ["MultiplicativeLoss"]


class MultiplicativeLoss(_Loss):
    """Multiplicative Loss (ML): the batch Dice loss multiplied by the cross-entropy.

    With voxels :math:`i = 1..N` pooled over the whole batch and classes :math:`c = 1..C`
    (probabilities :math:`p_{ic}` from the chosen activation, one-hot targets :math:`y_{ic}`):

    .. math::

        \\mathcal L_{Dice} = 1 - \\frac1C \\sum_c
            \\frac{2\\sum_i y_{ic} p_{ic} + s_{nr}}{\\sum_i y_{ic} + \\sum_i p_{ic} + s_{dr}},
        \\qquad
        \\mathcal L_{CE} = -\\frac1N \\sum_i \\sum_c y_{ic} \\log p_{ic},
        \\qquad
        \\mathcal L_{ML} = \\mathcal L_{Dice} \\cdot \\mathcal L_{CE}.

    Neither factor is detached, so the gradient follows the product rule
    :math:`\\nabla\\mathcal L_{ML} = \\mathcal L_{Dice}\\nabla\\mathcal L_{CE}
    + \\mathcal L_{CE}\\nabla\\mathcal L_{Dice}`: each term's weight adapts to the other's size.
    The method has no hyperparameter (the smoothing terms only avoid 0/0 for classes absent from
    the batch; the paper writes none).

    The Dice factor is exactly MONAI's ``DiceLoss(batch=True, ...)`` (sums over batch and
    spatial dims per class, mean over classes), with ``include_background``, ``to_onehot_y``,
    ``sigmoid``, ``softmax``, ``other_act``, ``smooth_nr``, ``smooth_dr`` passed through.

    The cross-entropy factor is computed on the raw ``input`` (logits), as in
    :class:`monai.losses.DiceCELoss`:

    - ``sigmoid=True``, or a single-channel input: per-channel binary CE with logits
      (``torch.nn.functional.binary_cross_entropy_with_logits``), averaged over batch, channels
      and voxels. Index targets are one-hot encoded first (``to_onehot_y=True`` is needed for
      the Dice factor anyway when ``N > 1``). This differs from ``DiceCELoss``, which uses the
      softmax CE for ``N > 1`` even when ``sigmoid=True``; here the CE matches the activation.
    - otherwise (``softmax=True``, ``other_act`` or no activation, ``N > 1``): the softmax CE
      ``torch.nn.functional.cross_entropy`` of the logits, with class indices for a ``B1H[W[D]]``
      target and class-probability targets for a one-hot ``BNH[W[D]]`` target, averaged over
      batch and voxels. As in ``DiceCELoss``, ``other_act`` is used by the Dice factor only, and
      with no activation the Dice factor reads ``input`` as probabilities while the CE reads it as
      logits. The paper uses the softmax mode (``softmax=True``).

    As in ``DiceCELoss``, ``include_background=False`` removes channel 0 from the Dice factor
    only; the cross-entropy always uses every channel.

    Inputs:
        - **input**: logits of shape ``BNH[W[D]]`` (2D or 3D), ``N`` the number of classes.
        - **target**: class indices ``B1H[W[D]]`` (with ``to_onehot_y=True`` when ``N > 1``) or
          one-hot ``BNH[W[D]]``.
        - **output**: a scalar.

    Example:
        >>> import torch
        >>> loss = MultiplicativeLoss(to_onehot_y=True, softmax=True)
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> labels = torch.randint(0, 3, (2, 1, 8, 8))
        >>> loss(logits, labels).backward()

    References:
        Y. Yokoi and K. Hotta, "Multiplicative Loss for Enhancing Semantic Segmentation in
        Medical and Cellular Images", ICCV 2025 CVAMD workshop, arXiv:2510.12258.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
    ) -> None:
        """
        Args:
            include_background: if False, channel 0 (background) is excluded from the Dice
                factor (the CE keeps it, as in ``DiceCELoss``). Defaults to ``True``.
            to_onehot_y: whether to convert ``target`` into one-hot format, using the number of
                classes inferred from ``input`` (``input.shape[1]``). Defaults to ``False``.
            sigmoid: if True, apply a sigmoid to the prediction for the Dice factor and use the
                per-channel binary CE. Defaults to ``False``.
            softmax: if True, apply a softmax to the prediction for the Dice factor; the CE is the
                softmax CE of the logits. Defaults to ``False``.
            other_act: callable activation used by the Dice factor only, for example
                ``torch.tanh``. Defaults to ``None``.
            reduction: {``"mean"``, ``"sum"``}. ``"mean"``: mean of the per-class Dice losses
                times the mean CE (the paper's loss). ``"sum"``: each factor summed instead
                (Dice losses over classes, CE over voxels), as ``DiceCELoss`` passes ``"sum"``
                to both of its terms. Defaults to ``"mean"``.
            smooth_nr: a small constant added to the Dice numerator. Defaults to ``1e-5``.
            smooth_dr: a small constant added to the Dice denominator. Defaults to ``1e-5``.

        Raises:
            TypeError: When ``other_act`` is not an ``Optional[Callable]``.
            ValueError: When more than 1 of [``sigmoid=True``, ``softmax=True``,
                ``other_act is not None``].
            ValueError: When ``smooth_nr`` or ``smooth_dr`` is negative, NaN or inf.
            ValueError: When ``reduction`` is ``"none"`` (the batch Dice is global) or not a
                ``LossReduction``.
        """
        reduction = LossReduction(reduction).value
        if reduction == LossReduction.NONE.value:
            raise ValueError(
                f'reduction="none" is not supported by {type(self).__name__}: the Dice factor is '
                "computed over the whole batch, so the loss has no per-sample or per-voxel value; "
                'use "mean" or "sum".'
            )
        super().__init__(reduction=reduction)
        # DiceLoss validates other_act and the mutually exclusive activations (MONAI's messages).
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=LossReduction.NONE,
            smooth_nr=check_finite_number(smooth_nr, "smooth_nr", low=0.0),
            smooth_dr=check_finite_number(smooth_dr, "smooth_dr", low=0.0),
            batch=True,
        )
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act

    def factors(
        self, input: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``input`` and ``target``; return ``(dice_per_class, ce_per_element)``.

        ``dice_per_class`` has shape ``(C',)`` (``C'`` classes after background removal) and holds
        ``1 - Dice_c`` over the whole batch; ``ce_per_element`` is the per-voxel CE
        ``(B, H[, W, D])`` in softmax-CE mode, or the per-channel-and-voxel BCE
        ``(B, N, H[, W, D])`` in BCE mode.

        Raises:
            TypeError: When ``input`` is not a floating point tensor, or an index ``target`` is
                boolean.
            ValueError: When input and target have different numbers of dimensions, or the
                target's channel count is neither 1 nor N, or index targets are out of range,
                or ``input`` holds NaN/Inf, or the target's batch or spatial sizes differ from
                ``input``'s, or ``input`` is empty, or ``to_onehot_y=True`` with a one-hot target.
        """
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}.")
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}.")
        if not input.is_floating_point():
            raise TypeError(
                f"input must be a floating point tensor of logits, got dtype {input.dtype}."
            )
        if input.dim() < 3:
            raise ValueError(
                "input must have shape BNH[W[D]] (at least 3 dims), got shape "
                f"{tuple(input.shape)}."
            )
        # the two checks and messages of monai.losses.DiceCELoss.forward
        if input.dim() != target.dim():
            raise ValueError(
                "the number of dimensions for input and target should be the same, "
                f"got shape {input.shape} (nb dims: {len(input.shape)}) and {target.shape} "
                f"(nb dims: {len(target.shape)}). "
                "if target is not one-hot encoded, please provide a tensor with shape B1H[WD]."
            )
        n_pred_ch = input.shape[1]
        if target.shape[1] != 1 and target.shape[1] != n_pred_ch:
            raise ValueError(
                "number of channels for target is neither 1 (without one-hot encoding) nor the "
                f"same as input, got shape {input.shape} and {target.shape}."
            )
        if target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                "target must have the batch and spatial sizes of input "
                f"{(input.shape[0], *input.shape[2:])} (B, *spatial), got target shape "
                f"{tuple(target.shape)} for input shape {tuple(input.shape)}."
            )
        if input.numel() == 0:
            raise ValueError(
                f"input is empty (shape {tuple(input.shape)}); B and every spatial size must be "
                ">= 1."
            )
        if not self.to_onehot_y and n_pred_ch > 1 and target.shape[1] == 1:
            raise ValueError(
                f"target of shape {tuple(target.shape)} holds class indices (B1H[W[D]]) but "
                f"to_onehot_y=False; pass to_onehot_y=True, or a one-hot target of shape "
                f"{tuple(input.shape)}."
            )
        if self.to_onehot_y and n_pred_ch > 1 and target.shape[1] != 1:
            raise ValueError(
                "to_onehot_y=True expects class indices of shape B1H[W[D]] as target, got shape "
                f"{tuple(target.shape)}; pass to_onehot_y=False for a one-hot target."
            )
        if not bool(torch.isfinite(input.sum(dtype=accumulation_dtype(input)))):
            check_finite(input, "input")
        input = input.to(accumulation_dtype(input))
        index_target = n_pred_ch > 1 and target.shape[1] == 1
        if index_target and self.to_onehot_y:
            normalize_dense_class_target(target, input.shape, name="target")

        # (C', 1, ..., 1) -> (C',); the activation, one-hot and background handling are MONAI's
        dice_per_class = self.dice(input, target).reshape(-1)

        if self.sigmoid or n_pred_ch == 1:
            # per-channel BCE with logits (multi-label / binary), background channel kept
            t = one_hot(target, num_classes=n_pred_ch) if index_target else target
            ce = F.binary_cross_entropy_with_logits(input, t.to(input.dtype), reduction="none")
        elif index_target:
            ce = F.cross_entropy(input, target.squeeze(1).long(), reduction="none")
        else:
            ce = F.cross_entropy(input, target.to(input.dtype), reduction="none")
        return dice_per_class, ce

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean() if self.reduction == LossReduction.MEAN.value else x.sum()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits, the shape should be BNH[W[D]], where N is the number of classes.
            target: the shape should be BNH[W[D]] (one-hot) or B1H[W[D]] (indices).

        Raises:
            TypeError, ValueError: bad ``input`` or ``target``, see :meth:`factors`.

        Returns:
            the scalar loss.
        """
        dice_per_class, ce = self.factors(input, target)
        return self._reduce(dice_per_class) * self._reduce(ce)
