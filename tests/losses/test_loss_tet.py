# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.losses import TETLoss
from monai_calib.losses._fused import log_softmax_rows as _log_softmax

REDUCTIONS = ["mean", "sum", "none"]


def reference_tet(z: torch.Tensor, y: torch.Tensor, t: float, lam: float, eps: float) -> list:
    """Per-sample TET loss written plainly with Python floats (float64)."""
    out = []
    for row, label in zip(z.tolist(), y.tolist(), strict=True):
        s = [v / t for v in row]
        mx = max(s)
        den = sum(math.exp(v - mx) for v in s)
        p = [math.exp(v - mx) / den for v in s]
        ce = -math.log(p[label])
        ent = -sum(pk * math.log(pk + eps) for pk in p)
        out.append(ce - lam * ent)
    return out


def reduce(values: list, reduction: str) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    return {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("t,lam,eps", [(0.5, 0.1, 1e-10), (2.0, 0.7, 1e-3), (1.0, 0.0, 1e-10)])
@pytest.mark.parametrize("k", [5, 23])  # both log-softmax code paths (K <= 16 and K > 16)
def test_matches_reference(reduction: str, t: float, lam: float, eps: float, k: int) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(9, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k, (9,), generator=g)
    loss = TETLoss(temperature=t, entropy_weight=lam, eps=eps, reduction=reduction)(z, y)
    expected = reduce(reference_tet(z, y, t, lam, eps), reduction)
    assert loss.shape == expected.shape
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("lam", [0.0, 0.1, 0.9])
@pytest.mark.parametrize("k", [4, 20])
def test_gradcheck(reduction: str, lam: float, k: int) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, k, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, k, (6,), generator=g)
    fn = TETLoss(temperature=0.5, entropy_weight=lam, eps=1e-6, reduction=reduction)
    assert torch.autograd.gradcheck(lambda x: fn(x, y), (z,))


def test_gradient_matches_autograd_of_reference_formula() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(16, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (16,), generator=g)
    w = torch.rand(16, generator=g, dtype=torch.float64)
    (g1,) = torch.autograd.grad((TETLoss(reduction="none")(z, y) * w).sum(), z)
    p = torch.softmax(z / 0.5, dim=1)
    per = -torch.log(p[torch.arange(16), y]) + 0.1 * (p * torch.log(p + 1e-10)).sum(1)
    (g2,) = torch.autograd.grad((per * w).sum(), z)
    torch.testing.assert_close(g1, g2)


def test_lambda0_t1_equals_torch_ce() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(32, 6, generator=g, requires_grad=True)
    y = torch.randint(0, 6, (32,), generator=g)
    for reduction in REDUCTIONS:
        loss = TETLoss(temperature=1.0, entropy_weight=0.0, reduction=reduction)(z, y)
        ref = torch.nn.functional.cross_entropy(z, y, reduction=reduction)
        torch.testing.assert_close(loss, ref)
        w = torch.randn_like(loss)
        torch.testing.assert_close(
            torch.autograd.grad((loss * w).sum(), z)[0], torch.autograd.grad((ref * w).sum(), z)[0]
        )


def test_none_mean_is_mean() -> None:
    z = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    torch.testing.assert_close(
        TETLoss(reduction="none")(z, y).mean(), TETLoss(reduction="mean")(z, y)
    )


def test_batch_of_one_equals_its_row() -> None:
    """Layouts, bad inputs, half precision: tests/reliability/test_reliability_inputs.py."""
    z = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    loss_fn = TETLoss(reduction="none")
    one = loss_fn(z[:1], y[:1])
    assert one.shape == (1,)
    torch.testing.assert_close(one, loss_fn(z, y)[:1])
    assert TETLoss()(z[:1], y[:1]).ndim == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        TETLoss(temperature=0.0)
    with pytest.raises(ValueError, match="entropy_weight"):
        TETLoss(entropy_weight=-1.0)
    with pytest.raises(ValueError, match="max"):
        TETLoss(reduction="max")


def test_temperature_attribute() -> None:
    loss_fn = TETLoss(temperature=0.25)
    assert loss_fn.temperature == 0.25 and loss_fn.apply_temperature_at_inference


@settings(max_examples=25, deadline=None)
@given(
    shift=st.floats(-50, 50),
    t=st.floats(0.1, 5.0),
    seed=st.integers(0, 2**16),
)
def test_shift_invariance(shift: float, t: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5,), generator=g)
    fn = TETLoss(temperature=t, reduction="none")
    torch.testing.assert_close(fn(z + shift, y), fn(z, y), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_private_log_softmax_matches_torch(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(5)
    for k in (2, 3, 10, 16, 17, 40):
        x = (torch.randn(33, k, generator=g) * 20).to(dtype)
        for scale in (1.0, 2.0, 0.3):
            torch.testing.assert_close(_log_softmax(x, scale), torch.log_softmax(x * scale, dim=1))
