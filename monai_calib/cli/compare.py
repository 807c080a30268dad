# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``python -m monai_calib compare``: train a bundle once per loss and seed, report calibration.

Each run is the bundle's own ``train.json`` merged with ``configs/loss_<name>.json``, then the same
plus ``evaluate.json``; both run in this process through ``monai.bundle.ConfigWorkflow``. The
report is built from each run's ``eval/metrics.json`` and ``eval/predictions.npz``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_calib.bundles import bundle_dir

__all__ = ["DEFAULT_LOSSES", "build_parser", "main", "run_compare"]

DEFAULT_LOSSES = ("ce", "ls_plus", "mit", "cct_eal")
# Losses whose overlay needs a CE baseline checkpoint of the same seed (LS+'s class prior).
NEEDS_BASELINE = {"ls_plus": "ce"}
TABLE_COLUMNS = ("acc", "auc", "ece", "ace", "sce", "mce", "nll", "brier", "r_auc")
COLUMN_TITLES = {
    "acc": "ACC",
    "auc": "AUC",
    "ece": "ECE",
    "ace": "ACE",
    "sce": "SCE",
    "mce": "MCE",
    "nll": "NLL",
    "brier": "Brier",
    "r_auc": "R-AUC",
    "hamming": "Hamming",
    "auc_macro": "AUC (macro)",
    "auc_micro": "AUC (micro)",
    "dice": "Dice",
    "mean_iou": "mIoU",
    "ece_micro": "ECE (micro)",
    "ece_weighted": "ECE (weighted)",
    "ece_per_image": "ECE (per image)",
}
LOWER_IS_BETTER = {
    "ece",
    "ace",
    "sce",
    "mce",
    "nll",
    "brier",
    "hamming",
    "ece_micro",
    "ece_weighted",
    "ece_per_image",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monai_calib compare",
        description="Train a monai_calib bundle once per loss and seed and write a calibration "
        "report (report.md, results.csv, summary.json, figures).",
    )
    p.add_argument("--bundle", default="medmnist_classification", help="bundle name or folder")
    p.add_argument("--dataset", default=None, help="dataset flag (bundle default if omitted)")
    p.add_argument("--data-root", default=None, help="data folder (bundle default if omitted)")
    p.add_argument(
        "--losses",
        default=None,
        help="comma-separated loss overlay names (configs/loss_<name>.json); default: "
        f"{','.join(DEFAULT_LOSSES)} for the classification bundles, every overlay otherwise",
    )
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ...)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs per run")
    p.add_argument("--output", default="compare_output", help="output folder")
    p.add_argument("--batch-size", type=int, default=None, help="override the bundle's batch size")
    p.add_argument("--image-size", type=int, default=None, help="override the image size")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="extra bundle override (repeatable), e.g. --override learning_rate=0.0005",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    return p


def _available_losses(configs: Path) -> list[str]:
    return sorted(f.stem[len("loss_") :] for f in configs.glob("loss_*.json"))


def _parse_override(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--override must look like ID=VALUE, got {item!r}.")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _run_workflow(config_files: list[str], meta_file: str, overrides: dict[str, Any]) -> None:
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=config_files, meta_file=meta_file, workflow_type=None, **overrides
    )
    wf.initialize()
    wf.run()
    wf.finalize()


