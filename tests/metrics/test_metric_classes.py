# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MONAI-style metric classes: streaming == one-shot, label reductions against plain float64
computations, the MONAI compatibility mode against ``monai.metrics.CalibrationErrorMetric``,
Brier/NLL against scikit-learn, R-AUC against the functional API, and every error path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import CalibrationErrorMetric
from sklearn.metrics import log_loss

from monai_calib.metrics import (
    BrierScoreMetric,
    NLLMetric,
    PooledCalibrationErrorMetric,
    RetentionAUCMetric,
    brier_score,
    calibration_error,
    calibration_statistics,
    negative_log_likelihood,
    retention_auc,
    retention_curve,
)


def _probs(n: int, k: int, seed: int, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, k, (n,), generator=g)
    return p, y


def _plain_binned(conf: np.ndarray, correct: np.ndarray, m: int, reduction: str) -> float:
    """Plain loop: right-closed equal-width bins (b/M, (b+1)/M], 0.0 in the first bin."""
    bins = np.clip(np.ceil(conf * m) - 1, 0, m - 1).astype(int)
    gaps, weights = [], []
    for b in range(m):
        sel = bins == b
        if sel.any():
            gaps.append(abs(correct[sel].mean() - conf[sel].mean()))
            weights.append(sel.sum() / conf.size)
    gaps_a = np.array(gaps)
    if reduction == "expected":
        return float((gaps_a * np.array(weights)).sum())
    if reduction == "average":
        return float(gaps_a.mean())
    return float(gaps_a.max())


def _plain_per_class(p: np.ndarray, onehot: np.ndarray, m: int, reduction: str) -> np.ndarray:
    return np.array([_plain_binned(p[:, c], onehot[:, c], m, reduction) for c in range(p.shape[1])])


def _split_points(draw_sizes: list[int], n: int) -> list[int]:
    cuts = sorted({min(max(s, 1), n - 1) for s in draw_sizes})
    return [0, *cuts, n]


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("target", ["top_label", "classwise"])
@pytest.mark.parametrize("reduction", ["expected", "average", "maximum"])
def test_equal_width_matches_plain_computation(target, reduction):
    p, y = _probs(300, 4, seed=1)
    metric = PooledCalibrationErrorMetric(num_bins=10, target=target, reduction=reduction)
    for i in range(0, 300, 64):
        metric(p[i : i + 64], y[i : i + 64])
    pn, yn = p.numpy(), y.numpy()
    if target == "top_label":
        expected = _plain_binned(pn.max(1), (pn.argmax(1) == yn).astype(float), 10, reduction)
    else:
        expected = _plain_per_class(pn, np.eye(4)[yn], 10, reduction).mean()
    assert metric.aggregate().item() == pytest.approx(expected, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 119), min_size=0, max_size=5),
    target=st.sampled_from(["top_label", "classwise", "marginal"]),
    binning=st.sampled_from(["equal_width", "equal_mass"]),
    seed=st.integers(0, 10_000),
)
def test_streaming_over_random_splits_equals_one_shot(cuts, target, binning, seed):
    p, y = _probs(120, 3, seed)
    if target == "marginal":
        g = torch.Generator().manual_seed(seed + 1)
        p = torch.rand(120, 3, generator=g, dtype=torch.float64)
        y = (torch.rand(120, 3, generator=g) < p).double()
    metric = PooledCalibrationErrorMetric(num_bins=7, target=target, binning=binning)
    bounds = _split_points(cuts, 120)
    for a, b in itertools.pairwise(bounds):
        metric(p[a:b], y[a:b])
    one_shot = calibration_error(p, y, num_bins=7, target=target, binning=binning)
    assert metric.aggregate().item() == pytest.approx(one_shot.item(), abs=1e-12)
    stats = metric.statistics()
    ref = calibration_statistics(p, y, num_bins=7, target=target, binning=binning)
    torch.testing.assert_close(stats, ref, rtol=0, atol=1e-9)


def test_streaming_memory_is_fixed_and_dense_input_pools_voxels():
    g = torch.Generator().manual_seed(3)
    metric = PooledCalibrationErrorMetric(num_bins=12, target="classwise")
    ps, ys = [], []
    for _ in range(6):
        p = torch.softmax(torch.randn(2, 3, 5, 4, generator=g), dim=1)
        y = torch.randint(0, 3, (2, 1, 5, 4), generator=g)
        out = metric(p, y)
        assert out.shape == (1, 3, 12, 3)  # one fixed-size item per call
        ps.append(p)
        ys.append(y)
    # one running sum, not one item per call or per voxel
    assert metric.get_buffer().shape == (1, 3, 12, 3)
    assert len(metric) == 1
    ref = calibration_error(torch.cat(ps), torch.cat(ys), num_bins=12, target="classwise")
    assert metric.aggregate().item() == pytest.approx(ref.item(), abs=1e-12)
    # every voxel counted once per class
    assert metric.statistics()[..., 0].sum().item() == 6 * 2 * 5 * 4 * 3


