# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The segmentation bundles' ``multi_gpu_train.json``: two processes on the gloo backend (CPU)
train one epoch through torchrun; the validation set is split over the two ranks. Rank 0's
checkpoint then evaluates the same validation images in one process, and the metrics the two
ranks gathered (MONAI's Dice / mean IoU / ECE handlers, and a ``SegmentationCalibrationReport``
attached on both ranks, written by rank 0) equal those computed on the union in one process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from test_bundle_cell_segmentation import DEFAULTS as CELL_DEFAULTS
from test_bundle_cell_segmentation import write_dsb2018_folder
from test_bundle_organ_segmentation import DEFAULTS as ORGAN_DEFAULTS
from test_bundle_organ_segmentation import write_msd_phantoms

BUNDLE = "cell_segmentation"  # the conftest ``bundle`` fixture; both bundles below

# 1 test and 2 validation images (one per rank); the rest trains
CASES = {
    "cell_segmentation": (
        write_dsb2018_folder,
        {**CELL_DEFAULTS, "num_test": 1, "num_val": 2},
    ),
    "organ_segmentation": (
        lambda root: write_msd_phantoms(root, n=6),
        {**ORGAN_DEFAULTS, "num_test": 1, "num_val": 2},
    ),
}

# on both ranks (the report gathers the shards of every rank); rank 0 keeps the bundle's handlers
DDP_OVERLAY = {
    "ddp_report": {
        "_target_": "monai_calib.handlers.SegmentationCalibrationReport",
        "output_dir": "$os.path.join(@output_dir, 'ddp_val')",
        "num_bins": 15,
        "include_background": False,
        "plots": False,
    },
    "validate#evaluator#val_handlers": "$(@validate#handlers if dist.get_rank() == 0 else [])"
    " + [@ddp_report]",
}


def logged_metric(text: str, name: str) -> float:
    """The last value of ``name`` that MONAI's ``StatsHandler`` logged (``name: value``)."""
    found = re.findall(rf"\b{name}: ([-+0-9.eE]+)", text)
    assert found, f"{name} not logged:\n{text[-3000:]}"
    return float(found[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_process_gloo_training_gathers_validation(bundle, tmp_path: Path, name: str):
    write_data, defaults = CASES[name]
    runner = type(bundle)(name, defaults)
    data, out = tmp_path / "data", tmp_path / "run"
    write_data(data)
    overlay = tmp_path / "ddp_overlay.json"
    overlay.write_text(json.dumps(DDP_OVERLAY))
    files = ["train.json", "loss_dice_ce.json"]
    proc = runner.run_cli(
        [*files, "multi_gpu_train.json", overlay], nproc=2, data_root=data, output_dir=out
    )

    # rank 0 saved the unwrapped network (no DDP "module." prefix) and the loss state
    ckpt = torch.load(out / "models" / "model.pt", weights_only=True)
    assert {"model", "loss"} <= set(ckpt)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    ddp_report = json.loads((out / "ddp_val" / "metrics.json").read_text())

    # the union, in one process, with the checkpoint of the (only) epoch
    wf = runner.run(
        [*files, "evaluate.json"], data_root=str(data), output_dir=str(out), eval_split="val"
    )
    union = json.loads((out / "eval" / "metrics.json").read_text())
    assert union["n"] == defaults["num_val"] == 2  # both ranks' images in the DDP report too
    assert ddp_report.keys() == union.keys()
    for key, value in union.items():
        assert ddp_report[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key

    # MONAI's metric handlers gathered both ranks too (rank 0 logs them with 4 decimals)
    logs = proc.stdout + proc.stderr
    single = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    for key in ("val_dice", "val_mean_iou", "val_ece"):
        assert logged_metric(logs, key) == pytest.approx(float(single[key]), abs=1e-4), key
