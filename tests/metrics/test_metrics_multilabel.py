# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for hamming_loss and multilabel_auc against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import hamming_loss as sk_hamming_loss
from sklearn.metrics import roc_auc_score

from monai_calib.metrics import hamming_loss, multilabel_auc


def _data(n: int, k: int, seed: int, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, k, generator=g)
    if ties:
        p = (p * 4).round() / 4  # only 5 distinct values: many ties
    y = (torch.rand(n, k, generator=g) < 0.35).float()
    y[0] = 1 - y[1]  # every label has both classes (rows 0 and 1 differ everywhere)
    return p, y


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.75])
def test_hamming_matches_sklearn(threshold: float) -> None:
    p, y = _data(50, 7, seed=1, ties=True)  # ties put values exactly on 0.5 / 0.75
    out = hamming_loss(p, y, threshold=threshold)
    expected = sk_hamming_loss(y.numpy().astype(int), (p.numpy() >= threshold).astype(int))
    assert out.dtype == torch.float64 and out.ndim == 0
    assert float(out) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("activation", ["sigmoid", "squared_sigmoid"])
def test_hamming_activation_on_logits(activation: str) -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(40, 5, generator=g) * 2
    y = (torch.rand(40, 5, generator=g) < 0.5).float()
    q = torch.sigmoid(z.double())
    if activation == "squared_sigmoid":
        q = q**2
    expected = sk_hamming_loss(y.numpy().astype(int), (q.numpy() >= 0.5).astype(int))
    assert float(hamming_loss(z, y, activation=activation)) == pytest.approx(expected)
    # squared sigmoid is stricter: sigmoid(z)^2 >= 0.5 needs z >= logit(sqrt(0.5)) ~ 0.88
    if activation == "squared_sigmoid":
        assert float(hamming_loss(z, y, activation=activation)) != float(
            hamming_loss(z, y, activation="sigmoid")
        )


@pytest.mark.parametrize("n,k,ties", [(30, 1, False), (60, 6, False), (80, 4, True), (2, 3, False)])
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_auc_matches_sklearn(n: int, k: int, ties: bool, average: str) -> None:
    p, y = _data(n, k, seed=n + k, ties=ties)
    out = multilabel_auc(p, y, average=average)
    expected = roc_auc_score(y.numpy(), p.numpy(), average=average)
    assert out.dtype == torch.float64 and out.ndim == 0
    assert float(out) == pytest.approx(expected, abs=1e-12)


def test_auc_none_per_label() -> None:
    p, y = _data(40, 5, seed=9, ties=True)
    out = multilabel_auc(p, y, average="none")
    expected = roc_auc_score(y.numpy(), p.numpy(), average=None)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_auc_of_monotone_post_transforms_equals_auc_of_logits() -> None:
    # sigma(z) (BCE) and sigma(z)^2 (LDACE) keep the order of the logits: the same AUC
    g = torch.Generator().manual_seed(4)
    z = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = (torch.rand(30, 3, generator=g) < 0.5).double()
    y[0], y[1] = 1.0, 0.0
    expected = roc_auc_score(y.numpy(), z.numpy(), average="macro")
    for q in (torch.sigmoid(z), torch.sigmoid(z).square()):
        assert float(multilabel_auc(q, y)) == pytest.approx(expected, abs=1e-12)


