# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``multi_gpu_train.json``: two processes on the gloo backend (CPU) train one epoch of the MiT
overlay through torchrun; the checkpoint written by rank 0 then evaluates in one process."""

from __future__ import annotations

import json

import torch
from synthetic import write_medmnist_npz

BUNDLE = "medmnist_classification"


def test_two_process_gloo_training_one_epoch(bundle, tmp_path):
    data = tmp_path / "data"
    write_medmnist_npz(data, "breastmnist", sizes=(32, 16, 16))
    out = tmp_path / "run"
    run = {"data_root": data, "output_dir": out}
    bundle.run_cli(
        ["train.json", "loss_mit.json", "multi_gpu_train.json"],
        nproc=2,
        max_epochs=1,
        batch_size=8,
        **run,
    )

    ckpt = torch.load(out / "models" / "model.pt", weights_only=True)
    # rank 0 saved the unwrapped network (no DDP "module." prefix) and the loss state
    assert not any(k.startswith("module.") for k in ckpt["model"])
    # 32 training images over 2 ranks with batch 8: 2 iterations per rank; the loss saw the
    # all-reduced label counts of both ranks (the Laplace prior of 1 per class + 32 labels)
    assert int(ckpt["loss"]["step"]) == 2
    labels = torch.as_tensor(__import__("numpy").load(data / "breastmnist.npz")["train_labels"])
    expected = 1.0 + torch.bincount(labels.reshape(-1).long(), minlength=2).double()
    torch.testing.assert_close(ckpt["loss"]["label_counts"].double(), expected)

    bundle.run_cli(["train.json", "loss_mit.json", "evaluate.json"], **run)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 16