def _fmt(values: list[float], scale: float) -> str:
    vals = [v * scale for v in values if not math.isnan(v)]
    if not vals:
        return "nan"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}"


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(bundle_dir(args.bundle))
    configs = root / "configs"
    available = _available_losses(configs)
    if args.losses is None:
        default = [n for n in DEFAULT_LOSSES if n in available]
        losses = default if len(default) == len(DEFAULT_LOSSES) else available
    else:
        losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    unknown = [name for name in losses if name not in available]
    if unknown:
        raise ValueError(
            f"--losses has unknown loss name(s) {unknown}; valid choices for bundle "
            f"{root.name!r} are {available}."
        )
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}.")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}.")
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)

    # Runs in order; baselines that another loss needs go first (and are reported if asked).
    order: list[str] = []
    for name in losses:
        base = NEEDS_BASELINE.get(name)
        if base and base in available and base not in order:
            order.append(base)
        if name not in order:
            order.append(name)

    common: dict[str, Any] = {"max_epochs": args.epochs}
    if args.dataset:
        common["dataset_flag"] = args.dataset
    if args.data_root:
        common["data_root"] = str(Path(args.data_root).resolve())
    if args.batch_size:
        common["batch_size"] = args.batch_size
    if args.image_size:
        common["image_size"] = args.image_size
    common.update(_parse_override(args.override))

    meta = str(configs / "metadata.json")
    total = len(order) * args.seeds
    rows: list[dict[str, Any]] = []
    run_dirs: dict[tuple[str, int], Path] = {}
    t_start = time.time()
    k = 0
    for seed in range(args.seeds):
        for name in order:
            k += 1
            run_dir = out / "runs" / f"{name}_seed{seed}"
            overrides = dict(common, seed=seed, output_dir=str(run_dir), loss_name=name)
            base = NEEDS_BASELINE.get(name)
            if base:
                overrides["baseline_checkpoint"] = str(
                    run_dirs[(base, seed)] / "models" / "model.pt"
                )
            files = [str(configs / "train.json"), str(configs / f"loss_{name}.json")]
            t0 = time.time()
            print(
                f"[{k}/{total}] {name} seed {seed}: training {args.epochs} epoch(s) ...", flush=True
            )
            _run_workflow(files, meta, overrides)
            _run_workflow([*files, str(configs / "evaluate.json")], meta, overrides)
            with open(run_dir / "eval" / "metrics.json") as f:
                metrics = json.load(f)
            run_dirs[(name, seed)] = run_dir
            rows.append({"loss": name, "seed": seed, **metrics})
            shown = ", ".join(f"{c}={metrics[c]:.4f}" for c in TABLE_COLUMNS if c in metrics)
            print(
                f"[{k}/{total}] {name} seed {seed}: done in {time.time() - t0:.1f}s ({shown})",
                flush=True,
            )

    reported = [r for r in rows if r["loss"] in losses]
    columns = [c for c in TABLE_COLUMNS if all(c in r for r in reported)]
    extra = sorted({c for r in reported for c in r} - set(columns) - {"loss", "seed", "n"})
    columns += [c for c in extra if all(c in r for r in reported)]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["loss", "seed", *columns])
        for r in reported:
            w.writerow([r["loss"], r["seed"], *(f"{r[c]:.6f}" for c in columns)])
    summary: dict[str, Any] = {
        "bundle": root.name,
        "settings": {**common, "seeds": args.seeds, "losses": losses},
        "losses": {},
    }
    for name in losses:
        rs = [r for r in reported if r["loss"] == name]
        summary["losses"][name] = {
            c: {
                "mean": float(np.mean([r[c] for r in rs])),
                "sd": float(np.std([r[c] for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
                "values": [r[c] for r in rs],
            }
            for c in columns
        }
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)

    figures: list[str] = []
    if not args.no_plots:
        figures = _figures(out, losses, run_dirs)
    _write_report(out, root.name, summary, losses, columns, args, figures, time.time() - t_start)
    print(f"report written to {out / 'report.md'}", flush=True)
    return summary


def _figures(out: Path, losses: list[str], run_dirs: dict[tuple[str, int], Path]) -> list[str]:
    """One reliability figure with a panel per loss, one retention figure (seed 0 of each loss).

    Reads each run's ``eval/reliability_statistics.npy`` and, where present,
    ``eval/retention_curve.npz`` (see :func:`monai_calib.handlers.write_curve_files`).
    """
    import torch
    from matplotlib.figure import Figure

    from monai_calib.visualize import plot_reliability_diagram, plot_retention_curve

    n = len(losses)
    fig = Figure(figsize=(4 * n, 5.5))
    gs = fig.add_gridspec(2, n, height_ratios=(3, 1), hspace=0.05)
    curves = {}
    for j, name in enumerate(losses):
        eval_dir = run_dirs[(name, 0)] / "eval"
        stats = torch.from_numpy(np.load(eval_dir / "reliability_statistics.npy"))
        ax_top = fig.add_subplot(gs[0, j])
        ax_bottom = fig.add_subplot(gs[1, j], sharex=ax_top)
        plot_reliability_diagram(stats, ax=(ax_top, ax_bottom), title=name)
        if (eval_dir / "retention_curve.npz").is_file():
            d = np.load(eval_dir / "retention_curve.npz")
            curves[name] = (torch.from_numpy(d["fractions"]), torch.from_numpy(d["accuracies"]))
    fig.savefig(out / "reliability.png", dpi=100, bbox_inches="tight")
    written = ["reliability.png"]
    if curves:
        fig, _ = plot_retention_curve(curves)
        fig.savefig(out / "retention.png", dpi=100, bbox_inches="tight")
        written.append("retention.png")
    return written


def _write_report(
    out: Path,
    bundle: str,
    summary: dict[str, Any],
    losses: list[str],
    columns: list[str],
    args: argparse.Namespace,
    figures: list[str],
    seconds: float,
) -> None:
    lines = [
        f"# Calibration comparison: `{bundle}`",
        "",
        f"Settings: {json.dumps(summary['settings'])}. "
        f"{args.seeds} seed(s); values are mean ± sd over seeds (sd with ddof=1), in % "
        "(NLL as is). Evaluated on the test split with each loss's own probability transform.",
        "",
        "| loss | " + " | ".join(COLUMN_TITLES.get(c, c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in losses:
        cells = []
        for c in columns:
            scale = 1.0 if c == "nll" else 100.0
            cells.append(_fmt(summary["losses"][name][c]["values"], scale))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Lower is better for "
        + ", ".join(COLUMN_TITLES.get(c, c) for c in columns if c in LOWER_IS_BETTER)
        + "; higher is better for the rest.",
        "",
    ]
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    lines += [f"Total time: {seconds:.0f} s. Per-run files: `runs/<loss>_seed<k>/`.", ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*security.*", category=UserWarning)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        run_compare(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