def test_list_of_channel_first_tensors_and_logits():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(10, 4, generator=g)
    y = torch.randint(0, 4, (10,), generator=g)
    metric = PooledCalibrationErrorMetric(num_bins=5, logits=True)
    metric([z[i] for i in range(10)], [y[i : i + 1] for i in range(10)])
    ref = calibration_error(torch.softmax(z, 1), y, num_bins=5)
    assert metric.aggregate().item() == pytest.approx(ref.item(), abs=1e-7)


def _per_item(metric, y_pred, y):
    """MONAI's own list path: one ``_compute_tensor`` call per channel-first item."""
    from monai.metrics.metric import IterationMetric

    out = IterationMetric._compute_list(metric, y_pred, y)
    metric.extend(*out) if isinstance(out, (list, tuple)) else metric.extend(out)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PooledCalibrationErrorMetric(num_bins=7),
        lambda: PooledCalibrationErrorMetric(num_bins=7, target="classwise"),
        lambda: PooledCalibrationErrorMetric(binning="equal_mass", target="classwise"),
        lambda: PooledCalibrationErrorMetric(target="marginal", include_background=False),
        BrierScoreMetric,
        NLLMetric,
        lambda: RetentionAUCMetric(num_points=20),
    ],
)
@pytest.mark.parametrize("dense", [False, True])
def test_decollated_list_is_one_batch_with_the_per_item_result(make, dense):
    """A decollated list (what MONAI's handlers pass) is computed as one stacked batch; the
    aggregate equals MONAI's item-by-item path, and ragged lists still work item by item."""
    g = torch.Generator().manual_seed(11)
    shape = (9, 3, 4, 5) if dense else (9, 3)
    p = torch.softmax(2 * torch.randn(*shape, generator=g), 1)
    y = torch.randint(0, 3, (9, 1, *shape[2:]), generator=g)
    onehot = torch.nn.functional.one_hot(y[:, 0], 3).movedim(-1, 1).float()
    marginal = getattr(make(), "target", None) == "marginal"  # multi-hot labels only
    for labels in (onehot,) if marginal else (y, onehot):
        batched, item_by_item = make(), make()
        calls: list[torch.Size] = []

        def counted(a, b, _compute=batched._compute_tensor, _calls=calls, **kw):
            _calls.append(a.shape)
            return _compute(a, b, **kw)

        batched._compute_tensor = counted
        batched(list(p), list(labels))
        assert calls == [p.shape]  # one call on the stacked batch
        _per_item(item_by_item, list(p), list(labels))
        torch.testing.assert_close(
            batched.aggregate(), item_by_item.aggregate(), rtol=1e-12, atol=1e-12
        )
    # ragged spatial sizes cannot be stacked: item by item, same result as the two halves
    if dense:
        ragged, halves = make(), make()
        items = list(p[:4]) + list(p[4:, :, :3])
        t = onehot if marginal else y
        ragged(items, list(t[:4]) + list(t[4:, :, :3]))
        halves(p[:4], t[:4])
        halves(p[4:, :, :3], t[4:, :, :3])
        torch.testing.assert_close(ragged.aggregate(), halves.aggregate(), rtol=1e-12, atol=1e-12)


def test_reset_and_get_not_nans():
    p, y = _probs(50, 3, seed=5)
    metric = PooledCalibrationErrorMetric(get_not_nans=True)
    metric(p[:10], y[:10])
    metric.reset()
    metric(p, y)
    value, not_nans = metric.aggregate()
    assert value.item() == pytest.approx(calibration_error(p, y).item(), abs=1e-12)
    assert not_nans.item() == 1


# ----------------------------------------------------------------------------- label reductions


