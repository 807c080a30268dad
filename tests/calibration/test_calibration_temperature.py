# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import math

import pytest
import torch

from monai_calib.calibration import TemperatureScaler, fit_temperature


def sample_dataset(n: int, k: int, t_true: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z and labels drawn from softmax(z / t_true): T* = t_true is the true temperature."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 4
    y = torch.multinomial(torch.softmax(z / t_true, dim=1), 1, generator=g).squeeze(1)
    return z, y


def mean_nll(z: torch.Tensor, y: torch.Tensor, t: float) -> float:
    logp = torch.log_softmax(z.double() / t, dim=1)
    return float(-logp[torch.arange(len(y)), y].mean())


def mean_nll_grid(z: torch.Tensor, y: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Mean NLL at each temperature of ``ts`` (float64), evaluated in chunks."""
    zd = z.double()
    out = []
    for chunk in ts.double().split(100):
        logp = torch.log_softmax(zd.unsqueeze(0) / chunk.view(-1, 1, 1), dim=2)
        out.append(-logp[:, torch.arange(len(y)), y].mean(dim=1))
    return torch.cat(out)


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_recovers_known_temperature(t_true: float) -> None:
    z, y = sample_dataset(20000, 5, t_true, seed=int(t_true * 10))
    t_hat = fit_temperature(z, y)
    assert abs(t_hat - t_true) / t_true < 0.05  # ~3.5 sampling standard deviations


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_grid_minimisation(dtype: torch.dtype) -> None:
    z, y = sample_dataset(2000, 4, 1.7, seed=3)
    z = (z * 0.6).to(dtype)  # the fitted T is then not the sampling temperature
    coarse = torch.linspace(math.log(0.1), math.log(10.0), 201, dtype=torch.float64).exp()
    i = int(mean_nll_grid(z, y, coarse).argmin())
    assert 0 < i < 200  # interior minimum
    fine = torch.linspace(float(coarse[i - 1]), float(coarse[i + 1]), 1001, dtype=torch.float64)
    fine_nll = mean_nll_grid(z, y, fine)
    j = int(fine_nll.argmin())
    t_hat = fit_temperature(z, y)
    step = float(fine[1] - fine[0])
    assert abs(t_hat - float(fine[j])) <= 2 * step
    assert mean_nll(z, y, t_hat) <= float(fine_nll[j]) + 1e-9


def test_label_layouts_and_scaler() -> None:
    z, y = sample_dataset(2000, 3, 2.0, seed=5)
    t = fit_temperature(z, y)
    assert fit_temperature(z, y.unsqueeze(1)) == pytest.approx(t, rel=1e-6)
    assert fit_temperature(z, torch.nn.functional.one_hot(y, 3)) == pytest.approx(t, rel=1e-6)
    assert fit_temperature(z.float(), y) == pytest.approx(t, rel=1e-4)

    scaler = TemperatureScaler()
    assert float(scaler.temperature) == 1.0
    assert list(scaler.parameters()) == []
    assert scaler.fit(z, y) is scaler
    assert float(scaler.temperature) == pytest.approx(t, rel=1e-9)
    torch.testing.assert_close(scaler(z), z / t)
    out16 = scaler(z.half())
    assert out16.dtype == torch.float16
    restored = TemperatureScaler()
    restored.load_state_dict(scaler.state_dict())
    assert float(restored.temperature) == pytest.approx(t, rel=1e-9)


def test_bad_input() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, K\)"):
        fit_temperature(torch.randn(4), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="labels has batch size 3 but input has batch size 4"):
        fit_temperature(z, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
        fit_temperature(z, torch.tensor([0, 1, 3, 0]))
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        fit_temperature(bad, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="max_iter"):
        fit_temperature(z, torch.tensor([0, 1, 2, 0]), max_iter=0)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScaler(temperature=-1.0)
