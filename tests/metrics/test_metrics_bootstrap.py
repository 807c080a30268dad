# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``paired_bootstrap``: point estimates and intervals against a plain bootstrap written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.metrics import (
    calibration_error,
    negative_log_likelihood,
    paired_bootstrap,
)


def _plain_ece(p: np.ndarray, y: np.ndarray, m: int = 15) -> float:
    """Top-label ECE by a loop over samples: bin j holds confidences in (j/m, (j+1)/m]."""
    sums = [[0, 0.0, 0.0] for _ in range(m)]
    for row, label in zip(p, y, strict=True):
        c = max(row)
        b = min(max(math.ceil(c * m) - 1, 0), m - 1)
        sums[b][0] += 1
        sums[b][1] += c
        sums[b][2] += float(int(np.argmax(row)) == int(label))
    return sum(abs(s[1] - s[2]) for s in sums if s[0]) / len(y)


def _plain_stat(stat: str, p: np.ndarray, y: np.ndarray) -> float:
    if stat == "ece":
        return _plain_ece(p, y)
    correct = [float(int(np.argmax(r)) == int(t)) for r, t in zip(p, y, strict=True)]
    if stat == "acc":
        return sum(correct) / len(y)
    if stat == "nll":
        return sum(-math.log(max(r[int(t)], 1e-7)) for r, t in zip(p, y, strict=True)) / len(y)
    return sum(max(r) for r in p) / len(y) - sum(correct) / len(y)


def _seeds(num_seeds: int, n: int, k: int, rng: np.random.Generator):
    probs_a, probs_b, labels = [], [], []
    for _ in range(num_seeds):
        y = rng.integers(0, k, n)
        za = rng.normal(size=(n, k)) * 3
        za[np.arange(n), y] += 2.0  # an informative, over-confident model
        zb = za / 3.0  # the same ranking, softer: a different calibration
        probs_a.append(torch.softmax(torch.from_numpy(za), 1).numpy())
        probs_b.append(torch.softmax(torch.from_numpy(zb), 1).numpy())
        labels.append(y)
    return probs_a, probs_b, labels


@pytest.mark.parametrize("stat", ["ece", "acc", "nll", "gap"])
def test_matches_a_plain_bootstrap(stat):
    rng = np.random.default_rng(3)
    probs_a, probs_b, labels = _seeds(2, 37, 4, rng)
    res = paired_bootstrap(probs_a, probs_b, labels, statistic=stat, num_samples=300, seed=11)

    draw = np.random.default_rng(11)
    reps = np.zeros(300)
    point = 0.0
    for pa, pb, y in zip(probs_a, probs_b, labels, strict=True):
        idx = draw.integers(0, len(y), size=(300, len(y)))
        point += _plain_stat(stat, pa, y) - _plain_stat(stat, pb, y)
        for r in range(300):
            i = idx[r]
            reps[r] += _plain_stat(stat, pa[i], y[i]) - _plain_stat(stat, pb[i], y[i])
    reps /= 2
    assert res.difference == pytest.approx(point / 2, abs=1e-12)
    np.testing.assert_allclose(res.replicates, reps, atol=1e-12)
    low, high = np.quantile(reps, [0.025, 0.975])
    assert res.low == pytest.approx(low, abs=1e-12)
    assert res.high == pytest.approx(high, abs=1e-12)
    assert res.significant == (low > 0 or high < 0)


def test_point_estimates_equal_the_library_metrics():
    rng = np.random.default_rng(0)
    probs_a, probs_b, labels = _seeds(3, 200, 5, rng)
    ece = paired_bootstrap(probs_a, probs_b, labels, "ece", num_samples=10)
    nll = paired_bootstrap(probs_a, probs_b, labels, "nll", num_samples=10)
    ref_ece = np.mean(
        [
            float(calibration_error(torch.from_numpy(a), torch.from_numpy(y)))
            - float(calibration_error(torch.from_numpy(b), torch.from_numpy(y)))
            for a, b, y in zip(probs_a, probs_b, labels, strict=True)
        ]
    )
    ref_nll = np.mean(
        [
            float(negative_log_likelihood(torch.from_numpy(a), torch.from_numpy(y)))
            - float(negative_log_likelihood(torch.from_numpy(b), torch.from_numpy(y)))
            for a, b, y in zip(probs_a, probs_b, labels, strict=True)
        ]
    )
    assert ece.difference == pytest.approx(ref_ece, abs=1e-9)
    assert nll.difference == pytest.approx(ref_nll, abs=1e-6)


