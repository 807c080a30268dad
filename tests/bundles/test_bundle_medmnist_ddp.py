# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``multi_gpu_train.json``: two processes on the gloo backend (CPU) train one epoch of the MiT
overlay through torchrun; the checkpoint written by rank 0 then evaluates in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from synthetic import write_medmnist_npz

from monai_calib.bundles import bundle_dir

CONFIGS = Path(bundle_dir("medmnist_classification")) / "configs"


def test_two_process_gloo_training_one_epoch(tmp_path):
    data = tmp_path / "data"
    write_medmnist_npz(data, "breastmnist", sizes=(32, 16, 16))
    out = tmp_path / "run"
    files = [str(CONFIGS / f) for f in ("train.json", "loss_mit.json", "multi_gpu_train.json")]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(files),
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--data_root",
        str(data),
        "--max_epochs",
        "1",
        "--batch_size",
        "8",
        "--output_dir",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ckpt = torch.load(out / "models" / "model.pt", weights_only=True)
    # rank 0 saved the unwrapped network (no DDP "module." prefix) and the loss state
    assert not any(k.startswith("module.") for k in ckpt["model"])
    # 32 training images over 2 ranks with batch 8: 2 iterations per rank; the loss saw the
    # all-reduced label counts of both ranks (the Laplace prior of 1 per class + 32 labels)
    assert int(ckpt["loss"]["step"]) == 2
    labels = torch.as_tensor(__import__("numpy").load(data / "breastmnist.npz")["train_labels"])
    expected = 1.0 + torch.bincount(labels.reshape(-1).long(), minlength=2).double()
    torch.testing.assert_close(ckpt["loss"]["label_counts"].double(), expected)

    eval_cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str([str(CONFIGS / f) for f in ("train.json", "loss_mit.json", "evaluate.json")]),
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--data_root",
        str(data),
        "--output_dir",
        str(out),
    ]
    proc = subprocess.run(eval_cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 16
