# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for CAMLLoss (the project's reconstruction, spec §5.4) against plain float64 NumPy code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import np_ml_factors, np_onehot, seg_batch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.losses import DiceLoss

from monai_calib.losses import CAMLLoss, MultiplicativeLoss, caml_default_modulation


def np_caml(
    logits: np.ndarray, onehot: np.ndarray, mode: str, include_background: bool = True
) -> dict[str, float]:
    """Plain float64 CAML reconstruction: (1 - p_bar) ** dice_bar * L_Dice * L_CE."""
    l_dice, ce = np_ml_factors(logits, onehot, mode, include_background)
    z = logits.astype(np.float64)
    y = onehot.astype(np.float64)
    if mode == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p_true = (e / e.sum(axis=1, keepdims=True) * y).sum(axis=1)  # true class, per voxel
    else:
        p = 1.0 / (1.0 + np.exp(-z))
        p_true = np.where(y == 1, p, 1 - p)  # per channel and voxel
    p_bar = float(p_true.mean())
    dice_bar = 1.0 - l_dice
    weight = (1.0 - p_bar) ** dice_bar
    return {"p_bar": p_bar, "dice_bar": dice_bar, "weight": weight, "ml": l_dice * ce}


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 3, 4, 2)])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("onehot_target", [False, True])
def test_matches_plain(shape, mode, include_background, onehot_target):
    logits, idx = seg_batch(shape)
    onehot_np = np_onehot(idx.numpy(), shape[1])
    target = torch.from_numpy(onehot_np) if onehot_target else idx
    loss = CAMLLoss(
        include_background=include_background,
        to_onehot_y=not onehot_target,
        softmax=mode == "softmax",
        sigmoid=mode == "sigmoid",
    )
    out = loss(logits, target)
    ref = np_caml(logits.numpy(), onehot_np, mode, include_background)
    assert out.shape == ()
    np.testing.assert_allclose(out.item(), ref["weight"] * ref["ml"], rtol=1e-10)
    for k in ("p_bar", "dice_bar", "weight"):
        np.testing.assert_allclose(loss.last_stats[k].item(), ref[k], rtol=1e-10)
        assert not loss.last_stats[k].requires_grad


def test_single_channel_binary():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 1, 6, 5), generator=g).double()
    out = CAMLLoss(sigmoid=True)(logits, y)
    ref = np_caml(logits.numpy(), y.numpy(), "sigmoid")
    np.testing.assert_allclose(out.item(), ref["weight"] * ref["ml"], rtol=1e-10)


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_gradient_is_detached_weight_times_ml_gradient(mode):
    logits, idx = seg_batch((2, 3, 4, 3), seed=2)
    kw = dict(to_onehot_y=True, softmax=mode == "softmax", sigmoid=mode == "sigmoid")
    z1 = logits.clone().requires_grad_(True)
    (g_ml,) = torch.autograd.grad(MultiplicativeLoss(**kw)(z1, idx), z1)
    weight = np_caml(logits.numpy(), np_onehot(idx.numpy(), 3), mode)["weight"]

    z = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(CAMLLoss(**kw)(z, idx), z)
    torch.testing.assert_close(g, weight * g_ml, rtol=1e-10, atol=1e-14)

    # the same formula without detaching has a different gradient: the detaching is real
    z2 = logits.clone().requires_grad_(True)
    ml = MultiplicativeLoss(**kw)(z2, idx)
    if mode == "softmax":
        p_bar = torch.softmax(z2, 1).gather(1, idx).mean()
    else:
        s = torch.sigmoid(z2)
        oh = torch.from_numpy(np_onehot(idx.numpy(), 3))
        p_bar = torch.where(oh == 1, s, 1 - s).mean()
    dice_bar = 1.0 - DiceLoss(batch=True, **kw)(z2, idx)
    (g_full,) = torch.autograd.grad((1 - p_bar) ** dice_bar * ml, z2)
    assert not torch.allclose(g, g_full, rtol=1e-3, atol=0)


def test_custom_modulating_fn_is_used_with_detached_stats():
    logits, idx = seg_batch((2, 3, 4, 4), seed=3)
    seen = {}

    def fn(p_bar: torch.Tensor, dice_bar: torch.Tensor) -> torch.Tensor:
        seen["p_bar"], seen["dice_bar"] = p_bar, dice_bar
        return 1.0 + p_bar * dice_bar

    z = logits.clone().requires_grad_(True)
    out = CAMLLoss(to_onehot_y=True, softmax=True, modulating_fn=fn)(z, idx)
    ref = np_caml(logits.numpy(), np_onehot(idx.numpy(), 3), "softmax")
    assert not seen["p_bar"].requires_grad and not seen["dice_bar"].requires_grad
    np.testing.assert_allclose(seen["p_bar"].item(), ref["p_bar"], rtol=1e-10)
    np.testing.assert_allclose(seen["dice_bar"].item(), ref["dice_bar"], rtol=1e-10)
    expected = (1.0 + ref["p_bar"] * ref["dice_bar"]) * ref["ml"]
    np.testing.assert_allclose(out.item(), expected, rtol=1e-10)

    # a constant python float works; weight 1 gives ML exactly
    one = CAMLLoss(to_onehot_y=True, softmax=True, modulating_fn=lambda p, d: 1.0)(logits, idx)
    ml = MultiplicativeLoss(to_onehot_y=True, softmax=True)(logits, idx)
    torch.testing.assert_close(one, ml, rtol=1e-12, atol=0)