@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_label_reductions_and_background(binning):
    g = torch.Generator().manual_seed(6)
    p = torch.rand(400, 4, generator=g, dtype=torch.float64)
    # label prevalences differ, so weighted != macro
    y = (torch.rand(400, 4, generator=g) < p * torch.tensor([0.2, 0.5, 0.8, 1.0])).double()
    kw = {"num_bins": 8, "binning": binning, "target": "marginal"}
    per_class = calibration_statistics(p, y, **kw)  # (4, 8, 3)
    gaps = torch.stack(
        [calibration_error(p[:, c : c + 1], y[:, c : c + 1], **kw) for c in range(4)]
    )
    prevalence = y.sum(0)

    def run(**extra):
        m = PooledCalibrationErrorMetric(**kw, **extra)
        m(p[:150], y[:150])
        m(p[150:], y[150:])
        return m.aggregate()

    assert run(label_reduction="macro").item() == pytest.approx(gaps.mean().item(), abs=1e-12)
    torch.testing.assert_close(run(label_reduction="none"), gaps, rtol=0, atol=1e-12)
    weighted = (gaps * prevalence).sum() / prevalence.sum()
    assert run(label_reduction="weighted").item() == pytest.approx(weighted.item(), abs=1e-12)
    no_bg = run(label_reduction="macro", include_background=False)
    assert no_bg.item() == pytest.approx(gaps[1:].mean().item(), abs=1e-12)
    if binning == "equal_width":
        # micro: every (sample, label) pair is one binary prediction of a single diagram
        micro = _plain_binned(p.numpy().ravel(), y.numpy().ravel(), 8, "expected")
        assert run(label_reduction="micro").item() == pytest.approx(micro, abs=1e-12)
        assert per_class.shape == (4, 8, 3)
    else:
        flat = calibration_error(p.reshape(-1, 1), y.reshape(-1, 1), **kw)
        assert run(label_reduction="micro").item() == pytest.approx(flat.item(), abs=1e-12)


# ----------------------------------------------------------------------------- MONAI compatibility


def _dense_case(seed: int, quantize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(2.0 * torch.randn(3, 4, 6, 5, generator=g), dim=1)
    if quantize:
        # many values exactly on MONAI's bin edges (k / 10), plus exact 0 and 1
        p = torch.round(p * 10) / 10
        p[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (3, 6, 5), generator=g), 4)
    return p, y.permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("reduction", ["expected", "average", "maximum"])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("quantize", [False, True])
def test_per_image_mode_reproduces_monai(reduction, include_background, quantize):
    ours = PooledCalibrationErrorMetric(
        num_bins=10, per_image=True, reduction=reduction, include_background=include_background
    )
    theirs = CalibrationErrorMetric(
        num_bins=10, calibration_reduction=reduction, include_background=include_background
    )
    for seed in (0, 1):
        p, y = _dense_case(seed, quantize)
        ours(p, y)
        theirs(p, y)
    # MONAI computes every batch of this mode: the numbers are MONAI's, bit for bit
    torch.testing.assert_close(
        ours.get_buffer(), theirs.get_buffer(), rtol=0, atol=0, equal_nan=True
    )
    assert ours.aggregate().item() == theirs.aggregate().item()
    for red in ("mean_batch", "mean_channel", "none"):
        torch.testing.assert_close(ours.aggregate(red), theirs.aggregate(red), rtol=0, atol=0)


@settings(max_examples=20, deadline=None)
@given(
    num_bins=st.integers(1, 25),
    grid=st.sampled_from([0, 4, 10, 20]),
    reduction=st.sampled_from(["expected", "average", "maximum"]),
    seed=st.integers(0, 10_000),
)
def test_per_image_mode_matches_monai_property(num_bins, grid, reduction, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3.0 * torch.randn(2, 3, 7, generator=g), dim=1)
    if grid:  # values on a grid hit MONAI's bin edges for many num_bins
        p = torch.round(p * grid) / grid
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 7), generator=g), 3)
    y = y.permute(0, 2, 1).float()
    ours = PooledCalibrationErrorMetric(num_bins=num_bins, per_image=True, reduction=reduction)
    theirs = CalibrationErrorMetric(num_bins=num_bins, calibration_reduction=reduction)
    torch.testing.assert_close(ours(p, y), theirs(p, y), rtol=0, atol=0, equal_nan=True)


def test_per_image_mode_indices_target_empty_channel_and_not_nans():
    p, y = _dense_case(2, quantize=False)
    theirs = CalibrationErrorMetric(num_bins=20, get_not_nans=True)
    ours = PooledCalibrationErrorMetric(num_bins=20, per_image=True, get_not_nans=True)
    theirs(p, y)
    ours(p, y.argmax(1, keepdim=True))  # indices are one-hot encoded like AsDiscrete(to_onehot)
    (a, na), (b, nb) = ours.aggregate(), theirs.aggregate()
    assert a.item() == b.item()
    assert na.item() == nb.item()


# ----------------------------------------------------------------------------- scores


