# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""LDACE + CCL: the combined multi-label training loss of Pal et al. (ICASSP 2025)."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_calib._utils.validation import check_finite_number, reduce_per_sample

from .ccl import CanonicalCalibrationLoss
from .ldace import LDACELoss, clipped_sigmoid, prepare_multilabel_logits

__all__ = ["LDACECCLoss"]


class LDACECCLoss(_Loss):
    r"""LDACE plus a weighted Canonical Calibration Loss, sharing one sigmoid pass.

    Composed of an :class:`~monai_calib.losses.LDACELoss` (:attr:`ldace`) and a
    :class:`~monai_calib.losses.CanonicalCalibrationLoss` (:attr:`ccl`), as MONAI's
    ``DiceCELoss`` holds its two terms; the clipped sigmoid is computed once and given to both.

    .. math::

        \mathcal L = \mathcal L_{\text{LDACE}} + w \cdot \mathrm{CCL}

    with :math:`\mathcal L_{\text{LDACE}}` as in :class:`~monai_calib.losses.LDACELoss` and CCL
    as in :class:`~monai_calib.losses.CanonicalCalibrationLoss` (both on the same clipped
    :math:`p = \mathrm{clip}(\sigma(z), \epsilon, 1 - \epsilon)`; CCL on :math:`q = p^2`).

    **Weight.** The reference configuration dict holds ``'lambda': 100``, but the reference code
    never reads it and adds the two terms with weight 1; the effective weight is therefore
    ``1.0``, which is the default here. Pass ``ccl_weight=100.0`` to try what the configuration
    apparently intended (this does not reproduce the authors' runs).

    ``reduction="none"`` returns the ``(B,)`` per-sample LDACE plus :math:`w \cdot \mathrm{CCL}`
    spread evenly over the samples, so its mean is the ``"mean"`` loss. The two terms of the
    last call (detached batch-mean scalars) are kept in :attr:`last_stats`
    (``{"ldace": ..., "ccl": ...}``) for logging.

    Inputs:
        - **input**: logits of shape ``(B, K)``, ``K >= 1``; float16/bfloat16 are promoted to
          float32 for the computation.
        - **target**: multi-hot labels of shape ``(B, K)`` with values in {0, 1}.
        - **output**: scalar for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``.

    Args:
        ccl_weight: :math:`w \ge 0`. Defaults to ``1.0`` (what the reference code uses).
        num_bins: CCL's number of bins :math:`M \ge 1`. Defaults to ``1`` (reference).
        clip_eps: the probability clip :math:`\epsilon` in ``[0, 0.5)``. Defaults to ``1e-7``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Raises:
        ValueError: negative or non-finite ``ccl_weight``, ``num_bins < 1``, ``clip_eps`` outside
            ``[0, 0.5)``, unknown ``reduction``; bad logits or target.
        TypeError: non-integer ``num_bins``; non-tensor or non-floating-point logits.

    Example::

        loss_fn = LDACECCLoss()
        loss = loss_fn(torch.randn(8, 14, requires_grad=True), torch.randint(0, 2, (8, 14)))

    References:
        Pal, Panda, Garain, ICASSP 2025 (see :class:`~monai_calib.losses.LDACELoss`).
    """

    def __init__(
        self,
        ccl_weight: float = 1.0,
        num_bins: int = 1,
        clip_eps: float = 1e-7,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.ccl_weight = check_finite_number(ccl_weight, "ccl_weight", low=0.0)
        self.ldace = LDACELoss(clip_eps=clip_eps, reduction=LossReduction.NONE)
        self.ccl = CanonicalCalibrationLoss(
            num_bins=num_bins, clip_eps=clip_eps, reduction=LossReduction.NONE
        )
        self.last_stats: dict[str, torch.Tensor] = {}

    @property
    def num_bins(self) -> int:
        """CCL's number of bins :math:`M`."""
        return self.ccl.num_bins

    @property
    def clip_eps(self) -> float:
        """The probability clip :math:`\\epsilon`, shared by both terms."""
        return self.ldace.clip_eps

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss; see the class docstring for shapes."""
        z, y = prepare_multilabel_logits(input, target)
        p = clipped_sigmoid(z, self.clip_eps)
        ldace = self.ldace.per_sample(p, y)
        ccl = self.ccl.batch_value(p, y)
        self.last_stats = {"ldace": ldace.detach().mean(), "ccl": ccl.detach()}
        return reduce_per_sample(ldace + self.ccl_weight * ccl, self.reduction)

    def extra_repr(self) -> str:
        return (
            f"ccl_weight={self.ccl_weight}, num_bins={self.num_bins}, "
            f"clip_eps={self.clip_eps}, reduction={self.reduction!r}"
        )
