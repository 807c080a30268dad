# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``python -m monai_calib compare``: which loss gives the best-calibrated model, and is it real?

Each run is the bundle's own ``train.json`` merged with the overlay ``loss_<name>.json`` (and, with
``--regime NAME``, ``regime_<NAME>.json``; see ``monai_calib.bundles.overlays``), then the same plus
``evaluate.json``; both run in this process through ``monai.bundle.ConfigWorkflow``. For
classification bundles each trained model is also evaluated after post-hoc temperature scaling
fitted on the validation split (a ``<loss>+ts`` row), and every loss is compared with cross-entropy
by a paired bootstrap over the test images. The report is built from each run's
``eval/metrics.json`` and ``eval/predictions.npz``.

While it runs it logs the torch threads it chose and why (:func:`_choose_threads`), the device,
one line per training epoch with the mean training loss and the ETAs of the run and of the whole
comparison (:class:`_Progress`; on a terminal also Ignite's tqdm ``ProgressBar``), one line per
run with its test metrics, and a closing line with the report's path. Torch and MONAI are imported
only after the options are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_calib.bundles import (
    METHOD_NAMES,
    TS_SUFFIX,
    bundle_dir,
    logging_file,
    method_name,
    overlay_file,
    overlays,
)
from monai_calib.cli._profile import PHASES


class _Deferred:
    """A module imported on first attribute access: ``--help`` and argument errors answer without
    importing torch or MONAI (``monai_calib.handlers`` and ``monai_calib.metrics`` import both)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


files = _Deferred("monai_calib.handlers.report_files")
_registry = _Deferred("monai_calib.metrics.registry")

__all__ = [
    "DEFAULT_LOSSES",
    "METHOD_NAMES",
    "build_parser",
    "main",
    "method_name",
    "run_compare",
]

DEFAULT_LOSSES = ("ce", "ls_plus", "mit", "cct_eal")
DEFAULT_EPOCHS = 15  # the default regime's epochs in compare (the bundle's own train.json says 20)
# Losses whose overlay needs a CE baseline checkpoint of the same seed (LS+'s class prior).
NEEDS_BASELINE = {"ls_plus": "ce"}
# The reference every other loss is compared with: the first of these that was run.
REFERENCE_LOSSES = ("ce", "bce", "dice_ce")
RUN_COMPLETE = "run_complete"  # written last in a run folder: --resume skips the run
TS_RANGE = (0.05, 20.0)  # bounds of the post-hoc temperature
# Table and per-run line order: the task's own quality first (segmentation: Dice, mIoU), then
# calibration; a column is shown when every run has it, other report keys follow alphabetically.
TABLE_COLUMNS = (
    "dice",
    "mean_iou",
    "acc",
    "auc",
    "ece",
    "gap",
    "ace",
    "sce",
    "mce",
    "nll",
    "brier",
    "r_auc",
)
# Paired-bootstrap statistics of the verdict, with how each difference is worded.
VERDICT_STATISTICS = (
    ("ece", "ECE", 100.0, "points"),
    ("acc", "accuracy", 100.0, "points"),
    ("nll", "NLL", 1.0, ""),
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default: argparse's ``(default: X)`` unless the help
    already says it in words; flags read ``off``, an empty list ``none``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.default is False:
            return f"{text} (default: off)"
        if action.default in (None, []):
            return f"{text} (default: none)"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monai_calib compare",
        description="Train a monai_calib bundle once per loss and seed, evaluate each model as "
        "trained and after temperature scaling, compare every loss with cross-entropy by a paired "
        "bootstrap, and write report.md (verdict first), results.csv, summary.json and figures.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--bundle", default="medmnist_classification", help="bundle name or folder")
    p.add_argument("--dataset", default=None, help="dataset flag (default: the bundle's)")
    # the bundles' spelling (--data_root, python -m monai.bundle run) is accepted too
    p.add_argument(
        "--data-root",
        "--data_root",
        dest="data_root",
        default=None,
        help="data folder (default: the bundle's)",
    )
    p.add_argument(
        "--datalist",
        default=None,
        metavar="PATH",
        help="train and evaluate on your own data: a MONAI datalist JSON (training/validation/test "
        "lists of image + label; 'python -m monai_calib make-datalist' writes one) instead of the "
        "bundle's data set; classes and label names come from it",
    )
    p.add_argument(
        "--losses",
        default=None,
        help="comma-separated loss overlay names (loss_<name>.json); default: "
        f"{','.join(DEFAULT_LOSSES)} for the classification bundles, every overlay otherwise",
    )
    p.add_argument(
        "--regime",
        default="default",
        help="training regime: 'default' (the bundle's recipe: short schedule, augmentation, "
        "checkpoint chosen on validation AUC) or the name of a regime_<NAME>.json overlay "
        "added to every run, e.g. 'converged' (classification bundles: wider ResNet, no "
        "augmentation, step-decay schedule trained to ~100%% training accuracy, last-epoch model, "
        "as calibration studies evaluate; several times slower)",
    )
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ...)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"training epochs per run (default: {DEFAULT_EPOCHS} in the default regime, the "
        "regime overlay's own max_epochs otherwise)",
    )
    p.add_argument("--output", default="compare_output", help="output folder")
    p.add_argument(
        "--batch-size",
        "--batch_size",
        dest="batch_size",
        type=int,
        default=None,
        help="training batch size (default: the bundle's)",
    )
    p.add_argument(
        "--image-size",
        "--image_size",
        dest="image_size",
        type=int,
        default=None,
        help="image size (default: the bundle's)",
    )
    p.add_argument(
        "--no-ts",
        action="store_true",
        help="skip the post-hoc temperature-scaling rows (<loss>+ts, T fitted on the validation "
        "split)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=2000,
        help="paired-bootstrap replicates of the 95%% intervals (0: no intervals)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: OMP_NUM_THREADS if set, else one per physical core, "
        "at most as many as the load average leaves idle; the log says what was chosen and why)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="extra bundle override (repeatable), e.g. --override learning_rate=0.0005",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted comparison in the same --output with the same options: "
        "runs that finished are not run again, the others resume training from their last "
        "completed epoch (runs/<loss>_seed<k>/models/resume.pt)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an error, print the full traceback before the one-line message",
    )
    return p


def _available(root: Path, kind: str) -> list[str]:
    return list(overlays(str(root), kind))


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


def _run_workflow(
    config_files: list[str],
    meta_file: str,
    overrides: dict[str, Any],
    progress: _Progress | None = None,
) -> None:
    from monai.bundle import ConfigWorkflow

    evaluate = config_files[-1].endswith("evaluate.json")
    with PHASES.phase("setup"):
        wf = ConfigWorkflow(
            config_file=config_files,
            meta_file=meta_file,
            logging_file=logging_file(),
            workflow_type=None,
            **overrides,
        )
        wf.initialize()
        if PHASES.enabled:
            _attach_timers(wf, evaluate)
        if progress is not None:
            progress.attach(wf.parser.get_parsed_content("train#trainer"))
    with PHASES.phase("eval_workflow" if evaluate else "train_workflow"):
        wf.run()
    wf.finalize()


def _attach_timers(wf: Any, evaluate: bool) -> None:
    """``MONAI_CALIB_PROFILE`` only: time the engines the ``run`` expression starts.

    They are resolved here, after ``initialize`` and before ``run``, in the order ``run`` would
    resolve them, so nothing the runs compute changes.
    """
    run = str(wf.parser.get("run", ""))
    engines = (
        [("validate#evaluator", "evaluator")]
        if evaluate
        else [("train#trainer", "trainer"), ("validate#evaluator", "epoch_validation")]
    )
    if not any(engines[0][0].replace("#", sep) in run for sep in ("#", "::")):
        return
    for id_, prefix in engines:
        if id_ in wf.parser:
            PHASES.attach(wf.parser.get_parsed_content(id_), prefix)


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class _Progress:
    """Progress of a comparison, attached to each run's trainer.

    Logs one line per training epoch: the mean training loss over the epoch's iterations, the
    epoch's wall time (validation included) and the ETAs of the run and of the whole comparison
    (mean epoch time so far times the epochs left, plus the mean evaluation time of the finished
    runs for each run left). On a terminal, Ignite's ``ProgressBar`` (tqdm, on stderr) also shows
    the iterations of the current epoch; when stderr is not a terminal only the epoch lines are
    written, so a log file gets one line per epoch.
    """

    def __init__(self, total_runs: int, epochs: int | None) -> None:
        self.total_runs = total_runs
        self.epochs = epochs  # per run; None: the regime's own, read from the first trainer
        self.run = 0
        self.label = ""
        self.epoch_seconds: list[float] = []
        self.eval_seconds: list[float] = []  # per trained run: its wall time minus its epochs
        self._run_start = 0.0
        self._run_epochs = 0.0

    def start_run(self, k: int, label: str) -> None:
        self.run, self.label = k, label
        self._run_start, self._run_epochs = time.time(), 0.0

    def end_run(self, trained: bool) -> None:
        if trained and self._run_epochs > 0:
            self.eval_seconds.append(time.time() - self._run_start - self._run_epochs)

    def eta(self, epochs_left_in_run: int) -> tuple[float, float]:
        """Seconds left in the current run and in the whole comparison."""
        per_epoch = float(np.mean(self.epoch_seconds)) if self.epoch_seconds else 0.0
        per_eval = float(np.mean(self.eval_seconds)) if self.eval_seconds else 0.0
        run_left = per_epoch * epochs_left_in_run + per_eval
        later = (self.total_runs - self.run) * (per_epoch * (self.epochs or 0) + per_eval)
        return run_left, run_left + later

    def attach(self, trainer: Any) -> None:
        """Attach the epoch line (and, on a terminal, the iteration bar) to a run's trainer."""
        from ignite.engine import Events
        from monai.handlers import from_engine

        if self.epochs is None:
            self.epochs = int(trainer.state.max_epochs)
        get_loss = from_engine(["loss"], first=True)
        sums = {"loss": 0.0, "n": 0, "t0": 0.0}

        def epoch_started(engine: Any) -> None:
            sums.update(loss=0.0, n=0, t0=time.time())

        def iteration_completed(engine: Any) -> None:
            loss = get_loss(engine.state.output)
            sums["loss"] += float(loss)
            sums["n"] += 1

        def epoch_completed(engine: Any) -> None:
            seconds = time.time() - sums["t0"]
            self.epoch_seconds.append(seconds)
            self._run_epochs += seconds
            epoch, max_epochs = engine.state.epoch, engine.state.max_epochs
            run_left, total_left = self.eta(max_epochs - epoch)
            loss = sums["loss"] / max(sums["n"], 1)
            print(
                f"[{self.run}/{self.total_runs}] {self.label}: epoch {epoch}/{max_epochs}, "
                f"train loss {loss:.4f} ({seconds:.1f} s/epoch); ETA run {_duration(run_left)}, "
                f"comparison {_duration(total_left)}",
                flush=True,
            )

        trainer.add_event_handler(Events.EPOCH_STARTED, epoch_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration_completed)
        # after the bundle's handlers (validation included) of the same event
        trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_completed)
        if sys.stderr.isatty():
            from ignite.handlers import ProgressBar

            ProgressBar(persist=False, desc=f"[{self.run}/{self.total_runs}] {self.label}").attach(
                trainer, output_transform=lambda output: {"loss": get_loss(output)}
            )


