# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for monai_calib.metrics.calibration_error (ECE / ACE / SCE / MCE / RMSCE + statistics)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib.metrics import (
    brier_score,
    calibration_error,
    calibration_error_from_statistics,
    calibration_statistics,
    negative_log_likelihood,
)

REDUCTIONS = ("expected", "average", "maximum")
NORMS = ("l1", "l2")


# ---------------------------------------------------------------- plain float64 references
def _np_bin_error(conf, correct, bins, num_bins, reduction, norm):
    """Calibration error of one group given explicit bin assignments (plain loops)."""
    n = len(conf)
    gaps, weights = [], []
    for b in range(num_bins):
        members = [i for i in range(n) if bins[i] == b]
        if not members:
            continue
        acc = sum(correct[i] for i in members) / len(members)
        cf = sum(conf[i] for i in members) / len(members)
        gaps.append(abs(acc - cf))
        weights.append(len(members) / n)
    if not gaps:
        return math.nan
    if reduction == "maximum":
        return max(gaps)
    if reduction == "expected":
        if norm == "l1":
            return sum(w * g for w, g in zip(weights, gaps, strict=True))
        return math.sqrt(sum(w * g * g for w, g in zip(weights, gaps, strict=True)))
    if norm == "l1":
        return sum(gaps) / len(gaps)
    return math.sqrt(sum(g * g for g in gaps) / len(gaps))


def _np_width_bins(conf, num_bins):
    # right-closed (l, u], 0 in the first bin, 1 in the last
    return [min(max(math.ceil(c * num_bins) - 1, 0), num_bins - 1) for c in conf]


def _np_mass_bins(conf, num_bins):
    # Nixon et al. equal mass: sorted ranks split into M nearly equal chunks (no ties in the data)
    order = np.argsort(conf, kind="stable")
    n = len(conf)
    bins = [0] * n
    for rank, i in enumerate(order):
        bins[i] = (rank * num_bins) // n
    return bins


def _np_group_error(conf, correct, num_bins, binning, reduction, norm):
    bins = (_np_width_bins if binning == "equal_width" else _np_mass_bins)(conf, num_bins)
    return _np_bin_error(conf, correct, bins, num_bins, reduction, norm)


def _np_top_label(p, y, num_bins, binning, reduction, norm):
    p = np.asarray(p, dtype=np.float64)
    conf = p.max(1).tolist()
    correct = (p.argmax(1) == np.asarray(y)).astype(float).tolist()
    return _np_group_error(conf, correct, num_bins, binning, reduction, norm)


def _np_classwise(p, y, num_bins, binning, reduction, norm):
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    per = [
        _np_group_error(
            p[:, k].tolist(), (y == k).astype(float).tolist(), num_bins, binning, reduction, norm
        )
        for k in range(p.shape[1])
    ]
    return float(np.mean(per))