def test_a_real_difference_is_significant_and_no_difference_is_not():
    rng = np.random.default_rng(1)
    probs_a, probs_b, labels = _seeds(1, 2000, 3, rng)
    res = paired_bootstrap(probs_a, probs_b, labels, "ece", num_samples=500)
    assert res.difference > 0 and res.low > 0 and res.significant
    same = paired_bootstrap(probs_a, probs_a, labels, "ece", num_samples=50)
    assert same.difference == 0.0 and same.low == 0.0 and same.high == 0.0
    assert not same.significant


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_swapping_the_models_negates_the_interval(n, k, seed):
    rng = np.random.default_rng(seed)
    probs_a, probs_b, labels = _seeds(2, n, k, rng)
    ab = paired_bootstrap(probs_a, probs_b, labels, "ece", num_samples=64, seed=seed)
    ba = paired_bootstrap(probs_b, probs_a, labels, "ece", num_samples=64, seed=seed)
    assert ab.difference == pytest.approx(-ba.difference, abs=1e-12)
    np.testing.assert_allclose(ab.replicates, -ba.replicates, atol=1e-12)
    assert ab.low == pytest.approx(-ba.high, abs=1e-12)
    assert ab.high == pytest.approx(-ba.low, abs=1e-12)


def test_bad_input_is_named():
    rng = np.random.default_rng(0)
    pa, pb, y = _seeds(1, 10, 3, rng)
    with pytest.raises(ValueError, match="one entry per seed"):
        paired_bootstrap(pa, pb + pb, y)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(pa, pb, y, confidence=1.0)
    with pytest.raises(ValueError, match="num_samples"):
        paired_bootstrap(pa, pb, y, num_samples=0)
    with pytest.raises(ValueError, match="ece"):
        paired_bootstrap(pa, pb, y, statistic="bogus")
    with pytest.raises(ValueError, match="labels has batch size 10 but input has batch size 5"):
        paired_bootstrap(pa, [pb[0][:5]], [y[0]])
    with pytest.raises(ValueError, match=r"labels class indices must be in \[0, 2\]"):
        paired_bootstrap(pa, pb, [y[0] + 3])
    with pytest.raises(ValueError, match="labels holds float values that are not whole"):
        paired_bootstrap(pa, pb, [y[0] + 0.5])
    with pytest.raises(TypeError, match="labels must hold class indices"):
        paired_bootstrap(pa, pb, [y[0] > 0])
    with pytest.raises(ValueError, match="num_bins"):
        paired_bootstrap(pa, pb, y, num_bins=0)
    bad = pa[0].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="probs must be finite, got 1 NaN"):
        paired_bootstrap([bad], pb, y)
    bad[3, 1] = 1.5
    with pytest.raises(ValueError, match=r"probs must hold probabilities in \[0, 1\]"):
        paired_bootstrap(pa, [bad], y)


def test_labels_in_the_shared_layouts_give_the_same_result():
    # (N,), (N, 1), whole-number floats and one-hot rows all read as the same class indices
    rng = np.random.default_rng(4)
    pa, pb, y = _seeds(1, 40, 3, rng)
    ref = paired_bootstrap(pa, pb, y, num_samples=20)
    for layout in (y[0][:, None], y[0].astype(np.float32), np.eye(3)[y[0]], torch.from_numpy(y[0])):
        res = paired_bootstrap(pa, pb, [layout], num_samples=20)
        assert res.difference == ref.difference
        np.testing.assert_array_equal(res.replicates, ref.replicates)
