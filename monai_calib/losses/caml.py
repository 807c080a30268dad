# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Confidence-Adaptive Multiplicative Loss (CAML), a documented reconstruction (experimental).

The exact CAML equation of Yokoi & Hotta (arXiv 2510.12258) was not available; this module
implements the project's reconstruction (spec §5.4) with a pluggable modulating function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.utils import LossReduction

from .multiplicative import _MultiplicativeBase

__all__ = ["CAMLLoss", "caml_default_modulation"]


def caml_default_modulation(p_bar: torch.Tensor, dice_bar: torch.Tensor) -> torch.Tensor:
    """The reconstruction's modulating weight :math:`(1 - \\bar p)^{\\overline{Dice}}`.

    .. math::

        w(\\bar p, \\overline{Dice}) = (1 - \\bar p)^{\\overline{Dice}}

    It lies in ``[0, 1]``, is larger when the batch confidence :math:`\\bar p` is low, and tends
    to 1 (plain ML) while the batch Dice is near 0, early in training.

    Args:
        p_bar: scalar tensor, batch-mean probability of the true class, in ``[0, 1]``.
        dice_bar: scalar tensor, batch soft Dice (mean over classes), in ``[0, 1]``.

    Returns:
        scalar tensor, the weight.
    """
    return (1.0 - p_bar).clamp(min=0.0) ** dice_bar


