# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DiceCE vs Multiplicative (ML) vs Confidence-Adaptive Multiplicative (CAML) loss on DSB2018.

Runs the ``cell_segmentation`` bundle (same network, data, augmentation and epochs for every
loss; only the ``loss_<name>.json`` overlay differs) on the real DSB2018 stage-1 folder
with the fixed split of :func:`monai_calib.data.dsb2018_split` (20 test images, seed 0; of the
remaining 45, 5 seeded validation images pick the checkpoint and 40 are trained on), for several
seeds, then evaluates each run on the 20 test images (sliding window over whole images) and
writes a markdown table of Dice, mean IoU and pooled voxel ECE (mean ± sd over seeds), plus the
training time of one epoch of each loss as a ratio to DiceCE.

Usage (from the repository root)::

    python benchmarks/bench_segmentation_dsb2018.py --epochs 8 --seeds 3 \
        --output /tmp/bench_seg --markdown benchmarks/results_segmentation.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_calib.bundles import bundle_dir, overlay_file

__all__ = ["main"]

LOSSES = ("dice_ce", "ml", "caml")
TITLES = {"dice_ce": "DiceCE (additive)", "ml": "ML", "caml": "CAML"}


def _workflow(files: list[str], meta: str, overrides: dict[str, Any]):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=files, meta_file=meta, workflow_type=None, **overrides)
    wf.initialize()
    return wf


def _train(files: list[str], meta: str, overrides: dict[str, Any]) -> list[float]:
    """Train; return the wall time of each epoch's iterations (validation excluded)."""
    from ignite.engine import Events

    wf = _workflow(files, meta, overrides)
    trainer = wf.parser.get_parsed_content("train#trainer")
    marks: dict[str, float] = {}
    times: list[float] = []

    def start(_):
        marks["t0"] = time.perf_counter()

    def iteration(engine):
        if engine.state.iteration % engine.state.epoch_length == 0:
            times.append(time.perf_counter() - marks["t0"])

    trainer.add_event_handler(Events.EPOCH_STARTED, start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration)
    wf.run()
    wf.finalize()
    return times


def _step_times(
    configs: Path, overrides: dict[str, Any], losses: list[str], reps: int
) -> dict[str, tuple[float, float]]:
    """Median wall times of one training step (forward, loss, backward, Adam) and of the loss
    alone (forward + backward on fixed logits), per loss.

    Same network weights, the same fixed batch of patches and round-robin order over the losses,
    so slow-downs from other jobs on the machine hit every loss alike.
    """
    from monai.bundle import ConfigParser

    parsers, batch = {}, None
    for name in losses:
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), overlay_file("cell_segmentation", name)])
        parser.update(overrides)
        parsers[name] = parser
        if batch is None:
            batch = next(iter(parser.get_parsed_content("train#dataloader")))
    state = None
    parts = {}
    for name, parser in parsers.items():
        net = parser.get_parsed_content("network")
        if state is None:
            state = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(state)
        parts[name] = (
            net,
            parser.get_parsed_content("loss"),
            parser.get_parsed_content("optimizer"),
        )
    with torch.no_grad():
        logits = parts[losses[0]][0](batch["image"])
    times: dict[str, list[float]] = {name: [] for name in losses}
    loss_times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(reps):
        for name in losses:
            net, loss, opt = parts[name]
            t0 = time.perf_counter()
            opt.zero_grad()
            loss(net(batch["image"]), batch["label"]).backward()
            opt.step()
            times[name].append(time.perf_counter() - t0)
            z = logits.clone().requires_grad_(True)
            t0 = time.perf_counter()
            loss(z, batch["label"]).backward()
            loss_times[name].append(time.perf_counter() - t0)
    return {
        name: (statistics.median(times[name]), statistics.median(loss_times[name]))
        for name in losses
    }


def _fmt(values: list[float], scale: float = 100.0) -> str:
    v = [x * scale for x in values]
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}"


