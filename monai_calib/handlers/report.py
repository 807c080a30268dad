# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""An evaluator handler that writes a full calibration report of one evaluation run."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers.utils import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = [
    "CLASSIFICATION_METRICS",
    "CalibrationReport",
    "classification_report",
    "write_curve_files",
    "write_metrics_files",
]

# Column order of the report (also the order of compare's table).
CLASSIFICATION_METRICS = ("acc", "auc", "ece", "ace", "sce", "mce", "nll", "brier", "r_auc")


def _to_class_probs(y_pred: torch.Tensor) -> torch.Tensor:
    if y_pred.ndim != 2:
        raise ValueError(f"y_pred must have shape (N, K), got {tuple(y_pred.shape)}.")
    return y_pred.double()


def classification_report(
    y_pred: torch.Tensor, y: torch.Tensor, num_bins: int = 15
) -> dict[str, float]:
    """All of the report's numbers for probabilities ``(N, K)`` and labels (indices or one-hot).

    ``acc`` accuracy, ``auc`` macro one-vs-rest ROC AUC (MONAI ``compute_roc_auc``), ``ece``
    equal-width top-label ECE, ``ace`` equal-mass (adaptive) ECE, ``sce`` class-wise ECE, ``mce``
    maximum calibration error, ``nll``, ``brier`` (summed over classes), ``r_auc`` area under the
    accuracy-retention curve (log grid, ordered by ``1 - max p``). Each is a plain fraction (not %).
    """
    from monai.metrics import compute_roc_auc

    from monai_calib._utils import normalize_class_target
    from monai_calib.metrics import (
        brier_score,
        calibration_error,
        negative_log_likelihood,
        retention_auc,
    )

    p = _to_class_probs(y_pred)
    k = p.shape[1]
    idx = normalize_class_target(y, k, batch_size=p.shape[0], name="y")
    onehot = torch.nn.functional.one_hot(idx, k).double()
    out = {
        "n": float(p.shape[0]),
        "acc": float((p.argmax(1) == idx).double().mean()),
        "auc": float(compute_roc_auc(p, onehot, average="macro")),
        "ece": float(calibration_error(p, idx, num_bins=num_bins)),
        "ace": float(calibration_error(p, idx, num_bins=num_bins, binning="equal_mass")),
        "sce": float(calibration_error(p, idx, num_bins=num_bins, target="classwise")),
        "mce": float(calibration_error(p, idx, num_bins=num_bins, reduction="maximum")),
        "nll": float(negative_log_likelihood(p, idx)),
        "brier": float(brier_score(p, idx)),
        "r_auc": float(retention_auc(p, idx)),
    }
    return out