def test_auc_single_class_labels_excluded_from_macro() -> None:
    p, y = _data(40, 5, seed=10)
    y[:, 1] = 1.0  # all positive
    y[:, 3] = 0.0  # all negative
    keep = [0, 2, 4]
    expected = roc_auc_score(y[:, keep].numpy(), p[:, keep].numpy(), average="macro")
    with pytest.warns(UserWarning, match=r"2 of 5 labels.*\[1, 3\]"):
        out = multilabel_auc(p, y, average="macro")
    assert float(out) == pytest.approx(expected, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "none" reports NaN without a warning
        per_label = multilabel_auc(p, y, average="none")
    assert torch.isnan(per_label[[1, 3]]).all() and not torch.isnan(per_label[keep]).any()


def test_auc_all_single_class_is_nan() -> None:
    p = torch.rand(10, 3)
    y = torch.zeros(10, 3)
    with pytest.warns(UserWarning, match="excluded"):
        assert torch.isnan(multilabel_auc(p, y))
    with pytest.warns(UserWarning, match="single class"):
        assert torch.isnan(multilabel_auc(p, y, average="micro"))


def test_bad_inputs() -> None:
    p = torch.rand(4, 3)
    y = torch.zeros(4, 3)
    for fn in (hamming_loss, multilabel_auc):
        with pytest.raises(ValueError, match="same shape"):
            fn(p, torch.zeros(4, 2))
        with pytest.raises(ValueError, match="binary"):
            fn(p, torch.full((4, 3), 0.5))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn(p * 3, y)
        with pytest.raises(ValueError, match=r"\(N, K\)"):
            fn(torch.rand(4), torch.zeros(4))
        with pytest.raises(ValueError, match="finite"):
            fn(torch.full((4, 3), float("nan")), y)
        with pytest.raises(TypeError, match="floating point"):
            fn(torch.ones(4, 3, dtype=torch.long), y)
    with pytest.raises(ValueError, match="average"):
        multilabel_auc(p, y, average="weighted")
    with pytest.raises(ValueError, match="activation"):
        hamming_loss(p, y, activation="softmax")
    with pytest.raises(TypeError, match="activation"):  # the AUC takes probabilities only
        multilabel_auc(p, y, activation="sigmoid")


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 40),
    k=st.integers(1, 5),
    levels=st.integers(2, 10),
    seed=st.integers(0, 10_000),
)
def test_property_auc_matches_sklearn_with_ties(n: int, k: int, levels: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    p = torch.randint(0, levels, (n, k), generator=g).double() / (levels - 1)
    y = (torch.rand(n, k, generator=g) < 0.5).double()
    y[0], y[1] = 1.0, 0.0
    expected = roc_auc_score(y.numpy(), p.numpy(), average="macro")
    assert float(multilabel_auc(p, y)) == pytest.approx(expected, abs=1e-12)
    assert float(multilabel_auc(p, y, average="micro")) == pytest.approx(
        roc_auc_score(y.numpy(), p.numpy(), average="micro"), abs=1e-12
    )
    assert float(hamming_loss(p, y)) == pytest.approx(
        sk_hamming_loss(y.numpy().astype(int), (p.numpy() >= 0.5).astype(int)), abs=1e-12
    )


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf"), 1.5, 2.0, -0.1])
@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_hamming_loss_and_report_reject_thresholds_outside_0_1(threshold, activation):
    """The threshold acts on the probability (also after an activation): finite, in [0, 1]."""
    from monai_calib.metrics import multilabel_report

    p, y = _data(8, 3, seed=5)
    x = torch.logit(p.clamp(1e-4, 1 - 1e-4)) if activation else p
    pattern = rf"threshold must be a finite number in \[0, 1\], got {threshold!r}"
    with pytest.raises(ValueError, match=pattern):
        hamming_loss(x, y, threshold=threshold, activation=activation)
    with pytest.raises(ValueError, match=pattern):
        multilabel_report(p, y, threshold=threshold)


@pytest.mark.parametrize("threshold", [True, "0.5", None])
def test_hamming_loss_threshold_type(threshold):
    p, y = _data(8, 3, seed=5)
    with pytest.raises(TypeError, match="threshold must be a finite number"):
        hamming_loss(p, y, threshold=threshold)


@pytest.mark.parametrize("threshold", [0, 0.0, 1, 1.0, np.float32(0.25)])
def test_hamming_loss_threshold_bounds_are_valid(threshold):
    p, y = _data(8, 3, seed=5)
    expected = ((p >= float(threshold)).double() != y).double().mean()
    assert torch.equal(hamming_loss(p, y, threshold=threshold), expected)
