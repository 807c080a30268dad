# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MultiplicativeLoss vs plain float64 NumPy code, MONAI's DiceLoss/DiceCELoss and torch CE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import np_ml_factors, np_onehot, seg_batch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.losses import DiceCELoss, DiceLoss

from monai_calib.losses import MultiplicativeLoss

SHAPES = [(2, 3, 5, 4), (2, 3, 3, 4, 2)]  # 2D and 3D


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("onehot_target", [False, True])
def test_matches_plain_and_monai_factors(shape, mode, include_background, onehot_target):
    logits, idx = seg_batch(shape)
    n = shape[1]
    onehot = torch.from_numpy(np_onehot(idx.numpy(), n))
    target = onehot if onehot_target else idx
    kw = dict(
        include_background=include_background,
        to_onehot_y=not onehot_target,
        softmax=mode == "softmax",
        sigmoid=mode == "sigmoid",
    )
    loss = MultiplicativeLoss(**kw)(logits, target)
    assert loss.shape == ()
    assert loss.dtype == torch.float64

    ld, lce = np_ml_factors(logits.numpy(), onehot.numpy(), mode, include_background)
    np.testing.assert_allclose(loss.item(), ld * lce, rtol=1e-10)

    dice = DiceLoss(batch=True, **kw)(logits, target)
    if mode == "softmax":
        ce = F.cross_entropy(logits, idx[:, 0])
    else:
        ce = F.binary_cross_entropy_with_logits(logits, onehot)
    torch.testing.assert_close(loss, dice * ce, rtol=1e-12, atol=0)


@pytest.mark.parametrize("include_background", [True, False])
def test_softmax_mode_equals_dicece_factors(include_background):
    """Softmax mode: the factors are DiceCELoss's two terms (CE keeps the background)."""
    logits, idx = seg_batch((3, 4, 6, 5), seed=1)
    kw = dict(include_background=include_background, to_onehot_y=True, softmax=True, batch=True)
    dice_only = DiceCELoss(lambda_ce=0.0, **kw)(logits, idx)
    ce_only = DiceCELoss(lambda_dice=0.0, **kw)(logits, idx)
    loss = MultiplicativeLoss(include_background=include_background, to_onehot_y=True, softmax=True)
    torch.testing.assert_close(loss(logits, idx), dice_only * ce_only, rtol=1e-12, atol=0)


def test_sum_reduction_sums_each_factor():
    logits, idx = seg_batch((2, 3, 4, 4), seed=2)
    kw = dict(to_onehot_y=True, softmax=True)
    loss = MultiplicativeLoss(reduction="sum", **kw)(logits, idx)
    expected = DiceLoss(batch=True, reduction="sum", **kw)(logits, idx) * F.cross_entropy(
        logits, idx[:, 0], reduction="sum"
    )
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_other_act_used_by_dice_only():
    logits, idx = seg_batch((2, 3, 4, 4), seed=3)

    def act(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(2.0 * x, dim=1)

    loss = MultiplicativeLoss(to_onehot_y=True, other_act=act)(logits, idx)
    expected = DiceLoss(batch=True, to_onehot_y=True, other_act=act)(logits, idx) * F.cross_entropy(
        logits, idx[:, 0]
    )
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_single_channel_binary_uses_bce():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 1, 5, 5), generator=g).double()
    loss = MultiplicativeLoss(sigmoid=True)(logits, y)
    ld, lce = np_ml_factors(logits.numpy(), y.numpy(), "sigmoid")
    np.testing.assert_allclose(loss.item(), ld * lce, rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(softmax=True), "single channel prediction, `softmax=True` ignored."),
        (
            dict(sigmoid=True, to_onehot_y=True),
            "single channel prediction, `to_onehot_y=True` ignored.",
        ),
        (
            dict(sigmoid=True, include_background=False),
            "single channel prediction, `include_background=False` ignored.",
        ),
    ],
)
def test_single_channel_warnings(kwargs, text):
    logits = torch.randn(2, 1, 4, 4)
    y = torch.randint(0, 2, (2, 1, 4, 4)).float()
    with pytest.warns(UserWarning, match=text.replace("`", ".").replace("(", ".")):
        out = MultiplicativeLoss(**kwargs)(logits, y)
    assert torch.isfinite(out)


def test_incompatible_activations_and_bad_other_act():
    msg = "Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None]."
    with pytest.raises(ValueError) as e:
        MultiplicativeLoss(sigmoid=True, softmax=True)
    assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        MultiplicativeLoss(softmax=True, other_act=torch.tanh)
    assert str(e.value) == msg
    with pytest.raises(TypeError, match="other_act must be None or callable but is int"):
        MultiplicativeLoss(other_act=3)


def test_reduction_none_and_invalid():
    with pytest.raises(ValueError, match='reduction="none" is not supported'):
        MultiplicativeLoss(reduction="none")
    with pytest.raises(ValueError):
        MultiplicativeLoss(reduction="avg")


