# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Wall time of the main job with a phase breakdown, and MiT / CCT-EAL's cost in a training step.

Run: ``python benchmarks/bench_main_job.py [--parts job,step] [--threads 2] [--json FILE]``
(about 4-5 minutes on an idle 2-core machine; ``--parts step`` alone takes under a minute).

job: ``python -m monai_calib compare`` with its defaults (``--output`` in a temporary folder) in a
    subprocess with ``MONAI_CALIB_PROFILE`` set, so ``compare`` writes the seconds of each phase
    (setup, data loading, training, per-epoch validation, evaluation, temperature scaling,
    summary with bootstraps, plotting, writing; see ``monai_calib/cli/_profile.py``). The time
    before ``compare``'s main function (interpreter start-up and imports) is the subprocess's
    wall time minus the phases' total, reported as ``import``. Target: below 60 s.
step: one training step (forward, loss, backward, Adam step) of the medmnist_classification
    bundle's network (read from its ``train.json``: ResNet, layers (1, 1, 1, 1), 16..128
    channels) at the bundle's batch size (64, 1 x 28 x 28, 2 classes), with CE, a second CE
    ("CE (control)": the noise floor), MiT and CCT-EAL; each contender has its own copy of the
    network and its own optimizer; repeats interleaved in a shuffled order, medians. Reported:
    the loss's added % of the CE step time (target: <= 3 % at 2 threads).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = ["bench_job", "bench_step", "main"]

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def bench_job(threads: int | None, extra: list[str]) -> dict[str, float]:
    """Run the default ``compare`` once; seconds per phase plus ``import`` and ``wall``."""
    with tempfile.TemporaryDirectory() as tmp:
        prof = Path(tmp) / "phases.json"
        env = dict(os.environ, MONAI_CALIB_PROFILE=str(prof))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "monai_calib", "compare", "--output", f"{tmp}/out", *extra]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        phases = json.loads(prof.read_text())
    out = {"import": wall - phases.pop("total")}
    out.update(phases)
    out["wall"] = wall
    return out


def _bundle_network() -> nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / "medmnist_classification" / "configs" / "train.json"))
    return parser.get_parsed_content("network_def")


def bench_step(repeats: int, inner: int, batch: int = 64) -> dict[str, dict[str, float]]:
    """Median step time per loss (interleaved) and its added % over CE."""
    from monai_calib.losses import CCTEALLoss, MiTLoss

    torch.manual_seed(0)
    net = _bundle_network().train()
    k = 2
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, k, (batch,))
    losses: dict[str, nn.Module] = {
        "CE (torch)": nn.CrossEntropyLoss(),
        "CE (control)": nn.CrossEntropyLoss(),
        "MiTLoss": MiTLoss(num_classes=k),
        "CCTEALLoss": CCTEALLoss(num_classes=k),
    }

    def make(loss: nn.Module) -> Callable[[], None]:
        model = copy.deepcopy(net)
        opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss(model(x), y).backward()
            opt.step()

        return step

    fns = {n: make(f) for n, f in losses.items()}
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for _ in range(repeats):
        random.shuffle(names)
        for name in names:
            t0 = time.perf_counter()
            for _ in range(inner):
                fns[name]()
            samples[name].append((time.perf_counter() - t0) / inner)
    med = {n: statistics.median(v) for n, v in samples.items()}
    ce = med["CE (torch)"]
    return {n: {"ms": t * 1e3, "added_pct_over_ce": 100.0 * (t - ce) / ce} for n, t in med.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="job,step", help="job, step or both (default job,step)")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads of the step benchmark (default 2)"
    )
    ap.add_argument(
        "--job-threads",
        type=int,
        default=None,
        help="--threads passed to compare (default: none, torch's choice, as the main job)",
    )
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "compare_args", nargs="*", help="extra compare options after --, e.g. -- --epochs 2"
    )
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",")}
    results: dict = {"meta": {"torch": torch.__version__, "loadavg_start": os.getloadavg()}}
    print(f"## Main job and training step (torch {torch.__version__}, {os.cpu_count()} CPUs)\n")
    print(f"load average at start: {_load()}\n")
    if "job" in parts:
        job = bench_job(args.job_threads, args.compare_args)
        results["job"] = job
        wall = job["wall"]
        print(f"### python -m monai_calib compare {' '.join(args.compare_args)}".rstrip())
        print(f"\nwall time {wall:.1f} s (target < 60 s: {'met' if wall < 60 else 'not met'})\n")
        print("| phase | s | share |\n|---|---|---|")
        for name, sec in job.items():
            if name != "wall":
                print(f"| {name} | {sec:.2f} | {100 * sec / wall:.1f}% |")
        print()
    if "step" in parts:
        torch.set_num_threads(args.threads)
        random.seed(0)
        step = bench_step(args.repeats, 5)
        results["step"] = step
        print(
            f"### bundle network training step, batch 64, {args.threads} thread(s), "
            f"{args.repeats} interleaved repeats of 5 steps, medians\n"
        )
        print("| loss | ms | added % over CE | target <= 3% |\n|---|---|---|---|")
        for name, r in step.items():
            verdict = (
                "-"
                if name.startswith("CE (torch)")
                else ("met" if r["added_pct_over_ce"] <= 3.0 else "**not met**")
            )
            print(f"| {name} | {r['ms']:.2f} | {r['added_pct_over_ce']:+.2f} | {verdict} |")
        print()
    results["meta"]["loadavg_end"] = os.getloadavg()
    print(f"load average at end: {_load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