class CAMLLoss(_MultiplicativeBase):
    """Confidence-Adaptive Multiplicative Loss (CAML). **Experimental reconstruction.**

    .. warning::

        This is a **reconstruction** of CAML from Yokoi & Hotta, arXiv 2510.12258: the paper's
        exact CAML equation was not available to the project. The default follows every property
        the abstract states (focal-inspired exponential scaling, driven by the batch-mean
        probability of the true class and the batch Dice, a larger weight when confidence is
        low, no hyperparameter) but is not claimed to be the paper's formula, and results may
        differ from the paper's. The class is experimental; the modulating function is a
        constructor argument so the paper's form can be dropped in without changing callers.

    .. math::

        \\mathcal L_{CAML} = w\\big(\\mathrm{sg}(\\bar p), \\mathrm{sg}(\\overline{Dice})\\big)
            \\cdot \\mathcal L_{Dice} \\cdot \\mathcal L_{CE},
        \\qquad
        w_{default}(\\bar p, \\overline{Dice}) = (1 - \\bar p)^{\\overline{Dice}},

    where :math:`\\mathcal L_{Dice}` and :math:`\\mathcal L_{CE}` are the two factors of
    :class:`monai_calib.losses.MultiplicativeLoss` (same arguments, same CE mode rules),
    :math:`\\overline{Dice} = 1 - \\mathcal L_{Dice}` is the batch soft Dice (MONAI
    ``DiceLoss(batch=True)``, mean over the classes kept by ``include_background``, smoothed), and

    .. math::

        \\bar p = \\frac1M \\sum_{m} \\exp(-\\ell_m)

    is the batch mean of the probability the CE factor gives the true label: ``ℓ_m`` are the
    per-voxel softmax CE terms (so :math:`\\exp(-\\ell_m) = p_{m, y_m}`), or, in BCE mode
    (``sigmoid=True`` or one channel), the per-channel-and-voxel BCE terms (so
    :math:`\\exp(-\\ell_m)` is :math:`\\sigma` for a positive and :math:`1-\\sigma` for a negative
    label).

    **Detaching.** :math:`\\bar p`, :math:`\\overline{Dice}` and the weight :math:`w` are detached
    (``sg``): they are batch statistics that scale the loss, so the gradient is
    :math:`w \\cdot \\nabla(\\mathcal L_{Dice}\\mathcal L_{CE})`, the ML gradient scaled by the
    weight; :math:`\\mathcal L_{Dice}` and :math:`\\mathcal L_{CE}` themselves are not detached.
    The last weight and statistics are kept (detached) in ``last_stats`` for logging.

    Inputs:
        - **input**: logits of shape ``BNH[W[D]]`` (2D or 3D), ``N`` the number of classes.
        - **target**: class indices ``B1H[W[D]]`` (with ``to_onehot_y=True`` when ``N > 1``) or
          one-hot ``BNH[W[D]]``.
        - **output**: a scalar.

    Example:
        >>> import torch
        >>> loss = CAMLLoss(to_onehot_y=True, softmax=True)
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> labels = torch.randint(0, 3, (2, 1, 8, 8))
        >>> loss(logits, labels).backward()

    References:
        Y. Yokoi and K. Hotta, "Multiplicative Loss for Enhancing Semantic Segmentation in
        Medical and Cellular Images", ICCV 2025 CVAMD workshop, arXiv:2510.12258 (CAML is its
        §3.2; reconstructed here, see the warning above).
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
        modulating_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """
        Args:
            include_background: if False, channel 0 (background) is excluded from the Dice
                factor and from :math:`\\overline{Dice}` (the CE keeps it). Defaults to ``True``.
            to_onehot_y: whether to convert ``target`` into one-hot format, using the number of
                classes inferred from ``input`` (``input.shape[1]``). Defaults to ``False``.
            sigmoid: if True, sigmoid for the Dice factor and per-channel binary CE.
                Defaults to ``False``.
            softmax: if True, softmax for the Dice factor; softmax CE of the logits.
                Defaults to ``False``.
            other_act: callable activation used by the Dice factor only. Defaults to ``None``.
            reduction: {``"mean"``, ``"sum"``}, applied to each factor as in
                :class:`~monai_calib.losses.MultiplicativeLoss`; the weight is the same for both.
                Defaults to ``"mean"``.
            smooth_nr: a small constant added to the Dice numerator. Defaults to ``1e-5``.
            smooth_dr: a small constant added to the Dice denominator. Defaults to ``1e-5``.
            modulating_fn: ``modulating_fn(p_bar, dice_bar) -> weight``, called with two detached
                scalar tensors; it must return a finite, non-negative scalar (tensor or number),
                which is detached. Defaults to ``None``: :func:`caml_default_modulation`,
                :math:`(1-\\bar p)^{\\overline{Dice}}`.

        Raises:
            TypeError: When ``other_act`` or ``modulating_fn`` is not ``None`` or callable.
            ValueError: When more than 1 of [``sigmoid=True``, ``softmax=True``,
                ``other_act is not None``].
            ValueError: When ``reduction`` is ``"none"`` or not a ``LossReduction``.
        """
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
        )
        if modulating_fn is not None and not callable(modulating_fn):
            raise TypeError(
                f"modulating_fn must be None or callable but is {type(modulating_fn).__name__}."
            )
        self.modulating_fn = modulating_fn if modulating_fn is not None else caml_default_modulation
        self.last_stats: dict[str, torch.Tensor] = {}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits, the shape should be BNH[W[D]], where N is the number of classes.
            target: the shape should be BNH[W[D]] (one-hot) or B1H[W[D]] (indices).

        Raises:
            TypeError: When ``input`` is not a floating point tensor.
            ValueError: When input and target have different numbers of dimensions, or the
                target's channel count is neither 1 nor N, or index targets are out of range,
                or ``input`` holds NaN/Inf, or the target's batch or spatial sizes differ from
                ``input``'s, or ``input`` is empty, or ``to_onehot_y=True`` with a one-hot
                target, or ``modulating_fn`` returns a non-scalar, negative or non-finite weight.

        Returns:
            the scalar loss.
        """
        dice_per_class, ce = self._factors(input, target)
        with torch.no_grad():
            p_bar = torch.exp(-ce.detach()).mean().clamp(0.0, 1.0)
            dice_bar = (1.0 - dice_per_class.detach().mean()).clamp(0.0, 1.0)
            weight = torch.as_tensor(
                self.modulating_fn(p_bar, dice_bar), dtype=ce.dtype, device=ce.device
            ).detach()
        if weight.numel() != 1:
            raise ValueError(
                f"modulating_fn must return a scalar weight, got shape {tuple(weight.shape)}."
            )
        weight = weight.reshape(())
        if not bool(torch.isfinite(weight)) or float(weight) < 0:
            raise ValueError(
                f"modulating_fn must return a finite, non-negative weight, got {float(weight)}."
            )
        self.last_stats = {"p_bar": p_bar, "dice_bar": dice_bar, "weight": weight}
        return weight * self._reduce(dice_per_class) * self._reduce(ce)