def test_shape_errors():
    loss = MultiplicativeLoss(to_onehot_y=True, softmax=True)
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="the number of dimensions for input and target"):
        loss(logits, torch.randint(0, 3, (2, 4, 4)))
    with pytest.raises(ValueError, match="number of channels for target is neither 1"):
        loss(logits, torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="target must have the batch and spatial sizes"):
        loss(logits, torch.randint(0, 3, (2, 1, 4, 5)))
    with pytest.raises(ValueError, match="target must have the batch and spatial sizes"):
        loss(logits, torch.randint(0, 3, (1, 1, 4, 4)))
    # index target without to_onehot_y
    with pytest.raises(ValueError, match=r"holds class indices .* but to_onehot_y=False"):
        MultiplicativeLoss(softmax=True)(logits, torch.randint(0, 3, (2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"target class indices must be in \[0, 2\]"):
        loss(logits, torch.full((2, 1, 4, 4), 3))
    with pytest.raises(ValueError, match="must have shape BNH"):
        loss(torch.randn(2, 3), torch.zeros(2, 1))
    with pytest.raises(TypeError, match="floating point"):
        loss(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 1, 4, 4))
    bad = logits.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="input must be finite"):
        loss(bad, torch.randint(0, 3, (2, 1, 4, 4)))


def test_batch_of_one():
    logits, idx = seg_batch((1, 2, 4, 4), seed=5)
    loss = MultiplicativeLoss(to_onehot_y=True, softmax=True)(logits, idx)
    ld, lce = np_ml_factors(logits.numpy(), np_onehot(idx.numpy(), 2), "softmax")
    np.testing.assert_allclose(loss.item(), ld * lce, rtol=1e-10)


def test_half_precision_accumulates_in_float32():
    logits, idx = seg_batch((2, 3, 4, 4), seed=6)
    loss = MultiplicativeLoss(to_onehot_y=True, softmax=True)
    out = loss(logits.to(torch.bfloat16), idx)
    assert out.dtype == torch.float32
    ref = loss(logits.to(torch.bfloat16).double(), idx)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape, mode",
    [((2, 3, 3, 2), "softmax"), ((1, 2, 2, 3, 2), "sigmoid"), ((2, 1, 3, 3), "sigmoid")],
)
def test_gradcheck(shape, mode):
    logits, idx = seg_batch(shape, seed=7)
    n = shape[1]
    logits.requires_grad_(True)
    if n > 1:
        target = idx
    else:  # binary single-channel target
        target = torch.randint(0, 2, idx.shape, generator=torch.Generator().manual_seed(8)).double()
    loss = MultiplicativeLoss(
        to_onehot_y=n > 1, softmax=mode == "softmax", sigmoid=mode == "sigmoid"
    )
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits,))


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_gradient_is_product_rule(mode):
    logits, idx = seg_batch((2, 3, 4, 3), seed=9)
    onehot = torch.from_numpy(np_onehot(idx.numpy(), 3))
    kw = dict(to_onehot_y=True, softmax=mode == "softmax", sigmoid=mode == "sigmoid")

    z1 = logits.clone().requires_grad_(True)
    dice = DiceLoss(batch=True, **kw)(z1, idx)
    (g_dice,) = torch.autograd.grad(dice, z1)
    z2 = logits.clone().requires_grad_(True)
    if mode == "softmax":
        ce = F.cross_entropy(z2, idx[:, 0])
    else:
        ce = F.binary_cross_entropy_with_logits(z2, onehot)
    (g_ce,) = torch.autograd.grad(ce, z2)
    expected = dice.detach() * g_ce + ce.detach() * g_dice

    z = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(MultiplicativeLoss(**kw)(z, idx), z)
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-14)
    # neither factor detached: the gradient differs from either single-term product
    assert not torch.allclose(g, dice.detach() * g_ce, rtol=1e-3, atol=0)
    assert not torch.allclose(g, ce.detach() * g_dice, rtol=1e-3, atol=0)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 3),
    n=st.integers(2, 4),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    scale=st.floats(0.1, 5.0),
    seed=st.integers(0, 2**16),
    include_background=st.booleans(),
)
def test_property_matches_plain(b, n, h, w, scale, seed, include_background):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, n, h, w, generator=g, dtype=torch.float64)
    idx = torch.randint(0, n, (b, 1, h, w), generator=g)
    loss = MultiplicativeLoss(include_background=include_background, to_onehot_y=True, softmax=True)
    out = loss(logits, idx).item()
    ld, lce = np_ml_factors(
        logits.numpy(), np_onehot(idx.numpy(), n), "softmax", include_background
    )
    assert out >= 0.0
    np.testing.assert_allclose(out, ld * lce, rtol=1e-9, atol=1e-15)