def _choose_threads(requested: int | None) -> tuple[int, str]:
    """Torch CPU threads for the runs and why: ``--threads``, else ``OMP_NUM_THREADS``, else
    torch's default (one per physical core) capped by the CPUs this process may use and by the
    CPUs left idle by other processes (1-minute load average), so that concurrent jobs do not
    oversubscribe the cores (a 2-core machine running other jobs slowed epochs 10-40 fold)."""
    import torch

    if requested is not None:
        return requested, "--threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    cores = min(torch.get_num_threads(), cpus)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return cores, f"torch's default for {cpus} usable CPU(s)"
    idle = max(1, math.floor(cpus - load + 0.5))
    threads = max(1, min(cores, idle))
    return threads, (
        f"{cores} physical core(s) of {cpus} usable CPU(s), load average {load:.1f} leaves "
        f"about {idle} idle; --threads N to choose"
    )


def _device_line(plan: ComparePlan) -> str:
    """``device: cpu (AMP off)`` as the first run's merged config resolves it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(plan.files(plan.order[0]))
    parser.update(dict(plan.common, seed=0, loss_name=plan.order[0]))
    try:
        device = parser.get_parsed_content("device")
        amp = bool(parser.get_parsed_content("amp")) if "amp" in parser else False
    except Exception:  # a bundle without these ids: the run itself will say what is wrong
        return "device: as the bundle chooses"
    name = str(device)
    if str(device).startswith("cuda"):
        import torch

        name += f" ({torch.cuda.get_device_name(device)})"
    return f"device: {name}, AMP {'on' if amp else 'off'}"


@dataclass
class ComparePlan:
    """What one comparison runs: bundle files, run order, shared overrides."""

    root: Path
    losses: list[str]
    order: list[str]
    seeds: int
    regime: str
    train_files: list[str]
    common: dict[str, Any]
    post_hoc: bool
    out: Path
    resume: bool = False  # skip finished runs, resume the others (``--resume``)

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def meta(self) -> str:
        return str(self.configs / "metadata.json")

    def run_dir(self, name: str, seed: int) -> Path:
        """The folder of one training run: ``<output>/runs/<loss>_seed<k>``."""
        return self.out / "runs" / f"{name}_seed{seed}"

    def files(self, name: str, evaluate: bool = False) -> list[str]:
        files = [
            self.train_files[0],
            overlay_file(str(self.root), name),
            *self.train_files[1:],
        ]
        return [*files, str(self.configs / "evaluate.json")] if evaluate else files


@dataclass
class RunResult:
    """One trained model of one loss and seed, evaluated on the test split."""

    row: str
    seed: int
    metrics: dict[str, float]
    eval_dir: Path
    probs: np.ndarray | None = None  # (N, K) test probabilities (classification only)
    labels: np.ndarray | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _plan(args: argparse.Namespace) -> ComparePlan:
    root = Path(bundle_dir(args.bundle))
    configs = root / "configs"
    available = _available(root, "loss")
    if args.losses is None:
        default = [n for n in DEFAULT_LOSSES if n in available]
        losses = default if len(default) == len(DEFAULT_LOSSES) else available
    else:
        losses = [s.strip() for s in args.losses.split(",") if s.strip()]
        if not losses:
            raise ValueError(
                f"--losses is empty ({args.losses!r}); give one or more of {available} "
                "(comma-separated), or leave --losses out for the default set."
            )
    unknown = [name for name in losses if name not in available]
    if unknown:
        raise ValueError(
            f"--losses has unknown loss name(s) {unknown}; valid choices for bundle "
            f"{root.name!r} are {available}."
        )
    regimes = ["default", *_available(root, "regime")]
    if args.regime not in regimes:
        raise ValueError(
            f"--regime must be one of {regimes} for bundle {root.name!r}, got {args.regime!r}."
        )
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}.")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}.")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}.")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}.")
    # 0 used to be dropped silently (falsy) and the bundle's own value used instead
    for flag, value in (("--batch-size", args.batch_size), ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}.")

    # Baselines that another loss needs go first (and are reported only if asked for).
    order: list[str] = []
    for name in losses:
        base = NEEDS_BASELINE.get(name)
        if base and base in available and base not in order:
            order.append(base)
        if name not in order:
            order.append(name)

    train_files = [str(configs / "train.json")]
    if args.regime != "default":
        train_files.append(overlay_file(str(root), args.regime, "regime"))
    common: dict[str, Any] = {}
    epochs = (
        args.epochs
        if args.epochs is not None
        else (DEFAULT_EPOCHS if args.regime == "default" else None)
    )
    if epochs is not None:
        common["max_epochs"] = epochs
    if args.dataset:
        common["dataset_flag"] = args.dataset
    if args.data_root:
        common["data_root"] = str(Path(args.data_root).resolve())
    if args.datalist:
        from monai_calib.bundles import datalist_overlay

        if args.dataset or args.data_root:
            raise ValueError(
                "--datalist replaces the bundle's data set: leave out --dataset and --data-root, "
                f"got --dataset={args.dataset!r}, --data-root={args.data_root!r}."
            )
        if not Path(args.datalist).is_file():
            raise FileNotFoundError(f"--datalist file not found: {args.datalist!r}.")
        train_files.append(datalist_overlay(str(root)))
        common["datalist"] = str(Path(args.datalist).resolve())
    if args.batch_size is not None:
        common["batch_size"] = args.batch_size
    if args.image_size is not None:
        common["image_size"] = args.image_size
    common.update(_parse_override(args.override))
    plan = ComparePlan(
        root=root,
        losses=losses,
        order=order,
        seeds=args.seeds,
        regime=args.regime,
        train_files=train_files,
        common=common,
        post_hoc=not args.no_ts,
        out=Path(args.output).resolve(),
        resume=bool(args.resume),
    )
    _check_common(plan)
    return plan


def _check_common(plan: ComparePlan) -> None:
    """Overrides that would otherwise fail deep inside the first run (or not at all)."""
    batch = plan.common.get("batch_size")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch_size (--override batch_size) must be >= 1, got {batch!r}.")
    if "select_metric" not in plan.common:
        return
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(plan.files(plan.order[0]))
    metrics = parser.get("val_metrics")
    if not isinstance(metrics, dict):  # this bundle names its validation metrics otherwise
        return
    choice = plan.common["select_metric"]
    if choice not in metrics:
        raise ValueError(
            f"select_metric must be one of the validation metrics {sorted(metrics)} of bundle "
            f"{plan.root.name!r}, got {choice!r}."
        )


def _load_top_label(eval_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Test probabilities ``(N, K)`` and class indices ``(N,)``; None for other report kinds."""
    path = eval_dir / files.PREDICTIONS
    if not path.is_file():
        return None
    d = np.load(path)
    if "probs" not in d or "labels" not in d or d["probs"].ndim != 2 or d["labels"].ndim != 1:
        return None
    return d["probs"].astype(np.float64), d["labels"].astype(np.int64)


