# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for CanonicalCalibrationLoss and LDACECCLoss against plain float64 loops."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import multilabel_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.losses import CanonicalCalibrationLoss, LDACECCLoss, LDACELoss
from monai_calib.losses.ccl import _ccl_per_label

EPS = 1e-7


def _q(z: torch.Tensor, eps: float = EPS) -> list[list[float]]:
    out = []
    for row in z.tolist():
        out.append([min(max(1.0 / (1.0 + math.exp(-v)), eps), 1.0 - eps) ** 2 for v in row])
    return out


def reference_ccl(z: torch.Tensor, y: torch.Tensor, num_bins: int, eps: float = EPS) -> float:
    """Spec 4.3 written out with explicit loops over labels, bins and samples."""
    q = _q(z, eps)
    yl = y.tolist()
    b, k = len(q), len(q[0])
    total = 0.0
    for lab in range(k):
        for m in range(1, num_bins + 1):
            lo, hi = (m - 1) / num_bins, m / num_bins
            members = [i for i in range(b) if lo < q[i][lab] <= hi]
            n = len(members)
            qbar = sum(q[i][lab] for i in members) / (n + 1e-7)
            ybar = sum(yl[i][lab] for i in members) / (n + 1e-7)
            total += n / b * abs(qbar - ybar)
    return total / k


def _data(b: int, k: int, seed: int = 0, scale: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    return multilabel_batch(b, k, seed, scale)


@pytest.mark.parametrize("b,k", [(1, 1), (1, 4), (5, 1), (16, 6), (40, 3)])
@pytest.mark.parametrize("num_bins", [1, 2, 5, 10])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ccl_matches_loop(b: int, k: int, num_bins: int, reduction: str) -> None:
    z, y = _data(b, k, seed=b * 31 + k * 7 + num_bins)
    ref = reference_ccl(z, y, num_bins)
    out = CanonicalCalibrationLoss(num_bins=num_bins, reduction=reduction)(z, y)
    expected = {
        "mean": torch.tensor(ref, dtype=torch.float64),
        "sum": torch.tensor(ref * b, dtype=torch.float64),
        "none": torch.full((b,), ref, dtype=torch.float64),
    }[reduction]
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_ccl_single_bin_is_prevalence_matching() -> None:
    z, y = _data(32, 9, seed=5)
    q = torch.sigmoid(z).clamp(EPS, 1 - EPS) ** 2
    expected = (q.mean(dim=0) - y.mean(dim=0)).abs().mean()
    out = CanonicalCalibrationLoss(num_bins=1)(z, y)
    # identical up to the 1e-7 guard in the bin denominators
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-9)


def test_ccl_bin_edges_right_closed() -> None:
    # q exactly on the inner edge 0.5 (M = 2) belongs to the lower bin (0, 0.5]; q = 1 to the top
    q = torch.tensor([[0.5], [0.25], [1.0], [0.75]], dtype=torch.float64)
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=torch.float64)
    out = _ccl_per_label(q, y, num_bins=2)
    low = 2 / 4 * abs(0.75 / (2 + 1e-7) - 1 / (2 + 1e-7))  # {0.5, 0.25}
    high = 2 / 4 * abs(1.75 / (2 + 1e-7) - 1 / (2 + 1e-7))  # {1.0, 0.75}
    assert float(out[0]) == pytest.approx(low + high, rel=1e-12)
    # if 0.5 went to the upper bin the value would differ
    wrong = 1 / 4 * abs(0.25 / (1 + 1e-7)) + 3 / 4 * abs(2.25 / (3 + 1e-7) - 2 / (3 + 1e-7))
    assert abs(low + high - wrong) > 1e-3


