# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""SegmentationCalibrationReport: streamed Dice / IoU / pooled voxel calibration vs references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ignite.engine import Engine
from monai.metrics import CalibrationErrorMetric, DiceMetric, MeanIoU
from monai.networks.utils import one_hot

from monai_calib.handlers import SEGMENTATION_METRICS, SegmentationCalibrationReport
from monai_calib.metrics import calibration_error


def _images(n: int, k: int = 2, seed: int = 0, sizes=((12, 16), (9, 7), (16, 16))):
    """``n`` images of mixed sizes: (probabilities (K, H, W), labels (1, H, W)) pairs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        lab = torch.randint(0, k, (1, h, w), generator=g)
        logits = 2.0 * torch.randn(k, h, w, generator=g, dtype=torch.float64)
        logits += 1.5 * one_hot(lab[None], k, dim=1)[0].double()  # better than chance
        out.append((torch.softmax(logits, 0).float(), lab.float()))
    if n >= 2:  # one image without foreground: Dice/IoU are NaN there and skipped, like MONAI
        out[1] = (out[1][0], torch.zeros_like(out[1][1]))
    return out


def _report(tmp_path, images, batches=None, **kwargs) -> SegmentationCalibrationReport:
    r = SegmentationCalibrationReport(str(tmp_path), plots=False, **kwargs)
    for p, lab in images:
        r.add([p], [lab])
    return r


def _plain_pooled(images, num_bins=15):
    """Pooled top-label ECE / MCE, NLL and Brier in float64, written out plainly."""
    conf, correct, nll, brier = [], [], [], []
    for p, lab in images:
        p = p.double().reshape(p.shape[0], -1).T
        y = lab.long().reshape(-1)
        c, pred = p.max(1)
        conf.append(c)
        correct.append((pred == y).double())
        nll.append(-torch.log(p[torch.arange(len(y)), y].clamp(min=1e-7)))
        brier.append(((p - torch.nn.functional.one_hot(y, p.shape[1]).double()) ** 2).sum(1))
    conf, correct = torch.cat(conf), torch.cat(correct)
    ece, mce = 0.0, 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        m = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if m.any():
            gap = abs(float(correct[m].mean() - conf[m].mean()))
            ece += float(m.double().mean()) * gap
            mce = max(mce, gap)
    return ece, mce, float(torch.cat(nll).mean()), float(torch.cat(brier).mean())


@pytest.mark.parametrize("k", [2, 3])
def test_matches_monai_metrics_and_calibration_error(tmp_path, k):
    images = _images(7, k=k)
    res = _report(tmp_path, images).compute()
    assert set(SEGMENTATION_METRICS) <= set(res) and res["n"] == 7

    dice, iou = DiceMetric(include_background=False), MeanIoU(include_background=False)
    ce_img = CalibrationErrorMetric(num_bins=20, include_background=False)
    for p, lab in images:
        pred_1h = one_hot(p.argmax(0, keepdim=True)[None], k, dim=1)
        lab_1h = one_hot(lab[None].long(), k, dim=1)
        dice(pred_1h, lab_1h)
        iou(pred_1h, lab_1h)
        ce_img(p[None], lab_1h)
    assert res["dice"] == pytest.approx(float(dice.aggregate()), abs=1e-6)
    assert res["mean_iou"] == pytest.approx(float(iou.aggregate()), abs=1e-6)
    assert res["ece_per_image"] == pytest.approx(float(ce_img.aggregate()), abs=1e-6)

    # pooled over all voxels of all (differently sized) images
    rows_p = torch.cat([p.reshape(k, -1).T for p, _ in images])
    rows_y = torch.cat([lab.reshape(-1) for _, lab in images])
    assert res["ece"] == pytest.approx(float(calibration_error(rows_p, rows_y)), abs=1e-9)
    assert res["sce"] == pytest.approx(
        float(calibration_error(rows_p, rows_y, target="classwise")), abs=1e-9
    )
    ece, mce, nll, brier = _plain_pooled(images)
    assert res["ece"] == pytest.approx(ece, abs=1e-9)
    assert res["mce"] == pytest.approx(mce, abs=1e-9)
    assert res["nll"] == pytest.approx(nll, rel=1e-9)
    assert res["brier"] == pytest.approx(brier, rel=1e-9)


def test_dense_batch_equals_pooled_calibration_error(tmp_path):
    """A (B, K, H, W) batch with one-hot labels gives calibration_error on the dense input."""
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(3 * torch.randn(4, 2, 10, 11, generator=g), 1)
    labels = torch.randint(0, 2, (4, 1, 10, 11), generator=g)
    r = SegmentationCalibrationReport(str(tmp_path), plots=False)
    r.add(probs, one_hot(labels, 2, dim=1))
    res = r.compute()
    assert res["ece"] == pytest.approx(float(calibration_error(probs, labels)), abs=1e-9)
    dice = DiceMetric(include_background=False)
    dice(one_hot(probs.argmax(1, keepdim=True), 2, dim=1), one_hot(labels, 2, dim=1))
    assert res["dice"] == pytest.approx(float(dice.aggregate()), abs=1e-6)


def test_state_size_is_fixed(tmp_path):
    r = SegmentationCalibrationReport(str(tmp_path), plots=False)
    images = _images(30)
    for p, lab in images[:2]:
        r.add([p], [lab])
    size = r.state_size()
    for p, lab in images[2:]:
        r.add([p], [lab])
    assert r.state_size() == size
    assert r.metric.statistics().shape == (1, 15, 3)
    assert r.metric.statistics("classwise").shape == (2, 15, 3)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 6), cut=st.integers(0, 6), seed=st.integers(0, 1000))
def test_batching_does_not_change_the_result(tmp_path_factory, n, cut, seed):
    images = _images(n, seed=seed, sizes=((6, 6),))
    cut = min(cut, n)
    one = SegmentationCalibrationReport(str(tmp_path_factory.mktemp("a")), plots=False)
    for p, lab in images:
        one.add([p], [lab])
    two = SegmentationCalibrationReport(str(tmp_path_factory.mktemp("b")), plots=False)
    for part in (images[:cut], images[cut:]):
        if part:
            two.add(torch.stack([p for p, _ in part]), torch.stack([lab for _, lab in part]))
    a, b = one.compute(), two.compute()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-9, nan_ok=True), key


def test_engine_writes_report_files(tmp_path):
    images = _images(5)
    batches = [images[:2], images[2:]]

    def step(engine, batch):
        return [{"pred": p, "label": lab} for p, lab in batch]

    engine = Engine(step)
    report = SegmentationCalibrationReport(str(tmp_path / "eval"), title="demo")
    report.attach(engine)
    engine.run(batches, max_epochs=1)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics == pytest.approx(_report(tmp_path / "x", images).compute(), nan_ok=True)
    assert engine.state.metrics["test_ece"] == metrics["ece"]
    header = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == list(metrics)
    stats = np.load(tmp_path / "eval" / "reliability_statistics.npy")
    assert stats.shape == (1, 15, 3)
    assert stats[0, :, 0].sum() == sum(p[0].numel() for p, _ in images)
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 1000
    # a second run starts from zero
    engine.run(batches, max_epochs=1)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == pytest.approx(
        metrics, nan_ok=True
    )


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="num_bins"):
        SegmentationCalibrationReport(str(tmp_path), num_bins=0)
    with pytest.raises(ValueError, match="num_bins_per_image"):
        SegmentationCalibrationReport(str(tmp_path), num_bins_per_image=0)
    r = SegmentationCalibrationReport(str(tmp_path), plots=False)
    with pytest.raises(ValueError, match="no images"):
        r.compute()
    with pytest.raises(ValueError, match="K >= 2"):
        r.add([torch.ones(1, 4, 4)], [torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        r.add([torch.full((2, 4, 4), 0.5)] * 2, [torch.zeros(1, 4, 4)])
    with pytest.raises(TypeError, match="tensor"):
        r.add("pred", "label")