def _log_probs(probs: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.log(np.clip(probs, 1e-12, None)))


def _temperature_scaled(
    plan: ComparePlan,
    name: str,
    seed: int,
    overrides: dict[str, Any],
    run_dir: Path,
    test: tuple[np.ndarray, np.ndarray],
) -> RunResult:
    """Fit T on the validation split's log-probabilities, apply it to the test split's.

    Temperature scaling of ``log p`` is the usual ``softmax(z / T)`` for softmax models (log p
    and z differ by a per-sample constant) and composes with any loss's own probability rule
    (MiT's and TET's temperature, CCT-EAL's probabilities), so every loss gets the same post-hoc
    step.
    """
    val_dir = run_dir / "eval_val"
    val_overrides = dict(overrides, eval_split="val", eval_dir=str(val_dir), report_plots=False)
    if not _finished(run_dir, plan.resume):
        _run_workflow(plan.files(name, evaluate=True), plan.meta, val_overrides)
    val = _load_top_label(val_dir)
    if val is None:
        raise ValueError(f"run {run_dir} wrote no (N, K) predictions; cannot temperature-scale.")
    with PHASES.phase("temperature_scaling"):
        return _fit_and_apply(name, seed, run_dir, val, test)


def _fit_and_apply(
    name: str,
    seed: int,
    run_dir: Path,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> RunResult:
    import torch

    from monai_calib.calibration import fit_temperature
    from monai_calib.metrics.reports import classification_report

    fitted = fit_temperature(_log_probs(val[0]), torch.from_numpy(val[1]))
    # A model no better than its prior on validation sends T to infinity; bound it.
    t = min(max(fitted, TS_RANGE[0]), TS_RANGE[1])
    if t != fitted:
        logging.getLogger(__name__).warning(
            f"{name} seed {seed}: temperature fit {fitted:.4g} is outside {TS_RANGE}; using {t}."
        )
    probs = torch.softmax(_log_probs(test[0]) / t, dim=1)
    labels = torch.from_numpy(test[1])
    metrics = classification_report(probs, labels)
    metrics["temperature"] = t
    ts_dir = run_dir / "eval_ts"
    files.write_metrics_files(ts_dir, metrics)
    files.write_curve_files(ts_dir, probs, labels)
    files.write_predictions(ts_dir, probs, test[1])
    return RunResult(
        name + TS_SUFFIX, seed, metrics, ts_dir, probs.numpy(), test[1], {"temperature": t}
    )


def _mark_finished(run_dir: Path) -> None:
    tmp = run_dir / f".{RUN_COMPLETE}.tmp"
    tmp.write_text("finished\n")
    os.replace(tmp, run_dir / RUN_COMPLETE)  # atomic: the marker exists only when complete


def _finished(run_dir: Path, resume: bool) -> bool:
    """Whether ``--resume`` may skip the run: it wrote every file before (the marker is written
    last, atomically)."""
    return resume and (run_dir / RUN_COMPLETE).is_file()


def _run_one(
    plan: ComparePlan,
    name: str,
    seed: int,
    baseline: Path | None,
    progress: _Progress | None = None,
) -> list[RunResult]:
    """Train one loss for one seed, evaluate it (and its temperature-scaled twin).

    With ``plan.resume`` a run that finished before is read back instead of run again, and an
    unfinished one resumes training from its last completed epoch (the bundle's ``resume``).
    """
    from monai_calib.metrics import top_label_arrays

    run_dir = plan.run_dir(name, seed)
    overrides = dict(plan.common, seed=seed, output_dir=str(run_dir), loss_name=name)
    if baseline is not None:
        overrides["baseline_checkpoint"] = str(baseline / "models" / "model.pt")
    finished = _finished(run_dir, plan.resume)
    if not finished:
        (run_dir / RUN_COMPLETE).unlink(missing_ok=True)
        _run_workflow(plan.files(name), plan.meta, dict(overrides, resume=plan.resume), progress)
        _run_workflow(plan.files(name, evaluate=True), plan.meta, overrides)
    metrics = files.read_metrics(run_dir / "eval")
    results = [RunResult(name, seed, metrics, run_dir / "eval")]
    top = _load_top_label(run_dir / "eval")
    if top is not None:
        results[0].probs, results[0].labels = top
        if plan.post_hoc:
            results.append(_temperature_scaled(plan, name, seed, overrides, run_dir, top))
    if not finished:
        _mark_finished(run_dir)
    for r in results:
        if r.probs is not None:
            top_label = top_label_arrays(r.probs, r.labels)
            r.metrics["gap"] = float(top_label["conf"].mean() - top_label["correct"].mean())
    return results


def _settings(plan: ComparePlan, args: argparse.Namespace) -> dict[str, Any]:
    """What a methods section needs to reproduce the runs (read from the merged config)."""
    import monai
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(plan.files(plan.order[0]))
    parser.update(dict(plan.common, seed=0, loss_name=plan.order[0]))

    def get(key: str, parsed: bool = True) -> Any:
        try:
            return parser.get_parsed_content(key, instantiate=False) if parsed else parser[key]
        except Exception:  # an id this bundle does not define
            return None

    net = get("network_def", parsed=False) or {}
    network = ", ".join(
        f"{k}={v}" for k, v in net.items() if not str(v).startswith(("@", "$")) and k != "_target_"
    )
    sched = get("lr_scheduler", parsed=False) or {}
    sched_args = {k: get(f"lr_scheduler#{k}") for k in sched if k not in ("_target_", "optimizer")}
    # the bundles list their training augmentation under "augmentation" (a regime may empty it)
    steps = get("augmentation", parsed=False)
    if steps is None:
        pre = get("train#preprocessing", parsed=False) or {}
        steps = pre.get("transforms", [pre]) if isinstance(pre, dict) else []
    augment = [s.get("_target_", "?") for s in steps if isinstance(s, dict)]
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
    }
    for mod in ("ignite", "medmnist", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            continue
    from monai_calib import __version__ as own_version

    versions["monai_calib"] = own_version
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device += f" ({torch.cuda.get_device_name(0)}, AMP)"
    return {
        "bundle": plan.root.name,
        "dataset": get("dataset_flag"),
        "image_size": get("image_size"),
        "regime": plan.regime,
        "network": f"{str(net.get('_target_', '?')).split('.')[-1]}({network})",
        "optimizer": f"{str(get('optimizer#_target_') or '?').split('.')[-1]}"
        f"(lr={get('learning_rate')}, weight_decay={get('weight_decay')})",
        "schedule": f"{str(sched.get('_target_', '?')).split('.')[-1]}"
        f"({', '.join(f'{k}={v}' for k, v in sched_args.items())})",
        "epochs": get("max_epochs"),
        "batch_size": get("batch_size"),
        "augmentation": [a for a in augment if a not in ("EnsureTyped",)] or "none",
        "selection": get("selection_rule") or "bundle default",
        "seeds": list(range(plan.seeds)),
        "losses": plan.losses,
        "post_hoc": f"temperature scaling fitted on the validation split, T in {list(TS_RANGE)}"
        if plan.post_hoc
        else "none",
        "bootstrap_replicates": args.bootstrap,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
        "overrides": plan.common,
    }


def _summary_rows(
    plan: ComparePlan, results: list[RunResult]
) -> tuple[list[str], dict[str, list[RunResult]]]:
    rows = list(plan.losses)
    if any(r.row.endswith(TS_SUFFIX) for r in results):
        rows += [n + TS_SUFFIX for n in plan.losses]
    by_row = {
        row: sorted((r for r in results if r.row == row), key=lambda r: r.seed) for row in rows
    }
    return rows, by_row


def _comparisons(
    rows: list[str], by_row: dict[str, list[RunResult]], replicates: int
) -> list[dict[str, Any]]:
    """Each loss vs the reference loss, each ``+ts`` row vs the reference's, and TS vs none."""
    from monai_calib.metrics import paired_bootstrap

    ref = next((n for n in REFERENCE_LOSSES if n in rows), None)
    if ref is None or replicates == 0 or any(r.probs is None for r in by_row[ref]):
        return []
    pairs = [(row, ref) for row in rows if not row.endswith(TS_SUFFIX) and row != ref]
    if ref + TS_SUFFIX in rows:
        pairs.append((ref + TS_SUFFIX, ref))
        pairs += [
            (row, ref + TS_SUFFIX)
            for row in rows
            if row.endswith(TS_SUFFIX) and row != ref + TS_SUFFIX
        ]
    out = []
    for a, b in pairs:
        ra, rb = by_row[a], by_row[b]
        entry: dict[str, Any] = {"row": a, "reference": b}
        for stat, *_ in VERDICT_STATISTICS:
            res = paired_bootstrap(
                [r.probs for r in ra],
                [r.probs for r in rb],
                [r.labels for r in ra],
                statistic=stat,
                num_samples=replicates,
            )
            entry[stat] = {
                "difference": res.difference,
                "low": res.low,
                "high": res.high,
                "significant": res.significant,
            }
        out.append(entry)
    return out


def _summarise(
    plan: ComparePlan,
    results: list[RunResult],
    settings: dict[str, Any],
    replicates: int,
) -> dict[str, Any]:
    rows, by_row = _summary_rows(plan, results)
    first = by_row[rows[0]]
    columns = [
        c for c in TABLE_COLUMNS if all(c in r.metrics for rr in by_row.values() for r in rr)
    ]
    extra = sorted(
        {c for rr in by_row.values() for r in rr for c in r.metrics}
        - set(columns)
        - {"n", "temperature"}
    )
    columns += [c for c in extra if all(c in r.metrics for rr in by_row.values() for r in rr)]
    summary: dict[str, Any] = {
        "bundle": plan.root.name,
        "regime": plan.regime,
        "n_test": int(first[0].metrics["n"]) if "n" in first[0].metrics else None,
        "seeds": plan.seeds,
        "settings": settings,
        "columns": columns,
        "method_names": {row: method_name(row) for row in rows},
        "losses": {},
    }
    for row in rows:
        rs = by_row[row]
        entry: dict[str, Any] = {}
        for c in columns:
            values = [float(r.metrics[c]) for r in rs]
            entry[c] = {
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "values": values,
            }
        temps = [r.extra["temperature"] for r in rs if "temperature" in r.extra]
        if temps:
            entry["temperature"] = {"mean": float(np.mean(temps)), "values": temps}
        summary["losses"][row] = entry
    summary["comparisons"] = _comparisons(rows, by_row, replicates)
    if "ece" in columns:
        summary["best"] = min(rows, key=lambda r: summary["losses"][r]["ece"]["mean"])
    summary["verdict"] = _verdict_lines(summary)
    return summary


def _interval(d: dict[str, Any], scale: float, unit: str) -> str:
    unit = f" {unit}" if unit else ""
    digits = 2 if scale == 1.0 else 1
    return (
        f"{d['difference'] * scale:+.{digits}f}{unit} "
        f"[{d['low'] * scale:+.{digits}f}, {d['high'] * scale:+.{digits}f}]"
    )


def _verdict_lines(summary: dict[str, Any]) -> list[str]:
    losses = summary["losses"]
    lines = []
    if "best" in summary:
        best = summary["best"]
        lines.append(
            f"Best calibrated (lowest mean ECE): **{method_name(best)}**, ECE "
            f"{100 * losses[best]['ece']['mean']:.2f}%."
        )
    for ts in (False, True):
        comps = [
            c
            for c in summary["comparisons"]
            if c["row"].endswith(TS_SUFFIX) == ts and c["reference"].endswith(TS_SUFFIX) == ts
        ]
        if not comps:
            continue
        ref = method_name(comps[0]["reference"])
        lower = [
            method_name(c["row"])
            for c in comps
            if c["ece"]["significant"] and c["ece"]["difference"] < 0
        ]
        higher = [
            method_name(c["row"])
            for c in comps
            if c["ece"]["significant"] and c["ece"]["difference"] > 0
        ]
        what = "After temperature scaling, against" if ts else "Against"
        lines.append(
            f"{what} {ref}: significantly lower ECE: {', '.join(lower) or 'none'}; "
            f"significantly higher ECE: {', '.join(higher) or 'none'}."
        )
    for comp in summary["comparisons"]:
        parts = []
        for stat, word, scale, unit in VERDICT_STATISTICS:
            d = comp[stat]
            sig = "significant" if d["significant"] else "not significant"
            head = f"{word} {_interval(d, scale, unit)}"
            if stat == "ece":
                head = f"ECE {_interval(d, scale, unit)} vs {method_name(comp['reference'])}"
            parts.append(f"{head}, {sig}")
        lines.append(f"{method_name(comp['row'])}: " + "; ".join(parts) + ".")
    return lines


def _title(column: str) -> str:
    """Table header of a column: the registry's title with its arrow; unknown keys as is."""
    info = _registry.METRIC_INFO.get(column)
    return column if info is None else info.label


def _scale(column: str) -> float:
    """100 for the metrics the table shows in percent (every fraction), 1 otherwise."""
    info = _registry.METRIC_INFO.get(column)
    return 100.0 if info is None or info.percent else 1.0


def _fmt(values: list[float], scale: float) -> str:
    vals = [v * scale for v in values if not math.isnan(v)]
    if not vals:
        return "nan"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}"


