# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite metric handlers: in a real MONAI ``SupervisedEvaluator`` (post-transforms, decollated
batches, lower-is-better checkpoint selection) and in a plain ignite ``Engine``; values checked
against the functional API and against MONAI's own ``CalibrationError`` handler."""

from __future__ import annotations

import monai.handlers as monai_handlers
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import CalibrationError, CheckpointSaver, from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose

from monai_calib.handlers import (
    NLL,
    BrierScore,
    PooledCalibrationError,
    RetentionAUC,
    lower_is_better_cmp,
)
from monai_calib.metrics import (
    brier_score,
    calibration_error,
    calibration_statistics,
    negative_log_likelihood,
    retention_auc,
)
from monai_calib.metrics.registry import metric_cmp_fn

NUM_CLASSES = 3


def _data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n, 1), generator=g)
    return x, y


def _evaluator(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs):
    items = [{"image": x[i], "label": y[i]} for i in range(len(x))]
    loader = DataLoader(Dataset(items), batch_size=7, shuffle=False, num_workers=0)
    post = Compose(
        [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys="label", to_onehot=NUM_CLASSES),
        ]
    )
    ot = from_engine(["pred", "label"])
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=net,
        postprocessing=post,
        key_val_metric={"val_ece": PooledCalibrationError(num_bins=10, output_transform=ot)},
        additional_metrics={
            "val_sce": PooledCalibrationError(num_bins=10, target="classwise", output_transform=ot),
            "val_adaptive_ece": PooledCalibrationError(
                num_bins=10, binning="equal_mass", output_transform=ot
            ),
            "val_brier": BrierScore(output_transform=ot),
            "val_nll": NLL(output_transform=ot),
            "val_rauc": RetentionAUC(output_transform=ot),
        },
        **kwargs,
    )


def test_supervised_evaluator_metrics_match_functional():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, NUM_CLASSES)
    x, y = _data()
    evaluator = _evaluator(net, x, y)
    evaluator.run()
    with torch.no_grad():
        p = torch.softmax(net(x), dim=1)
    labels = y[:, 0]
    metrics = evaluator.state.metrics
    expected = {
        "val_ece": calibration_error(p, labels, num_bins=10),
        "val_sce": calibration_error(p, labels, num_bins=10, target="classwise"),
        "val_adaptive_ece": calibration_error(p, labels, num_bins=10, binning="equal_mass"),
        "val_brier": brier_score(p, labels),
        "val_nll": negative_log_likelihood(p, labels),
        "val_rauc": retention_auc(p, labels),
    }
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value.item(), abs=1e-6), name
    # details: the statistics of the reliability diagram, not a per-image buffer
    details = evaluator.state.metric_details["val_ece"]
    torch.testing.assert_close(
        details, calibration_statistics(p, labels, num_bins=10), rtol=0, atol=1e-5
    )


def test_lower_is_better_checkpoint_selection(tmp_path):
    torch.manual_seed(1)
    net = torch.nn.Linear(4, NUM_CLASSES)
    x, y = _data(seed=1)
    evaluator = _evaluator(net, x, y, metric_cmp_fn=lower_is_better_cmp)
    saver = CheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"net": net},
        save_key_metric=True,
        key_metric_n_saved=1,
        key_metric_negative_sign=True,
    )
    saver.attach(evaluator)
    eces = []
    for epoch, scale in enumerate((1.0, 8.0, 0.5), start=1):
        with torch.no_grad():
            net.weight.mul_(scale)  # rescaling the logits changes the calibration error
        evaluator.run(global_epoch=epoch)
        eces.append(evaluator.state.metrics["val_ece"])
    best = min(range(3), key=lambda i: eces[i])
    assert evaluator.state.best_metric == pytest.approx(eces[best])
    assert evaluator.state.best_metric_epoch == best + 1
    saved = list(tmp_path.glob("*.pt"))
    assert len(saved) == 1
    assert f"{-eces[best]:.4f}" in saved[0].name
    assert lower_is_better_cmp(0.1, 0.2) and not lower_is_better_cmp(0.2, 0.1)


def test_plain_engine_dense_and_per_image_mode_against_monai():
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(3):
        p = torch.softmax(torch.randn(2, NUM_CLASSES, 6, 6, generator=g), dim=1)
        lab = torch.randint(0, NUM_CLASSES, (2, 6, 6), generator=g)
        onehot = torch.nn.functional.one_hot(lab, NUM_CLASSES).permute(0, 3, 1, 2).float()
        batches.append((p, onehot))
    engine = Engine(lambda e, b: b)
    PooledCalibrationError(num_bins=10).attach(engine, "pooled")
    PooledCalibrationError(num_bins=10, per_image=True, include_background=False).attach(
        engine, "compat"
    )
    CalibrationError(num_bins=10, include_background=False).attach(engine, "monai")
    BrierScore().attach(engine, "brier")
    engine.run(batches)
    p = torch.cat([b[0] for b in batches])
    t = torch.cat([b[1] for b in batches])
    m = engine.state.metrics
    assert m["pooled"] == pytest.approx(calibration_error(p, t, num_bins=10).item(), abs=1e-9)
    assert m["compat"] == pytest.approx(m["monai"], abs=1e-6)
    assert m["brier"] == pytest.approx(brier_score(p, t).item(), abs=1e-9)
    torch.testing.assert_close(
        engine.state.metric_details["compat"].float(),
        engine.state.metric_details["monai"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_handler_keyword_arguments_reach_the_metric():
    handler = PooledCalibrationError(num_bins=7, target="classwise", label_reduction="weighted")
    metric = handler.metric_fn
    assert (metric.num_bins, metric.target, metric.label_reduction) == (7, "classwise", "weighted")
    assert handler.save_details is True and BrierScore().save_details is False
    assert NLL(eps=1e-3).metric_fn.eps == 1e-3
    assert RetentionAUC(grid="linear", num_points=50).metric_fn.num_points == 50
    with pytest.raises(TypeError, match="num_bin"):
        BrierScore(num_bin=3)
    with pytest.raises(ValueError, match="num_bins"):
        PooledCalibrationError(num_bins=0)


def test_handler_attributes_names_and_bundle_config():
    # the direction of each handler's metric lives in the registry
    assert metric_cmp_fn("ece") is lower_is_better_cmp
    assert metric_cmp_fn("brier") is lower_is_better_cmp
    assert metric_cmp_fn("nll") is lower_is_better_cmp
    assert metric_cmp_fn("r_auc")(0.9, 0.8) is True
    for name in ("PooledCalibrationError", "BrierScore", "NLL", "RetentionAUC"):
        assert not hasattr(monai_handlers, name)  # no clash with MONAI's handlers
    parser = ConfigParser(
        {
            "ece": {
                "_target_": "monai_calib.handlers.PooledCalibrationError",
                "num_bins": 10,
                "binning": "equal_mass",
                "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            },
            "cmp": "$monai_calib.handlers.lower_is_better_cmp",
            "select_metric": "ece",
            "cmp_registry": "$monai_calib.metrics.registry.metric_cmp_fn(@select_metric)",
        },
        globals={"monai": "monai", "monai_calib": "monai_calib"},
    )
    parser.parse()
    handler = parser.get_parsed_content("ece")
    assert isinstance(handler, PooledCalibrationError)
    assert handler.metric_fn.binning == "equal_mass"
    assert parser.get_parsed_content("cmp") is lower_is_better_cmp
    assert parser.get_parsed_content("cmp_registry") is lower_is_better_cmp
    with pytest.raises(ValueError, match="length 2"):
        handler.update((torch.zeros(1, 2),))