def test_ccl_gradient_only_through_mean_q() -> None:
    # M = 1, one label: d CCL / d q_b = sign(mean q - mean y) / B; then chain through q = p^2
    z, y = _data(6, 1, seed=2)
    z.requires_grad_(True)
    CanonicalCalibrationLoss()(z, y).backward()
    p = torch.sigmoid(z.detach())
    q = p**2
    sign = torch.sign(q.sum() / (6 + 1e-7) - y.sum() / (6 + 1e-7))
    expected = sign / (6 + 1e-7) * 2 * p * p * (1 - p)
    torch.testing.assert_close(z.grad, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("num_bins", [1, 3])
def test_ccl_gradcheck(num_bins: int) -> None:
    z, y = _data(7, 3, seed=13, scale=1.5)
    z.requires_grad_(True)
    for reduction in ("mean", "sum", "none"):
        loss = CanonicalCalibrationLoss(num_bins=num_bins, reduction=reduction)
        # small eps: bin membership is piecewise constant, keep perturbations inside a bin
        assert torch.autograd.gradcheck(lambda x, loss=loss: loss(x, y), (z,), eps=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight,num_bins", [(1.0, 1), (0.0, 1), (100.0, 4)])
def test_combined_is_sum_of_parts(reduction: str, weight: float, num_bins: int) -> None:
    z, y = _data(8, 5, seed=21)
    out = LDACECCLoss(ccl_weight=weight, num_bins=num_bins, reduction=reduction)(z, y)
    ldace = LDACELoss(reduction=reduction)(z, y)
    ccl = CanonicalCalibrationLoss(num_bins=num_bins, reduction=reduction)(z, y)
    torch.testing.assert_close(out, ldace + weight * ccl, rtol=1e-12, atol=1e-12)


def test_combined_default_weight_and_stats() -> None:
    loss = LDACECCLoss()
    assert loss.ccl_weight == 1.0 and loss.num_bins == 1
    z, y = _data(8, 5, seed=22)
    out = loss(z, y)
    torch.testing.assert_close(loss.last_stats["ldace"], LDACELoss()(z, y))
    torch.testing.assert_close(loss.last_stats["ccl"], CanonicalCalibrationLoss()(z, y))
    torch.testing.assert_close(out, loss.last_stats["ldace"] + loss.last_stats["ccl"])
    assert not loss.last_stats["ccl"].requires_grad


def test_combined_gradcheck() -> None:
    z, y = _data(5, 4, seed=23, scale=1.5)
    z.requires_grad_(True)
    for reduction in ("mean", "none"):
        loss = LDACECCLoss(ccl_weight=2.0, num_bins=2, reduction=reduction)
        assert torch.autograd.gradcheck(lambda x, loss=loss: loss(x, y), (z,), eps=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", [CanonicalCalibrationLoss, LDACECCLoss])
def test_half_precision(dtype: torch.dtype, cls: type) -> None:
    z, y = _data(32, 6, seed=4)
    z_half = z.to(dtype)
    out = cls(num_bins=5)(z_half, y)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out))
    torch.testing.assert_close(out, cls(num_bins=5)(z_half.float(), y.float()))
    zg = z_half.clone().requires_grad_(True)
    cls()(zg, y).backward()
    assert zg.grad is not None and bool(torch.isfinite(zg.grad).all())


@pytest.mark.parametrize("cls", [CanonicalCalibrationLoss, LDACECCLoss])
def test_bad_arguments(cls: type) -> None:
    """Bad inputs: tests/reliability/test_reliability_inputs.py."""
    with pytest.raises(ValueError, match="num_bins"):
        cls(num_bins=0)
    with pytest.raises(TypeError, match="num_bins"):
        cls(num_bins=2.5)
    with pytest.raises(ValueError, match="clip_eps"):
        cls(clip_eps=0.7)
    with pytest.raises(ValueError):
        cls(reduction="batch")
    if cls is LDACECCLoss:
        with pytest.raises(ValueError, match="ccl_weight"):
            cls(ccl_weight=-1.0)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 12), k=st.integers(1, 5), m=st.integers(1, 8), seed=st.integers(0, 9999))
def test_property_ccl_bounds_and_loop(b: int, k: int, m: int, seed: int) -> None:
    z, y = _data(b, k, seed=seed, scale=4.0)
    out = float(CanonicalCalibrationLoss(num_bins=m)(z, y))
    assert 0.0 <= out <= 1.0
    assert out == pytest.approx(reference_ccl(z, y, m), rel=1e-9, abs=1e-12)


def test_ccl_zero_probability_ignored_without_clip() -> None:
    # clip_eps=0: sigmoid(-750) underflows to q = 0, outside every bin (0, 1/M], as in the reference
    z = torch.tensor([[-750.0], [0.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)  # the ignored one is positive
    q1, q2 = 0.25, (1.0 / (1.0 + math.exp(-2.0))) ** 2
    n = 2 + 1e-7
    expected = 2 / 3 * abs((q1 + q2) / n - 2 / n)
    out = CanonicalCalibrationLoss(num_bins=1, clip_eps=0.0)(z, y)
    assert float(out) == pytest.approx(expected, rel=1e-12)
    with_zero_counted = 3 / 3 * abs((q1 + q2) / (3 + 1e-7) - 3 / (3 + 1e-7))
    assert abs(expected - with_zero_counted) > 1e-3
    assert float(CanonicalCalibrationLoss(num_bins=4, clip_eps=0.0)(z, y)) >= 0.0
