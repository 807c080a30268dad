# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Calibration quality of every loss on BreastMNIST and RetinaMNIST (issue: classification bundles).

Runs ``python -m monai_calib compare`` on each data set with every loss overlay, the same network
and epochs, 3 seeds, then checks the papers' claim: at least one of MiT, CCT-EAL or LS+ lowers
mean ECE by >= 30% relative to CE while mean accuracy stays within 1.5 points.

Usage::

    python benchmarks/bench_quality_medmnist.py --data-root ../shared/data/medmnist \
        --output benchmarks/quality_medmnist --epochs 20 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from monai_calib.cli.compare import build_parser, run_compare

LOSSES = "ce,ls,focal,dca,mdca,ls_plus,tet,mit,cct_eal"
CANDIDATES = ("mit", "cct_eal", "ls_plus")


def claim_check(summary: dict) -> list[str]:
    ce = summary["losses"]["ce"]
    lines = []
    for name in CANDIDATES:
        if name not in summary["losses"]:
            continue
        s = summary["losses"][name]
        rel = 1.0 - s["ece"]["mean"] / ce["ece"]["mean"]
        dacc = 100.0 * (s["acc"]["mean"] - ce["acc"]["mean"])
        ok = rel >= 0.30 and dacc >= -1.5
        change = f"{100 * abs(rel):.1f}% {'lower' if rel >= 0 else 'higher'}"
        lines.append(
            f"- {name}: ECE {100 * s['ece']['mean']:.2f} vs CE {100 * ce['ece']['mean']:.2f} "
            f"({change}), accuracy {dacc:+.2f} points -> "
            f"{'meets' if ok else 'does not meet'} the claim"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", required=True)
    p.add_argument("--datasets", default="breastmnist,retinamnist")
    p.add_argument("--output", default="benchmarks/quality_medmnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--losses", default=LOSSES)
    a = p.parse_args()
    out = Path(a.output)
    md = [
        "## Calibration of each loss on MedMNIST (measured)",
        "",
        f"Bundle `medmnist_classification`, {a.epochs} epochs, {a.seeds} seeds, checkpoint chosen "
        "on validation AUC, test split, values in % (NLL as is), mean ± sd over seeds.",
        "",
    ]
    for flag in a.datasets.split(","):
        t0 = time.time()
        args = build_parser().parse_args(
            [
                "--dataset",
                flag,
                "--data-root",
                a.data_root,
                "--losses",
                a.losses,
                "--seeds",
                str(a.seeds),
                "--epochs",
                str(a.epochs),
                "--output",
                str(out / flag),
            ]
        )
        summary = run_compare(args)
        report = (out / flag / "report.md").read_text().splitlines()
        table = [ln for ln in report if ln.startswith("|")]
        md += [f"### {flag} ({time.time() - t0:.0f} s)", "", *table, "", *claim_check(summary), ""]
        (out / "summary_all.json").parent.mkdir(parents=True, exist_ok=True)
        with open(out / f"{flag}_summary.json", "w") as f:
            json.dump(summary, f, indent=2)
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
