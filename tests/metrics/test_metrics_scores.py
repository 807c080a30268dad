# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for monai_calib.metrics.scores (Brier score, negative log-likelihood)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.metrics import (
    NLLMetric,
    brier_score,
    brier_statistics,
    negative_log_likelihood,
    nll_statistics,
)


def _random_probs(n, k, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return z, torch.softmax(z, dim=1), y


def _np_brier(p, y):
    p = np.asarray(p, dtype=np.float64)
    total = 0.0
    for i in range(p.shape[0]):
        for k in range(p.shape[1]):
            total += (p[i, k] - (1.0 if k == int(y[i]) else 0.0)) ** 2
    return total / p.shape[0]


# ---------------------------------------------------------------- hand-computed
def test_brier_and_nll_hand_example():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    # sample 1: .3^2 + .2^2 + .1^2 = .14 ; sample 2: .5^2 + .5^2 + 1 = 1.5
    assert float(brier_score(p, y)) == pytest.approx((0.14 + 1.5) / 2)
    # p_y = 0 is clipped at eps = 1e-7
    assert float(negative_log_likelihood(p, y)) == pytest.approx(
        (-math.log(0.7) - math.log(1e-7)) / 2
    )
    assert float(negative_log_likelihood(p, y, eps=1e-3)) == pytest.approx(
        (-math.log(0.7) - math.log(1e-3)) / 2
    )
    assert brier_statistics(p, y).tolist() == pytest.approx([1.64, 2.0])
    assert nll_statistics(p, y)[1].item() == 2.0


def test_perfect_prediction_scores_zero():
    p = torch.eye(4, dtype=torch.float64)
    y = torch.arange(4)
    assert float(brier_score(p, y)) == 0.0
    assert float(negative_log_likelihood(p, y)) == 0.0


# ---------------------------------------------------------------- references
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_brier_matches_plain_formula_and_sklearn_binary(seed):
    _, p, y = _random_probs(257, 5, seed)
    assert float(brier_score(p, y)) == pytest.approx(_np_brier(p, y), rel=1e-12)
    metrics = pytest.importorskip("sklearn.metrics")
    _, p2, y2 = _random_probs(300, 2, seed)
    ref = metrics.brier_score_loss(y2.numpy(), p2[:, 1].numpy())
    # 2-class softmax: both classes contribute the same squared error -> twice sklearn's
    assert float(brier_score(p2, y2)) == pytest.approx(2 * ref, rel=1e-12)
    # one sigmoid output, multilabel convention -> exactly sklearn's binary Brier
    got = brier_score(p2[:, 1:], y2[:, None].double(), multilabel=True)
    assert float(got) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_nll_matches_sklearn_log_loss(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    z, p, y = _random_probs(400, 6, seed)
    ref = metrics.log_loss(y.numpy(), p.numpy(), labels=list(range(6)))
    assert float(negative_log_likelihood(p, y)) == pytest.approx(ref, rel=1e-10)
    assert float(negative_log_likelihood(z, y, logits=True)) == pytest.approx(ref, rel=1e-10)
    # multilabel binary cross-entropy per label, averaged over labels
    g = torch.Generator().manual_seed(seed + 100)
    q = torch.rand(400, 3, generator=g, dtype=torch.float64) * 0.98 + 0.01
    t = (torch.rand(400, 3, generator=g, dtype=torch.float64) < q).double()
    per_label = [metrics.log_loss(t[:, k].numpy(), q[:, k].numpy()) for k in range(3)]
    got = negative_log_likelihood(q, t, multilabel=True)
    assert float(got) == pytest.approx(float(np.mean(per_label)), rel=1e-10)
    logit = torch.logit(q)
    got_logits = negative_log_likelihood(logit, t, multilabel=True, logits=True)
    assert float(got_logits) == pytest.approx(float(np.mean(per_label)), rel=1e-9)


def test_multilabel_brier_is_mean_of_per_label_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(4)
    q = torch.rand(150, 4, generator=g, dtype=torch.float64)
    t = (torch.rand(150, 4, generator=g, dtype=torch.float64) < q).long()
    per_label = [metrics.brier_score_loss(t[:, k].numpy(), q[:, k].numpy()) for k in range(4)]
    assert float(brier_score(q, t, multilabel=True)) == pytest.approx(float(np.mean(per_label)))
    z = torch.logit(q)
    assert float(brier_score(z, t, multilabel=True, logits=True)) == pytest.approx(
        float(np.mean(per_label))
    )


def test_logits_match_probabilities_and_are_unclipped():
    z, p, y = _random_probs(100, 3, seed=5)
    assert float(brier_score(z, y, logits=True)) == pytest.approx(float(brier_score(p, y)))
    # an extreme logit: log_softmax is exact where probabilities would be clipped at 1e-7
    z = torch.tensor([[0.0, 40.0]], dtype=torch.float64)
    y = torch.tensor([0])
    assert float(negative_log_likelihood(z, y, logits=True)) == pytest.approx(
        40.0 + math.log1p(math.exp(-40.0))
    )
    assert float(negative_log_likelihood(torch.softmax(z, 1), y)) == pytest.approx(-math.log(1e-7))


# ---------------------------------------------------------------- structure
@pytest.mark.parametrize("spatial", [(4, 5), (2, 3, 4)])
def test_dense_equals_flattened(spatial):
    g = torch.Generator().manual_seed(6)
    p = torch.softmax(torch.randn(2, 3, *spatial, generator=g, dtype=torch.float64), dim=1)
    idx = torch.randint(0, 3, (2, 1, *spatial), generator=g)
    p_flat = p.movedim(1, -1).reshape(-1, 3)
    y_flat = idx.reshape(-1)
    onehot = torch.zeros_like(p).scatter_(1, idx, 1.0)
    for fn in (brier_score, negative_log_likelihood):
        ref = float(fn(p_flat, y_flat))
        for y_form in (idx, idx[:, 0], onehot):
            assert float(fn(p, y_form)) == pytest.approx(ref, rel=1e-12)
    t = (torch.rand(p.shape, generator=g, dtype=torch.float64) < p).double()
    t_flat = t.movedim(1, -1).reshape(-1, 3)
    for fn in (brier_score, negative_log_likelihood):
        assert float(fn(p, t, multilabel=True)) == pytest.approx(
            float(fn(p_flat, t_flat, multilabel=True)), rel=1e-12
        )


def test_streaming_statistics_add_up():
    _, p, y = _random_probs(500, 4, seed=7)
    cuts = [0, 3, 250, 251, 500]
    for stats_fn, fn in (
        (brier_statistics, brier_score),
        (nll_statistics, negative_log_likelihood),
    ):
        total = sum(stats_fn(p[a:b], y[a:b]) for a, b in itertools.pairwise(cuts))
        assert float(total[1]) == 500.0
        assert float(total[0] / total[1]) == pytest.approx(float(fn(p, y)), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(2, 6), seed=st.integers(0, 2**31 - 1))
def test_property_ranges(n, k, seed):
    _, p, y = _random_probs(n, k, seed, scale=4.0)
    bs = float(brier_score(p, y))
    assert 0.0 <= bs <= 2.0
    assert float(negative_log_likelihood(p, y)) >= 0.0
    assert float(negative_log_likelihood(p, y)) <= -math.log(1e-7) + 1e-9


# ---------------------------------------------------------------- errors
def test_errors():
    _, p, y = _random_probs(10, 3, seed=0)
    with pytest.raises(ValueError, match="do not sum to 1"):
        brier_score(p * 0.5, y)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        negative_log_likelihood(p + 1, y)
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\]"):
        brier_score(p, y + 3)
    with pytest.raises(ValueError, match="same shape as y_pred"):
        brier_score(p, y, multilabel=True)
    for bad in (0.7, -0.1, True, "1e-7"):  # the function and NLLMetric share the check
        with pytest.raises(ValueError, match="eps must be a float"):
            negative_log_likelihood(p, y, eps=bad)
        with pytest.raises(ValueError, match="eps must be a float"):
            NLLMetric(eps=bad)
    with pytest.raises(TypeError, match="epsilon"):  # options are checked by name
        negative_log_likelihood(p, y, epsilon=1e-3)
    with pytest.raises(ValueError, match=r"y_pred must have shape \(B, K\)"):
        negative_log_likelihood(p[:, 0], y)
