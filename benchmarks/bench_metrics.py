# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Speed and memory of the functional calibration metrics (``monai_calib.metrics``).

Run: ``python benchmarks/bench_metrics.py [--repeats 9] [--threads N] [--quick]``

(a) top-label equal-width ECE on N = 1,000,000 x K = 10 probabilities vs
    ``torchmetrics.functional.classification.multiclass_calibration_error`` (default arguments,
    i.e. ``validate_args=True``, and ``validate_args=False``);
(b) pooled ECE on dense input B=2, C=4, 96^3 vs MONAI ``CalibrationErrorMetric`` (a per-image,
    per-channel number: a timing comparison only, the quantities differ);
(c) peak memory of streaming ``calibration_statistics`` (batches of fixed size summed) for
    N = 1e4 .. 1e7 samples, each N measured in a fresh subprocess.

``--issue15`` runs the issue-15 metric targets in one process and writes them, with a "target
met / not met" column and the load average, to ``benchmarks/results_issue15_metrics.md``
(``--out``): top-label ECE (checks on and off, and torchmetrics) and the dense class-wise
pooled ECE metric class (index and one-hot labels, and MONAI's ``CalibrationErrorMetric``), at
1 and 2 intra-op threads (``torch.set_num_threads``; every repeat runs every contender at every
thread count back to back). Run: ``python benchmarks/bench_metrics.py --issue15``.

Timings: every repeat runs all contenders back to back (interleaved), so a burst of load from
other processes hits them alike; the median over repeats is reported, and the ratio is the ratio
of medians. Memory: torch allocates tensors with its own C++ allocator, invisible to
``tracemalloc``, so each N runs in a fresh subprocess that imports everything, runs one warm-up
batch, resets the kernel's resident-set high-water mark (``echo 5 > /proc/self/clear_refs``),
records ``VmRSS``, streams the N samples and reads the high-water mark ``VmHWM`` (Linux; falls
back to ``ru_maxrss``, which the ~1 GB import peak of torch + MONAI would mask). "added" is the
peak minus the resident size before the loop. The same loop through torchmetrics' stateful
``MulticlassCalibrationError`` (which keeps every confidence) is measured for contrast.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

__all__ = ["main"]


def _time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_a(repeats: int) -> dict[str, float]:
    from torchmetrics.functional.classification import multiclass_calibration_error

    from monai_calib.metrics import calibration_error, calibration_error_from_statistics
    from monai_calib.metrics._calibration_kernels import chunked_equal_width_statistics

    g = torch.Generator().manual_seed(0)
    n, k = 1_000_000, 10
    p = torch.softmax(2 * torch.randn(n, k, generator=g), dim=1)
    y = torch.randint(0, k, (n,), generator=g)
    ours = float(calibration_error(p, y, num_bins=15))
    ref = float(multiclass_calibration_error(p, y, num_classes=k, n_bins=15))
    assert abs(ours - ref) < 1e-5, (ours, ref)

    def unchecked() -> object:
        # the same chunked pass with the probability checks (range, row sums) skipped, to show
        # what the validation costs; private, not a public option
        stats = chunked_equal_width_statistics(p, p, y, "top_label", 15, check=False)
        return calibration_error_from_statistics(stats)

    t = _time_interleaved(
        {
            "monai_calib": lambda: calibration_error(p, y, num_bins=15),
            "monai_calib_unchecked": unchecked,
            "torchmetrics": lambda: multiclass_calibration_error(p, y, k, n_bins=15),
            "torchmetrics_novalidate": lambda: multiclass_calibration_error(
                p, y, k, n_bins=15, validate_args=False
            ),
        },
        repeats,
    )
    t["ece_ours"], t["ece_torchmetrics"] = ours, ref
    return t


def bench_b(repeats: int) -> dict[str, float]:
    from monai.metrics import CalibrationErrorMetric

    from monai_calib.metrics import calibration_error

    g = torch.Generator().manual_seed(1)
    shape = (2, 4, 96, 96, 96)
    p = torch.softmax(2 * torch.randn(shape, generator=g), dim=1)
    idx = torch.randint(0, 4, (2, 1, *shape[2:]), generator=g)
    onehot = torch.zeros_like(p).scatter_(1, idx, 1.0)
    metric = CalibrationErrorMetric(num_bins=15)

    def monai_once() -> None:
        metric(p, onehot)
        metric.aggregate()
        metric.reset()

    return _time_interleaved(
        {
            "monai_CalibrationErrorMetric": monai_once,
            "classwise_index_labels": lambda: calibration_error(p, idx, target="classwise"),
            "classwise_onehot_labels": lambda: calibration_error(p, onehot, target="classwise"),
            "top_label_index_labels": lambda: calibration_error(p, idx),
        },
        repeats,
    )


# issue-15 targets: top-label ECE >= 3x torchmetrics, dense class-wise >= 3.5x MONAI, checks
# <= 20% of the checked call (N = 1e6)
_TARGET_TOP = 3.0
_TARGET_DENSE = 3.5
_TARGET_CHECK_SHARE = 0.20
_ISSUE15_OUT = "results_issue15_metrics.md"


def bench_issue15(repeats: int, thread_counts: list[int]) -> dict[str, object]:
    """Issue-15 metric timings, interleaved over contenders *and* thread counts.

    Returns ``{"times": {threads: {name: median seconds}}, "values": {...}}``.
    """
    from monai.metrics import CalibrationErrorMetric
    from torchmetrics.functional.classification import multiclass_calibration_error

    from monai_calib.metrics import (
        PooledCalibrationErrorMetric,
        calibration_error,
        calibration_error_from_statistics,
    )
    from monai_calib.metrics._calibration_kernels import chunked_equal_width_statistics

    g = torch.Generator().manual_seed(0)
    n, k = 1_000_000, 10
    p = torch.softmax(2 * torch.randn(n, k, generator=g), dim=1)
    y = torch.randint(0, k, (n,), generator=g)
    g = torch.Generator().manual_seed(1)
    shape = (2, 4, 96, 96, 96)
    pd = torch.softmax(2 * torch.randn(shape, generator=g), dim=1)
    idx = torch.randint(0, 4, (2, 1, *shape[2:]), generator=g)
    onehot = torch.zeros_like(pd).scatter_(1, idx, 1.0)
    monai_metric = CalibrationErrorMetric(num_bins=15)
    ours_dense = PooledCalibrationErrorMetric(num_bins=15, target="classwise")

    def unchecked() -> object:
        # the same chunked pass without any input check (labels, range, row sums): what the
        # checks cost; private, not a public option
        stats = chunked_equal_width_statistics(p, p, y, "top_label", 15, check=False)
        return calibration_error_from_statistics(stats)

    def dense_unchecked() -> object:
        stats = chunked_equal_width_statistics(pd, pd, idx[:, 0], "classwise", 15, check=False)
        return calibration_error_from_statistics(stats)

    def monai_once() -> object:
        monai_metric(pd, onehot)
        value = monai_metric.aggregate()
        monai_metric.reset()
        return value

    def ours_once(labels: torch.Tensor) -> object:
        ours_dense(pd, labels)
        value = ours_dense.aggregate()
        ours_dense.reset()
        return value

    fns: dict[str, Callable[[], object]] = {
        "top_ours": lambda: calibration_error(p, y, num_bins=15),
        "top_ours_unchecked": unchecked,
        "top_torchmetrics": lambda: multiclass_calibration_error(p, y, k, n_bins=15),
        "dense_monai": monai_once,
        "dense_ours_index": lambda: ours_once(idx),
        "dense_ours_onehot": lambda: ours_once(onehot),
        "dense_ours_unchecked": dense_unchecked,
    }
    old_threads = torch.get_num_threads()
    values: dict[str, float] = {}
    times: dict[int, dict[str, list[float]]] = {
        t: {name: [] for name in fns} for t in thread_counts
    }
    try:
        for t in thread_counts:  # warm-up, and the results at every thread count
            torch.set_num_threads(t)
            for name, fn in fns.items():
                out = fn()
                if name != "dense_monai":
                    values[f"{name}@{t}"] = float(out)
        for _ in range(repeats):
            for t in thread_counts:
                torch.set_num_threads(t)
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[t][name].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old_threads)
    medians = {t: {name: statistics.median(v) for name, v in d.items()} for t, d in times.items()}
    return {"times": medians, "values": values}


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def write_issue15(res: dict[str, object], path: str, header: list[str]) -> str:
    """Markdown tables of :func:`bench_issue15` with a target column; returns the text."""
    times: dict[int, dict[str, float]] = res["times"]  # type: ignore[assignment]
    values: dict[str, float] = res["values"]  # type: ignore[assignment]
    lines = ["# Issue 15: metric speed targets", "", *header, ""]
    lines += [
        f"## Top-label equal-width ECE, N = 10^6, K = 10, 15 bins (target: >= {_TARGET_TOP:g}x "
        f"torchmetrics with the checks on; checks <= {100 * _TARGET_CHECK_SHARE:.0f}% of the call)",
        "",
        "Median ms. Ours: `calibration_error(p, y)`; checks off: the same chunked pass without "
        "any input check (private kernel call); torchmetrics: "
        "`multiclass_calibration_error(p, y, 10, n_bins=15)` (default `validate_args=True`).",
        "",
        "| threads | ours, checks on | ours, checks off | check share | torchmetrics "
        "| torchmetrics / ours | target >= 3x | target checks <= 20% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, d in times.items():
        ours, off, tm = d["top_ours"], d["top_ours_unchecked"], d["top_torchmetrics"]
        share = max(0.0, (ours - off) / ours)
        lines.append(
            f"| {t} | {1e3 * ours:.1f} | {1e3 * off:.1f} | {100 * share:.0f}% | {1e3 * tm:.1f} "
            f"| {tm / ours:.2f}x | {_met(tm / ours >= _TARGET_TOP)} "
            f"| {_met(share <= _TARGET_CHECK_SHARE)} |"
        )
    lines += [
        "",
        f"## Dense class-wise pooled ECE, 2 x 4 x 96^3, 15 bins (target: >= {_TARGET_DENSE:g}x "
        "MONAI)",
        "",
        "Median ms of call + `aggregate()` + `reset()`. MONAI: "
        "`CalibrationErrorMetric(num_bins=15)` (one-hot labels, its input; per image and "
        "channel, so only the time is compared). Ours: "
        '`PooledCalibrationErrorMetric(num_bins=15, target="classwise")` with index labels '
        "`(B, 1, *S)` and with one-hot labels; checks off: the chunked pass alone (index labels).",
        "",
        "| threads | MONAI | ours, index | MONAI / ours | ours, one-hot | MONAI / ours "
        "| ours, checks off | target >= 3.5x (index / one-hot) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, d in times.items():
        ref, a, b = d["dense_monai"], d["dense_ours_index"], d["dense_ours_onehot"]
        ra, rb = ref / a, ref / b
        lines.append(
            f"| {t} | {1e3 * ref:.1f} | {1e3 * a:.1f} | {ra:.2f}x | {1e3 * b:.1f} | {rb:.2f}x "
            f"| {1e3 * d['dense_ours_unchecked']:.1f} "
            f"| {_met(ra >= _TARGET_DENSE)} / {_met(rb >= _TARGET_DENSE)} |"
        )
    vals = ", ".join(f"{k} {v:.6f}" for k, v in sorted(values.items()))
    lines += ["", f"Values (the same at every thread count): {vals}.", ""]
    text = "\n".join(lines)
    with open(path, "w") as fh:
        fh.write(text)
    return text


_CHILD = r"""
import resource, sys, torch
torch.set_num_threads(int(sys.argv[3]))
from monai_calib.metrics import calibration_error_from_statistics, calibration_statistics
n_total, batch = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator().manual_seed(0)
k = 10
def batch_of(m):
    p = torch.softmax(2 * torch.randn(m, k, generator=g), dim=1)
    return p, torch.randint(0, k, (m,), generator=g)
mode = sys.argv[4]
if mode == "monai_calib":
    stats = calibration_statistics(*batch_of(batch))  # warm-up at the fixed batch size
    stats.zero_()
    def update(p, y):
        global stats
        stats += calibration_statistics(p, y)
    def result():
        return float(calibration_error_from_statistics(stats))
else:  # torchmetrics' stateful metric keeps every confidence ("cat" states): O(N) memory
    from torchmetrics.classification import MulticlassCalibrationError
    metric = MulticlassCalibrationError(num_classes=k, n_bins=15)
    metric.update(*batch_of(batch))
    metric.reset()
    update = metric.update
    def result():
        return float(metric.compute())
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # KiB
try:  # reset the high-water mark so that imports do not mask the loop's peak
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    peak_key = "VmHWM"
except OSError:
    peak_key = None
before = _status("VmRSS")
done = 0
while done < n_total:
    m = min(batch, n_total - done)
    update(*batch_of(m))
    done += m
value = result()
after = _status(peak_key) if peak_key else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, value)
"""


def bench_c(sizes: list[int], batch: int, threads: int, mode: str) -> list[dict[str, float]]:
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(n), str(batch), str(threads), mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        before, after = int(out[0]), int(out[1])  # KiB on Linux
        rows.append(
            {
                "n": n,
                "rss_before_mib": before / 1024,
                "rss_peak_mib": after / 1024,
                "ece": float(out[2]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="smaller memory sweep")
    parser.add_argument("--json", type=str, default="", help="also write results to this file")
    parser.add_argument("--parts", type=str, default="abc", help="which of a, b, c to run")
    parser.add_argument(
        "--issue15",
        action="store_true",
        help="only the issue-15 metric targets at 1 and 2 threads, written to --out",
    )
    parser.add_argument(
        "--out",
        type=str,
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results_issue15_metrics.md"
        ),
    )
    args = parser.parse_args()
    if args.issue15:
        _run_issue15(args.repeats, args.out)
        return
    torch.set_num_threads(args.threads)

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads={args.threads}, cpus={os.cpu_count()}, load average {load[0]:.1f}"
    )
    res: dict[str, object] = {"threads": args.threads, "load_before": load[0]}

    if "a" in args.parts:
        _report_a(res, args.repeats)
    if "b" in args.parts:
        _report_b(res, args.repeats)
    if "c" in args.parts:
        _report_c(res, args.quick, args.threads)
    print(f"\n# load average after: {os.getloadavg()[0]:.1f}")
    res["load_after"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


def _run_issue15(repeats: int, out: str) -> None:
    import datetime

    load = os.getloadavg()
    t0 = time.perf_counter()
    res = bench_issue15(repeats, [1, 2])
    load_after = os.getloadavg()
    header = [
        f"Command: `python benchmarks/bench_metrics.py --issue15 --repeats {repeats}`, "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs.",
        f"Load average (1, 5, 15 min) before: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}; "
        f"after: {load_after[0]:.2f}, {load_after[1]:.2f}, {load_after[2]:.2f}. "
        f"{repeats} repeats; in every repeat each contender runs at 1 and at 2 intra-op threads "
        "back to back (interleaved); medians; ratios are ratios of medians. Wall time "
        f"{time.perf_counter() - t0:.0f} s.",
    ]
    print(write_issue15(res, out, header))
    print(f"\nwritten to {out}")


def _report_a(res: dict[str, object], repeats: int) -> None:
    a = bench_a(repeats)
    res["a"] = a
    print("\n(a) top-label ECE, N=1e6, K=10, 15 bins (median seconds)")
    for key in ("monai_calib", "monai_calib_unchecked", "torchmetrics", "torchmetrics_novalidate"):
        print(
            f"  {key:28s} {a[key]:.4f}  (time / monai_calib time = {a[key] / a['monai_calib']:.2f})"
        )
    print(f"  ECE ours {a['ece_ours']:.6f}  torchmetrics {a['ece_torchmetrics']:.6f}")


def _report_b(res: dict[str, object], repeats: int) -> None:
    b = bench_b(repeats)
    res["b"] = b
    ref = b["monai_CalibrationErrorMetric"]
    print("\n(b) dense 2x4x96^3, 15 bins (median seconds)")
    for key, v in b.items():
        print(f"  {key:30s} {v:.4f}  (MONAI / this = {ref / v:.2f}x)")


def _report_c(res: dict[str, object], quick: bool, threads: int) -> None:
    sizes = [10_000, 100_000, 1_000_000] if quick else [10_000, 100_000, 1_000_000, 10_000_000]
    print("\n(c) streaming over batches of 10,000 x K=10, peak RSS of a fresh process (MiB)")
    for mode in ("monai_calib", "torchmetrics"):
        c = bench_c(sizes, batch=10_000, threads=threads, mode=mode)
        res[f"c_{mode}"] = c
        label = {
            "monai_calib": "calibration_statistics summed",
            "torchmetrics": "torchmetrics MulticlassCalibrationError.update",
        }[mode]
        print(f"  {label}:")
        for row in c:
            added = row["rss_peak_mib"] - row["rss_before_mib"]
            print(
                f"    N={row['n']:>10,d}  before loop {row['rss_before_mib']:7.1f}  "
                f"peak {row['rss_peak_mib']:7.1f}  added {added:6.1f}  ECE {row['ece']:.5f}"
            )
        peaks = [row["rss_peak_mib"] for row in c]
        print(f"    peak spread (max/min - 1): {100 * (max(peaks) / min(peaks) - 1):.1f}%")


if __name__ == "__main__":
    main()