def write_metrics_files(output_dir: str, results: dict[str, float]) -> None:
    """Write ``metrics.json`` and a one-row ``metrics.csv`` of a report (``output_dir`` created)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(output_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(results))
        w.writerow([f"{v:.6f}" for v in results.values()])


def write_curve_files(
    output_dir: str,
    probs: torch.Tensor,
    labels: torch.Tensor,
    num_bins: int = 15,
    target: str = "top_label",
) -> None:
    """Write the files ``compare`` draws its figures from, for any bundle.

    ``reliability_statistics.npy``: the ``(C, num_bins, 3)`` equal-width statistics (count,
    confidence sum, correctness sum) of :func:`monai_calib.metrics.calibration_statistics`;
    ``retention_curve.npz``: ``fractions`` and ``accuracies`` of the accuracy-retention curve
    (written only for ``target="top_label"``).
    """
    from monai_calib.metrics import calibration_statistics, retention_curve

    stats = calibration_statistics(probs, labels, num_bins=num_bins, target=target)
    np.save(os.path.join(output_dir, "reliability_statistics.npy"), stats.cpu().numpy())
    if target == "top_label":
        fractions, accuracies = retention_curve(probs, labels)
        np.savez(
            os.path.join(output_dir, "retention_curve.npz"),
            fractions=np.asarray(fractions.cpu()),
            accuracies=np.asarray(accuracies.cpu()),
        )


class CalibrationReport:
    """Collects an evaluator's probabilities and labels and writes a calibration report.

    At the end of each evaluation run it writes into ``output_dir``:
    ``metrics.json`` and ``metrics.csv`` (accuracy, AUC, ECE, ACE, SCE, MCE, NLL, Brier, R-AUC),
    ``reliability.png``, ``confidence_density.png``, ``retention.png`` and ``predictions.npz``
    (``probs`` ``(N, K)`` and ``labels`` ``(N,)``, so figures can be redrawn without re-running).
    The numbers are also put in ``engine.state.metrics`` under ``prefix + name``.

    Under ``torch.distributed`` the predictions of all ranks are gathered and rank 0 writes.

    Args:
        output_dir: folder for the files (created).
        output_transform: maps ``engine.state.output`` to ``(probabilities, labels)``; the default
            reads the decollated ``pred`` / ``label`` items, which must already be probabilities
            (apply the loss's probability post-transform in the evaluator's postprocessing).
        num_bins: bins of the equal-width and equal-mass calibration errors and the diagram.
        prefix: prefix of the keys put into ``engine.state.metrics``.
        plots: write the PNG figures.
        title: title of the figures (e.g. the loss name).
    """

    def __init__(
        self,
        output_dir: str,
        output_transform: Callable | None = None,
        num_bins: int = 15,
        prefix: str = "test_",
        plots: bool = True,
        title: str | None = None,
    ) -> None:
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
        self.output_dir = str(output_dir)
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.num_bins = int(num_bins)
        self.prefix = prefix
        self.plots = plots
        self.title = title
        self.logger = logging.getLogger(__name__)
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.results: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        self._probs, self._labels = [], []

    def update(self, engine: Engine) -> None:
        y_pred, y = self.output_transform(engine.state.output)
        y_pred = torch.stack(list(y_pred)) if isinstance(y_pred, Sequence) else y_pred
        y = torch.stack([torch.as_tensor(v) for v in y]) if isinstance(y, Sequence) else y
        self._probs.append(torch.as_tensor(y_pred).detach().float().cpu())
        self._labels.append(torch.as_tensor(y).detach().cpu())

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        from monai.utils import evenly_divisible_all_gather

        probs = torch.cat(self._probs) if self._probs else torch.zeros(0)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            probs = evenly_divisible_all_gather(probs, concat=True)
            labels = evenly_divisible_all_gather(labels, concat=True)
        return probs, labels

    def __call__(self, engine: Engine) -> None:
        probs, labels = self._gathered()
        if probs.numel() == 0:
            raise ValueError("CalibrationReport received no predictions during the evaluation run.")
        k = probs.shape[1]
        from monai_calib._utils import normalize_class_target

        idx = normalize_class_target(labels, k, batch_size=probs.shape[0], name="label")
        self.results = classification_report(probs, idx, num_bins=self.num_bins)
        for name, value in self.results.items():
            engine.state.metrics[self.prefix + name] = value
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == 0:
            self.write(probs, idx)

    def write(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        write_metrics_files(self.output_dir, self.results)
        np.savez_compressed(
            os.path.join(self.output_dir, "predictions.npz"),
            probs=probs.numpy().astype(np.float32),
            labels=labels.numpy().astype(np.int64),
        )
        write_curve_files(self.output_dir, probs, labels, self.num_bins)
        if self.plots:
            self._plot(probs, labels)
        self.logger.info(f"calibration report written to {self.output_dir}: {self.results}")

    def _plot(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        from monai_calib.metrics import retention_curve
        from monai_calib.visualize import (
            plot_confidence_density,
            plot_reliability_diagram,
            plot_retention_curve,
        )

        figs: list[tuple[str, Any]] = []
        fig, _ = plot_reliability_diagram(probs, labels, num_bins=self.num_bins, title=self.title)
        figs.append(("reliability.png", fig))
        fig, _ = plot_confidence_density(probs, labels, title=self.title)
        figs.append(("confidence_density.png", fig))
        curve = retention_curve(probs, labels)
        fig, _ = plot_retention_curve({self.title or "model": curve})
        figs.append(("retention.png", fig))
        for name, fig in figs:
            fig.savefig(os.path.join(self.output_dir, name), dpi=100, bbox_inches="tight")