def _timing_section(
    configs: Path, overrides: dict[str, Any], losses: list[str], args: argparse.Namespace
) -> str:
    steps = _step_times(configs, overrides, losses, args.step_reps)
    base, base_loss = steps.get("dice_ce", (float("nan"), float("nan")))
    lines = [
        "",
        f"Training-step time (forward + loss + backward + Adam step on one fixed batch of "
        f"{args.batch_size * args.num_samples} patches {args.patch}x{args.patch}, same weights, "
        f"losses interleaved, median of {args.step_reps}, {args.threads} CPU thread(s)):",
        "",
        "| loss | step time (ms) | step / DiceCE | loss fwd+bwd (ms) | loss / DiceCE |",
        "|---|---|---|---|---|",
    ]
    for name in losses:
        st, lt = steps[name]
        lines.append(
            f"| {TITLES.get(name, name)} | {1000 * st:.0f} | {st / base:.3f} | "
            f"{1000 * lt:.1f} | {lt / base_loss:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parent.parent
    p.add_argument(
        "--data-root", default=str(repo.parent / "shared" / "data" / "dsb2018_stage1_test")
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--num-samples", type=int, default=4, help="random patches per image")
    p.add_argument("--batch-size", type=int, default=4, help="images per batch")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap")
    p.add_argument(
        "--features", default="16,16,32,64,128,16", help="BasicUNet features (bundle default)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is much faster than 2 on a shared, oversubscribed machine)",
    )
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--step-reps", type=int, default=15, help="repetitions of the step timing")
    p.add_argument(
        "--timing-only",
        action="store_true",
        help="only time training steps and update that section of the markdown file",
    )
    p.add_argument("--output", default="/tmp/bench_segmentation_dsb2018")
    p.add_argument("--markdown", default=str(repo / "benchmarks" / "results_segmentation.md"))
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    features = [int(v) for v in args.features.split(",")]
    torch.set_num_threads(args.threads)
    step_overrides = {
        "data_root": str(Path(args.data_root).resolve()),
        "image_size": args.patch,
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "features": features,
        "output_dir": str(Path(args.output) / "step_timing"),
    }
    configs = Path(bundle_dir("cell_segmentation")) / "configs"
    meta = str(configs / "metadata.json")
    out = Path(args.output)
    md = Path(args.markdown)
    if args.timing_only:
        section = _timing_section(configs, step_overrides, losses, args)
        text = md.read_text() if md.exists() else ""
        marker = "<!-- step-timing -->"
        if marker in text:
            pre, _, rest = text.partition(marker)
            post = rest.partition(marker)[2]
            md.write_text(pre + marker + "\n" + section + "\n" + marker + post)
        else:
            md.write_text(text + "\n" + marker + "\n" + section + "\n" + marker + "\n")
        print(section)
        return {}
    rows: list[dict[str, Any]] = []
    t_all = time.time()
    for seed in range(args.seeds):
        for name in losses:
            run_dir = out / f"{name}_seed{seed}"
            overrides = {
                "data_root": str(Path(args.data_root).resolve()),
                "max_epochs": args.epochs,
                "val_interval": args.epochs,
                "seed": seed,
                "loss_name": name,
                "output_dir": str(run_dir),
                "image_size": args.patch,
                "num_samples": args.num_samples,
                "batch_size": args.batch_size,
                "sw_overlap": args.overlap,
                "features": features,
            }
            files = [str(configs / "train.json"), overlay_file("cell_segmentation", name)]
            t0 = time.time()
            epoch_times = _train(files, meta, overrides)
            wf = _workflow([*files, str(configs / "evaluate.json")], meta, overrides)
            wf.run()
            wf.finalize()
            metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
            rows.append({"loss": name, "seed": seed, "epoch_times": epoch_times, **metrics})
            print(
                f"{name} seed {seed}: dice={metrics['dice']:.4f} miou={metrics['mean_iou']:.4f} "
                f"ece={metrics['ece']:.4f} epoch_s={statistics.median(epoch_times):.1f} "
                f"({time.time() - t0:.0f}s)",
                flush=True,
            )
    total = time.time() - t_all
    (out / "rows.json").write_text(json.dumps(rows, indent=2))

    def epoch_time(name: str) -> float:
        # median over epochs after the first (warm-up), then the mean over seeds
        per_run = [
            statistics.median(r["epoch_times"][1:] or r["epoch_times"])
            for r in rows
            if r["loss"] == name
        ]
        return float(np.mean(per_run))

    base = epoch_time("dice_ce") if "dice_ce" in losses else float("nan")
    lines = [
        "# Segmentation: DiceCE vs ML vs CAML on DSB2018 (nuclei)",
        "",
        "Produced by `benchmarks/bench_segmentation_dsb2018.py` through the "
        "`bundles/cell_segmentation` bundle (only the loss overlay differs between rows).",
        "",
        f"- Data: DSB2018 stage-1 test set with released labels ({args.data_root}), "
        "`dsb2018_split(num_test=20, seed=0)`: 20 test images; of the other 45, 5 "
        "validation images (seeded, `split_seed=0`) select the checkpoint (validation Dice, "
        "evaluated once, after the last epoch) and 40 are trained on.",
        f"- Network: MONAI `BasicUNet` (2D, features {tuple(features)}), Adam lr 3e-3, "
        f"cosine schedule, {args.epochs} epochs, {args.batch_size} images x {args.num_samples} "
        f"random {args.patch}x{args.patch} patches (RandCropByPosNegLabeld, pos=neg=1) per "
        "step, flips, 90-degree rotations, intensity scaling; no AMP (CPU).",
        f"- Test: sliding window (roi {args.patch}, overlap {args.overlap}, gaussian) over whole "
        "images; Dice and mean IoU of the nucleus class (MONAI `compute_dice` / `compute_iou`, "
        "mean over images); ECE = pooled top-label ECE over all test pixels (15 equal-width "
        "bins); ECE/img = MONAI `CalibrationErrorMetric`-style per-image ECE (nucleus channel, "
        "20 bins, mean over images).",
        f"- Seeds: {args.seeds} (0..{args.seeds - 1}); values are mean ± sd (ddof=1) over "
        "seeds, in %.",
        f"- Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, shared with other jobs (timings are noisy); "
        f"torch {torch.__version__}. Total wall time {total / 60:.1f} min.",
        "",
        "| loss | Dice ↑ | mean IoU ↑ | ECE ↓ | SCE ↓ | MCE ↓ | NLL ↓ | Brier ↓ | ECE/img ↓ "
        "| epoch time (s) | time / DiceCE |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in losses:
        rs = [r for r in rows if r["loss"] == name]

        def col(key: str, scale: float = 100.0, rs: list[dict[str, Any]] = rs) -> str:
            return _fmt([r[key] for r in rs], scale)

        et = epoch_time(name)
        lines.append(
            f"| {TITLES.get(name, name)} | {col('dice')} | {col('mean_iou')} | {col('ece')} | "
            f"{col('sce')} | {col('mce')} | {col('nll', 1.0)} | {col('brier', 1.0)} | "
            f"{col('ece_per_image')} | {et:.1f} | {et / base:.2f} |"
        )
    lines += [
        "",
        "Per seed:",
        "",
        "| loss | seed | Dice | mean IoU | ECE |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['loss']} | {r['seed']} | {100 * r['dice']:.2f} | {100 * r['mean_iou']:.2f} | "
            f"{100 * r['ece']:.2f} |"
        )
    lines.append("")
    marker = "<!-- step-timing -->"
    section = _timing_section(configs, step_overrides, losses, args)
    lines += [marker, section, marker, ""]
    if md.exists() and "<!-- measured -->" in md.read_text():
        head = md.read_text().split("<!-- measured -->")[0]
        md.write_text(head + "<!-- measured -->\n\n" + "\n".join(lines))
    else:
        md.write_text("\n".join(lines))
    print("\n".join(lines))
    return {"rows": rows}


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
