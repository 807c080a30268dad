# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import math

import pytest
import torch

from monai_calib.losses import DCALoss

REDUCTIONS = ["mean", "sum", "none"]


def reference_dca(z: torch.Tensor, y: torch.Tensor, beta: float) -> list:
    """Per-sample DCA loss (penalty spread evenly) written plainly with Python floats."""
    rows = z.tolist()
    labels = y.tolist()
    probs = []
    for row in rows:
        mx = max(row)
        den = sum(math.exp(v - mx) for v in row)
        probs.append([math.exp(v - mx) / den for v in row])
    n = len(rows)
    conf = sum(max(p) for p in probs) / n
    acc = sum(1.0 for p, lab in zip(probs, labels, strict=True) if p.index(max(p)) == lab) / n
    return [
        -math.log(p[lab]) + beta * abs(conf - acc) for p, lab in zip(probs, labels, strict=True)
    ]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.0, 1.0, 10.0])
@pytest.mark.parametrize("k", [4, 20])  # both log-softmax code paths (K <= 16 and K > 16)
def test_matches_reference(reduction: str, beta: float, k: int) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(11, k, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, k, (11,), generator=g)
    loss = DCALoss(beta=beta, reduction=reduction)(z, y)
    v = torch.tensor(reference_dca(z, y, beta), dtype=torch.float64)
    expected = {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (6,), generator=g)
    fn = DCALoss(beta=3.0, reduction=reduction)
    assert torch.autograd.gradcheck(lambda x: fn(x, y), (z,))


def _penalty_free_grad(z: torch.Tensor, y: torch.Tensor, beta: float, w: torch.Tensor):
    """Gradient of sum_i w_i (CE_i + beta * sign(C - A) * C) with C, A computed independently."""
    p = torch.softmax(z, dim=1)
    conf = p.max(dim=1).values.mean()
    acc = (p.argmax(dim=1) == y).double().mean()
    sign = torch.sign(conf - acc).detach()
    ce = -torch.log(p[torch.arange(len(y)), y])
    return torch.autograd.grad(((ce + beta * sign * conf) * w).sum(), z)[0]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_only_through_confidence(reduction: str) -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (20,), generator=g)
    w = torch.rand(20, generator=g, dtype=torch.float64)
    out = DCALoss(beta=10.0, reduction=reduction)(z, y)
    weights = {"mean": torch.full_like(w, 1 / 20), "sum": torch.ones_like(w), "none": w}[reduction]
    grad = torch.autograd.grad((out * w).sum() if reduction == "none" else out, z)[0]
    torch.testing.assert_close(grad, _penalty_free_grad(z, y, 10.0, weights))


def test_penalty_gradient_independent_of_accuracy_value() -> None:
    # Two label sets with different accuracy but the same sign of (conf - acc): after removing
    # the CE gradient, the penalty gradients must coincide (accuracy is a constant).
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(40, 4, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    pred = z.detach().argmax(1)
    y_right = pred.clone()  # accuracy 1 > confidence (low-confidence logits): sign -1
    y_mixed = pred.clone()
    y_mixed[:5] = (pred[:5] + 1) % 4  # accuracy 0.875, still above confidence
    conf = torch.softmax(z.detach(), 1).max(1).values.mean()
    assert conf < 0.875
    pen = []
    for y in (y_right, y_mixed):
        grad = torch.autograd.grad(DCALoss(beta=10.0)(z, y), z)[0]
        ce_grad = torch.autograd.grad(torch.nn.functional.cross_entropy(z, y), z)[0]
        pen.append(grad - ce_grad)
    torch.testing.assert_close(pen[0], pen[1])
    assert pen[0].abs().max() > 1e-3  # the penalty does contribute a gradient


def test_beta0_equals_ce() -> None:
    z = torch.randn(16, 3, requires_grad=True)
    y = torch.randint(0, 3, (16,))
    for reduction in REDUCTIONS:
        torch.testing.assert_close(
            DCALoss(beta=0.0, reduction=reduction)(z, y),
            torch.nn.functional.cross_entropy(z, y, reduction=reduction),
        )


def test_batch_of_one_matches_reference() -> None:
    """Target layouts and bad inputs: tests/reliability/test_reliability_inputs.py."""
    z = torch.randn(1, 3, dtype=torch.float64)
    y = torch.tensor([2])
    one = DCALoss(reduction="none")(z, y.unsqueeze(1))
    assert one.shape == (1,)
    torch.testing.assert_close(one, torch.tensor(reference_dca(z, y, 10.0), dtype=z.dtype))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="beta"):
        DCALoss(beta=-1.0)
