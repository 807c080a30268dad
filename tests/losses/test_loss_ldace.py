# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for LDACELoss against a plainly written float64 double loop over label pairs."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import multilabel_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.losses import LDACELoss

EPS = 1e-7


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def reference_ldace_per_sample(z: torch.Tensor, y: torch.Tensor, eps: float = EPS) -> list[float]:
    """Spec 4.1 written out: W = 1 on the diagonal, 0.5 off it, mean over K(K+1)/2 pairs."""
    out = []
    for zb, yb in zip(z.tolist(), y.tolist(), strict=True):
        k = len(zb)
        p = [min(max(_sig(v), eps), 1.0 - eps) for v in zb]
        total = 0.0
        for i in range(k):
            for j in range(k):
                pij = p[i] * p[j]
                yij = yb[i] * yb[j]
                lij = -(yij * math.log(pij) + (1.0 - yij) * math.log(1.0 - pij))
                w = 1.0 if i == j else 0.5
                total += w * lij
        out.append(total / (k * (k + 1) / 2))
    return out


def _data(b: int, k: int, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    return multilabel_batch(b, k, seed, scale)


@pytest.mark.parametrize("b,k", [(1, 1), (1, 5), (4, 1), (6, 7), (3, 14)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_double_loop(b: int, k: int, reduction: str) -> None:
    z, y = _data(b, k, seed=b * 100 + k)
    ref = torch.tensor(reference_ldace_per_sample(z, y), dtype=torch.float64)
    out = LDACELoss(reduction=reduction)(z, y)
    expected = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    assert out.dtype == torch.float64
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_clipping_matches_reference_at_extreme_logits() -> None:
    z = torch.tensor([[40.0, -40.0, 0.3], [-25.0, 25.0, 16.5]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    ref = torch.tensor(reference_ldace_per_sample(z, y), dtype=torch.float64)
    torch.testing.assert_close(LDACELoss(reduction="none")(z, y), ref, rtol=1e-10, atol=1e-12)
    # clipped logits receive exactly zero gradient, as in the reference's clamp
    zg = z.clone().requires_grad_(True)
    LDACELoss()(zg, y).backward()
    assert zg.grad is not None
    clipped = torch.tensor([[True, True, False], [True, True, True]])
    assert bool((zg.grad[clipped] == 0).all())
    assert bool((zg.grad[~clipped] != 0).all())


def test_pairwise_identities() -> None:
    """Spec 4.1: both present -> -log p_i - log p_j; else -log(1 - p_i p_j); diag BCE(p^2, y)."""
    z = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    p = torch.sigmoid(z)[0]
    p0, p1 = float(p[0]), float(p[1])

    def bce(q: float, t: float) -> float:
        return -(t * math.log(q) + (1 - t) * math.log(1 - q))

    loss = LDACELoss(reduction="sum")
    for y0, y1 in [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]:
        y = torch.tensor([[y0, y1]], dtype=torch.float64)
        off = -math.log(p0) - math.log(p1) if y0 * y1 == 1 else -math.log(1 - p0 * p1)
        diag = bce(p0**2, y0) + bce(p1**2, y1)
        expected = (diag + off) / 3.0  # K(K+1)/2 = 3 unordered pairs
        assert float(loss(z, y)) == pytest.approx(expected, rel=1e-12)
    # K = 1: only the diagonal, i.e. BCE(p^2, y)
    z1, y1t = z[:, :1], torch.ones(1, 1, dtype=torch.float64)
    assert float(loss(z1, y1t)) == pytest.approx(bce(p0**2, 1.0), rel=1e-12)


def test_gradcheck() -> None:
    z, y = _data(3, 4, seed=7, scale=2.0)  # |z| < ~8: the clip is inactive
    z.requires_grad_(True)
    for reduction in ("mean", "sum", "none"):
        loss = LDACELoss(reduction=reduction)
        assert torch.autograd.gradcheck(lambda x, loss=loss: loss(x, y), (z,))


def test_bad_arguments() -> None:
    """Bad inputs: tests/reliability/test_reliability_inputs.py."""
    with pytest.raises(ValueError, match="clip_eps"):
        LDACELoss(clip_eps=0.5)
    with pytest.raises(ValueError, match="clip_eps"):
        LDACELoss(clip_eps=-1e-3)
    with pytest.raises(ValueError):
        LDACELoss(reduction="max")


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 5),
    k=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_property_nonnegative_and_matches_loop(b: int, k: int, seed: int) -> None:
    z, y = _data(b, k, seed=seed, scale=5.0)
    out = LDACELoss(reduction="none")(z, y)
    assert bool((out >= 0).all())
    ref = torch.tensor(reference_ldace_per_sample(z, y), dtype=torch.float64)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)


def test_perfect_prediction_lower_than_wrong() -> None:
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    good = LDACELoss()((y * 2 - 1) * 8, y)
    bad = LDACELoss()((1 - 2 * y) * 8, y)
    assert float(good) < float(bad)


def test_matches_torch_bce_on_outer_product() -> None:
    """Second independent route: torch's BCE on the explicit (B, K, K) matrices, weighted by W."""
    z, y = _data(5, 9, seed=17)
    p = torch.sigmoid(z).clamp(EPS, 1 - EPS)
    pp = p.unsqueeze(2) * p.unsqueeze(1)
    yy = y.unsqueeze(2) * y.unsqueeze(1)
    w = torch.full((9, 9), 0.5, dtype=torch.float64).fill_diagonal_(1.0)
    bce = torch.nn.functional.binary_cross_entropy(pp, yy, reduction="none")
    expected = (bce * w).sum(dim=(1, 2)) / (9 * 10 / 2)
    torch.testing.assert_close(LDACELoss(reduction="none")(z, y), expected)
