# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import recall_score

from monai_calib.losses import LSPlusLoss, class_prior_from_predictions

REDUCTIONS = ["mean", "sum", "none"]
PRIOR = [0.6, 0.75, 0.9, 0.5]


def reference_ls_plus(z: torch.Tensor, y: torch.Tensor, prior: list, mix: float) -> list:
    """(1 - mix) * CE(e_y, p) + mix * KL(t || p), plain Python floats."""
    out = []
    k = len(prior)
    for row, lab in zip(z.tolist(), y.tolist(), strict=True):
        mx = max(row)
        den = sum(math.exp(v - mx) for v in row)
        p = [math.exp(v - mx) / den for v in row]
        t = [(1.0 - prior[lab]) / (k - 1)] * k
        t[lab] = prior[lab]
        kl = sum(tk * (math.log(tk) - math.log(pk)) for tk, pk in zip(t, p, strict=True))
        out.append((1.0 - mix) * -math.log(p[lab]) + mix * kl)
    return out


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("mix", [0.0, 0.5, 0.8, 1.0])
def test_matches_reference(reduction: str, mix: float) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (12,), generator=g)
    loss = LSPlusLoss(PRIOR, mix=mix, reduction=reduction)(z, y)
    v = torch.tensor(reference_ls_plus(z, y, PRIOR, mix), dtype=torch.float64)
    expected = {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_matches_reference_many_classes() -> None:
    # K > 16 takes the fused log_softmax code path
    prior = [0.3 + 0.03 * i for i in range(20)]
    g = torch.Generator().manual_seed(7)
    z = torch.randn(9, 20, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 20, (9,), generator=g)
    v = torch.tensor(reference_ls_plus(z, y, prior, 0.5), dtype=torch.float64)
    torch.testing.assert_close(LSPlusLoss(prior, reduction="none")(z, y), v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("mix", [0.0, 0.5])
def test_gradcheck(reduction: str, mix: float) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (6,), generator=g)
    fn = LSPlusLoss(PRIOR, mix=mix, reduction=reduction)
    assert torch.autograd.gradcheck(lambda x: fn(x, y), (z,))


def test_gradient_is_ce_against_mixed_target() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (20,), generator=g)
    c = torch.tensor(PRIOR, dtype=torch.float64)
    q = ((1 - c[y]) / 3 * 0.5).unsqueeze(1).repeat(1, 4)
    q[torch.arange(20), y] = 0.5 * (1 + c[y])
    grad = torch.autograd.grad(LSPlusLoss(PRIOR)(z, y), z)[0]
    ref = torch.autograd.grad(torch.nn.functional.cross_entropy(z, q), z)[0]
    torch.testing.assert_close(grad, ref)


def test_mix0_equals_ce() -> None:
    z = torch.randn(16, 4, requires_grad=True)
    y = torch.randint(0, 4, (16,))
    for reduction in REDUCTIONS:
        loss = LSPlusLoss(PRIOR, mix=0.0, reduction=reduction)(z, y)
        ref = torch.nn.functional.cross_entropy(z, y, reduction=reduction)
        torch.testing.assert_close(loss, ref)


def test_prior_clamp_warns_and_buffer() -> None:
    with pytest.warns(UserWarning, match="clamped"):
        fn = LSPlusLoss([1.0, 0.2, 0.7])
    torch.testing.assert_close(
        fn.class_prior, torch.tensor([0.999, 1 / 3 + 1e-3, 0.7], dtype=torch.float64)
    )
    assert "class_prior" in fn.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn.set_class_prior(torch.tensor([0.5, 0.6, 0.7]))
        LSPlusLoss([0.9, 0.8])
    torch.testing.assert_close(fn.class_prior, torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64))
    fn.set_class_prior([0.6, 0.7, 0.8, 0.9])  # another K: the buffer is replaced
    assert fn.class_prior.shape == (4,) and "class_prior" in dict(fn.named_buffers())
    assert fn(torch.randn(2, 4), torch.tensor([0, 3])).ndim == 0
    # clamped prior == unclamped valid prior: the loss is finite at the edges
    z = torch.randn(5, 3)
    with pytest.warns(UserWarning):
        fn2 = LSPlusLoss([1.0, 0.0, 1.0])
    assert torch.isfinite(fn2(z, torch.tensor([0, 1, 2, 0, 1])))


def test_bad_prior_and_class_count() -> None:
    """The other bad inputs are in tests/reliability/test_reliability_inputs.py."""
    with pytest.raises(ValueError, match="1-D"):
        LSPlusLoss([[0.5, 0.5]])
    with pytest.raises(ValueError, match="K >= 2"):
        LSPlusLoss([0.5])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        LSPlusLoss([0.5, 1.5])
    with pytest.raises(ValueError, match="mix"):
        LSPlusLoss([0.5, 0.7], mix=2.0)
    with pytest.raises(ValueError, match=r"\(B, 4\).*got shape \(3, 5\)"):
        LSPlusLoss(PRIOR)(torch.randn(3, 5), torch.tensor([0, 1, 3]))


def test_batch_of_one_equals_its_row() -> None:
    """Layouts, bad inputs, half precision: tests/reliability/test_reliability_inputs.py."""
    z = torch.randn(4, 4, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 3])
    fn = LSPlusLoss(PRIOR, reduction="none")
    assert fn(z[:1], y[:1]).shape == (1,)
    torch.testing.assert_close(fn(z[:1], y[:1]), fn(z, y)[:1])


@settings(max_examples=30, deadline=None)
@given(
    y_true=st.lists(st.integers(0, 3), min_size=8, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_class_prior_matches_sklearn_recall(y_true: list, seed: int) -> None:
    yt = np.array(y_true)
    present = np.unique(yt)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(len(yt), 4))
    pred = scores.argmax(1)
    if len(present) < 4:
        with pytest.raises(ValueError, match="no sample of classes"):
            class_prior_from_predictions(yt, scores)
        return
    expected = recall_score(yt, pred, labels=[0, 1, 2, 3], average=None, zero_division=0)
    for y_pred in (scores, torch.as_tensor(pred), torch.softmax(torch.as_tensor(scores), 1)):
        got = class_prior_from_predictions(torch.as_tensor(yt), y_pred)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(yt), 4)
    np.testing.assert_allclose(
        class_prior_from_predictions(one_hot, pred.reshape(-1, 1), num_classes=4).numpy(),
        expected,
        rtol=1e-6,
    )


def test_class_prior_errors() -> None:
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        class_prior_from_predictions([0, 1, 0, 1], [0, 1, 1, 2])
    with pytest.raises(ValueError, match="batch size"):
        class_prior_from_predictions([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        class_prior_from_predictions([0, 1, 2], torch.randn(3, 4), num_classes=3)