def test_default_modulation_function():
    p = torch.tensor([0.0, 0.3, 0.9, 1.0], dtype=torch.float64)
    d = torch.tensor([0.5, 0.0, 0.7, 0.2], dtype=torch.float64)
    got = torch.stack([caml_default_modulation(pi, di) for pi, di in zip(p, d, strict=True)])
    expected = torch.tensor([(1 - a) ** b for a, b in zip(p.tolist(), d.tolist(), strict=True)])
    torch.testing.assert_close(got, expected.double())


def test_modulating_fn_errors():
    logits, idx = seg_batch((2, 3, 4, 4), seed=4)
    with pytest.raises(TypeError, match="modulating_fn must be None or callable but is str"):
        CAMLLoss(modulating_fn="focal")
    with pytest.raises(ValueError, match="must return a scalar weight"):
        CAMLLoss(to_onehot_y=True, softmax=True, modulating_fn=lambda p, d: torch.ones(2))(
            logits, idx
        )
    with pytest.raises(ValueError, match="finite, non-negative weight"):
        CAMLLoss(to_onehot_y=True, softmax=True, modulating_fn=lambda p, d: -p)(logits, idx)
    with pytest.raises(ValueError, match="finite, non-negative weight"):
        CAMLLoss(to_onehot_y=True, softmax=True, modulating_fn=lambda p, d: p / 0.0)(logits, idx)


def test_constructor_and_shape_errors():
    msg = "Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None]."
    with pytest.raises(ValueError) as e:
        CAMLLoss(sigmoid=True, softmax=True)
    assert str(e.value) == msg
    with pytest.raises(ValueError, match='reduction="none" is not supported'):
        CAMLLoss(reduction="none")
    loss = CAMLLoss(to_onehot_y=True, softmax=True)
    with pytest.raises(ValueError, match="target must have the batch and spatial sizes"):
        loss(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 3)))
    with pytest.warns(UserWarning, match="single channel prediction, .softmax=True. ignored."):
        CAMLLoss(softmax=True)(torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)).float())


def test_sum_reduction_and_batch_of_one():
    logits, idx = seg_batch((1, 2, 4, 4), seed=5)
    kw = dict(to_onehot_y=True, softmax=True)
    ref = np_caml(logits.numpy(), np_onehot(idx.numpy(), 2), "softmax")
    np.testing.assert_allclose(
        CAMLLoss(**kw)(logits, idx).item(), ref["weight"] * ref["ml"], rtol=1e-10
    )
    ml_sum = MultiplicativeLoss(reduction="sum", **kw)(logits, idx)
    torch.testing.assert_close(
        CAMLLoss(reduction="sum", **kw)(logits, idx), ref["weight"] * ml_sum, rtol=1e-10, atol=0
    )


@pytest.mark.parametrize("shape, mode", [((2, 3, 3, 2), "softmax"), ((1, 2, 2, 3, 2), "sigmoid")])
def test_gradcheck(shape, mode):
    logits, idx = seg_batch(shape, seed=6)
    """The weight is detached by design, so finite differences must see it frozen.

    The default weight is evaluated once at ``logits`` and then held fixed through a constant
    ``modulating_fn``; ``gradcheck`` then checks the analytic gradient of the default loss at
    that point (which equals the frozen loss's gradient there) against finite differences.
    """
    kw = dict(to_onehot_y=True, softmax=mode == "softmax", sigmoid=mode == "sigmoid")
    default = CAMLLoss(**kw)
    default(logits, idx)
    w0 = default.last_stats["weight"].clone()
    frozen = CAMLLoss(modulating_fn=lambda p, d: w0, **kw)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: frozen(z, idx), (logits,))
    (g_default,) = torch.autograd.grad(default(logits, idx), logits)
    (g_frozen,) = torch.autograd.grad(frozen(logits, idx), logits)
    torch.testing.assert_close(g_default, g_frozen, rtol=1e-12, atol=0)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 3),
    n=st.integers(2, 4),
    h=st.integers(1, 4),
    scale=st.floats(0.1, 6.0),
    seed=st.integers(0, 2**16),
)
def test_property_bounded_by_ml(b, n, h, scale, seed):
    """The default weight lies in [0, 1], so 0 <= CAML <= ML."""
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, n, h, 3, generator=g, dtype=torch.float64)
    idx = torch.randint(0, n, (b, 1, h, 3), generator=g)
    caml = CAMLLoss(to_onehot_y=True, softmax=True)(logits, idx).item()
    ml = MultiplicativeLoss(to_onehot_y=True, softmax=True)(logits, idx).item()
    assert 0.0 <= caml <= ml * (1 + 1e-12)
    ref = np_caml(logits.numpy(), np_onehot(idx.numpy(), n), "softmax")
    np.testing.assert_allclose(caml, ref["weight"] * ref["ml"], rtol=1e-9, atol=1e-15)