def _write_results_csv(out: Path, summary: dict[str, Any], results: list[RunResult]) -> None:
    columns = summary["columns"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["loss", "method", "seed", *columns, "temperature"])
        for row in summary["losses"]:
            for r in sorted((r for r in results if r.row == row), key=lambda r: r.seed):
                t = r.extra.get("temperature")
                w.writerow(
                    [
                        row,
                        method_name(row),
                        r.seed,
                        *(f"{r.metrics[c]:.6f}" for c in columns),
                        "" if t is None else f"{t:.6f}",
                    ]
                )


def _figures(out: Path, summary: dict[str, Any], results: list[RunResult]) -> list[str]:
    """One reliability figure (a panel per row, seed 0; ``+ts`` rows underneath), one retention
    figure of the losses as trained (seed 0).

    Reads each run's ``reliability_statistics.npy`` and ``retention_curve.npz`` (see
    :mod:`monai_calib.handlers.report_files`).
    """
    from monai_calib.visualize import plot_reliability_panels, plot_retention_curve

    rows = list(summary["losses"])
    seed0 = {r.row: r.eval_dir for r in results if r.seed == 0}
    base = [r for r in rows if not r.endswith(TS_SUFFIX)]
    panels = [(method_name(row), files.read_statistics(seed0[row])) for row in rows]
    fig, _ = plot_reliability_panels(panels, ncols=len(base))
    files.save_figure(out, files.RELIABILITY_PNG, fig)
    written = [files.RELIABILITY_PNG]
    curves = {}
    for row in base:
        curve = files.read_retention_curve(seed0[row])
        if curve is not None:
            curves[method_name(row)] = curve
    if curves:
        fig, _ = plot_retention_curve(curves)
        files.save_figure(out, files.RETENTION_PNG, fig)
        written.append(files.RETENTION_PNG)
    return written


