# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Start-up time of the command line against ``python -c "import torch"`` (issue 14).

Run: ``python benchmarks/bench_cli_startup.py [--repeats 7] [--out FILE]`` (default ``FILE``:
``benchmarks/results_cli_startup.md``)

Each repeat runs every command once, in a shuffled order (interleaved), as a fresh process; the
table gives the median wall time over the repeats, the ratio to ``import torch`` and the 1-minute
load average before and after (start-up times are dominated by reading files and byte-compiled
modules, so a busy machine inflates every row; compare the ratios). The first, discarded round
warms the file cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "python -m monai_calib --help": [sys.executable, "-m", "monai_calib", "--help"],
    "python -m monai_calib compare --help": [
        sys.executable,
        "-m",
        "monai_calib",
        "compare",
        "--help",
    ],
    'python -c "import monai_calib"': [sys.executable, "-c", "import monai_calib"],
    'python -c "import monai_calib.losses"': [sys.executable, "-c", "import monai_calib.losses"],
}
REFERENCE = 'python -c "import torch"'


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(repeats: int, seed: int = 0) -> dict[str, list[float]]:
    """Wall seconds of each command, ``repeats`` interleaved rounds after one warm-up round."""
    rng = random.Random(seed)
    names = list(COMMANDS)
    for name in names:  # warm-up: file cache, __pycache__
        _time(COMMANDS[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            times[name].append(_time(COMMANDS[name]))
    return times


def table(times: dict[str, list[float]], load: tuple[float, float], repeats: int) -> str:
    ref = statistics.median(times[REFERENCE])
    lines = [
        "# CLI start-up time",
        "",
        f"`python benchmarks/bench_cli_startup.py --repeats {repeats}`; {platform.python_version()}"
        f" on {platform.machine()}, {os.cpu_count()} CPU(s); 1-min load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after. Median wall time of {repeats} interleaved "
        "runs (fresh processes), after one warm-up round.",
        "",
        "| command | median (s) | min (s) | max (s) | / import torch |",
        "|---|---|---|---|---|",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"| `{name}` | {med:.3f} | {min(ts):.3f} | {max(ts):.3f} | {med / ref:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    p.add_argument(
        "--out",
        default=str(Path(__file__).with_name("results_cli_startup.md")),
        help="markdown table to write",
    )
    args = p.parse_args()
    before = os.getloadavg()[0]
    times = measure(args.repeats)
    text = table(times, (before, os.getloadavg()[0]), args.repeats)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
