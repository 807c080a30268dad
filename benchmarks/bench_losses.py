# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Speed of the multi-class calibration losses relative to ``torch.nn.CrossEntropyLoss`` (CPU).

Run: ``python benchmarks/bench_losses.py [--threads 1,2] [--parts ab] [--repeats 15] [--quick]
[--json FILE]``; the default (parts a and b at 1 and 2 threads) prints the issue-15 tables, each
with a met / not met column, and the load average at start and end (about 2 minutes).

(a) loss forward + backward on logits ``B = 65,536, K = 10`` (target: <= 1.3x CE);
(b) the same on ``B = 1024, K = 10`` and ``B = 256, K = 100`` (small batches: per-call overhead;
    target: <= 2x CE);
(c) one full training step (forward, loss, backward, SGD step) of a small CNN
    (``monai.networks.nets.Classifier``, channels (16, 32, 64), strides 2, two residual units per
    level) at batch 128 on 1 x 28 x 28 inputs, reported as the loss's added % of step time over
    CE (target: <= +3 %). A second, independent CE instance ("CE (control)") measures the noise
    floor of this difference. Because a few-% difference between two ~100 ms step times drowns
    in scheduler noise on a shared machine, the table also gives ``est_added_pct_over_ce``: the
    loss's own extra forward+backward time over CE on the step's ``(128, 10)`` logits, divided
    by the CE step time (the rest of the step is identical for every loss).
(d) extra shapes, no target: ``B = 65,536, K = 2`` (binary tasks) and ``B = 16,384, K = 32``
    (where PyTorch's CPU ``log_softmax`` kernel is fast, unlike at K = 10; see ``_log_softmax``
    in ``monai_calib/losses/tet.py``).

Every multi-class ``(B, K)``-logit loss of ``monai_calib.losses`` that can be imported is
included (MiT and CCT-EAL via ``try``/``except ImportError``); the multi-label (LDACE, CCL) and
segmentation (ML, CAML) losses take other inputs and are not part of this comparison.

Timings: each repeat runs every contender back to back in a shuffled order (interleaved), so a
burst of load from other processes hits them alike; the median over repeats is reported, and the
ratio is the ratio of medians. Stateful losses run in training mode (their state updates every
call, as in training); their learnable temperature is in the optimizer in (c).

CPU timings of multi-megabyte tensors also depend on glibc returning freed memory to the OS and
page-faulting it back on the next call; ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_``
change the absolute numbers (CE included) noticeably. The defaults are used unless set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["build_losses", "main"]


def build_losses(num_classes: int) -> dict[str, nn.Module]:
    """The contenders for ``K = num_classes``; CE first."""
    from monai_calib import losses as L

    out: dict[str, nn.Module] = {"CE (torch)": nn.CrossEntropyLoss()}
    out["TETLoss"] = L.TETLoss()
    out["DCALoss"] = L.DCALoss()
    out["MDCALoss(nll)"] = L.MDCALoss()
    out["MDCALoss(focal)"] = L.MDCALoss(base_loss="focal")
    out["MDCALoss(ls)"] = L.MDCALoss(base_loss="label_smoothing")
    out["LSPlusLoss"] = L.LSPlusLoss([0.8] * num_classes)
    try:
        from monai_calib.losses.mit import MiTLoss

        out["MiTLoss"] = MiTLoss(num_classes=num_classes)
    except ImportError:
        pass
    try:
        from monai_calib.losses.cct_eal import CCTEALLoss

        out["CCTEALLoss"] = CCTEALLoss(num_classes=num_classes)
    except ImportError:
        pass
    return out


def _median_times(fns: dict[str, Callable[[], None]], repeats: int, inner: int) -> dict[str, float]:
    """Median (over repeats) of the mean time of ``inner`` calls, interleaved and shuffled."""
    for fn in fns.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for _ in range(repeats):
        random.shuffle(names)
        for name in names:
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_loss_only(batch: int, k: int, repeats: int, inner: int) -> dict[str, dict[str, float]]:
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(batch, k, generator=g) * 2).requires_grad_()
    y = torch.randint(0, k, (batch,), generator=g)
    losses = build_losses(k)

    def make(loss: nn.Module) -> Callable[[], None]:
        def step() -> None:
            loss(z, y).backward()
            z.grad = None

        return step

    times = _median_times({n: make(f) for n, f in losses.items()}, repeats, inner)
    ce = times["CE (torch)"]
    return {n: {"ms": t * 1e3, "ratio_to_ce": t / ce} for n, t in times.items()}


