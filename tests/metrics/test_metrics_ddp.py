# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DDP: two gloo processes on CPU each feed an uneven shard through the metric classes; the
aggregate on every rank equals one process fed the union of the data."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_calib.metrics import (
    BrierScoreMetric,
    NLLMetric,
    PooledCalibrationErrorMetric,
    RetentionAUCMetric,
)

WORLD = 2
# rank 0 gets 3 batches (70 samples), rank 1 two batches (43): uneven lengths exercise the
# padding of the all-gather of the buffered metrics.
SHARDS = {0: [(0, 25), (25, 50), (50, 70)], 1: [(70, 100), (100, 113)]}


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    logits = 2.0 * torch.randn(113, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (113,), generator=g)
    dense = torch.softmax(torch.randn(113, 3, 2, 2, generator=g, dtype=torch.float64), dim=1)
    dense_labels = torch.randint(0, 3, (113, 1, 2, 2), generator=g)
    return {
        "probs": torch.softmax(logits, 1),
        "labels": labels,
        "dense": dense,
        "dense_labels": dense_labels,
    }


def _metrics() -> dict[str, tuple[object, str]]:
    """name -> (metric, which inputs it reads)."""
    return {
        "ece_stream": (PooledCalibrationErrorMetric(num_bins=10), "cls"),
        "sce_weighted_dense": (
            PooledCalibrationErrorMetric(
                num_bins=10, target="classwise", label_reduction="weighted"
            ),
            "dense",
        ),
        "ece_equal_mass": (PooledCalibrationErrorMetric(num_bins=10, binning="equal_mass"), "cls"),
        "sce_equal_mass_dense": (
            PooledCalibrationErrorMetric(num_bins=6, binning="equal_mass", target="classwise"),
            "dense",
        ),
        "monai_compat": (PooledCalibrationErrorMetric(num_bins=10, per_image=True), "dense"),
        "brier": (BrierScoreMetric(), "cls"),
        "nll": (NLLMetric(), "dense"),
        "rauc": (RetentionAUCMetric(num_points=50), "cls"),
    }


def _feed(bounds: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    data = _data()
    metrics = _metrics()
    for a, b in bounds:
        for metric, kind in metrics.values():
            if kind == "cls":
                metric(data["probs"][a:b], data["labels"][a:b])
            else:
                metric(data["dense"][a:b], data["dense_labels"][a:b])
    out = {name: m.aggregate() for name, (m, _) in metrics.items()}
    out["stats"] = metrics["ece_stream"][0].statistics()
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # first thing after fork: no OpenMP team inherited from the parent
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        torch.save(_feed(SHARDS[rank]), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_aggregate_equals_single_process_union(tmp_path):
    # fork: the children reuse the parent's imports (spawn re-imports torch/MONAI per rank,
    # which dominates the run time on a loaded 2-core machine); no CUDA is involved.
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork"
    )
    single = _feed(SHARDS[0] + SHARDS[1])  # no process group here: plain single process
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result.keys() == single.keys()
        for name, value in single.items():
            torch.testing.assert_close(result[name], value, rtol=0, atol=1e-12, msg=name)
    # sanity: each rank alone would see a different value, so the gather did something
    assert not torch.allclose(_feed(SHARDS[1])["ece_stream"], single["ece_stream"])
