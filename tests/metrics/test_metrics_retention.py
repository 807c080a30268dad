# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for monai_calib.metrics.retention (accuracy-retention curve and R-AUC)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.metrics import retention_auc, retention_curve


def _np_retention(p, y, fractions, uncertainty):
    """Plain float64 reference: stable sort by uncertainty, replace the rest by ground truth."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    pred = p.argmax(1)
    if uncertainty == "max_prob":
        score = 1.0 - p.max(1)
    elif uncertainty == "entropy":
        score = np.array([-sum(v * math.log(v) for v in row if v > 0) for row in p])
    else:
        score = pred.astype(np.float64)
    order = np.argsort(score, kind="stable")
    n = len(y)
    acc = []
    for f in fractions:
        kept = math.floor(f * n)
        acc.append((sum(pred[i] == y[i] for i in order[:kept]) + (n - kept)) / n)
    return np.array(acc)


def _trapezoid(y, x):
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def _hand_inputs():
    # conf (correct?): s0 .9 (yes), s1 .6 (no), s2 .8 (yes), s3 .7 (no)
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    return p, y


def test_hand_example_linear_grid():
    p, y = _hand_inputs()
    f, acc = retention_curve(p, y, grid="linear", num_points=5)
    assert f.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # most certain first: s0, s2 (both right), s3, s1 (both wrong)
    assert acc.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.5])
    auc = retention_auc(p, y, grid="linear", num_points=5)
    assert float(auc) == pytest.approx(0.25 * (1.0 + 1.0 + 0.875 + 0.625))
    assert auc.dtype == torch.float64 and auc.ndim == 0


def test_predicted_class_reproduces_reference_bug():
    p, y = _hand_inputs()
    # the reference sorts by argmax class index: s0, s1 (class 0) then s2, s3 (class 1)
    _, acc = retention_curve(p, y, grid="linear", num_points=5, uncertainty="predicted_class")
    assert acc.tolist() == pytest.approx([1.0, 1.0, 0.75, 0.75, 0.5])


def test_entropy_and_max_prob_orderings_differ():
    # a: max .5, entropy log 2 (0.69); b: max .6, entropy 0.95.
    p = torch.tensor([[0.5, 0.5, 0.0], [0.6, 0.2, 0.2]], dtype=torch.float64)
    y = torch.tensor([0, 1])  # a right, b wrong
    _, acc_mp = retention_curve(p, y, grid="linear", num_points=3, uncertainty="max_prob")
    _, acc_h = retention_curve(p, y, grid="linear", num_points=3, uncertainty="entropy")
    assert acc_mp.tolist() == pytest.approx([1.0, 0.5, 0.5])  # keeps b (wrong) first
    assert acc_h.tolist() == pytest.approx([1.0, 1.0, 0.5])  # keeps a (right) first


def test_log_grid():
    p, y = _hand_inputs()
    f, acc = retention_curve(p, y)
    assert f.shape == acc.shape == (200,)
    expected = [math.log(j) / math.log(200) for j in range(1, 201)]
    assert f.tolist() == pytest.approx(expected, abs=1e-15)
    assert f[0].item() == 0.0 and f[-1].item() == 1.0
    assert acc[0].item() == 1.0 and acc[-1].item() == pytest.approx(0.5)


@pytest.mark.parametrize("uncertainty", ["max_prob", "entropy", "predicted_class"])
@pytest.mark.parametrize("grid", ["log", "linear"])
def test_matches_numpy_reference_with_ties(uncertainty, grid):
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(2 * torch.randn(157, 4, generator=g, dtype=torch.float64), dim=1)
    p = torch.cat([p, p[:40]])  # exact duplicates -> tied uncertainties, stable order matters
    y = torch.randint(0, 4, (197,), generator=g)
    f, acc = retention_curve(p, y, grid=grid, num_points=50, uncertainty=uncertainty)
    ref = _np_retention(p.numpy(), y.numpy(), f.tolist(), uncertainty)
    np.testing.assert_allclose(acc.numpy(), ref, rtol=0, atol=1e-12)
    auc = retention_auc(p, y, grid=grid, num_points=50, uncertainty=uncertainty)
    assert float(auc) == pytest.approx(_trapezoid(ref.tolist(), f.tolist()), abs=1e-12)


def test_dense_logits_and_label_forms():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    idx = torch.randint(0, 3, (2, 1, 4, 5), generator=g)
    p = torch.softmax(z, 1)
    ref = retention_auc(p.movedim(1, -1).reshape(-1, 3), idx.reshape(-1))
    onehot = torch.zeros_like(p).scatter_(1, idx, 1.0)
    for y_form in (idx, idx[:, 0], onehot):
        assert float(retention_auc(p, y_form)) == pytest.approx(float(ref), abs=1e-12)
    assert float(retention_auc(z, idx, logits=True)) == pytest.approx(float(ref), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(2, 5), seed=st.integers(0, 2**31 - 1))
def test_property_bounds_and_oracle_ordering(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(n, k, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, k, (n,), generator=g)
    _, acc = retention_curve(p, y, grid="linear", num_points=11)
    accuracy = float((p.argmax(1) == y).double().mean())
    assert acc[0].item() == 1.0 and acc[-1].item() == pytest.approx(accuracy)
    assert bool((acc[1:] <= acc[:-1] + 1e-12).all())  # dropping expert cover can only hurt
    auc = float(retention_auc(p, y, grid="linear", num_points=11))
    assert accuracy - 1e-12 <= auc <= 1.0 + 1e-12


def test_errors():
    p, y = _hand_inputs()
    with pytest.raises(ValueError, match=r"(?s)'margin'.*max_prob"):
        retention_curve(p, y, uncertainty="margin")
    with pytest.raises(ValueError, match=r"(?s)'quadratic'.*linear"):
        retention_auc(p, y, grid="quadratic")
    with pytest.raises(TypeError, match="num_point"):  # options are checked by name
        retention_auc(p, y, num_point=10)
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="num_points must be an int >= 2"):
            retention_curve(p, y, num_points=bad)
    with pytest.raises(ValueError, match="at least one sample"):
        retention_curve(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="do not sum to 1"):
        retention_curve(p * 0.5, y)
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 1\]"):
        retention_auc(p, y + 2)
