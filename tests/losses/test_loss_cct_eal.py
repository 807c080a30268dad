# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
from __future__ import annotations

import math

import pytest
import torch
from helpers import patch_all_reduce, skewed_batch_stream
from helpers import reduce_values as reduce
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

import monai_calib.losses.cct_eal as cct_module
from monai_calib.losses import CCTEALLoss

REDUCTIONS = ["mean", "sum", "none"]
K = 4


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def plain_temperatures(raw: torch.Tensor, t_min: float, t_max: float) -> list:
    return [min(max(softplus(r), t_min), t_max) for r in raw.tolist()]


def plain_softmax(row: list) -> list:
    mx = max(row)
    den = sum(math.exp(v - mx) for v in row)
    return [math.exp(v - mx) / den for v in row]


class PlainCCT:
    """Spec §3.1 written plainly with Python floats."""

    def __init__(self, k: int, alpha: float, momentum: float = 0.9, eps: float = 1e-12) -> None:
        self.ema = [1.0 / k] * k
        self.alpha = alpha
        self.m = momentum
        self.eps = eps

    def __call__(self, z: torch.Tensor, y: torch.Tensor, temps: list, update: bool = True):
        labels = y.tolist()
        ces, ents, ts = [], [], []
        for row, label in zip(z.tolist(), labels, strict=True):
            t = temps[label]
            ts.append(t)
            p = plain_softmax([v / t for v in row])
            ces.append(-math.log(p[label]))
            ents.append(-sum(pk * math.log(pk) for pk in p if pk > 0))
        ema = list(self.ema)
        if update:
            freq = [labels.count(c) / max(len(labels), 1) for c in range(len(ema))]
            ema = [self.m * f + (1 - self.m) * fh for f, fh in zip(ema, freq, strict=True)]
            self.ema = ema
        h_star = -sum(max(f, self.eps) * math.log(max(f, self.eps)) for f in ema)
        h_pred = sum(ents) / len(ents)
        penalty = self.alpha * (h_pred - h_star) ** 2
        return [c + penalty for c in ces], ces, h_pred, h_star, sum(ts) / len(ts)


def batch_stream(n: int, b: int = 8, scale: float = 3.0, seed: int = 0) -> list:
    return skewed_batch_stream(n, [0.55, 0.25, 0.15, 0.05], b, scale, seed)


def spread_temperatures(loss_fn: CCTEALLoss, values: list) -> None:
    """Set raw_temperatures to the inverse softplus of ``values``."""
    with torch.no_grad():
        raw = [math.log(math.expm1(v)) for v in values]
        loss_fn.raw_temperatures.copy_(torch.tensor(raw, dtype=loss_fn.raw_temperatures.dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha", [None, 2.0])
def test_matches_plain_float64_over_stream(reduction: str, alpha: float | None) -> None:
    loss_fn = CCTEALLoss(K, reduction=reduction).double()
    spread_temperatures(loss_fn, [0.8, 1.0, 1.3, 1.45])
    if alpha is not None:
        loss_fn.set_progress(0.3 * alpha / 8.0)  # inside the warm-up: alpha = alpha
    temps = plain_temperatures(loss_fn.raw_temperatures, 0.75, 1.5)
    plain = PlainCCT(K, alpha=8.0 if alpha is None else alpha)
    for z, y in batch_stream(4):
        out = loss_fn(z, y)
        per_sample, ces, h_pred, h_star, t_mean = plain(z, y, temps)
        expected = reduce(per_sample, reduction)
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            loss_fn.label_ema, torch.tensor(plain.ema, dtype=torch.float64), rtol=1e-12, atol=0
        )
        s = loss_fn.last_stats
        assert set(s) == {"loss", "ce", "entropy", "target_entropy", "alpha", "mean_temperature"}
        assert s["ce"].item() == pytest.approx(sum(ces) / len(ces), rel=1e-10)
        assert s["entropy"].item() == pytest.approx(h_pred, rel=1e-10)
        assert s["target_entropy"].item() == pytest.approx(h_star, rel=1e-10)
        assert s["mean_temperature"].item() == pytest.approx(t_mean, rel=1e-10)
        assert s["alpha"].item() == pytest.approx(plain.alpha, rel=1e-12)
        assert s["loss"].item() == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-10)


