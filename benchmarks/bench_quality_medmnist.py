# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Calibration quality of every loss on BreastMNIST and RetinaMNIST, in one training regime.

Runs ``python -m monai_calib compare`` on each data set with every loss overlay (and each loss's
temperature-scaled row), 3 seeds, then checks the papers' claim: at least one of MiT, CCT-EAL or
LS+ lowers mean ECE by >= 30% relative to CE while mean accuracy stays within 1.5 points. The
verdict lines (paired-bootstrap intervals) come from ``compare`` itself.

Usage (one regime per process; two processes with one thread each use both cores of a 2-core
machine)::

    OMP_NUM_THREADS=1 python benchmarks/bench_quality_medmnist.py \
        --data-root ../shared/data/medmnist --regime default --output benchmarks/quality_medmnist
    OMP_NUM_THREADS=1 python benchmarks/bench_quality_medmnist.py \
        --data-root ../shared/data/medmnist --regime converged --output benchmarks/quality_medmnist
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from monai_calib.cli.compare import build_parser, method_name, run_compare

LOSSES = "ce,ls,focal,dca,mdca,ls_plus,tet,mit,cct_eal"
CANDIDATES = ("mit", "cct_eal", "ls_plus")
# Epochs of the default regime per data set (as in the earlier benchmark); None: the regime's own.
DEFAULT_EPOCHS = {"breastmnist": 15, "retinamnist": 10}


def claim_check(summary: dict, reference: str = "ce") -> list[str]:
    """The papers' claim, each candidate against ``reference`` (``ce`` or ``ce+ts``)."""
    suffix = reference[2:]
    ref = summary["losses"][reference]
    lines = []
    for base in CANDIDATES:
        name = base + suffix
        if name not in summary["losses"]:
            continue
        s = summary["losses"][name]
        rel = 1.0 - s["ece"]["mean"] / ref["ece"]["mean"]
        dacc = 100.0 * (s["acc"]["mean"] - ref["acc"]["mean"])
        ok = rel >= 0.30 and dacc >= -1.5
        change = f"{100 * abs(rel):.1f}% {'lower' if rel >= 0 else 'higher'}"
        lines.append(
            f"- {method_name(name)}: ECE {100 * s['ece']['mean']:.2f} vs {method_name(reference)} "
            f"{100 * ref['ece']['mean']:.2f} ({change}), accuracy {dacc:+.2f} points -> "
            f"{'meets' if ok else 'does not meet'} the claim"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", required=True)
    p.add_argument("--datasets", default="breastmnist,retinamnist")
    p.add_argument("--regime", default="default")
    p.add_argument("--output", default="benchmarks/quality_medmnist")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--losses", default=LOSSES)
    a = p.parse_args()
    out = Path(a.output) / a.regime
    md = [f"## Calibration of each loss on MedMNIST, regime `{a.regime}` (measured)", ""]
    for flag in a.datasets.split(","):
        t0 = time.time()
        epochs = a.epochs or (DEFAULT_EPOCHS.get(flag) if a.regime == "default" else None)
        argv = ["--dataset", flag, "--data-root", a.data_root, "--losses", a.losses,
                "--seeds", str(a.seeds), "--regime", a.regime, "--output", str(out / flag),
                "--threads", "1"]  # fmt: skip
        if epochs:
            argv += ["--epochs", str(epochs)]
        summary = run_compare(build_parser().parse_args(argv))
        report = (out / flag / "report.md").read_text().splitlines()
        table = [ln for ln in report if ln.startswith("|")]
        md += [f"### {flag} ({time.time() - t0:.0f} s)", "", *table, "", "Verdict:", ""]
        md += [f"- {v}" for v in summary["verdict"]]
        md += ["", "Papers' claim against CE:", "", *claim_check(summary, "ce")]
        if "ce+ts" in summary["losses"]:
            md += ["", "Papers' claim against CE + TS:", "", *claim_check(summary, "ce+ts")]
        md.append("")
        with open(out / f"{flag}_summary.json", "w") as f:
            json.dump(summary, f, indent=2, default=str)
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
