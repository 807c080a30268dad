# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Evaluator handlers that write a calibration report of one evaluation run.

:class:`ReportHandler` is the skeleton of every report: collect per iteration, then at the end
of the run compute the numbers (on every rank), publish them to ``engine.state.metrics`` and
write the files on rank 0. :class:`CalibrationReport` (classification) fills it in; the
multi-label and segmentation reports subclass it in their own modules. The numbers come from
:mod:`monai_calib.metrics.reports`, the files from :mod:`monai_calib.handlers.report_files`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers.utils import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from monai_calib._utils.distributed import gather_cat, is_main_rank
from monai_calib._utils.validation import check_num_bins, normalize_class_target
from monai_calib.bundles import method_name
from monai_calib.metrics.reports import CLASSIFICATION_METRICS, classification_report
from monai_calib.metrics.retention import retention_curve
from monai_calib.visualize import (
    plot_confidence_density,
    plot_reliability_diagram,
    plot_retention_curve,
)

from .report_files import (
    CONFIDENCE_DENSITY_PNG,
    RELIABILITY_PNG,
    RETENTION_PNG,
    save_figure,
    write_curve_files,
    write_metrics_files,
    write_predictions,
)

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
    "ReportHandler",
    "classification_report",
    "write_curve_files",
    "write_metrics_files",
]

_PRED_LABEL = from_engine(["pred", "label"])


def _stacked(x: Any) -> torch.Tensor:
    """A batch tensor, or a decollated list of items stacked into one, detached on the CPU."""
    x = torch.stack([torch.as_tensor(v) for v in x]) if isinstance(x, Sequence) else x
    return torch.as_tensor(x).detach().cpu()


class ReportHandler:
    """Skeleton of a report handler: collect, compute, publish, write on rank 0.

    ``attach`` registers ``reset`` at ``EPOCH_STARTED``, ``update`` at ``ITERATION_COMPLETED``
    and ``__call__`` at ``EPOCH_COMPLETED``. ``__call__`` runs :meth:`compute` on every rank (it
    may reduce across ranks), puts each number into ``engine.state.metrics`` under
    ``prefix + name``, and on rank 0 creates ``output_dir`` and calls :meth:`write`.

    Subclasses implement :meth:`reset`, :meth:`add`, :meth:`compute` and :meth:`write`.

    Args:
        output_dir: folder for the files (created).
        output_transform: maps ``engine.state.output`` to ``(probabilities, labels)``; the default
            reads the decollated ``pred`` / ``label`` items, which must already be probabilities
            (apply the loss's probability post-transform in the evaluator's postprocessing).
        num_bins: bins of the binned calibration errors and the reliability diagram.
        prefix: prefix of the keys put into ``engine.state.metrics``.
        plots: write the PNG figures.
        title: title of the figures (e.g. the loss name); a loss overlay id (``"mit"``,
            ``"ce+ts"``) is shown by its method's name (``"MiT"``, ``"CE + TS"``, see
            :func:`monai_calib.bundles.method_name`).

    Raises:
        ValueError: ``num_bins`` is not a positive int.
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
        self.output_dir = str(output_dir)
        self.output_transform = output_transform or _PRED_LABEL
        self.num_bins = check_num_bins(num_bins)
        self.prefix = prefix
        self.plots = plots
        self.title = title
        self.figure_title = None if title is None else method_name(str(title))
        self.logger = logging.getLogger(type(self).__module__)
        self.results: dict[str, float] = {}
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the collected data (called at the start of every run)."""
        raise NotImplementedError

    def update(self, engine: Engine) -> None:
        """Add the iteration's ``(probabilities, labels)``."""
        y_pred, y = self.output_transform(engine.state.output)
        self.add(y_pred, y)

    def add(self, y_pred: Any, y: Any) -> None:
        """Add a batch (a tensor or a list of decollated items) of probabilities and labels."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The report's numbers over all ranks (every rank calls it)."""
        raise NotImplementedError

    def write(self) -> None:
        """Write the files of the last :meth:`compute` into ``output_dir`` (rank 0 only)."""
        raise NotImplementedError

    def __call__(self, engine: Engine) -> None:
        self.results = self.compute()
        for name, value in self.results.items():
            engine.state.metrics[self.prefix + name] = value
        if is_main_rank():
            os.makedirs(self.output_dir, exist_ok=True)
            self.write()
            self.logger.info(f"{type(self).__name__} written to {self.output_dir}: {self.results}")


class CalibrationReport(ReportHandler):
    """Collects an evaluator's probabilities and labels and writes a calibration report.

    At the end of each evaluation run it writes into ``output_dir``:
    ``metrics.json`` and ``metrics.csv`` (``n`` and :data:`CLASSIFICATION_METRICS`: accuracy,
    AUC, ECE, ACE, SCE, MCE, NLL, Brier, R-AUC; see
    :func:`~monai_calib.metrics.reports.classification_report`), ``reliability_statistics.npy``
    and ``retention_curve.npz`` (see :func:`~monai_calib.handlers.write_curve_files`),
    ``predictions.npz`` (``probs`` ``(N, K)`` and ``labels`` ``(N,)``, so figures can be redrawn
    without re-running) and, with ``plots``, ``reliability.png``, ``confidence_density.png`` and
    ``retention.png``. The numbers are also put in ``engine.state.metrics`` under
    ``prefix + name``.

    Under ``torch.distributed`` the predictions of all ranks are gathered and rank 0 writes.

    Args:
        output_dir, output_transform, num_bins, prefix, plots, title: see
            :class:`ReportHandler`.

    Raises:
        ValueError: ``num_bins < 1``; at the end of a run, no predictions or bad labels.
    """

    curve_target = "top_label"

    def reset(self, engine: Engine | None = None) -> None:
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def add(self, y_pred: Any, y: Any) -> None:
        self._probs.append(_stacked(y_pred).float())
        self._labels.append(_stacked(y))

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.cat(self._probs) if self._probs else torch.zeros(0)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0)
        probs, labels = gather_cat(probs, labels)
        if probs.numel() == 0:
            raise ValueError(
                f"{type(self).__name__} received no predictions during the evaluation run."
            )
        return probs, labels

    def _labels_of(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The gathered labels in the form the report and the files use (class indices)."""
        return normalize_class_target(
            labels, probs.shape[1], batch_size=probs.shape[0], name="label"
        )

    def _report(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return classification_report(probs, labels, num_bins=self.num_bins)

    def compute(self) -> dict[str, float]:
        probs, labels = self._gathered()
        self.probs, self.labels = probs, self._labels_of(probs, labels)
        return self._report(self.probs, self.labels)

    def write(self) -> None:
        write_metrics_files(self.output_dir, self.results)
        write_predictions(self.output_dir, self.probs, self.labels)
        write_curve_files(
            self.output_dir, self.probs, self.labels, self.num_bins, target=self.curve_target
        )
        if self.plots:
            self._plot()

    def _plot(self) -> None:
        probs, labels = self.probs, self.labels
        title = self.figure_title
        fig, _ = plot_reliability_diagram(probs, labels, num_bins=self.num_bins, title=title)
        save_figure(self.output_dir, RELIABILITY_PNG, fig)
        fig, _ = plot_confidence_density(probs, labels, title=title)
        save_figure(self.output_dir, CONFIDENCE_DENSITY_PNG, fig)
        fig, _ = plot_retention_curve({title or "model": retention_curve(probs, labels)})
        save_figure(self.output_dir, RETENTION_PNG, fig)