def _np_marginal(p, t, num_bins, binning, reduction, norm):
    p = np.asarray(p, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    per = [
        _np_group_error(p[:, k].tolist(), t[:, k].tolist(), num_bins, binning, reduction, norm)
        for k in range(p.shape[1])
    ]
    return float(np.mean(per))


def _random_probs(n, k, seed, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, k, (n,), generator=g)
    return p.to(dtype), y


# ---------------------------------------------------------------- hand-computed examples
def test_hand_example_both_confidences_in_last_bin():
    # conf 0.95 (correct) and 1.0 (wrong) share the last of 10 bins:
    # acc = 1/2, conf = (0.95 + 1.0) / 2 -> ECE = |0.5 - 0.975|; torchmetrics 1.9 gives 0.525.
    p = torch.tensor([[0.05, 0.95], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    expected = abs(0.5 - (0.95 + 1.0) / 2)
    ece = calibration_error(p, y, num_bins=10)
    assert ece.dtype == torch.float64 and ece.ndim == 0
    assert float(ece) == pytest.approx(expected, abs=1e-12)
    stats = calibration_statistics(p, y, num_bins=10)
    assert stats.shape == (1, 10, 3)
    assert stats[0, 9].tolist() == pytest.approx([2.0, 1.95, 1.0])
    assert float(stats[0, :9].abs().sum()) == 0.0


def test_hand_example_reductions_skip_empty_bins():
    # 4 bins of width 0.25. Top-label confidences: 0.6, 0.7 (bin 2), 0.9 (bin 3).
    p = torch.tensor([[0.4, 0.6], [0.3, 0.7], [0.1, 0.9]], dtype=torch.float64)
    y = torch.tensor([1, 0, 1])  # correct, wrong, correct
    gap2, gap3 = abs(0.5 - 0.65), abs(1.0 - 0.9)
    got = {
        (r, n): float(calibration_error(p, y, num_bins=4, reduction=r, norm=n))
        for r in REDUCTIONS
        for n in NORMS
    }
    assert got["expected", "l1"] == pytest.approx(2 / 3 * gap2 + 1 / 3 * gap3)
    assert got["expected", "l2"] == pytest.approx(math.sqrt(2 / 3 * gap2**2 + 1 / 3 * gap3**2))
    # empty bins 0 and 1 are excluded, not counted as zero-error bins
    assert got["average", "l1"] == pytest.approx((gap2 + gap3) / 2)
    assert got["average", "l2"] == pytest.approx(math.sqrt((gap2**2 + gap3**2) / 2))
    assert got["maximum", "l1"] == pytest.approx(max(gap2, gap3))
    assert got["maximum", "l2"] == pytest.approx(max(gap2, gap3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edges_zero_first_bin_one_last_bin_right_closed(dtype):
    # marginal target, 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]; 0.0 joins the first.
    p = torch.tensor([[0.0], [0.25], [0.5], [0.75], [1.0], [0.3]], dtype=dtype)
    t = torch.tensor([[0.0], [0.0], [1.0], [1.0], [1.0], [0.0]], dtype=dtype)
    stats = calibration_statistics(p, t, num_bins=4, target="marginal")
    assert stats.shape == (1, 4, 3)
    counts = stats[0, :, 0].tolist()
    assert counts == [2.0, 2.0, 1.0, 1.0]  # no sample lost, no extra bin
    assert stats[0, 0, 1].item() == pytest.approx(0.25)  # 0.0 + 0.25
    assert stats[0, 3, 1].item() == pytest.approx(1.0)  # 1.0 alone in the last bin
    assert stats[0, :, 2].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_classwise_hand_example_with_zero_and_one_confidences():
    # class 0: conf 1.0 (label 0: acc 1) -> gap 0; conf 0.0 (label 0: acc 1) -> gap 1 => 0.5
    # class 1: conf 0.0 (label 0: acc 0) -> gap 0; conf 1.0 (label 0: acc 0) -> gap 1 => 0.5
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    stats = calibration_statistics(p, y, num_bins=5, target="classwise")
    assert stats.shape == (2, 5, 3)
    assert stats[:, 0, 0].tolist() == [1.0, 1.0] and stats[:, 4, 0].tolist() == [1.0, 1.0]
    assert stats[:, 0, 2].tolist() == [1.0, 0.0] and stats[:, 4, 2].tolist() == [1.0, 0.0]
    per = calibration_error_from_statistics(stats, average=False)
    assert per.tolist() == pytest.approx([0.5, 0.5])
    assert float(calibration_error(p, y, num_bins=5, target="classwise")) == pytest.approx(0.5)


def test_top_label_one_is_in_last_bin_and_counts_preserved():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 1])
    stats = calibration_statistics(p, y, num_bins=7)
    assert stats[0, 6, 0].item() == 2.0
    assert float(calibration_error(p, y, num_bins=7)) == pytest.approx(0.5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("target", ["top_label", "classwise", "marginal"])
@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_no_samples_gives_nan(reduction, norm, target, binning):
    if target == "marginal":
        p, y = torch.zeros(0, 3), torch.zeros(0, 3)
    else:
        p, y = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
    # NaN, but never silently: a warning says there were no samples
    with pytest.warns(UserWarning, match="no samples"):
        out = calibration_error(
            p, y, target=target, reduction=reduction, norm=norm, binning=binning
        )
    assert math.isnan(float(out))
    stats = torch.zeros(2, 5, 3, dtype=torch.float64)
    with pytest.warns(UserWarning, match="no samples"):
        per = calibration_error_from_statistics(
            stats, reduction=reduction, norm=norm, average=False
        )
    assert per.shape == (2,) and bool(torch.isnan(per).all())


# ---------------------------------------------------------------- independent references
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_bins", [5, 15])
@pytest.mark.parametrize("norm_tm", ["l1", "l2", "max"])
def test_top_label_matches_torchmetrics(seed, num_bins, norm_tm):
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    p, y = _random_probs(3000, 6, seed, dtype=torch.float32)
    assert float(p.max()) < 1.0  # torchmetrics puts 1.0 into a hidden extra bin (#3510)
    # torchmetrics: l1 = ECE, l2 = sqrt(sum_b n_b/N gap_b^2) (our expected/l2), max = MCE
    ours_kw = {"l1": ("expected", "l1"), "l2": ("expected", "l2"), "max": ("maximum", "l1")}
    reduction, norm = ours_kw[norm_tm]
    ref = tmf.multiclass_calibration_error(p, y, num_classes=6, n_bins=num_bins, norm=norm_tm)
    got = calibration_error(p, y, num_bins=num_bins, reduction=reduction, norm=norm)
    assert float(got) == pytest.approx(float(ref), abs=1e-5)


def test_marginal_single_label_matches_torchmetrics_binary():
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    g = torch.Generator().manual_seed(3)
    p = torch.rand(2000, generator=g) * 0.999
    t = torch.randint(0, 2, (2000,), generator=g)
    ref = tmf.binary_calibration_error(p, t, n_bins=10)
    got = calibration_error(p[:, None], t[:, None], target="marginal", num_bins=10)
    assert float(got) == pytest.approx(float(ref), abs=1e-5)


@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("norm", NORMS)
def test_against_numpy_reference_all_targets(binning, reduction, norm):
    p, y = _random_probs(203, 4, seed=7)  # 203 samples: equal-mass remainders are exercised
    kw = {"num_bins": 10, "binning": binning, "reduction": reduction, "norm": norm}
    top = calibration_error(p, y, target="top_label", **kw)
    assert float(top) == pytest.approx(_np_top_label(p, y, 10, binning, reduction, norm))
    sce = calibration_error(p, y, target="classwise", **kw)
    assert float(sce) == pytest.approx(_np_classwise(p, y, 10, binning, reduction, norm))
    g = torch.Generator().manual_seed(11)
    q = torch.rand(203, 3, generator=g, dtype=torch.float64)
    t = (torch.rand(203, 3, generator=g, dtype=torch.float64) < q).double()
    marg = calibration_error(q, t, target="marginal", **kw)
    assert float(marg) == pytest.approx(_np_marginal(q, t, 10, binning, reduction, norm))


def test_equal_mass_bin_sizes_and_ties():
    p, y = _random_probs(23, 3, seed=2)
    stats = calibration_statistics(p, y, num_bins=5, binning="equal_mass")
    counts = stats[0, :, 0]
    assert float(counts.sum()) == 23.0
    assert set(counts.tolist()) <= {4.0, 5.0}  # floor/ceil of 23 / 5
    # all confidences tied: one bin holds every sample, the result ignores the order
    p = torch.tensor([[0.7, 0.3]] * 6, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 0, 1, 0])
    stats = calibration_statistics(p, y, num_bins=3, binning="equal_mass")
    assert stats[0, :, 0].tolist() == [6.0, 0.0, 0.0]
    ace = calibration_error(p, y, num_bins=3, binning="equal_mass")
    assert float(ace) == pytest.approx(abs(4 / 6 - 0.7))
    perm = torch.tensor([2, 4, 0, 1, 3, 5])
    permuted = calibration_error(p[perm], y[perm], num_bins=3, binning="equal_mass")
    assert float(permuted) == float(ace)


def test_matches_monai_per_image_per_channel():
    monai_cal = pytest.importorskip("monai.metrics.calibration")
    g = torch.Generator().manual_seed(5)
    p = torch.softmax(2 * torch.randn(2, 3, 9, 7, generator=g), dim=1)
    y = torch.randint(0, 3, (2, 1, 9, 7), generator=g)
    onehot = torch.zeros_like(p).scatter_(1, y, 1.0)
    for reduction in REDUCTIONS:
        metric = monai_cal.CalibrationErrorMetric(
            num_bins=10, calibration_reduction=reduction, metric_reduction="none"
        )
        ref = metric(p, onehot)  # (B, C): per image, per channel
        for b in range(2):
            ours = calibration_error_from_statistics(
                calibration_statistics(p[b : b + 1], y[b : b + 1], num_bins=10, target="classwise"),
                reduction=reduction,
                average=False,
            )
            assert torch.allclose(ours.float(), ref[b].float(), atol=1e-5)


# ---------------------------------------------------------------- structure: streaming, dense
def test_equal_width_equals_statistics_route():
    p, y = _random_probs(500, 5, seed=4)
    for target in ("top_label", "classwise"):
        for reduction in REDUCTIONS:
            for norm in NORMS:
                direct = calibration_error(p, y, target=target, reduction=reduction, norm=norm)
                stats = calibration_statistics(p, y, target=target)
                via = calibration_error_from_statistics(stats, reduction=reduction, norm=norm)
                assert float(direct) == float(via)


@pytest.mark.parametrize("target", ["top_label", "classwise", "marginal"])
def test_streaming_uneven_batches_equals_one_shot(target):
    p, y = _random_probs(1000, 4, seed=8)
    if target == "marginal":
        y = (torch.rand(1000, 4, dtype=torch.float64) < p).double()
    cuts = [0, 1, 130, 131, 600, 1000]
    total = sum(
        calibration_statistics(p[a:b], y[a:b], target=target, num_bins=12)
        for a, b in itertools.pairwise(cuts)
    )
    one = calibration_statistics(p, y, target=target, num_bins=12)
    assert torch.allclose(total, one, rtol=1e-12, atol=1e-9)
    assert torch.equal(total[..., 0], one[..., 0]) and torch.equal(total[..., 2], one[..., 2])
    for reduction in REDUCTIONS:
        a = calibration_error_from_statistics(total, reduction=reduction)
        b = calibration_error(p, y, target=target, num_bins=12, reduction=reduction)
        assert float(a) == pytest.approx(float(b), abs=1e-12)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 2)])
