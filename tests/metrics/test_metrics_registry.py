# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""metrics.registry: one entry per report key, directions, titles and MONAI checkpoint selection."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.handlers import CheckpointSaver

from monai_calib.metrics import (
    CLASSIFICATION_METRICS,
    MULTILABEL_METRICS,
    SEGMENTATION_METRICS,
    MetricInfo,
)
from monai_calib.metrics.registry import (
    METRIC_INFO,
    higher_is_better_cmp,
    lower_is_better_cmp,
    metric_cmp_fn,
    metric_info,
)

# Written out independently of the registry: which metrics are better when larger.
HIGHER = {"acc", "auc", "r_auc", "auc_macro", "auc_micro", "dice", "mean_iou"}
LOWER = {"ece", "ace", "sce", "mce", "nll", "brier", "hamming", "ece_micro", "ece_weighted"}
LOWER |= {"ece_per_image"}


def test_every_report_key_is_registered_with_its_direction():
    keys = {*CLASSIFICATION_METRICS, *MULTILABEL_METRICS, *SEGMENTATION_METRICS}
    assert keys <= set(METRIC_INFO)
    assert set(METRIC_INFO) == HIGHER | LOWER | {"gap"}
    for name in HIGHER:
        assert metric_info(name).higher_is_better is True, name
    for name in LOWER:
        assert metric_info(name).higher_is_better is False, name
    assert metric_info("gap").higher_is_better is None
    assert all(info.name == name for name, info in METRIC_INFO.items())


def test_titles_and_percent():
    assert metric_info("ece").label == "ECE ↓"
    assert metric_info("r_auc").label == "R-AUC ↑"
    assert metric_info("gap").label == "Gap (conf − acc)"
    assert metric_info("nll").percent is False
    assert all(info.percent for name, info in METRIC_INFO.items() if name != "nll")
    with pytest.raises(AttributeError):
        metric_info("ece").title = "x"  # frozen
    assert MetricInfo("x", "X", True).label == "X ↑"


@pytest.mark.parametrize("name", sorted(HIGHER | LOWER))
def test_cmp_fn_compares_in_the_metric_direction(name):
    cmp = metric_cmp_fn(name)
    assert cmp is (higher_is_better_cmp if name in HIGHER else lower_is_better_cmp)
    better, worse = (0.9, 0.1) if name in HIGHER else (0.1, 0.9)
    assert cmp(better, worse) is True
    assert cmp(worse, better) is False
    assert cmp(0.5, 0.5) is False  # a tie does not replace the best


def test_unknown_and_directionless_names():
    with pytest.raises(ValueError, match=r"unknown metric name 'eec'.*'ece'"):
        metric_info("eec")
    with pytest.raises(TypeError, match="str"):
        metric_info(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no better direction"):
        metric_cmp_fn("gap")


@pytest.mark.parametrize("select_metric", ["auc", "ece", "dice", "nll"])
def test_bundle_expression_selects_the_best_epoch(tmp_path, select_metric):
    """The bundle form: ``metric_cmp_fn(@select_metric)`` with MONAI's checkpoint selection."""
    parser = ConfigParser(
        {
            "select_metric": select_metric,
            "metric_cmp_fn": "$monai_calib.metrics.registry.metric_cmp_fn(@select_metric)",
            "negative": "$not monai_calib.metrics.registry.metric_info(@select_metric)"
            ".higher_is_better",
        },
        globals={"monai_calib": "monai_calib"},
    )
    cmp = parser.get_parsed_content("metric_cmp_fn")
    values = [0.4, 0.7, 0.2, 0.5]
    engine = Engine(lambda e, b: None)
    best = {"value": None, "epoch": None}

    @engine.on(Events.EPOCH_COMPLETED)
    def _select(e):  # what MONAI's Workflow does with metric_cmp_fn
        v = values[e.state.epoch - 1]
        e.state.metrics = {"key": v}
        if best["value"] is None or cmp(v, best["value"]):
            best.update(value=v, epoch=e.state.epoch)

    saver = CheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"net": torch.nn.Linear(1, 1)},
        save_key_metric=True,
        key_metric_name="key",
        key_metric_n_saved=1,
        key_metric_negative_sign=parser.get_parsed_content("negative"),
    )
    saver.attach(engine)
    engine.run([0], max_epochs=len(values))
    expected = max(values) if select_metric in HIGHER else min(values)
    assert best["value"] == expected
    saved = list(tmp_path.glob("*.pt"))
    assert len(saved) == 1 and f"{abs(expected):.4f}" in saved[0].name