def bench_train_step(repeats: int, inner: int) -> dict[str, dict[str, float]]:
    from monai.networks.nets import Classifier

    torch.manual_seed(0)
    k = 10
    model = Classifier(
        in_shape=(1, 28, 28), classes=k, channels=(16, 32, 64), strides=(2, 2, 2)
    ).train()
    x = torch.randn(128, 1, 28, 28)
    y = torch.randint(0, k, (128,))
    losses = build_losses(k)
    losses["CE (control)"] = nn.CrossEntropyLoss()

    def make(loss: nn.Module) -> Callable[[], None]:
        opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss(model(x), y).backward()
            opt.step()

        return step

    times = _median_times({n: make(f) for n, f in losses.items()}, repeats, inner)
    ce = times["CE (torch)"]
    # Low-noise estimate of the same quantity: the loss's own extra fwd+bwd time on the
    # (128, 10) logits of this step, relative to the CE step time.
    alone = bench_loss_only(128, k, repeats, 50)
    return {
        n: {
            "ms": t * 1e3,
            "added_pct_over_ce": 100.0 * (t - ce) / ce,
            "est_added_pct_over_ce": 100.0
            * (alone[n]["ms"] - alone["CE (torch)"]["ms"])
            / (ce * 1e3)
            if n in alone
            else 0.0,
        }
        for n, t in times.items()
    }


#: (key, title, batch, classes, calls per timing, target ratio to CE or None)
LOSS_SHAPES = (
    ("a_B65536_K10", "B=65,536, K=10", 65536, 10, 1, 1.3),
    ("b_B1024_K10", "B=1024, K=10", 1024, 10, 20, 2.0),
    ("b_B256_K100", "B=256, K=100", 256, 100, 20, 2.0),
    ("d_B65536_K2", "B=65,536, K=2", 65536, 2, 1, None),
    ("d_B16384_K32", "B=16,384, K=32", 16384, 32, 1, None),
)


def _table(
    title: str,
    rows: dict[str, dict[str, float]],
    keys: list[str],
    fmt: str,
    target: float | None = None,
    target_key: str = "ratio_to_ce",
) -> str:
    met = target is not None
    lines = [
        f"### {title}",
        "",
        "| loss | ms | " + " | ".join(keys) + (f" | target <= {target}x |" if met else " |"),
        "|---|---|" + "---|" * (len(keys) + met),
    ]
    for name, r in rows.items():
        vals = " | ".join(format(r[k], fmt) for k in keys)
        verdict = ""
        if met:
            verdict = (
                " | -"
                if name.startswith("CE")
                else (" | met" if r[target_key] <= target else " | **not met**")
            )
        lines.append(f"| {name} | {r['ms']:.3f} | {vals}{verdict} |")
    return "\n".join(lines) + "\n"


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)"
    )
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument(
        "--parts",
        default="ab",
        help="a: B=65,536; b: B=1024 and B=256 (the targets); c: small-CNN training step; "
        "d: extra shapes (default ab)",
    )
    ap.add_argument("--quick", action="store_true", help="few repeats, for a smoke test")
    ap.add_argument("--json", default=None, help="write the raw results to this file")
    args = ap.parse_args(argv)
    rep = 3 if args.quick else args.repeats
    threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    results: dict = {
        "meta": {
            "torch": torch.__version__,
            "threads": threads,
            "repeats": rep,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
        }
    }
    print(
        f"## Losses vs CE (torch {torch.__version__}, {os.cpu_count()} CPUs, {rep} interleaved "
        f"repeats, medians; load average at start {_load()})\n"
    )
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        random.seed(0)
        res: dict = {}
        for key, title, batch, k, inner, target in LOSS_SHAPES:
            if key[0] not in args.parts:
                continue
            res[key] = bench_loss_only(batch, k, rep, inner)
            print(
                _table(
                    f"{title}, {n_threads} thread(s): loss fwd+bwd",
                    res[key],
                    ["ratio_to_ce"],
                    ".3f",
                    target,
                )
            )
        if "c" in args.parts:
            res["c_train_step"] = bench_train_step(rep, 3)
            print(
                _table(
                    f"small CNN training step, batch 128, 1x28x28, {n_threads} thread(s)",
                    res["c_train_step"],
                    ["added_pct_over_ce", "est_added_pct_over_ce"],
                    "+.2f",
                )
            )
        results[f"threads_{n_threads}"] = res
    results["meta"]["loadavg_end"] = os.getloadavg()
    print(f"load average at end: {_load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