def test_brier_and_nll_stream_and_match_sklearn():
    p, y = _probs(200, 5, seed=7)
    brier, nll = BrierScoreMetric(), NLLMetric()
    for i in range(0, 200, 33):
        brier(p[i : i + 33], y[i : i + 33])
        nll(p[i : i + 33], y[i : i + 33])
    onehot = np.eye(5)[y.numpy()]
    expected_brier = ((p.numpy() - onehot) ** 2).sum(1).mean()
    assert brier.aggregate().item() == pytest.approx(expected_brier, abs=1e-12)
    assert brier.aggregate().item() == pytest.approx(brier_score(p, y).item(), abs=1e-12)
    expected_nll = log_loss(y.numpy(), p.numpy(), labels=list(range(5)))
    assert nll.aggregate().item() == pytest.approx(expected_nll, abs=1e-9)
    assert nll.aggregate().item() == pytest.approx(negative_log_likelihood(p, y).item(), abs=1e-12)
    assert brier.get_buffer().shape == (1, 2)


def test_nll_logits_dense_and_multilabel():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 1, 4, 4), generator=g)
    m = NLLMetric(logits=True)
    m(z[:1], y[:1])
    m(z[1:], y[1:])
    ref = torch.nn.functional.cross_entropy(z, y[:, 0])
    assert m.aggregate().item() == pytest.approx(ref.item(), abs=1e-12)
    q = torch.rand(30, 2, generator=g, dtype=torch.float64)
    t = (torch.rand(30, 2, generator=g) < 0.5).double()
    b = BrierScoreMetric(multilabel=True)
    b(q, t)
    assert b.aggregate().item() == pytest.approx(((q - t) ** 2).mean().item(), abs=1e-12)


# ----------------------------------------------------------------------------- retention


@pytest.mark.parametrize("uncertainty", ["max_prob", "entropy"])
def test_retention_metric_matches_functional(uncertainty):
    p, y = _probs(150, 3, seed=9)
    m = RetentionAUCMetric(uncertainty=uncertainty, num_points=50)
    for i in range(0, 150, 40):
        m(p[i : i + 40], y[i : i + 40])
    ref = retention_auc(p, y, uncertainty=uncertainty, num_points=50)
    assert m.aggregate().item() == pytest.approx(ref.item(), abs=1e-12)
    f, a = m.curve()
    rf, ra = retention_curve(p, y, uncertainty=uncertainty, num_points=50)
    torch.testing.assert_close(f, rf)
    torch.testing.assert_close(a, ra)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_bins": 0}, "num_bins"),
        ({"binning": "quantile"}, "(?s)'quantile'.*equal_width"),
        ({"target": "top"}, "(?s)'top'.*top_label"),
        ({"reduction": "sum"}, "(?s)'sum'.*expected"),
        ({"norm": "l3"}, "(?s)'l3'.*l1"),
        ({"label_reduction": "mean"}, "(?s)'mean'.*macro"),
        ({"include_background": False}, "include_background"),
        ({"per_image": True, "binning": "equal_mass"}, "binning"),
        ({"per_image": True, "norm": "l2"}, "norm"),
        ({"per_image": True, "target": "top_label"}, "target"),
        ({"per_image": True, "logits": True}, "logits"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PooledCalibrationErrorMetric(**kwargs)


def test_usage_errors():
    p, y = _probs(10, 3, seed=10)
    m = PooledCalibrationErrorMetric()
    with pytest.raises(RuntimeError, match="no data"):
        m.aggregate()
    m(p, y)
    p4, y4 = _probs(10, 4, seed=10)
    mc = PooledCalibrationErrorMetric(target="classwise")
    mc(p, y)
    with pytest.raises(ValueError, match="number of classes"):
        mc(p4, y4)
    me = PooledCalibrationErrorMetric(binning="equal_mass")
    me(p, y)
    with pytest.raises(ValueError, match="number of classes"):
        me(p4, y4)
    with pytest.raises(ValueError, match="statistics"):
        m.statistics(binning="equal_mass")
    with pytest.raises(RuntimeError, match="per_image"):
        PooledCalibrationErrorMetric(per_image=True).statistics()
    with pytest.raises(ValueError, match="spatial"):
        PooledCalibrationErrorMetric(per_image=True)(p, torch.eye(3)[y])
    with pytest.raises(ValueError, match="probabilities"):
        m(p * 3, y)
    with pytest.raises(ValueError, match="eps"):
        NLLMetric(eps=1.0)
    with pytest.raises(ValueError, match="num_points"):
        RetentionAUCMetric(num_points=1)
    with pytest.raises(RuntimeError, match="no data"):
        BrierScoreMetric().aggregate()
