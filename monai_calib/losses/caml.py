# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Confidence-Adaptive Multiplicative Loss (CAML), a documented reconstruction (experimental).

The exact CAML equation of Yokoi & Hotta (arXiv 2510.12258) was not available; this module
implements the project's reconstruction (spec §5.4) with a pluggable modulating function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .multiplicative import MultiplicativeLoss

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


class CAMLLoss(MultiplicativeLoss):
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
        As :class:`~monai_calib.losses.MultiplicativeLoss` (logits ``BNH[W[D]]``, class indices
        ``B1H[W[D]]`` or one-hot ``BNH[W[D]]``); the output is a scalar.

    Example:
        >>> import torch
        >>> loss = CAMLLoss(to_onehot_y=True, softmax=True)
        >>> loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))).shape
        torch.Size([])

    References:
        Y. Yokoi and K. Hotta, "Multiplicative Loss for Enhancing Semantic Segmentation in
        Medical and Cellular Images", ICCV 2025 CVAMD workshop, arXiv:2510.12258 (CAML is its
        §3.2; reconstructed here, see the warning above).
    """

    def __init__(
        self,
        *args: Any,
        modulating_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            args, kwargs: the arguments of :class:`~monai_calib.losses.MultiplicativeLoss`
                (``include_background``, ``to_onehot_y``, ``sigmoid``, ``softmax``,
                ``other_act``, ``reduction``, ``smooth_nr``, ``smooth_dr``), with its defaults
                and meaning; ``include_background=False`` also excludes channel 0 from
                :math:`\\overline{Dice}`, and the weight is the same for both factors.
            modulating_fn: ``modulating_fn(p_bar, dice_bar) -> weight``, called with two detached
                scalar tensors; it must return a finite, non-negative scalar (tensor or number),
                which is detached. Keyword only. Defaults to ``None``:
                :func:`caml_default_modulation`, :math:`(1-\\bar p)^{\\overline{Dice}}`.

        Raises:
            TypeError: When ``other_act`` or ``modulating_fn`` is not ``None`` or callable.
            ValueError: see :class:`~monai_calib.losses.MultiplicativeLoss` (activations,
                ``reduction="none"``).
        """
        super().__init__(*args, **kwargs)
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
            TypeError, ValueError: bad ``input`` or ``target``, see
                :meth:`MultiplicativeLoss.factors <monai_calib.losses.MultiplicativeLoss.factors>`.
            ValueError: ``modulating_fn`` returns a non-scalar, negative or non-finite weight.

        Returns:
            the scalar loss.
        """
        dice_per_class, ce = self.factors(input, target)
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
