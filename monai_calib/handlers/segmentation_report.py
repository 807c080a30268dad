# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""An evaluator handler that writes a segmentation + pooled voxel calibration report.

Everything is streamed: each iteration reduces its images to fixed-size sums (Dice / IoU sums
and counts from MONAI's ``compute_dice`` / ``compute_iou``, equal-width calibration statistics,
Brier / NLL sums), so the state does not grow with the number of images or voxels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.handlers.utils import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from monai_calib._utils.distributed import all_reduce_sum
from monai_calib.handlers.report import write_metrics_files

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["SEGMENTATION_METRICS", "SegmentationCalibrationReport"]

_PRED_LABEL = from_engine(["pred", "label"])

# Keys of metrics.json, in order.
SEGMENTATION_METRICS = ("dice", "mean_iou", "ece", "sce", "mce", "nll", "brier", "ece_per_image")


def _as_batch(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A batch tensor or a decollated list -> a list of channel-first items (sizes may differ)."""
    if isinstance(x, torch.Tensor):
        return [t for t in x]
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [torch.as_tensor(t) for t in x]
    raise TypeError(f"expected a tensor or a list of tensors, got {type(x).__name__}.")


class _MeanReducer:
    """Streaming form of MONAI's ``do_metric_reduction(f, "mean")`` over ``(B, C)`` batches.

    MONAI first averages each image's non-NaN channels, then averages the images that have at
    least one non-NaN channel; keeping the sum of those per-image means and their count gives
    exactly the same number for any split of the images into batches.
    """

    def __init__(self) -> None:
        self.state = torch.zeros(2, dtype=torch.float64)

    def update(self, f: torch.Tensor) -> None:
        f = f.detach().double().cpu().reshape(f.shape[0], -1)
        ok = ~torch.isnan(f)
        n = ok.sum(1)
        per_image = torch.where(ok, f, torch.zeros_like(f)).sum(1) / n.clamp(min=1)
        keep = n > 0
        self.state += torch.stack([per_image[keep].sum(), keep.sum().double()])

    def value(self, state: torch.Tensor) -> float:
        return float(state[0] / state[1]) if state[1] > 0 else float("nan")


class SegmentationCalibrationReport:
    r"""Streams segmentation and pooled voxel calibration statistics; writes a report per run.

    Per iteration, every image of the batch (channel-first probabilities ``(K, *spatial)`` and
    its label; images may differ in size) adds to fixed-size sums:

    - ``dice`` / ``mean_iou``: MONAI's :func:`monai.metrics.compute_dice` /
      :func:`monai.metrics.compute_iou` on the one-hot argmax prediction and one-hot label
      (``include_background`` as given, ``ignore_empty=True``), reduced exactly like
      :class:`monai.metrics.DiceMetric` / :class:`monai.metrics.MeanIoU` with
      ``reduction="mean"`` (per-image channel mean, then the mean over images; images without
      any foreground are skipped; NaN, where MONAI gives 0, when no image has foreground).
    - ``ece``, ``mce``: pooled top-label calibration error over **all voxels of all images**
      from the summed equal-width statistics of
      :func:`monai_calib.metrics.calibration_statistics`:

      .. math::

          \mathrm{ECE} = \sum_{b=1}^{M} \frac{n_b}{N}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|

      with :math:`N` the number of voxels; ``mce`` is :math:`\max_b` of the gap and ``sce`` the
      mean over classes of the class-wise (one-vs-rest) ECE.
    - ``nll``, ``brier``: voxel means of :math:`-\log\max(p_y, 10^{-7})` and
      :math:`\sum_k (p_k - 1[y=k])^2`.
    - ``ece_per_image``: MONAI's :class:`monai.metrics.CalibrationErrorMetric` (per image and per
      channel, marginal, ``num_bins_per_image`` bins, channels as ``include_background``, then
      the mean), through :class:`monai_calib.metrics.PooledCalibrationErrorMetric` with
      ``per_image=True``.

    Under ``torch.distributed`` the sums are all-reduced. At ``EPOCH_COMPLETED`` rank 0 writes
    into ``output_dir``: ``metrics.json`` / ``metrics.csv`` (the keys of
    :data:`SEGMENTATION_METRICS` plus ``n``, the number of images; plain fractions),
    ``reliability_statistics.npy`` (top-label statistics ``(1, num_bins, 3)``, read by
    ``python -m monai_calib compare``) and ``reliability.png``. The numbers also go into
    ``engine.state.metrics`` as ``prefix + name``.

    Args:
        output_dir: folder for the files (created).
        output_transform: maps ``engine.state.output`` to ``(probabilities, labels)``. Default:
            the decollated ``pred`` / ``label`` items; ``pred`` must be probabilities (apply the
            loss's probability transform in the evaluator's postprocessing).
        num_bins: equal-width bins of the pooled ECE / MCE / SCE and the diagram. Defaults to 15.
        num_bins_per_image: bins of ``ece_per_image`` (MONAI's default is 20).
        include_background: keep class 0 in Dice, IoU and ``ece_per_image``. Defaults to False
            (the foreground classes, as usual for segmentation).
        prefix: prefix of the keys put into ``engine.state.metrics``. Defaults to ``"test_"``.
        plots: write ``reliability.png``. Defaults to True.
        title: title of the figure (e.g. the loss name).

    Inputs (per item of the batch):
        - probabilities ``(K, *spatial)``, ``K >= 2``, summing to 1 over the channel axis;
        - label: class indices ``(1, *spatial)`` or one-hot ``(K, *spatial)``.

    Raises:
        ValueError: ``num_bins`` / ``num_bins_per_image`` < 1; a single-class input; at the end
            of a run without any image.
        TypeError: outputs that are neither tensors nor lists of tensors.

    References:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
        Yokoi & Hotta, "Multiplicative loss for calibrated segmentation", arXiv 2510.12258.
    """

    def __init__(
        self,
        output_dir: str,
        output_transform: Callable = _PRED_LABEL,
        num_bins: int = 15,
        num_bins_per_image: int = 20,
        include_background: bool = False,
        prefix: str = "test_",
        plots: bool = True,
        title: str | None = None,
    ) -> None:
        for name, value in (("num_bins", num_bins), ("num_bins_per_image", num_bins_per_image)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        self.output_dir = str(output_dir)
        self.output_transform = output_transform
        self.num_bins = num_bins
        self.num_bins_per_image = num_bins_per_image
        self.include_background = bool(include_background)
        self.prefix = prefix
        self.plots = plots
        self.title = title
        self.logger = logging.getLogger(__name__)
        self.results: dict[str, float] = {}
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """Zero the running sums (fixed size: independent of the number of images)."""
        self._dice = _MeanReducer()
        self._iou = _MeanReducer()
        self._ece_img = _MeanReducer()
        self._top = torch.zeros(1, self.num_bins, 3, dtype=torch.float64)
        self._cls: torch.Tensor | None = None  # (K, M, 3) once K is known
        self._scores = torch.zeros(4, dtype=torch.float64)  # brier sum, n, nll sum, n
        self._images = 0

    def state_size(self) -> int:
        """Number of numbers in the running state (for checking that memory stays fixed)."""
        cls = 0 if self._cls is None else self._cls.numel()
        return 3 * 2 + self._top.numel() + cls + self._scores.numel() + 1

    def update(self, engine: Engine) -> None:
        y_pred, y = self.output_transform(engine.state.output)
        self.add(y_pred, y)

    def add(
        self,
        y_pred: torch.Tensor | Sequence[torch.Tensor],
        y: torch.Tensor | Sequence[torch.Tensor],
    ) -> None:
        """Add a batch (or a list of channel-first items) of probabilities and labels."""
        from monai.metrics import compute_dice, compute_iou
        from monai.networks.utils import one_hot

        from monai_calib.metrics import (
            PooledCalibrationErrorMetric,
            brier_statistics,
            calibration_statistics,
            nll_statistics,
        )

        preds, labels = _as_batch(y_pred), _as_batch(y)
        if len(preds) != len(labels):
            raise ValueError(
                f"got {len(preds)} predictions but {len(labels)} labels in one iteration."
            )
        per_image = PooledCalibrationErrorMetric(
            num_bins=self.num_bins_per_image,
            per_image=True,
            include_background=self.include_background,
        )
        for p, lab in zip(preds, labels, strict=True):
            p = p.detach().float()[None]
            lab = lab.detach().to(p.device)[None]
            k = p.shape[1]
            if k < 2:
                raise ValueError(
                    f"probabilities must have K >= 2 channels (softmax), got shape "
                    f"{tuple(p.shape[1:])}."
                )
            if lab.shape[1] == k and k > 1 and lab.shape == p.shape:
                idx = lab.argmax(1, keepdim=True)
            else:
                idx = lab.round().long()
            onehot = one_hot(idx, k, dim=1)
            pred_1h = one_hot(p.argmax(1, keepdim=True), k, dim=1)
            bg = self.include_background
            self._dice.update(compute_dice(pred_1h, onehot, include_background=bg))
            self._iou.update(compute_iou(pred_1h, onehot, include_background=bg))
            self._ece_img.update(per_image(p, onehot))
            self._top += calibration_statistics(p, idx, num_bins=self.num_bins).cpu()
            cls = calibration_statistics(p, idx, num_bins=self.num_bins, target="classwise").cpu()
            self._cls = cls if self._cls is None else self._cls + cls
            self._scores += torch.cat([brier_statistics(p, idx), nll_statistics(p, idx)]).cpu()
            self._images += 1
        per_image.reset()

    def compute(self) -> dict[str, float]:
        """The report's numbers from the (all-reduced) running sums."""
        from monai_calib.metrics import calibration_error_from_statistics

        images = float(all_reduce_sum(torch.tensor([float(self._images)], dtype=torch.float64)))
        if images == 0:
            raise ValueError("SegmentationCalibrationReport received no images in the run.")
        top = all_reduce_sum(self._top)
        cls = all_reduce_sum(self._cls)
        scores = all_reduce_sum(self._scores)
        dice = all_reduce_sum(self._dice.state)
        iou = all_reduce_sum(self._iou.state)
        ece_img = all_reduce_sum(self._ece_img.state)
        self._top_total = top
        return {
            "n": images,
            "dice": self._dice.value(dice),
            "mean_iou": self._iou.value(iou),
            "ece": float(calibration_error_from_statistics(top)),
            "sce": float(calibration_error_from_statistics(cls)),
            "mce": float(calibration_error_from_statistics(top, reduction="maximum")),
            "nll": float(scores[2] / scores[3]),
            "brier": float(scores[0] / scores[1]),
            "ece_per_image": self._ece_img.value(ece_img),
        }

    def __call__(self, engine: Engine) -> None:
        self.results = self.compute()
        for name, value in self.results.items():
            engine.state.metrics[self.prefix + name] = value
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == 0:
            self.write()

    def write(self) -> None:
        """Write metrics.json / metrics.csv / reliability_statistics.npy / reliability.png."""
        write_metrics_files(self.output_dir, self.results)
        np.save(
            os.path.join(self.output_dir, "reliability_statistics.npy"),
            self._top_total.numpy(),
        )
        if self.plots:
            from monai_calib.visualize import plot_reliability_diagram

            fig, _ = plot_reliability_diagram(self._top_total, title=self.title)
            fig.savefig(
                os.path.join(self.output_dir, "reliability.png"), dpi=100, bbox_inches="tight"
            )
        self.logger.info(f"segmentation report written to {self.output_dir}: {self.results}")
