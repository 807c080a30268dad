# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Report handlers and ProbabilityWriter on two gloo ranks: numbers of the union on every rank,
files written by rank 0 only, with the union's rows in rank order (uneven shards)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine

from monai_calib.handlers import (
    CalibrationReport,
    MultiLabelCalibrationReport,
    ProbabilityWriter,
    SegmentationCalibrationReport,
)
from monai_calib.metrics import SegmentationReportMetric, classification_report, multilabel_report

WORLD = 2
SPLIT = 13  # rank 0 holds samples [0, 13), rank 1 [13, 24): uneven shards

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="needs torch.distributed gloo",
    ),
]


def data() -> dict[str, torch.Tensor | list[tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(2 * torch.randn(24, 3, generator=g), 1)
    labels = torch.randint(0, 3, (24,), generator=g)
    multi_hot = (torch.rand(24, 4, generator=g) < 0.4).float()
    ml_probs = torch.sigmoid(2 * (multi_hot - 0.5) + torch.randn(24, 4, generator=g))
    images = []
    for _ in range(6):
        lab = torch.randint(0, 2, (1, 8, 9), generator=g)
        images.append((torch.softmax(torch.randn(2, 8, 9, generator=g) + 2 * lab, 0), lab.float()))
    return {
        "probs": probs,
        "labels": labels,
        "ml_probs": ml_probs,
        "multi_hot": multi_hot,
        "images": images,
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    # one thread, as the expected values are computed (float32 sums depend on the thread count)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        d = data()
        out = Path(out_dir)
        part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        p, y, mp_, mh = (
            d["probs"][part],
            d["labels"][part],
            d["ml_probs"][part],
            d["multi_hot"][part],
        )
        batches = [
            {"pred": p[c], "label": y[c], "ml_pred": mp_[c], "ml_label": mh[c]}
            for c in (slice(0, 5), slice(5, None))
        ]
        engine = Engine(lambda e, b: b)
        CalibrationReport(str(out / f"cls{rank}"), plots=False).attach(engine)
        MultiLabelCalibrationReport(
            str(out / f"ml{rank}"),
            output_transform=lambda o: (o["ml_pred"], o["ml_label"]),
            prefix="ml_",
            plots=False,
        ).attach(engine)
        ProbabilityWriter(
            str(out / f"probs{rank}.csv"), output_transform=lambda o: o["pred"]
        ).attach(engine)
        engine.run(batches, max_epochs=1)
        seg = Engine(lambda e, b: b)
        SegmentationCalibrationReport(str(out / f"seg{rank}"), prefix="seg_", plots=False).attach(
            seg
        )
        mine = d["images"][rank * 3 : rank * 3 + 3]
        seg.run([[{"pred": a, "label": b} for a, b in mine]], max_epochs=1)
        metrics = {**engine.state.metrics, **seg.state.metrics}
        (out / f"metrics{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report_ddp")
    here = str(Path(__file__).parent)  # the spawned children import this module by name
    if here not in sys.path:
        sys.path.insert(0, here)
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return tmp


def test_every_rank_gets_the_numbers_of_the_union(run_dir):
    d = data()
    expected = {f"test_{k}": v for k, v in classification_report(d["probs"], d["labels"]).items()}
    ml = multilabel_report(d["ml_probs"], d["multi_hot"])
    expected.update({f"ml_{k}": v for k, v in ml.items()})
    seg = SegmentationReportMetric()
    for p, lab in d["images"]:
        seg.update([p], [lab])
    expected.update({f"seg_{k}": v for k, v in seg.aggregate().items()})
    for rank in range(WORLD):
        got = json.loads((run_dir / f"metrics{rank}.json").read_text())
        assert got == pytest.approx(expected, rel=1e-12, nan_ok=True), rank
    assert expected["test_n"] == 24.0 and expected["seg_n"] == 6.0


def test_only_rank_0_writes_the_union_in_rank_order(run_dir):
    d = data()
    for name in ("cls", "ml", "seg"):
        assert (run_dir / f"{name}0" / "metrics.json").is_file()
        assert not (run_dir / f"{name}1").exists()
    assert not (run_dir / "probs1.csv").exists()
    saved = np.load(run_dir / "cls0" / "predictions.npz")
    np.testing.assert_array_equal(saved["probs"], d["probs"].numpy())
    np.testing.assert_array_equal(saved["labels"], d["labels"].numpy())
    with open(run_dir / "probs0.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(24))
    for row, p in zip(rows, d["probs"], strict=True):
        assert int(row["predicted_class"]) == int(p.argmax())
        assert [float(row[f"p{k}"]) for k in range(3)] == pytest.approx(p.tolist(), abs=1e-6)