@pytest.mark.parametrize("momentum", [0.9, 0.0, 0.5])
def test_ema_follows_spec_over_stream(momentum: float) -> None:
    loss_fn = CCTEALLoss(3, momentum=momentum).double()
    assert loss_fn.label_ema.tolist() == pytest.approx([1 / 3] * 3)
    f = loss_fn.label_ema.tolist()  # 1/3 rounded to float32 before .double()
    for y in ([0, 0, 1], [2], [1, 1, 1, 1, 0], [0, 2]):
        loss_fn(torch.randn(len(y), 3, dtype=torch.float64), torch.tensor(y))
        f = [momentum * fk + (1 - momentum) * y.count(k) / len(y) for k, fk in enumerate(f)]
        assert loss_fn.label_ema.tolist() == pytest.approx(f, rel=1e-12)
    assert sum(f) == pytest.approx(1.0)


def test_warmup_schedule() -> None:
    loss_fn = CCTEALLoss(K, alpha_max=8.0, warmup_ratio=0.3)
    assert loss_fn.alpha.item() == 8.0  # no warm-up unless set_progress is called
    for progress in (-0.5, 0.0, 0.1, 0.15, 0.2999, 0.3, 0.7, 1.0, 3.0):
        loss_fn.set_progress(progress)
        clipped = min(max(progress, 0.0), 1.0)
        expected = 8.0 * clipped / 0.3 if clipped < 0.3 else 8.0
        assert loss_fn.alpha.item() == pytest.approx(expected, rel=1e-6)
        assert loss_fn.progress.item() == pytest.approx(clipped)
    no_warmup = CCTEALLoss(K, alpha_max=2.0, warmup_ratio=0.0)
    no_warmup.set_progress(0.0)
    assert no_warmup.alpha.item() == 2.0
    with pytest.raises(ValueError, match="progress"):
        loss_fn.set_progress(float("nan"))
    # alpha is used by forward
    loss_fn.set_progress(0.15)
    loss_fn(torch.randn(4, K), torch.tensor([0, 1, 2, 3]))
    assert loss_fn.last_stats["alpha"].item() == pytest.approx(4.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_logits_and_temperatures(reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, K, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 1])
    loss_fn = CCTEALLoss(K, alpha_max=3.0, reduction=reduction).double().eval()
    spread_temperatures(loss_fn, [0.8, 1.0, 1.2, 1.4])
    raw = loss_fn.raw_temperatures.detach().clone().requires_grad_(True)

    def fn(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return functional_call(loss_fn, {"raw_temperatures": r}, (x, y))

    assert torch.autograd.gradcheck(fn, (z, raw))


def test_gradcheck_in_training_mode_with_staging() -> None:
    """H* does not depend on the logits, so the training-mode loss is differentiable as is."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, K, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([3, 1, 2, 3, 0])
    loss_fn = CCTEALLoss(K, alpha_max=1.0).double()
    loss_fn.update_state_in_forward = False
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, y), (z,))


def test_clamp_freezes_temperatures_outside_bounds() -> None:
    loss_fn = CCTEALLoss(K).double()
    spread_temperatures(loss_fn, [0.5, 1.0, 2.0, 1.2])  # classes 0 and 2 outside [0.75, 1.5]
    assert loss_fn.temperatures.tolist() == pytest.approx([0.75, 1.0, 1.5, 1.2])
    z = torch.randn(8, K, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    loss_fn(z, y).backward()
    grad = loss_fn.raw_temperatures.grad
    assert grad[0].item() == 0.0 and grad[2].item() == 0.0
    assert grad[1].item() != 0.0 and grad[3].item() != 0.0


def test_temperature_gradient_only_from_own_class() -> None:
    loss_fn = CCTEALLoss(K, alpha_max=0.0).double()
    loss_fn(torch.randn(3, K, dtype=torch.float64), torch.tensor([1, 1, 3])).backward()
    grad = loss_fn.raw_temperatures.grad
    assert grad[0].item() == 0.0 and grad[2].item() == 0.0 and grad[1].item() != 0.0


def test_scale_logits_rules() -> None:
    loss_fn = CCTEALLoss(K).double()
    spread_temperatures(loss_fn, [0.8, 1.0, 1.25, 1.45])
    temps = plain_temperatures(loss_fn.raw_temperatures, 0.75, 1.5)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, K, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, K, (6,), generator=g)
    rows = z.tolist()

    def scaled(ts: list) -> torch.Tensor:
        return torch.tensor(
            [[v / t for v in r] for r, t in zip(rows, ts, strict=True)], dtype=torch.float64
        )

    t_pred = [temps[max(range(K), key=r.__getitem__)] for r in rows]
    t_exp = [sum(p * t for p, t in zip(plain_softmax(r), temps, strict=True)) for r in rows]
    t_oracle = [temps[c] for c in y.tolist()]
    close = {"rtol": 1e-12, "atol": 1e-12, "check_dtype": False}
    torch.testing.assert_close(loss_fn.scale_logits(z, "none"), z, **close)
    torch.testing.assert_close(loss_fn.scale_logits(z, "predicted"), scaled(t_pred), **close)
    torch.testing.assert_close(loss_fn.scale_logits(z, "expected"), scaled(t_exp), **close)
    torch.testing.assert_close(
        loss_fn.scale_logits(z, "oracle", target=y), scaled(t_oracle), **close
    )
    torch.testing.assert_close(
        loss_fn.scale_logits(z, "oracle", target=torch.eye(K)[y]), scaled(t_oracle), **close
    )
    # default rule is the constructor's inference_rule
    torch.testing.assert_close(loss_fn.scale_logits(z), scaled(t_pred), **close)
    loss_fn.inference_rule = "expected"
    torch.testing.assert_close(loss_fn.scale_logits(z), scaled(t_exp), **close)
    # same dtype back, no graph
    out = loss_fn.float().scale_logits(z.half(), "expected")
    assert out.dtype == torch.float16 and not out.requires_grad


def test_scale_logits_errors() -> None:
    loss_fn = CCTEALLoss(K)
    z = torch.randn(3, K)
    with pytest.raises(ValueError, match="target"):
        loss_fn.scale_logits(z, "oracle")
    with pytest.raises(ValueError, match="'label'"):
        loss_fn.scale_logits(z, "label")
    with pytest.raises(ValueError, match="num_classes"):
        loss_fn.scale_logits(torch.randn(3, K + 1))
    with pytest.raises(ValueError, match=r"By 'oracel', did you mean 'oracle'"):
        CCTEALLoss(K, inference_rule="oracel")


def test_no_state_change_in_eval_and_reference_mode() -> None:
    (z0, y0), (z1, y1) = batch_stream(2, seed=4)
    loss_fn = CCTEALLoss(K).double()
    loss_fn(z0, y0)
    before = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    loss_fn.eval()
    out = loss_fn(z1, y1)
    assert not loss_fn.has_pending_state
    for k, v in loss_fn.state_dict().items():
        assert torch.equal(v, before[k]), k
    plain = PlainCCT(K, alpha=8.0)
    plain.ema = before["label_ema"].tolist()
    temps = plain_temperatures(loss_fn.raw_temperatures, 0.75, 1.5)
    per_sample = plain(z1, y1, temps, update=False)[0]
    assert out.item() == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-10)

    ref = CCTEALLoss(K, reference_mode=True).double().eval()
    ref(z1, y1)
    plain = PlainCCT(K, alpha=8.0)
    plain(z1, y1, temps)
    assert ref.label_ema.tolist() == pytest.approx(plain.ema, rel=1e-12)


def test_staged_update_matches_in_forward_path() -> None:
    eager, staged = CCTEALLoss(K).double(), CCTEALLoss(K).double()
    staged.update_state_in_forward = False
    for z, y in batch_stream(3, seed=5):
        out_eager = eager(z, y)
        out_staged = staged(z, y)
        assert staged.label_ema.tolist() != eager.label_ema.tolist()  # not committed yet
        assert staged.update_state()
        torch.testing.assert_close(out_staged, out_eager, rtol=0, atol=0)
        torch.testing.assert_close(staged.label_ema, eager.label_ema, rtol=0, atol=0)


def test_state_dict_round_trip() -> None:
    src = CCTEALLoss(K)
    opt = torch.optim.SGD(src.parameters(), lr=0.5)
    stream = [(z.float(), y) for z, y in batch_stream(6, seed=6)]
    for i, (z, y) in enumerate(stream[:3]):
        src.set_progress(i / 10)
        opt.zero_grad()
        src(z, y).backward()
        opt.step()
    sd = src.state_dict()
    assert set(sd) == {"raw_temperatures", "label_ema", "alpha", "progress"}
    dst = CCTEALLoss(K)
    dst.load_state_dict(sd)
    assert dst.alpha.item() == src.alpha.item() != 8.0
    for z, y in stream[3:]:
        torch.testing.assert_close(dst(z, y), src(z, y), rtol=0, atol=0)
        torch.testing.assert_close(dst.label_ema, src.label_ema, rtol=0, atol=0)
        torch.testing.assert_close(dst.scale_logits(z), src.scale_logits(z), rtol=0, atol=0)


def test_sync_dist_uses_global_batch_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a second rank (batch of 3 labels) through ``all_reduce_sum``."""
    other_labels = torch.tensor([3, 3, 2])
    other = torch.cat([torch.bincount(other_labels, minlength=K), torch.tensor([3])]).double()
    calls = patch_all_reduce(monkeypatch, cct_module, other)
    loss_fn = CCTEALLoss(K).double()
    y = torch.tensor([0, 0, 1, 2, 0])
    loss_fn(torch.randn(5, K, dtype=torch.float64), y)
    assert calls == [torch.Size([K + 1])]
    both = y.tolist() + other_labels.tolist()
    expected = [0.9 / K + 0.1 * both.count(k) / len(both) for k in range(K)]
    assert loss_fn.label_ema.tolist() == pytest.approx(expected, rel=1e-12)
    loss_fn.eval()
    loss_fn(torch.randn(5, K, dtype=torch.float64), y)
    CCTEALLoss(K, sync_dist=False)(torch.randn(5, K), y)
    assert len(calls) == 1


def test_class_count_other_than_num_classes_raises() -> None:
    """The other bad inputs are in tests/reliability/test_reliability_inputs.py."""
    loss_fn = CCTEALLoss(K)
    with pytest.raises(ValueError, match=r"input must have num_classes=4 columns, got shape"):
        loss_fn(torch.randn(3, K - 1), torch.tensor([0, 1, 2]))
    assert loss_fn.label_ema.tolist() == pytest.approx([1 / K] * K)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 1},
        {"alpha_max": -1.0},
        {"warmup_ratio": 1.5},
        {"momentum": -0.1},
        {"temperature_min": 1.5, "temperature_max": 0.75},
        {"eps": 0.0},
        {"reduction": "max"},
    ],
)
def test_bad_constructor_arguments(kwargs: dict) -> None:
    kwargs = {"num_classes": K, **kwargs}
    with pytest.raises(ValueError):
        CCTEALLoss(**kwargs)


