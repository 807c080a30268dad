# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.losses import MDCALoss

REDUCTIONS = ["mean", "sum", "none"]
BASES = ["nll", "focal", "label_smoothing"]


def softmax_rows(z: torch.Tensor) -> list:
    probs = []
    for row in z.tolist():
        mx = max(row)
        den = sum(math.exp(v - mx) for v in row)
        probs.append([math.exp(v - mx) / den for v in row])
    return probs


def reference_base(p: list, y: int, base: str, gamma: float, alpha: float) -> float:
    k = len(p)
    if base == "nll":
        return -math.log(p[y])
    if base == "focal":
        return -((1.0 - p[y]) ** gamma) * math.log(p[y])
    q = [alpha / (k - 1)] * k
    q[y] = 1.0 - alpha
    return -sum(qk * math.log(pk) for qk, pk in zip(q, p, strict=True))


def reference_mdca(z, y, beta, base, gamma=1.0, alpha=0.1) -> list:
    """Per-sample MDCA loss (penalty spread evenly) with Python floats."""
    probs = softmax_rows(z)
    labels = y.tolist()
    n, k = len(probs), len(probs[0])
    pen = 0.0
    for c in range(k):
        mean_p = sum(p[c] for p in probs) / n
        freq = sum(1.0 for lab in labels if lab == c) / n
        pen += abs(mean_p - freq)
    pen /= k
    return [
        reference_base(p, lab, base, gamma, alpha) + beta * pen
        for p, lab in zip(probs, labels, strict=True)
    ]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("beta", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("k", [4, 20])  # both log-softmax code paths (K <= 16 and K > 16)
def test_matches_reference(reduction: str, base: str, beta: float, k: int) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, k, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, k, (10,), generator=g)
    fn = MDCALoss(beta=beta, base_loss=base, gamma=2.0, smoothing=0.2, reduction=reduction)
    v = torch.tensor(reference_mdca(z, y, beta, base, 2.0, 0.2), dtype=torch.float64)
    expected = {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]
    torch.testing.assert_close(fn(z, y), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "base,gamma", [("nll", 1.0), ("focal", 0.5), ("focal", 3.0), ("label_smoothing", 1.0)]
)
def test_gradcheck(reduction: str, base: str, gamma: float) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (6,), generator=g)
    fn = MDCALoss(beta=2.0, base_loss=base, gamma=gamma, reduction=reduction)
    assert torch.autograd.gradcheck(lambda x: fn(x, y), (z,))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_focal_gradient_finite_at_saturation(gamma: float) -> None:
    # p_y == 1 in float64: the (1 - p)^(gamma - 1) factor must not produce NaN
    z = torch.tensor([[60.0, -60.0, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2])
    MDCALoss(base_loss="focal", gamma=gamma)(z, y).backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("base", BASES)
def test_beta0_equals_base_loss(base: str) -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(32, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (32,), generator=g)
    loss = MDCALoss(beta=0.0, base_loss=base, gamma=3.0, smoothing=0.1)(z, y)
    logp = torch.log_softmax(z, dim=1)
    logp_y = logp[torch.arange(32), y]
    if base == "nll":
        ref = torch.nn.functional.cross_entropy(z, y)
    elif base == "focal":
        ref = (-((1 - logp_y.exp()) ** 3) * logp_y).mean()
    else:
        q = torch.full_like(logp, 0.1 / 4)
        q[torch.arange(32), y] = 0.9
        ref = -(q * logp).sum(1).mean()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, z)[0], torch.autograd.grad(ref, z)[0])


def test_gradient_matches_autograd_of_reference_formula() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(25, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 6, (25,), generator=g)
    w = torch.rand(25, generator=g, dtype=torch.float64)
    for base in BASES:
        out = MDCALoss(beta=3.0, base_loss=base, gamma=2.0, reduction="none")(z, y)
        p = torch.softmax(z, dim=1)
        py = p[torch.arange(25), y]
        if base == "nll":
            b = -torch.log(py)
        elif base == "focal":
            b = -((1 - py) ** 2) * torch.log(py)
        else:
            q = torch.full_like(p, 0.1 / 5)
            q[torch.arange(25), y] = 0.9
            b = -(q * torch.log(p)).sum(1)
        freq = torch.nn.functional.one_hot(y, 6).double().mean(0)
        ref = b + 3.0 * (p.mean(0) - freq).abs().mean()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(
            torch.autograd.grad((out * w).sum(), z)[0], torch.autograd.grad((ref * w).sum(), z)[0]
        )


def test_batch_of_one_matches_reference() -> None:
    """Layouts, bad inputs, half precision: tests/reliability/test_reliability_inputs.py."""
    z = torch.randn(1, 3, dtype=torch.float64)
    y = torch.tensor([2])
    one = MDCALoss(reduction="none")(z, y)
    assert one.shape == (1,)
    torch.testing.assert_close(one, torch.tensor(reference_mdca(z, y, 1.0, "nll"), dtype=z.dtype))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"(?s)'brier'.*label_smoothing"):
        MDCALoss(base_loss="brier")
    with pytest.raises(ValueError, match="smoothing"):
        MDCALoss(smoothing=1.0)
    with pytest.raises(ValueError, match="gamma"):
        MDCALoss(gamma=-1.0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), beta=st.floats(0.0, 10.0))
def test_penalty_nonnegative_and_zero_for_perfect_match(seed: int, beta: float) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    base = torch.nn.functional.cross_entropy(z, y)
    assert MDCALoss(beta=beta)(z, y) >= base - 1e-12
    # uniform predictions on a class-balanced batch: mean probability equals class frequency
    zu = torch.zeros(6, 3, dtype=torch.float64)
    yu = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(
        MDCALoss(beta=beta)(zu, yu), torch.nn.functional.cross_entropy(zu, yu)
    )