@pytest.mark.parametrize("target", ["top_label", "classwise", "marginal"])
@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_dense_equals_flattened_voxels(spatial, target, binning):
    g = torch.Generator().manual_seed(9)
    b, k = 2, 3
    logits = 2 * torch.randn(b, k, *spatial, generator=g)
    if target == "marginal":
        p = torch.sigmoid(logits)
        y = (torch.rand(p.shape, generator=g) < p).float()
        y_flat = y.movedim(1, -1).reshape(-1, k)
        y_forms = [y]
    else:
        p = torch.softmax(logits, dim=1)
        idx = torch.randint(0, k, (b, 1, *spatial), generator=g)
        y_flat = idx.reshape(-1)  # (B, 1, *S) -> voxel order matches movedim(1, -1)
        onehot = torch.zeros_like(p).scatter_(1, idx, 1.0)
        y_forms = [idx, idx[:, 0], onehot, idx.float()]
    p_flat = p.movedim(1, -1).reshape(-1, k)
    ref = calibration_error(p_flat, y_flat, target=target, binning=binning, num_bins=8)
    for y_form in y_forms:
        got = calibration_error(p, y_form, target=target, binning=binning, num_bins=8)
        assert float(got) == pytest.approx(float(ref), abs=1e-12)


def test_logits_flag_matches_probabilities():
    g = torch.Generator().manual_seed(12)
    z = 3 * torch.randn(400, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (400,), generator=g)
    for target in ("top_label", "classwise"):
        a = calibration_error(z, y, logits=True, target=target)
        b = calibration_error(torch.softmax(z, 1), y, target=target)
        assert float(a) == pytest.approx(float(b), abs=1e-12)
    t = (torch.rand(400, 5, generator=g) < 0.4).double()
    a = calibration_error(z, t, logits=True, target="marginal")
    b = calibration_error(torch.sigmoid(z), t, target="marginal")
    assert float(a) == pytest.approx(float(b), abs=1e-12)