def test_batch_of_one_all_target_layouts() -> None:
    z = torch.randn(1, K, dtype=torch.float64)
    outs = []
    for t in (torch.tensor([2]), torch.tensor([[2]]), torch.eye(K)[2:3], torch.tensor([2.0])):
        loss_fn = CCTEALLoss(K).double()
        outs.append(loss_fn(z, t))
        assert loss_fn.label_ema.tolist() == pytest.approx([0.225, 0.225, 0.325, 0.225])
    temps = plain_temperatures(CCTEALLoss(K).double().raw_temperatures, 0.75, 1.5)
    expected = PlainCCT(K, alpha=8.0)(z, torch.tensor([2]), temps)[0][0]
    for out in outs:
        assert out.item() == pytest.approx(expected, rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 12), scale=st.floats(0.0, 50.0), seed=st.integers(0, 2**16))
def test_properties(b: int, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, K, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, K, (b,), generator=g)
    per_sample = CCTEALLoss(K, reduction="none").double()(z, y)
    loss_fn = CCTEALLoss(K).double()
    mean = loss_fn(z, y)
    assert per_sample.shape == (b,) and torch.isfinite(per_sample).all()
    torch.testing.assert_close(per_sample.mean(), mean)
    assert mean.item() >= loss_fn.last_stats["ce"].item() >= 0  # the alignment term is >= 0
    assert loss_fn.label_ema.sum().item() == pytest.approx(1.0)
    # every label-free rule keeps the argmax
    for rule in ("predicted", "expected"):
        assert torch.equal(loss_fn.scale_logits(z, rule).argmax(1), z.argmax(1))
