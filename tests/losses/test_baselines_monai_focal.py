# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The FL and LS baselines are not re-implemented: MONAI's ``FocalLoss`` and torch's
``CrossEntropyLoss(label_smoothing=...)`` are used. These tests pin down how they behave on
``(B, K)`` classification logits, against independent computations.

MONAI ``FocalLoss(use_softmax=True, to_onehot_y=True)`` on ``(B, K)`` logits and ``(B, 1)``
indices (MONAI 1.6):

- ``reduction="none"`` returns ``(B, K)`` with the focal term at the target entry and zeros
  elsewhere: ``.sum(1)`` is the per-sample focal loss of Mukhoti et al.;
- ``reduction="mean"`` averages over all ``B * K`` entries, i.e. the batch-mean focal loss
  **divided by K**;
- ``reduction="sum"`` first averages over the (absent) spatial dims with ``mean(dim=[])``, which
  reduces over every dim, so it equals ``"mean"``.

The paper's FL (batch mean of :math:`-(1-p_y)^\\gamma \\log p_y`) is therefore
``K * FocalLoss(reduction="mean")`` or ``FocalLoss(reduction="none").sum(1).mean()``.
"""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import FocalLoss


def reference_focal(z: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    out = []
    for row, lab in zip(z.tolist(), y.tolist(), strict=True):
        mx = max(row)
        den = sum(math.exp(v - mx) for v in row)
        p = math.exp(row[lab] - mx) / den
        out.append(-((1.0 - p) ** gamma) * math.log(p))
    return torch.tensor(out, dtype=torch.float64)


def reference_ls_ce(z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Torch convention: target (1 - alpha) e_y + alpha / K on every class."""
    out = []
    for row, lab in zip(z.tolist(), y.tolist(), strict=True):
        k = len(row)
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        q = [alpha / k + (1.0 - alpha) * (j == lab) for j in range(k)]
        out.append(-sum(qj * (v - lse) for qj, v in zip(q, row, strict=True)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 5, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (12,), generator=g)
    return z, y


def test_monai_focal_on_classification_logits(data) -> None:
    z, y = data
    k = z.shape[1]
    fl = reference_focal(z, y, 3.0)

    def monai_fl(reduction: str) -> torch.Tensor:
        loss = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=3, reduction=reduction)
        return loss(z, y.unsqueeze(1)).double()

    none = monai_fl("none")
    assert none.shape == z.shape
    torch.testing.assert_close(none.sum(1), fl, rtol=1e-5, atol=1e-6)
    off_target = torch.ones_like(none, dtype=torch.bool)
    off_target[torch.arange(len(y)), y] = False
    assert bool((none[off_target] == 0).all())
    torch.testing.assert_close(monai_fl("mean") * k, fl.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(monai_fl("sum"), monai_fl("mean"))  # MONAI quirk, see docstring


def test_monai_focal_gradient(data) -> None:
    z, y = data
    z = z.clone().requires_grad_()
    loss = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=3, reduction="none")
    got = torch.autograd.grad(loss(z, y.unsqueeze(1)).sum(1).mean(), z)[0]
    p = torch.softmax(z, dim=1)[torch.arange(len(y)), y]
    ref = torch.autograd.grad((-((1 - p) ** 3) * torch.log(p)).mean(), z)[0]
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-6)


def test_monai_focal_batch_of_one(data) -> None:
    z, y = data
    loss = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=3, reduction="none")
    out = loss(z[:1], y[:1].unsqueeze(1))
    assert out.shape == (1, z.shape[1])
    torch.testing.assert_close(
        out.sum(1).double(), reference_focal(z[:1], y[:1], 3.0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_label_smoothing_ce(data, reduction: str) -> None:
    z, y = data
    got = torch.nn.CrossEntropyLoss(label_smoothing=0.1, reduction=reduction)(z, y)
    v = reference_ls_ce(z, y, 0.1)
    expected = {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