def test_half_precision_input_matches_float32():
    p, y = _random_probs(300, 4, seed=13, dtype=torch.float32)
    p16 = p.half()
    a = calibration_error(p16, y)
    b = calibration_error(p16.float(), y)
    assert float(a) == pytest.approx(float(b), abs=1e-6)


def test_micro_pooling_equals_flattened_labels():
    g = torch.Generator().manual_seed(14)
    q = torch.rand(300, 4, generator=g, dtype=torch.float64)
    t = (torch.rand(300, 4, generator=g, dtype=torch.float64) < q).double()
    stats = calibration_statistics(q, t, target="marginal")
    per = calibration_error_from_statistics(stats, average=False)
    assert per.shape == (4,)
    assert float(per.mean()) == pytest.approx(float(calibration_error_from_statistics(stats)))
    micro = calibration_error_from_statistics(stats.sum(0, keepdim=True))
    flat = calibration_error(q.reshape(-1, 1), t.reshape(-1, 1), target="marginal")
    assert float(micro) == pytest.approx(float(flat), abs=1e-12)
    assert float(calibration_error_from_statistics(stats[0])) == pytest.approx(float(per[0]))


# ---------------------------------------------------------------- properties
@st.composite
def _prob_batches(draw):
    n = draw(st.integers(1, 60))
    k = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.0, 8.0))
    return (*_random_probs(n, k, seed, scale=scale), seed)


