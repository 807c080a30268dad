# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Mixed precision and hypothesis properties of every loss and metric (docs/reliability.md).

- Mixed precision: each loss of a model run under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  is finite, has finite gradients, and is within the documented tolerance of the float32 loss:
  ``|L_bf16 - L_fp32| <= BF16_RTOL * |L_fp32| + BF16_ATOL``. bf16 keeps 8 significant bits
  (relative rounding 2^-9 ~ 0.2% per logit); the losses themselves accumulate in float32, so the
  gap is the logits' rounding carried through the loss.
- Losses: finite; non-negative where the math says so (every loss except TET and MiT, whose
  entropy bonus ``-lambda H`` makes ``L >= -lambda log K``); invariant to the order of the
  samples in the batch (stateful losses from the same state too, their batch statistics being
  sums).
- Metrics: bounds, order invariance, streaming (metric classes over chunks) = one shot, dense
  ``(B, K, H, W)`` = flattened ``(B*H*W, K)``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from entry_points import LOSSES, METRIC_CLASSES
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.metrics import (
    brier_score,
    calibration_error,
    negative_log_likelihood,
    retention_auc,
)

BF16_RTOL = 1e-2
BF16_ATOL = 1e-3
PROPS = settings(max_examples=25, deadline=None)


def _lower_bound(name: str, loss: torch.nn.Module, k: int) -> float:
    """0, except for the entropy-bonus losses: ``CE - lambda H >= -lambda log K``."""
    if name == "TETLoss":
        return -loss.entropy_weight * math.log(k) - 1e-6
    if name == "MiTLoss":
        return -loss.lambda_max * math.log(k) - 1e-6
    return 0.0


def _batch(kind: str, b: int, k: int, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    if kind == "class":
        return torch.randn(b, k, generator=g) * scale, torch.randint(0, k, (b,), generator=g)
    if kind == "multilabel":
        return torch.randn(b, k, generator=g) * scale, (torch.rand(b, k, generator=g) > 0.5).float()
    return torch.randn(b, k, 4, 4, generator=g) * scale, torch.randint(
        0, k, (b, 1, 4, 4), generator=g
    )


# --------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_under_bf16_autocast_is_finite_and_close_to_float32(name: str) -> None:
    make, kind = LOSSES[name]
    k, b = 5, 16
    torch.manual_seed(0)
    if kind == "seg":
        model = torch.nn.Conv2d(3, k, 1)
        x = torch.randn(b, 3, 4, 4)
        y = torch.randint(0, k, (b, 1, 4, 4))
    else:
        model = torch.nn.Linear(8, k)
        x = torch.randn(b, 8) * 2
        y = torch.randint(0, k, (b,)) if kind == "class" else (torch.rand(b, k) > 0.5).float()
    ref = make(k).train()(model(x), y).detach()
    loss = make(k).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        assert logits.dtype == torch.bfloat16
        out = loss(logits, y)
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out))
    out.backward()
    for p in list(model.parameters()) + list(loss.parameters()):
        assert p.grad is None or bool(torch.isfinite(p.grad).all())
    assert abs(float(out.detach()) - float(ref)) <= BF16_RTOL * abs(float(ref)) + BF16_ATOL


# ------------------------------------------------------------------ loss properties


@pytest.mark.parametrize("name", list(LOSSES))
@PROPS
@given(
    b=st.integers(1, 12),
    k=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
)
def test_loss_finite_bounded_below_and_order_invariant(
    name: str, b: int, k: int, seed: int, scale: float
) -> None:
    make, kind = LOSSES[name]
    x, y = _batch(kind, b, k, seed, scale)
    x.requires_grad_(True)
    loss = make(k).train()
    out = loss(x, y)
    assert bool(torch.isfinite(out)), out
    assert float(out) >= _lower_bound(name, loss, k), float(out)
    out.backward()
    assert bool(torch.isfinite(x.grad).all())
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed + 1))
    permuted = make(k).train()(x.detach()[perm], y[perm])
    torch.testing.assert_close(permuted, out.detach(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- metric properties


def _probs(b: int, k: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, k, generator=g, dtype=torch.float64) * scale, dim=1)


def _labels(b: int, k: int, seed: int) -> torch.Tensor:
    return torch.randint(0, k, (b,), generator=torch.Generator().manual_seed(seed + 7))


FUNCTIONAL = {
    "calibration_error[top_label]": (lambda p, y: calibration_error(p, y), 0.0, 1.0),
    "calibration_error[classwise]": (
        lambda p, y: calibration_error(p, y, target="classwise"),
        0.0,
        1.0,
    ),
    "calibration_error[maximum]": (
        lambda p, y: calibration_error(p, y, reduction="maximum"),
        0.0,
        1.0,
    ),
    "calibration_error[equal_mass]": (
        lambda p, y: calibration_error(p, y, binning="equal_mass"),
        0.0,
        1.0,
    ),
    "brier_score": (brier_score, 0.0, 2.0),
    "negative_log_likelihood": (negative_log_likelihood, 0.0, -math.log(1e-7) + 1e-9),
    "retention_auc": (retention_auc, 0.0, 1.0),
}


@pytest.mark.parametrize("name", list(FUNCTIONAL))
@PROPS
@given(b=st.integers(1, 40), k=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_metric_bounds_and_order_invariance(name: str, b: int, k: int, seed: int) -> None:
    fn, lo, hi = FUNCTIONAL[name]
    p, y = _probs(b, k, seed), _labels(b, k, seed)
    out = fn(p, y)
    assert bool(torch.isfinite(out))
    assert lo - 1e-12 <= float(out) <= hi + 1e-12
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(fn(p[perm], y[perm]), out, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(METRIC_CLASSES))
@PROPS
@given(
    b=st.integers(2, 40),
    k=st.integers(2, 5),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.floats(0.0, 1.0), max_size=3),
)
def test_metric_streaming_equals_one_shot(
    name: str, b: int, k: int, seed: int, cuts: list[float]
) -> None:
    make, functional = METRIC_CLASSES[name]
    p, y = _probs(b, k, seed), _labels(b, k, seed)
    bounds = sorted({0, b, *(int(c * b) for c in cuts)})
    metric = make()
    for s, e in itertools.pairwise(bounds):
        metric(p[s:e], y[s:e])
    torch.testing.assert_close(
        metric.aggregate().double(), functional(p, y).double(), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("name", list(FUNCTIONAL))
@PROPS
@given(b=st.integers(1, 3), k=st.integers(2, 4), side=st.integers(1, 4), seed=st.integers(0, 999))
def test_metric_dense_equals_flattened(name: str, b: int, k: int, side: int, seed: int) -> None:
    fn = FUNCTIONAL[name][0]
    n = b * side * side
    flat_p, flat_y = _probs(n, k, seed), _labels(n, k, seed)
    dense_p = flat_p.view(b, side, side, k).permute(0, 3, 1, 2)
    dense_y = flat_y.view(b, side, side)
    torch.testing.assert_close(fn(dense_p, dense_y), fn(flat_p, flat_y), rtol=1e-9, atol=1e-12)
