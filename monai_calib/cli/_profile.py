# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Phase timing of ``compare``, on when the environment variable ``MONAI_CALIB_PROFILE`` is set.

``MONAI_CALIB_PROFILE=1`` logs the wall time spent in each phase at the end of the run;
``MONAI_CALIB_PROFILE=<path>.json`` also writes it to that file (``benchmarks/bench_main_job.py``
reads it). When the variable is unset every hook returns at once, so the timers cost nothing
measurable. The phases:

- ``setup``: parsing and initialising the bundle workflows (``ConfigWorkflow.initialize``);
- ``data_loading``: fetching batches (dataset reads, transforms, collation) in every engine;
- ``training``: the training engines' time minus their data loading and per-epoch validation;
- ``validation``: the per-epoch validation inside training, minus its data loading;
- ``evaluation``: the evaluation workflows (test and validation splits, with each run's report
  files and figures), minus their data loading;
- ``temperature_scaling``: fitting and applying the post-hoc temperature;
- ``summary``: the summary table and the paired bootstraps;
- ``plotting``: the comparison figures; ``writing``: results.csv, summary.json, report.md;
- ``other``: the rest of ``compare``'s main function (the time before it, interpreter start-up
  and imports, is measured by the caller: ``bench_main_job.py`` reports it as ``import``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PHASES", "PROFILE_ENV", "PhaseTimer"]

PROFILE_ENV = "MONAI_CALIB_PROFILE"


class PhaseTimer:
    """Accumulates wall-clock seconds per phase; every method is a no-op unless enabled."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = bool(os.environ.get(PROFILE_ENV)) if enabled is None else enabled
        self.raw: dict[str, float] = defaultdict(float)
        self._start = time.perf_counter()

    def reset(self) -> None:
        """Start a new measurement (``compare``'s main function calls it first)."""
        self.raw.clear()
        self._start = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``name``."""
        if not self.enabled:
            yield
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.raw[name] += time.perf_counter() - t0

    def attach(self, engine: Any, prefix: str) -> None:
        """Time an engine's batch fetching (``<prefix>_data``) and its runs (``<prefix>``)."""
        if not self.enabled:
            return
        from ignite.engine import Events

        marks: dict[str, float] = {}

        def start(key: str) -> Any:
            return lambda _: marks.__setitem__(key, time.perf_counter())

        def stop(key: str, name: str) -> Any:
            return lambda _: self.raw.__setitem__(
                name, self.raw[name] + time.perf_counter() - marks.pop(key, time.perf_counter())
            )

        engine.add_event_handler(Events.GET_BATCH_STARTED, start("batch"))
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, stop("batch", f"{prefix}_data"))
        engine.add_event_handler(Events.STARTED, start("run"))
        engine.add_event_handler(Events.COMPLETED, stop("run", prefix))

    def phases(self) -> dict[str, float]:
        """Seconds per reported phase (see the module docstring); ``total`` is their sum."""
        r = self.raw
        train_run = r["train_workflow"]
        val_in_train = r["epoch_validation"]
        data = r["trainer_data"] + r["epoch_validation_data"] + r["evaluator_data"]
        out = {
            "setup": r["setup"],
            "data_loading": data,
            "training": train_run - r["trainer_data"] - val_in_train,
            "validation": val_in_train - r["epoch_validation_data"],
            "evaluation": r["eval_workflow"] - r["evaluator_data"],
            "temperature_scaling": r["temperature_scaling"],
            "summary": r["summary"],
            "plotting": r["plotting"],
            "writing": r["writing"] - r["plotting"],  # the figures are drawn while writing
        }
        main = time.perf_counter() - self._start
        out["other"] = max(main - sum(out.values()), 0.0)
        out["total"] = main
        return out

    def report(self) -> dict[str, float] | None:
        """Log the phases (and write them to the JSON file named by the variable, if any)."""
        if not self.enabled:
            return None
        out = self.phases()
        total = max(out["total"], 1e-9)
        logging.getLogger(__name__).info(
            "compare phases (s): "
            + ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in out.items())
        )
        target = os.environ.get(PROFILE_ENV, "")
        if target.endswith(".json"):
            with open(target, "w") as f:
                json.dump(out, f, indent=1)
        return out


#: the timer ``compare`` uses
PHASES = PhaseTimer()
