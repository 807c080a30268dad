# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DDP with an empty rank: two gloo processes on CPU, rank 1 sees no batch at all.

Every metric class and every report handler (and ``ProbabilityWriter``) must take part in every
collective on the empty rank: the run finishes (a hang fails the test after a short timeout),
every rank gets the single-process numbers of the union (= rank 0's data), rank 0 writes the
union's files. With every rank empty each raises the single-process error, on every rank.
"""

from __future__ import annotations

import csv
import datetime
import json
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine

from monai_calib._utils.distributed import gather_rows
from monai_calib.handlers import (
    NLL,
    BrierScore,
    CalibrationReport,
    MultiLabelAUC,
    MultiLabelCalibrationReport,
    PooledCalibrationError,
    ProbabilityWriter,
    RetentionAUC,
    SegmentationCalibrationReport,
)
from monai_calib.handlers.multilabel_report import _MultiLabelAUCMetric
from monai_calib.metrics import (
    BrierScoreMetric,
    NLLMetric,
    PooledCalibrationErrorMetric,
    RetentionAUCMetric,
    SegmentationReportMetric,
)

WORLD = 2
JOIN_TIMEOUT_S = 90  # a hang fails here; the whole run takes a few seconds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="needs torch.distributed gloo",
    ),
]


def _data() -> dict:
    g = torch.Generator().manual_seed(7)
    probs = torch.softmax(2 * torch.randn(20, 3, generator=g, dtype=torch.float64), 1)
    labels = torch.randint(0, 3, (20,), generator=g)
    multi_hot = (torch.rand(20, 4, generator=g) < 0.4).float()
    ml_probs = torch.sigmoid(2 * (multi_hot - 0.5) + torch.randn(20, 4, generator=g))
    dense = torch.softmax(torch.randn(6, 3, 4, 5, generator=g), dim=1)
    dense_labels = torch.randint(0, 3, (6, 1, 4, 5), generator=g)
    return {
        "probs": probs,
        "labels": labels,
        "ml_probs": ml_probs,
        "multi_hot": multi_hot,
        "dense": dense,
        "dense_labels": dense_labels,
    }


def _batches(empty: bool) -> list[dict]:
    if empty:
        return []
    d = _data()
    out = []
    for c, s in ((slice(0, 8), slice(0, 2)), (slice(8, None), slice(2, None))):
        out.append(
            {
                "pred": d["probs"][c].float(),
                "label": d["labels"][c],
                "ml_pred": d["ml_probs"][c],
                "ml_label": d["multi_hot"][c],
                "dense": d["dense"][s],
                "dense_label": d["dense_labels"][s],
            }
        )
    return out


def _metric_classes() -> dict[str, tuple[object, str]]:
    """name -> (metric, which inputs it reads); every storage strategy and every class."""
    return {
        "ece_stream": (PooledCalibrationErrorMetric(num_bins=10), "cls"),
        "ece_equal_mass": (PooledCalibrationErrorMetric(num_bins=5, binning="equal_mass"), "cls"),
        "sce_dense": (PooledCalibrationErrorMetric(num_bins=6, target="classwise"), "dense"),
        "monai_compat": (PooledCalibrationErrorMetric(num_bins=10, per_image=True), "dense"),
        "brier": (BrierScoreMetric(), "cls"),
        "nll": (NLLMetric(), "dense"),
        "rauc": (RetentionAUCMetric(num_points=20), "cls"),
        "ml_auc": (_MultiLabelAUCMetric(), "ml"),
        "seg": (SegmentationReportMetric(num_bins=6, num_bins_per_image=5), "seg"),
    }


def _feed_metric(metric: object, kind: str, batch: dict) -> None:
    if kind == "cls":
        metric(batch["pred"], batch["label"])
    elif kind == "ml":
        metric(batch["ml_pred"], batch["ml_label"])
    elif kind == "seg":
        metric.update(batch["dense"], batch["dense_label"])
    else:
        metric(batch["dense"], batch["dense_label"])


def _metrics_run(empty: bool) -> dict[str, object]:
    """Every metric class fed this rank's batches; its aggregate, or ``(error type, message)``."""
    out: dict[str, object] = {}
    for name, (metric, kind) in _metric_classes().items():
        for batch in _batches(empty):
            _feed_metric(metric, kind, batch)
        try:
            out[name] = metric.aggregate()
            if name == "ece_stream":
                out["stats"] = metric.statistics()
        except (RuntimeError, ValueError, TypeError) as e:
            out[name] = (type(e).__name__, str(e))
    return out


def _handlers(out_dir: Path) -> list[tuple[str, object]]:
    """(name, handler) of every report handler, the writer and the metric handlers."""
    cls = lambda o: (o["pred"], o["label"])  # noqa: E731
    return [
        ("cls", CalibrationReport(str(out_dir / "cls"), prefix="cls_", plots=False)),
        (
            "ml",
            MultiLabelCalibrationReport(
                str(out_dir / "ml"),
                output_transform=lambda o: (o["ml_pred"], o["ml_label"]),
                prefix="ml_",
                plots=False,
            ),
        ),
        (
            "seg",
            SegmentationCalibrationReport(
                str(out_dir / "seg"),
                output_transform=lambda o: (o["dense"], o["dense_label"]),
                prefix="seg_",
                plots=False,
            ),
        ),
        (
            "writer",
            ProbabilityWriter(str(out_dir / "probs.csv"), output_transform=lambda o: o["pred"]),
        ),
        ("h_ml_auc", MultiLabelAUC(output_transform=lambda o: (o["ml_pred"], o["ml_label"]))),
        ("h_ece", PooledCalibrationError(output_transform=cls, num_bins=10)),
        ("h_brier", BrierScore(output_transform=cls)),
        ("h_nll", NLL(output_transform=cls)),
        ("h_rauc", RetentionAUC(output_transform=cls, num_points=20)),
    ]


def _attach(name: str, handler: object, engine: Engine) -> None:
    if name.startswith("h_"):
        handler.attach(engine, name)
    else:
        handler.attach(engine)


def _handlers_run(empty: bool, out_dir: Path) -> dict[str, object]:
    """One evaluator with every handler: its ``engine.state.metrics``."""
    engine = Engine(lambda e, b: b)
    for name, handler in _handlers(out_dir):
        _attach(name, handler, engine)
    # an iterator: ignite runs a zero-iteration epoch (EPOCH_COMPLETED included) on it
    engine.run(iter(_batches(empty)), max_epochs=1)
    return dict(engine.state.metrics)


def _handlers_all_empty(out_dir: Path) -> dict[str, object]:
    """Each handler alone on an empty run: ``(error type, message)`` or its metrics."""
    out: dict[str, object] = {}
    for name, handler in _handlers(out_dir):
        engine = Engine(lambda e, b: b)
        _attach(name, handler, engine)
        try:
            engine.run(iter([]), max_epochs=1)
            out[name] = dict(engine.state.metrics)
        except (RuntimeError, ValueError, TypeError) as e:
            out[name] = (type(e).__name__, str(e))
    return out


def _gathers(rank: int) -> dict[str, object]:
    """``gather_rows`` on disagreeing ranks: the same result, or the same error, on each."""
    out: dict[str, object] = {}
    cases = {
        # rank 1 does not even know how many tensors there are
        "none": ([torch.arange(6).reshape(3, 2), torch.ones(3)], None),
        # a placeholder of another trailing shape and dtype takes the agreed ones
        "placeholder": ([torch.ones(2, 3, dtype=torch.float64)], [torch.zeros(0)]),
        "promote": ([torch.tensor([1, 2])], [torch.tensor([0.5])]),
        "shape_mismatch": ([torch.zeros(2, 3)], [torch.zeros(1, 4)]),
        "count_mismatch": ([torch.zeros(2)], [torch.zeros(2), torch.zeros(2)]),
    }
    for name, per_rank in cases.items():
        try:
            out[name] = gather_rows(per_rank[rank])
        except ValueError as e:
            out[name] = ("ValueError", str(e))
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # as the expected values (float32 sums depend on the thread count)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=30),
    )
    try:
        out = Path(out_dir)
        empty = rank == 1
        result = {
            "metrics": _metrics_run(empty),
            "handlers": _handlers_run(empty, out / f"run{rank}"),
            "metrics_all_empty": _metrics_run(True),
            "handlers_all_empty": _handlers_all_empty(out / f"empty{rank}"),
            "gathers": _gathers(rank),
        }
        torch.save(result, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp_empty_rank")
    # fork: the children reuse the parent's imports; joined with a deadline so that a rank
    # blocked in a collective fails the test instead of blocking it
    ctx = mp.start_processes(
        _worker,
        args=(str(tmp / "init"), str(tmp)),
        nprocs=WORLD,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"the DDP run with an empty rank did not finish in {JOIN_TIMEOUT_S} s")
    return tmp


def _close(got: object, expected: object, name: str) -> None:
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12, msg=name)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, nan_ok=True), name
    else:
        assert got == expected, name


