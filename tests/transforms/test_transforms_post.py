# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Inference post-transforms: TemperatureScale(d), CCTEALProbability(d), SquaredSigmoid(d)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.transforms import Compose, MapTransform, Transform

from monai_calib.calibration import TemperatureScaler
from monai_calib.losses.cct_eal import CCTEALLoss
from monai_calib.losses.mit import MiTLoss
from monai_calib.losses.tet import TETLoss
from monai_calib.transforms import (
    CCTEALProbability,
    CCTEALProbabilityd,
    SquaredSigmoid,
    SquaredSigmoidd,
    TemperatureScale,
    TemperatureScaled,
)

K = 4


def softmax64(z: np.ndarray, axis: int) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


# ------------------------------------------------------------------ TemperatureScale


@pytest.mark.parametrize("shape, dim", [((K,), 0), ((K, 3, 2), 0), ((5, K), 1), ((5, K, 3), 1)])
def test_temperature_scale_float(shape, dim):
    z = logits(*shape)
    out = TemperatureScale(0.7, dim=dim)(z)
    expected = softmax64(z.double().numpy() / 0.7, axis=dim)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-7)
    scaled = TemperatureScale(0.7, softmax=False, dim=dim)(z)
    np.testing.assert_allclose(scaled.numpy(), z.double().numpy() / 0.7, rtol=1e-6)


def test_temperature_scale_numpy_in_numpy_out():
    z = logits(K).double().numpy()
    out = TemperatureScale(2.0)(z)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, softmax64(z / 2.0, 0), rtol=1e-12)


def test_temperature_scale_reads_mit_temperature_at_call_time():
    loss = MiTLoss(K, init_temperature=1.0)
    transform = TemperatureScaled(keys="pred", temperature=loss)
    loss.set_temperature(2.5)  # e.g. a checkpoint loaded after the transform was built
    z = logits(K)
    out = transform({"pred": z, "label": torch.tensor([1])})
    t = float(loss.temperature)
    assert t == pytest.approx(2.5, rel=1e-5)
    np.testing.assert_allclose(out["pred"].numpy(), softmax64(z.double().numpy() / t, 0), rtol=1e-5)
    assert torch.equal(out["label"], torch.tensor([1]))
    # same values as the loss's own inference helper on a batch
    batch = logits(6, K, seed=1)
    np.testing.assert_allclose(
        TemperatureScale(loss, softmax=False, dim=1)(batch).numpy(),
        loss.scale_logits(batch).numpy(),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "holder",
    [TETLoss(temperature=0.3), MiTLoss(K, init_temperature=2.5), TemperatureScaler(1.7)],
    ids=["TETLoss", "MiTLoss", "TemperatureScaler"],
)
def test_every_temperature_holder_has_a_0d_tensor_temperature(holder):
    """One meaning of ``temperature``, a detached 0-d tensor: any holder drives the transform."""
    t = holder.temperature
    assert isinstance(t, torch.Tensor) and t.ndim == 0 and not t.requires_grad
    z = logits(5, K, seed=3)
    expected = softmax64(z.double().numpy() / float(t), axis=1)
    np.testing.assert_allclose(TemperatureScale(holder, dim=1)(z).numpy(), expected, rtol=1e-5)


def test_temperature_scale_tet():
    z = logits(K)
    out = TemperatureScale(TETLoss(temperature=0.5))(z)
    np.testing.assert_allclose(out.numpy(), softmax64(z.double().numpy() / 0.5, 0), rtol=1e-5)
    plain = TemperatureScale(TETLoss(temperature=0.5, apply_temperature_at_inference=False))(z)
    np.testing.assert_allclose(plain.numpy(), softmax64(z.double().numpy(), 0), rtol=1e-5)


def test_temperature_scale_errors():
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScale(0.0)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScale(float("nan"))
    with pytest.raises(TypeError, match="CCTEALProbability"):
        TemperatureScale(CCTEALLoss(K))
    with pytest.raises(TypeError, match="temperature"):
        TemperatureScale("1.0")
    with pytest.raises(TypeError, match="floating"):
        TemperatureScale(1.0)(torch.arange(K))
    with pytest.raises(ValueError, match="finite"):
        TemperatureScale(1.0)(torch.tensor([0.0, float("inf")]))
    with pytest.raises(ValueError, match="dim"):
        TemperatureScale(1.0, dim=2)(logits(K))


# ------------------------------------------------------------------ CCTEALProbability