@settings(max_examples=40, deadline=None)
@given(
    batch=_prob_batches(),
    num_bins=st.integers(1, 20),
    binning=st.sampled_from(["equal_width", "equal_mass"]),
    target=st.sampled_from(["top_label", "classwise"]),
    reduction=st.sampled_from(REDUCTIONS),
    norm=st.sampled_from(NORMS),
)
def test_property_bounds_and_order_invariance(batch, num_bins, binning, target, reduction, norm):
    p, y, seed = batch
    kw = {
        "num_bins": num_bins,
        "binning": binning,
        "target": target,
        "reduction": reduction,
        "norm": norm,
    }
    ece = float(calibration_error(p, y, **kw))
    assert 0.0 <= ece <= 1.0 + 1e-12
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    assert float(calibration_error(p[perm], y[perm], **kw)) == pytest.approx(ece, abs=1e-12)


@pytest.mark.parametrize("target", ["top_label", "classwise"])
def test_perfectly_calibrated_data_gives_small_ece(target):
    # labels drawn from the predicted distribution: the model is calibrated by construction.
    g = torch.Generator().manual_seed(21)
    n, k = 200_000, 4
    p = torch.softmax(2 * torch.randn(n, k, generator=g, dtype=torch.float64), dim=1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)
    assert float(calibration_error(p, y, target=target)) < 0.01
    assert float(calibration_error(p, y, target=target, binning="equal_mass")) < 0.01
    # and a miscalibrated (over-confident) model on the same labels is far from 0
    sharp = torch.softmax(3 * torch.log(p), dim=1)
    assert float(calibration_error(sharp, y, target=target)) > 0.03


# ---------------------------------------------------------------- errors
def test_invalid_options_list_choices():
    p, y = _random_probs(10, 3, seed=0)
    # look_up_option's message: the bad value, then the valid ones
    with pytest.raises(ValueError, match=r"(?s)'adaptive'.*equal_width"):
        calibration_error(p, y, binning="adaptive")
    with pytest.raises(ValueError, match=r"(?s)'top'.*top_label"):
        calibration_error(p, y, target="top")
    with pytest.raises(ValueError, match=r"(?s)'mean'.*expected"):
        calibration_error(p, y, reduction="mean")
    with pytest.raises(ValueError, match=r"(?s)'max'.*l2"):
        calibration_error(p, y, norm="max")
    for bad in (0, -3):
        with pytest.raises(ValueError, match="num_bins must be a positive int"):
            calibration_error(p, y, num_bins=bad)
    for bad in (2.5, True):  # a bad type: TypeError (was ValueError before the unification)
        with pytest.raises(TypeError, match="num_bins must be a positive int"):
            calibration_error(p, y, num_bins=bad)


