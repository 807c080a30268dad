# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Bundle-level DDP = single process (docs/reliability.md).

The MedMNIST bundle trains one epoch twice on the same synthetic data:

- one process, batch ``2b``, no shuffling (``train.json``);
- two gloo processes through ``torchrun`` with ``multi_gpu_train.json``, batch ``b`` per rank,
  ``DistributedSampler(shuffle=False)``: rank ``r`` reads samples ``r, r + 2, ...``, so at every
  iteration the union of the two ranks' batches is the single-process batch, and DDP's
  averaged gradient of the two per-rank mean losses is the gradient of the mean loss over it.

To make the two runs see the same function, the overlay below removes what is legitimately
per-rank in the shipped bundle: random augmentation (each rank draws its own) and BatchNorm
(per-rank batch statistics; the network here is a linear classifier). What remains differs only
in the order of floating point sums, so the trained weights agree to 1e-5 and the evaluation
metrics of ``evaluate.json`` (run in one process on each checkpoint) to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from synthetic import write_medmnist_npz

BUNDLE = "medmnist_classification"
PER_RANK_BATCH = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"
    ),
]

OVERLAY = {
    "network_def": "$torch.nn.Sequential(torch.nn.Flatten(), "
    "torch.nn.Linear(@in_channels * @image_size * @image_size, @num_classes))",
    "train#preprocessing": {
        "_target_": "EnsureTyped",
        "keys": ["image", "label"],
        "track_meta": False,
    },
    "train#dataloader#shuffle": False,
    "amp": False,
    "learning_rate": 0.01,
}


def test_two_process_bundle_epoch_equals_single_process(bundle, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_medmnist_npz(data, "breastmnist", sizes=(32, 16, 16))
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps(OVERLAY))
    ddp_overlay = tmp_path / "ddp_overlay.json"
    ddp_overlay.write_text(json.dumps({"train#sampler#shuffle": False}))
    base = ["train.json", "loss_ce.json", overlay]

    single = tmp_path / "single"
    bundle.run(
        base,
        data_root=str(data),
        max_epochs=1,
        batch_size=2 * PER_RANK_BATCH,
        output_dir=str(single),
    )

    ddp = tmp_path / "ddp"
    bundle.run_cli(
        [*base, "multi_gpu_train.json", ddp_overlay],
        nproc=2,
        data_root=data,
        max_epochs=1,
        batch_size=PER_RANK_BATCH,
        output_dir=ddp,
    )

    w_single = torch.load(single / "models" / "model.pt", weights_only=True)["model"]
    w_ddp = torch.load(ddp / "models" / "model.pt", weights_only=True)["model"]
    assert w_single.keys() == w_ddp.keys()
    for key in w_single:
        torch.testing.assert_close(w_ddp[key], w_single[key], rtol=1e-5, atol=1e-6, msg=key)

    metrics = {}
    for name, out in (("single", single), ("ddp", ddp)):
        bundle.run([*base, "evaluate.json"], data_root=str(data), output_dir=str(out))
        metrics[name] = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["single"].keys() == metrics["ddp"].keys()
    assert metrics["single"]["n"] == 16
    for key, value in metrics["single"].items():
        assert metrics["ddp"][key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