def _write_report(out: Path, summary: dict[str, Any], figures: list[str], seconds: float) -> None:
    s = summary["settings"]
    seeds = summary["seeds"]
    columns = summary["columns"]
    n_test = summary["n_test"]
    title = f"# Calibration comparison: `{summary['bundle']}` on {s['dataset']}"
    lines = [title, "", "## Verdict", ""]
    test_size = f"{n_test} test images" if n_test else "the test split"
    if summary["comparisons"]:
        replicates = s["bootstrap_replicates"]
        lines += [
            f"Differences are paired (same {test_size}), in percentage points for ECE and "
            "accuracy; negative ECE / NLL is better. In brackets: 95% interval from a paired "
            f"bootstrap ({replicates} replicates) over the test images, drawn within each seed and "
            f"averaged over the {seeds} seed(s); it reflects test-set sampling for the trained "
            'models, not retraining. "Significant": the interval excludes 0 (no correction '
            "for multiple comparisons).",
            "",
        ]
    lines += [f"- {v}" for v in summary["verdict"]]
    spread = "mean ± sd over seeds (ddof=1)" if seeds > 1 else "one seed (no sd)"
    lines += [
        "",
        "## Results",
        "",
        f"{test_size.capitalize()}; {seeds} seed(s), {spread}; in % except NLL. "
        "↓ lower is better, ↑ higher is better; Gap = mean top-label confidence − accuracy "
        "(positive: over-confident, negative: under-confident)."
        + (
            " `+ TS`: the same model after temperature scaling fitted on the validation split."
            if any(row.endswith(TS_SUFFIX) for row in summary["losses"])
            else ""
        ),
        "",
        "| method | " + " | ".join(_title(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row, entry in summary["losses"].items():
        cells = [_fmt(entry[c]["values"], _scale(c)) for c in columns]
        lines.append(f"| {method_name(row)} | " + " | ".join(cells) + " |")
    temps = {
        row: e["temperature"]["mean"] for row, e in summary["losses"].items() if "temperature" in e
    }
    if temps:
        lines += [
            "",
            "Fitted temperatures (mean over seeds): "
            + ", ".join(f"{method_name(r)} {t:.2f}" for r, t in temps.items())
            + ".",
        ]
    lines += ["", "## Settings", ""]
    for key in (
        "dataset",
        "image_size",
        "regime",
        "network",
        "optimizer",
        "schedule",
        "epochs",
        "batch_size",
        "augmentation",
        "selection",
        "seeds",
        "post_hoc",
        "device",
        "torch_threads",
        "versions",
        "overrides",
    ):
        lines.append(f"- {key.replace('_', ' ')}: `{json.dumps(s.get(key), default=str)}`")
    lines.append("")
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    lines += [f"Total time: {seconds:.0f} s. Per-run files: `runs/<loss>_seed<k>/`.", ""]
    (out / "report.md").write_text("\n".join(lines))


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Plan, run every loss and seed, summarise, write ``report.md`` and its companions."""
    plan = _plan(args)
    import torch

    threads, why = _choose_threads(args.threads)
    torch.set_num_threads(threads)
    print(f"torch CPU threads: {threads} ({why})", flush=True)
    print(_device_line(plan), flush=True)
    plan.out.mkdir(parents=True, exist_ok=True)
    _remove_outputs(plan.out)
    total = len(plan.order) * plan.seeds
    progress = _Progress(total, plan.common.get("max_epochs"))
    results: list[RunResult] = []
    run_dirs: dict[tuple[str, int], Path] = {}
    t_start = time.time()
    k = 0
    for seed in range(plan.seeds):
        for name in plan.order:
            k += 1
            base = NEEDS_BASELINE.get(name)
            t0 = time.time()
            run_dir = plan.run_dir(name, seed)
            trained = not _finished(run_dir, plan.resume)
            state = "training" if trained else "finished before, reading it"
            print(f"[{k}/{total}] {name} seed {seed}: {state} ...", flush=True)
            progress.start_run(k, f"{name} seed {seed}")
            done = _run_one(plan, name, seed, run_dirs[(base, seed)] if base else None, progress)
            progress.end_run(trained)
            run_dirs[(name, seed)] = run_dir
            results += done
            shown = ", ".join(
                f"{c}={done[0].metrics[c]:.4f}" for c in TABLE_COLUMNS if c in done[0].metrics
            )
            _, left = progress.eta(0)
            print(
                f"[{k}/{total}] {name} seed {seed}: done in {time.time() - t0:.1f}s ({shown})"
                + (f"; comparison ETA {_duration(left)}" if k < total else ""),
                flush=True,
            )
    reported = [r for r in results if r.row.removesuffix(TS_SUFFIX) in plan.losses]
    with PHASES.phase("summary"):
        summary = _summarise(plan, reported, _settings(plan, args), args.bootstrap)
    with PHASES.phase("writing"):
        _write_outputs(plan.out, summary, reported, not args.no_plots, t_start)
    best = (
        f", best calibrated (lowest ECE): {method_name(summary['best'])}"
        if "best" in summary
        else ""
    )
    print(
        f"compare finished: {total} run(s) in {_duration(time.time() - t_start)}{best}; "
        f"report written to {plan.out / 'report.md'}",
        flush=True,
    )
    return summary


def _final_outputs() -> tuple[str, ...]:
    """The files a comparison writes next to ``report.md`` (a function: the figure names live in
    ``report_files``, imported only when a comparison runs)."""
    return ("results.csv", "summary.json", files.RELIABILITY_PNG, files.RETENTION_PNG)


STAGING = ".compare_staging"


def _remove_outputs(out: Path) -> None:
    """Delete a previous comparison's report and companions before the runs are redone.

    A rerun overwrites ``runs/``; a report left from before would no longer describe those files
    and, if the rerun fails, would still look valid.
    """
    shutil.rmtree(out / STAGING, ignore_errors=True)
    stale = [out / name for name in (*_final_outputs(), "report.md") if (out / name).exists()]
    for path in stale:
        path.unlink()
    if stale:
        print(f"removed the previous comparison's {[p.name for p in stale]} from {out}", flush=True)


def _write_outputs(
    out: Path,
    summary: dict[str, Any],
    results: list[RunResult],
    plots: bool,
    t_start: float,
) -> None:
    """Write every output into a staging folder, then move them into ``out``, ``report.md`` last.

    A failure while writing (a figure, a full disk) leaves no partial set behind.
    """
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _write_results_csv(staging, summary, results)
        with open(staging / "summary.json", "w") as f:
            json.dump(summary, f, indent=2, default=str)
        with PHASES.phase("plotting"):
            figures = _figures(staging, summary, results) if plots else []
        _write_report(staging, summary, figures, time.time() - t_start)
        for name in (*_final_outputs(), "report.md"):
            if (staging / name).exists():
                (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _raised_in(exc: BaseException, folder: str) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(folder)


def _user_error(exc: BaseException) -> BaseException:
    """The error to show for ``exc``: MONAI's ``RuntimeError`` wrappers peeled off.

    ``ConfigWorkflow`` re-raises an error of a component or expression as ``RuntimeError("Failed
    to instantiate component ...")`` / ``"Failed to evaluate ConfigExpression ..."`` chained to
    the original; this follows the chain while the error is such a wrapper (a plain
    ``RuntimeError`` raised inside MONAI's package) and returns the first one that is not.
    """
    import monai

    monai_dir = str(Path(monai.__file__).resolve().parent)
    while type(exc) is RuntimeError and _raised_in(exc, monai_dir):
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if inner is None:
            break
        exc = inner
    return exc


# Errors of the input or the environment that the user can fix: exit 2, as argparse's errors.
_USER_ERRORS = (ValueError, TypeError, LookupError, OSError)


def _error_line(exc: BaseException) -> str:
    """``compare: error: <message>`` on one line; the type is named unless it is a ValueError,
    TypeError or OSError (whose messages say what is wrong on their own)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (ValueError, TypeError, OSError)):
        msg = f"{type(exc).__name__}: {msg}"
    return f"compare: error: {msg}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``compare``; 0 on success, 2 for bad input (as argparse), 1 for anything else.

    An error prints one line, ``compare: error: <message>`` (the original message, also when it
    was raised inside a bundle run); ``--debug`` prints the full traceback before it.
    """
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*security.*", category=UserWarning)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    PHASES.reset()
    try:
        run_compare(args)
        PHASES.report()
    except Exception as e:  # every error ends as one line (traceback: --debug)
        if args.debug:
            traceback.print_exception(e, file=sys.stderr)
        cause = _user_error(e)
        print(_error_line(cause), file=sys.stderr)
        return 2 if isinstance(cause, _USER_ERRORS) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