def test_bad_shapes_and_labels():
    p, y = _random_probs(10, 3, seed=0)
    with pytest.raises(ValueError, match=r"y_pred must have shape \(B, K\)"):
        calibration_error(p[:, 0], y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        calibration_error(torch.ones(10, 1), y)
    with pytest.raises(ValueError, match="batch size"):
        calibration_error(p, y[:5])
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\]"):
        calibration_error(p, torch.full((10,), 3))
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\]"):
        calibration_error(p, torch.full((10,), -1))
    dense = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    with pytest.raises(ValueError, match=r"y must be class indices of shape \(2, 4, 4\)"):
        calibration_error(dense, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\]"):
        calibration_error(dense, torch.full((2, 1, 4, 4), 5))
    with pytest.raises(ValueError, match="exactly one 1"):
        calibration_error(dense, torch.ones(2, 3, 4, 4))
    soft = torch.full((2, 3, 4, 4), 1 / 3)  # sums to 1 but is not one-hot
    with pytest.raises(ValueError, match="exactly one 1"):
        calibration_error(dense, soft)
    signed = torch.zeros(2, 3, 4, 4)
    signed[:, 0], signed[:, 1], signed[:, 2] = 1.0, 1.0, -1.0  # max 1, sum 1, negative entry
    with pytest.raises(ValueError, match="exactly one 1"):
        calibration_error(dense, signed)
    with pytest.raises(ValueError, match="same shape as y_pred"):
        calibration_error(torch.rand(4, 3), torch.zeros(4, 2), target="marginal")
    with pytest.raises(ValueError, match="binary"):
        calibration_error(torch.rand(4, 3), torch.full((4, 3), 0.5), target="marginal")
    with pytest.raises(TypeError, match="floating point"):
        calibration_error(torch.ones(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        calibration_error(p.numpy(), y)


def test_bad_probabilities():
    p, y = _random_probs(10, 3, seed=0)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*logits=True"):
        calibration_error(p * 2 - 0.5, y)
    with pytest.raises(ValueError, match=r"do not sum to 1.*tolerance 0\.001"):
        calibration_error(p * 0.9, y)
    with pytest.raises(ValueError, match="do not sum to 1"):
        calibration_error(p * 0.9, y, target="classwise")
    bad = p.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        calibration_error(bad, y)
    with pytest.raises(ValueError, match="must be finite"):
        calibration_error(bad, y, logits=True)
    # independent sigmoid probabilities need not sum to 1 for the marginal target
    q = torch.rand(10, 3)
    assert not math.isnan(float(calibration_error(q, (q > 0.5).float(), target="marginal")))


def test_bad_statistics():
    with pytest.raises(ValueError, match=r"stats must have shape \(C, num_bins, 3\)"):
        calibration_error_from_statistics(torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="negative bin counts"):
        calibration_error_from_statistics(-torch.ones(1, 5, 3))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        calibration_error_from_statistics(np.zeros((1, 5, 3)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.long])
def test_dense_one_hot_labels_equal_index_labels(dtype):
    g = torch.Generator().manual_seed(9)
    p = torch.softmax(2 * torch.randn(2, 5, 9, 8, generator=g), dim=1)
    idx = torch.randint(0, 5, (2, 1, 9, 8), generator=g)
    one_hot = torch.zeros(2, 5, 9, 8).scatter_(1, idx, 1.0).to(dtype)
    if dtype != torch.long:
        one_hot[0, :, 0, 0] = 0.0
        one_hot[0, 4, 0, 0] = 1.0
        idx[0, 0, 0, 0] = 4
    for target in ("top_label", "classwise"):
        a = calibration_statistics(p, one_hot, target=target)
        assert torch.equal(a, calibration_statistics(p, idx, target=target))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "soft",
    [(1.0, 1e-9), (1.0, 1e-30), (1 - 1e-9, 1e-9), (1 + 1e-6, 0.0), (1.0, -1e-30)],
    ids=["tiny", "tiny30", "below_one", "above_one", "tiny_negative"],
)
def test_soft_one_hot_is_rejected_by_the_2d_and_the_dense_path_alike(dtype, soft):
    """One rule for both one-hot readers: exactly one 1 and zeros elsewhere, no tolerance (the
    dense path used to accept entries that a float32 row sum rounds away, e.g. 1e-9)."""
    row = torch.tensor([soft[0], soft[1], 0.0], dtype=dtype)
    p2 = torch.softmax(torch.randn(4, 3, dtype=dtype), 1)
    y2 = torch.eye(3, dtype=dtype)[[0, 1, 2, 0]]
    y2[0] = row
    dense_p = p2.T.reshape(1, 3, 2, 2)
    dense_y = y2.T.reshape(1, 3, 2, 2)
    for p, y in ((p2, y2), (dense_p, dense_y)):
        with pytest.raises(ValueError, match="exactly one 1"):
            calibration_statistics(p, y)
    exact = torch.eye(3, dtype=dtype)[[0, 1, 2, 0]]  # the same layout, one-hot: accepted
    a = calibration_statistics(p2, exact)
    assert torch.equal(a, calibration_statistics(dense_p, exact.T.reshape(1, 3, 2, 2)))


@pytest.mark.parametrize("fn", [brier_score, negative_log_likelihood])
def test_scores_of_no_samples_warn_and_give_nan(fn):
    with pytest.warns(UserWarning, match="no samples"):
        out = fn(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert math.isnan(float(out))
