# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import math
import warnings

import pytest
import torch
from helpers import patch_all_reduce, skewed_batch_stream
from helpers import reduce_values as reduce
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

import monai_calib.losses.mit as mit_module
from monai_calib.losses import MiTLoss

REDUCTIONS = ["mean", "sum", "none"]
K = 5


def softplus(x: float) -> float:
    return math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x))


def plain_rows(z: torch.Tensor, y: torch.Tensor, t: float) -> tuple[list, list]:
    """Per-sample CE and entropy of softmax(z / t), written with Python floats."""
    ces, ents = [], []
    for row, label in zip(z.tolist(), y.tolist(), strict=True):
        s = [v / t for v in row]
        mx = max(s)
        den = sum(math.exp(v - mx) for v in s)
        p = [math.exp(v - mx) / den for v in s]
        ces.append(-math.log(p[label]))
        ents.append(-sum(pk * math.log(pk) for pk in p if pk > 0))
    return ces, ents


class PlainMiT:
    """The MiT update rule of spec §2.3 written plainly (Python floats)."""

    def __init__(self, k: int, t: float, lambda_max: float = 0.5) -> None:
        self.counts = [1.0] * k
        self.lam = 0.0
        self.step = 0
        self.t = t
        self.lambda_max = lambda_max

    def target_entropy(self, counts: list) -> float:
        tot = sum(counts)
        return -sum(c / tot * math.log(max(c / tot, 1e-12)) for c in counts)

    def __call__(self, z: torch.Tensor, y: torch.Tensor, update: bool = True) -> tuple:
        ces, ents = plain_rows(z, y, self.t)
        counts = list(self.counts)
        lam = self.lam
        if update:
            for label in y.tolist():
                counts[label] += 1
            h_star = self.target_entropy(counts)
            d = max(0.0, (h_star - sum(ents) / len(ents)) / math.log(len(counts) + 1e-12))
            step = self.step + 1
            lam = min(max(((step - 1) * self.lam + d) / step, 0.0), self.lambda_max)
            self.counts, self.lam, self.step = counts, lam, step
        per_sample = [c - lam * e for c, e in zip(ces, ents, strict=True)]
        return per_sample, ces, ents, lam


def batch_stream(n: int, b: int = 8, scale: float = 4.0, seed: int = 0) -> list:
    return skewed_batch_stream(n, [0.5, 0.2, 0.15, 0.1, 0.05], b, scale, seed)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [0.7, 2.47])
def test_matches_plain_float64_over_stream(reduction: str, temperature: float) -> None:
    loss_fn = MiTLoss(K, init_temperature=temperature, reduction=reduction).double()
    plain = PlainMiT(K, softplus(loss_fn.raw_temperature.item()) + 1e-6)
    for z, y in batch_stream(5):
        out = loss_fn(z, y)
        per_sample, ces, ents, lam = plain(z, y)
        expected = reduce(per_sample, reduction)
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
        stats = loss_fn.last_stats
        keys = {"loss", "ce", "entropy", "target_entropy", "dual_lambda", "temperature"}
        assert set(stats) == keys
        assert math.isclose(stats["ce"].item(), sum(ces) / len(ces), rel_tol=1e-10)
        assert math.isclose(stats["entropy"].item(), sum(ents) / len(ents), rel_tol=1e-10)
        assert math.isclose(stats["dual_lambda"].item(), lam, rel_tol=1e-10, abs_tol=1e-15)
        assert math.isclose(stats["loss"].item(), sum(per_sample) / len(per_sample), rel_tol=1e-9)
        assert math.isclose(
            stats["target_entropy"].item(), plain.target_entropy(plain.counts), rel_tol=1e-10
        )
        assert all(not v.requires_grad for v in stats.values())


@pytest.mark.parametrize("lambda_max", [0.5, 0.03])
def test_lambda_sequence_is_clipped_running_mean(lambda_max: float) -> None:
    loss_fn = MiTLoss(K, init_temperature=1.3, lambda_max=lambda_max).double()
    plain = PlainMiT(K, softplus(loss_fn.raw_temperature.item()) + 1e-6, lambda_max=lambda_max)
    lambdas, expected = [], []
    for z, y in batch_stream(8, scale=6.0, seed=3):
        loss_fn(z, y)
        plain(z, y)
        lambdas.append(loss_fn.dual_lambda.item())
        expected.append(plain.lam)
        assert loss_fn.step.item() == plain.step
        assert loss_fn.label_counts.tolist() == plain.counts
    assert lambdas == pytest.approx(expected, rel=1e-10, abs=1e-15)
    assert max(expected) > 0  # the stream exercises a positive entropy deficit
    if lambda_max < 0.1:
        assert max(expected) == lambda_max  # and the clip