def test_metric_classes_give_the_union_on_every_rank(run_dir):
    single = _metrics_run(False)  # no process group: one process, the union (= rank 0's data)
    assert not any(isinstance(v, tuple) for v in single.values()), single
    for rank in range(WORLD):
        got = torch.load(run_dir / f"rank{rank}.pt", weights_only=False)["metrics"]
        assert got.keys() == single.keys()
        for name, value in single.items():
            if isinstance(value, dict):
                assert got[name] == pytest.approx(value, rel=1e-9, nan_ok=True), (rank, name)
            else:
                _close(got[name], value, f"rank {rank}: {name}")


def test_report_handlers_give_the_union_on_every_rank(run_dir, tmp_path):
    single = _handlers_run(False, tmp_path / "single")
    for rank in range(WORLD):
        got = torch.load(run_dir / f"rank{rank}.pt", weights_only=False)["handlers"]
        assert got == pytest.approx(single, rel=1e-9, nan_ok=True), rank
    # rank 0 alone writes, and writes the files of the union
    assert not (run_dir / "run1").exists()
    for name in ("cls", "ml", "seg"):
        got = json.loads((run_dir / "run0" / name / "metrics.json").read_text())
        expected = json.loads((tmp_path / "single" / name / "metrics.json").read_text())
        assert got == pytest.approx(expected, rel=1e-9, nan_ok=True), name
    with open(run_dir / "run0" / "probs.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(tmp_path / "single" / "probs.csv", newline="") as f:
        assert rows == list(csv.reader(f))
    assert len(rows) == 21


def test_all_ranks_empty_raise_the_single_process_error(run_dir, tmp_path):
    single_metrics = _metrics_run(True)
    single_handlers = _handlers_all_empty(tmp_path)
    assert all(isinstance(v, tuple) for v in single_metrics.values()), single_metrics
    for rank in range(WORLD):
        got = torch.load(run_dir / f"rank{rank}.pt", weights_only=False)
        assert got["metrics_all_empty"] == single_metrics, rank
        assert got["handlers_all_empty"] == single_handlers, rank


def test_gather_rows_agrees_on_every_rank(run_dir):
    results = [torch.load(run_dir / f"rank{r}.pt", weights_only=False)["gathers"] for r in (0, 1)]
    for got in results:
        none = got["none"]
        assert torch.equal(none[0], torch.arange(6).reshape(3, 2)) and torch.equal(
            none[1], torch.ones(3)
        )
        (placeholder,) = got["placeholder"]
        assert placeholder.dtype == torch.float64 and torch.equal(placeholder, torch.ones(2, 3))
        (promoted,) = got["promote"]
        assert torch.equal(promoted, torch.tensor([1.0, 2.0, 0.5]))
        assert got["shape_mismatch"][0] == "ValueError" and "(3,)" in got["shape_mismatch"][1]
        assert got["count_mismatch"][0] == "ValueError"
    assert results[0]["shape_mismatch"] == results[1]["shape_mismatch"]