def trained_cct_eal() -> CCTEALLoss:
    loss = CCTEALLoss(K)
    with torch.no_grad():  # distinct per-class temperatures inside [0.75, 1.5]
        loss.raw_temperatures.copy_(torch.tensor([0.9, 1.1, 1.3, 0.8]).expm1().log())
    return loss


def plain_cct_eal(z: np.ndarray, temps: np.ndarray, rule: str) -> np.ndarray:
    """Rows of z are samples (B, K); float64 loop."""
    out = np.empty_like(z)
    for i, row in enumerate(z):
        if rule == "none":
            t = 1.0
        elif rule == "predicted":
            t = temps[int(np.argmax(row))]
        else:
            t = float((softmax64(row, 0) * temps).sum())
        out[i] = softmax64(row / t, 0)
    return out


@pytest.mark.parametrize("rule", ["none", "predicted", "expected"])
def test_cct_eal_rules_match_plain_and_loss(rule):
    loss = trained_cct_eal()
    temps = loss.temperatures.double().numpy()
    np.testing.assert_allclose(temps, [0.9, 1.1, 1.3, 0.8], rtol=1e-6)
    batch = logits(7, K)
    expected = plain_cct_eal(batch.double().numpy(), temps, rule)
    got = CCTEALProbability(loss, rule=rule, dim=1)(batch)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-7)
    # same scaled logits as the loss's own helper
    np.testing.assert_allclose(
        CCTEALProbability(loss, rule=rule, softmax=False, dim=1)(batch).numpy(),
        loss.scale_logits(batch, rule=rule).numpy(),
        rtol=1e-6,
    )
    # per-item (decollated, dim=0) and exported temperatures give the same values
    exported = CCTEALProbability(loss.temperatures.tolist(), rule=rule)
    for i in range(batch.shape[0]):
        np.testing.assert_allclose(exported(batch[i]).numpy(), expected[i], rtol=1e-5, atol=1e-7)


def test_cct_eal_dense_layout_and_default_rule():
    loss = trained_cct_eal()
    assert CCTEALProbability(loss).rule == loss.inference_rule
    dense = logits(K, 3, 2)  # (K, H, W)
    got = CCTEALProbabilityd(keys=["pred"], temperatures=loss, rule="expected")({"pred": dense})
    rows = dense.permute(1, 2, 0).reshape(-1, K).double().numpy()
    expected = plain_cct_eal(rows, loss.temperatures.double().numpy(), "expected")
    expected = expected.reshape(3, 2, K).transpose(2, 0, 1)
    np.testing.assert_allclose(got["pred"].numpy(), expected, rtol=1e-5, atol=1e-7)


def test_cct_eal_errors():
    loss = trained_cct_eal()
    with pytest.raises(ValueError, match="oracle"):
        CCTEALProbability(loss, rule="oracle")
    with pytest.raises(ValueError, match="'mean'"):
        CCTEALProbability(loss, rule="mean")
    with pytest.raises(ValueError, match="temperatures"):
        CCTEALProbability([1.0, -1.0])
    with pytest.raises(ValueError, match="temperatures"):
        CCTEALProbability([[1.0, 1.0]])
    with pytest.raises(TypeError, match="temperatures"):
        CCTEALProbability(2.0)
    with pytest.raises(ValueError, match="classes"):
        CCTEALProbability(loss)(logits(K + 1))


# ------------------------------------------------------------------ SquaredSigmoid


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=8))
def test_squared_sigmoid_property(values):
    z = torch.tensor(values, dtype=torch.float64)
    p = SquaredSigmoid()(z)
    expected = (1.0 / (1.0 + np.exp(-np.array(values)))) ** 2
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-300)
    assert bool(((p >= 0) & (p <= 1)).all())


def test_squared_sigmoid_dict_and_compose():
    z = logits(2, K)
    out = Compose([SquaredSigmoidd(keys="pred", allow_missing_keys=True)])({"pred": z})
    np.testing.assert_allclose(out["pred"].numpy(), torch.sigmoid(z.double()).numpy() ** 2, 1e-6)
    assert Compose([SquaredSigmoidd(keys="pred", allow_missing_keys=True)])({"x": 1}) == {"x": 1}
    with pytest.raises(KeyError):
        SquaredSigmoidd(keys="pred")({"x": z})


def test_monai_transform_types():
    for cls in (TemperatureScale, CCTEALProbability, SquaredSigmoid):
        assert issubclass(cls, Transform)
    for cls in (TemperatureScaled, CCTEALProbabilityd, SquaredSigmoidd):
        assert issubclass(cls, MapTransform)