def test_step_and_counts_update() -> None:
    loss_fn = MiTLoss(3)
    y = torch.tensor([0, 2, 2, 2])
    loss_fn(torch.randn(4, 3), y)
    assert loss_fn.step.dtype == torch.long and loss_fn.step.item() == 1
    assert loss_fn.label_counts.tolist() == [2.0, 1.0, 4.0]
    loss_fn(torch.randn(2, 3), torch.tensor([1, 1]))
    assert loss_fn.step.item() == 2
    assert loss_fn.label_counts.tolist() == [2.0, 3.0, 4.0]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_logits_and_temperature(reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (6,), generator=g)
    loss_fn = MiTLoss(4, init_temperature=1.7, reduction=reduction).double().eval()
    loss_fn.dual_lambda.fill_(0.3)  # committed lambda: a constant in eval mode
    raw = loss_fn.raw_temperature.detach().clone().requires_grad_(True)

    def fn(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return functional_call(loss_fn, {"raw_temperature": r}, (x, y))

    assert torch.autograd.gradcheck(fn, (z, raw))


def test_gradients_reach_network_and_temperature_in_training() -> None:
    net = torch.nn.Linear(3, K)
    loss_fn = MiTLoss(K, init_temperature=2.0)
    x, y = torch.randn(16, 3), torch.randint(0, K, (16,))
    loss_fn(net(x), y).backward()
    assert loss_fn.raw_temperature.grad is not None and loss_fn.raw_temperature.grad != 0
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_no_state_change_in_eval() -> None:
    loss_fn = MiTLoss(K)
    (z0, y0), (z1, y1) = batch_stream(2)
    loss_fn(z0.float(), y0)
    before = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    loss_fn.eval()
    out = loss_fn(z1.float(), y1)
    assert not loss_fn.has_pending_state
    for k, v in loss_fn.state_dict().items():
        assert torch.equal(v, before[k]), k
    # eval uses the committed lambda and counts
    lam = before["dual_lambda"].item()
    ces, ents = plain_rows(z1, y1, loss_fn.temperature.item())
    expected = sum(c - lam * e for c, e in zip(ces, ents, strict=True)) / len(ces)
    assert out.item() == pytest.approx(expected, rel=1e-5)
    assert loss_fn.last_stats["dual_lambda"].item() == lam


def test_reference_mode_updates_in_eval() -> None:
    loss_fn = MiTLoss(K, reference_mode=True).double().eval()
    plain = PlainMiT(K, loss_fn.temperature.item())
    for z, y in batch_stream(3):
        loss_fn(z, y)
        plain(z, y)
    assert loss_fn.step.item() == 3
    assert loss_fn.label_counts.tolist() == plain.counts
    assert loss_fn.dual_lambda.item() == pytest.approx(plain.lam, rel=1e-10)


def test_staged_update_matches_in_forward_path() -> None:
    eager = MiTLoss(K).double()
    staged = MiTLoss(K).double()
    staged.update_state_in_forward = False
    for z, y in batch_stream(4, seed=5):
        out_eager = eager(z, y)
        before = {k: v.clone() for k, v in staged.state_dict().items()}
        out_staged = staged(z, y)
        assert staged.has_pending_state
        for k, v in staged.state_dict().items():
            assert torch.equal(v, before[k]), f"{k} committed before update_state()"
        assert staged.update_state() is True
        assert staged.update_state() is False
        torch.testing.assert_close(out_staged, out_eager, rtol=0, atol=0)
        for k, v in staged.state_dict().items():
            torch.testing.assert_close(v, eager.state_dict()[k], rtol=0, atol=0)


@pytest.mark.parametrize("value", [0.01, 0.5, 1.0, 2.47, 37.0, 450.0])
def test_set_temperature_round_trip(value: float) -> None:
    loss_fn = MiTLoss(K).double()
    loss_fn.set_temperature(value)
    assert loss_fn.temperature.item() == pytest.approx(value + 1e-6, rel=1e-12)
    expected_raw = math.log(math.expm1(value))
    assert loss_fn.raw_temperature.item() == pytest.approx(expected_raw, rel=1e-12, abs=1e-12)
    f32 = MiTLoss(K, init_temperature=value)
    assert f32.temperature.item() == pytest.approx(value + 1e-6, rel=1e-5)
    assert f32.temperature.ndim == 0 and not f32.temperature.requires_grad


def test_set_temperature_rejects_bad_values() -> None:
    loss_fn = MiTLoss(K, init_temperature=2.0)
    before = loss_fn.raw_temperature.detach().clone()
    for bad in (0.0, -0.0, -1.0, float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match=r"temperature value must be finite and > 0, got"):
            loss_fn.set_temperature(bad)
        assert torch.equal(loss_fn.raw_temperature, before)  # unchanged


@pytest.mark.parametrize("value", [1000.0, 1e5, 0.05, 1e-9])
def test_set_temperature_clamps_out_of_range_values(value: float) -> None:
    loss_fn = MiTLoss(K, temperature_min=0.1, temperature_max=500.0)
    limit = 500.0 if value > 500.0 else 0.1
    with pytest.warns(UserWarning, match=rf"outside \[0.1, 500.0\]; clamped to {limit}"):
        loss_fn.set_temperature(value)
    # the stored parameter is the bound's, not the value's
    reference = MiTLoss(K, temperature_min=0.1, temperature_max=500.0, init_temperature=limit)
    assert torch.equal(loss_fn.raw_temperature, reference.raw_temperature)
    assert loss_fn.raw_temperature.item() == pytest.approx(math.log(math.expm1(limit)), rel=1e-6)
    assert loss_fn.temperature.item() == pytest.approx(limit, rel=1e-5)


def test_set_temperature_in_range_does_not_warn() -> None:
    loss_fn = MiTLoss(K, temperature_min=0.1, temperature_max=500.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (0.1, 2.5, 500.0):
            loss_fn.set_temperature(value)


def test_state_dict_round_trip() -> None:
    src = MiTLoss(K, init_temperature=1.5)
    opt = torch.optim.SGD(src.parameters(), lr=0.1)
    stream = [(z.float(), y) for z, y in batch_stream(6, seed=7)]
    for z, y in stream[:3]:
        opt.zero_grad()
        src(z, y).backward()
        opt.step()
    sd = src.state_dict()
    assert set(sd) == {"raw_temperature", "label_counts", "dual_lambda", "step"}
    dst = MiTLoss(K)
    dst.load_state_dict(sd)
    for z, y in stream[3:]:
        torch.testing.assert_close(dst(z, y), src(z, y), rtol=0, atol=0)
        for k, v in dst.state_dict().items():
            torch.testing.assert_close(v, src.state_dict()[k], rtol=0, atol=0)


def test_buffers_follow_dtype_conversion() -> None:
    loss_fn = MiTLoss(K).double()
    assert loss_fn.label_counts.dtype == torch.float64
    assert loss_fn.dual_lambda.dtype == torch.float64
    assert loss_fn.step.dtype == torch.long


def test_sync_dist_packs_counts_entropy_and_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a second rank through ``all_reduce_sum``: the statistics must be global."""
    (z1, y1), (z2, y2) = batch_stream(2, seed=11)
    z2, y2 = z2[:5], y2[:5]  # the other rank has a different batch size
    other = MiTLoss(K).double()
    other.update_state_in_forward = False
    other(z2, y2)
    _, ents2 = plain_rows(z2, y2, other.temperature.item())
    counts2 = torch.bincount(y2, minlength=K).double()
    other_packed = torch.cat([counts2, torch.tensor([sum(ents2), 5.0], dtype=torch.float64)])
    calls = patch_all_reduce(monkeypatch, mit_module, other_packed)
    loss_fn = MiTLoss(K).double()
    out = loss_fn(z1, y1)
    assert calls == [torch.Size([K + 2])]  # one collective per training step
    plain = PlainMiT(K, loss_fn.temperature.item())
    # the plain rule on the union of both ranks' batches gives the global state
    plain(torch.cat([z1, z2]), torch.cat([y1, y2]))
    assert loss_fn.label_counts.tolist() == plain.counts
    assert loss_fn.dual_lambda.item() == pytest.approx(plain.lam, rel=1e-10)
    # while the loss itself is the local batch mean
    ces, ents = plain_rows(z1, y1, loss_fn.temperature.item())
    local = sum(c - plain.lam * e for c, e in zip(ces, ents, strict=True)) / len(ces)
    assert out.item() == pytest.approx(local, rel=1e-10)
    # no collective in eval mode, nor with sync_dist=False
    loss_fn.eval()
    loss_fn(z1, y1)
    MiTLoss(K, sync_dist=False)(z1.float(), y1)
    assert len(calls) == 1


def test_class_count_other_than_num_classes_raises() -> None:
    """The other bad inputs are in tests/reliability/test_reliability_inputs.py."""
    loss_fn = MiTLoss(K)
    with pytest.raises(ValueError, match=r"input must have num_classes=5 columns, got shape"):
        loss_fn(torch.randn(3, K + 1), torch.tensor([0, 1, 2]))
    assert loss_fn.step.item() == 0 and not loss_fn.has_pending_state


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 1},
        {"num_classes": K, "temperature_min": 2.0, "temperature_max": 1.0},
        {"num_classes": K, "temperature_min": 0.0},
        {"num_classes": K, "init_temperature": 1000.0},
        {"num_classes": K, "lambda_max": -0.1},
        {"num_classes": K, "reduction": "max"},
    ],
)
def test_bad_constructor_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MiTLoss(**kwargs)
    with pytest.raises(TypeError, match="num_classes"):
        MiTLoss(5.0)  # type: ignore[arg-type]


def test_batch_of_one_all_target_layouts() -> None:
    z = torch.randn(1, K, dtype=torch.float64)
    targets = [torch.tensor([3]), torch.tensor([[3]]), torch.eye(K)[3:4]]
    outs = []
    for t in targets:
        loss_fn = MiTLoss(K).double()
        outs.append(loss_fn(z, t))
        assert loss_fn.label_counts.tolist() == [1.0, 1.0, 1.0, 2.0, 1.0]
    plain = PlainMiT(K, MiTLoss(K).double().temperature.item())
    expected = plain(z, torch.tensor([3]))[0][0]
    for out in outs:
        assert out.item() == pytest.approx(expected, rel=1e-10)


def test_scale_logits_divides_by_temperature() -> None:
    loss_fn = MiTLoss(K, init_temperature=2.5)
    z = torch.randn(4, K)
    torch.testing.assert_close(loss_fn.scale_logits(z), z / loss_fn.temperature)
    assert loss_fn.scale_logits(z.half()).dtype == torch.float16


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 12),
    scale=st.floats(0.0, 50.0),
    temperature=st.floats(0.05, 20.0),
    seed=st.integers(0, 2**16),
)
def test_properties_none_reduction_consistent_and_finite(
    b: int, scale: float, temperature: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, K, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, K, (b,), generator=g)
    loss_none = MiTLoss(K, init_temperature=temperature, reduction="none").double()
    loss_mean = MiTLoss(K, init_temperature=temperature).double()
    per_sample, mean = loss_none(z, y), loss_mean(z, y)
    assert per_sample.shape == (b,) and torch.isfinite(per_sample).all()
    torch.testing.assert_close(per_sample.mean(), mean)
    lam = loss_mean.dual_lambda.item()
    assert 0.0 <= lam <= loss_mean.lambda_max
    # entropy in [0, log K], CE >= 0
    ent = loss_mean.last_stats["entropy"].item()
    assert -1e-12 <= ent <= math.log(K) + 1e-12
    assert loss_mean.last_stats["ce"].item() >= 0


def test_many_classes_uses_log_softmax_path_and_matches() -> None:
    """K > 64 takes the ``torch.log_softmax`` branch of the fused kernel (as CUDA does)."""
    k = 70
    g = torch.Generator().manual_seed(9)
    z = torch.randn(5, k, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, k, (5,), generator=g)
    loss_fn = MiTLoss(k, init_temperature=1.4, reduction="none").double()
    plain = PlainMiT(k, loss_fn.temperature.item())
    torch.testing.assert_close(loss_fn(z, y), reduce(plain(z, y)[0], "none"), rtol=1e-10, atol=0)
    loss_fn.eval()
    raw = loss_fn.raw_temperature.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, r: functional_call(loss_fn, {"raw_temperature": r}, (x, y)),
        (z, raw),
        fast_mode=True,
    )
