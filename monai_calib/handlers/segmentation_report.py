# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""An evaluator handler that writes a segmentation + pooled voxel calibration report.

Everything is streamed (:class:`~monai_calib.metrics.reports.SegmentationReportMetric`): each
iteration adds its images to metric classes of fixed-size state (Dice / IoU sums, equal-width
calibration statistics, Brier / NLL sums), so the state does not grow with the number of images
or voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from monai_calib.metrics.reports import SEGMENTATION_METRICS, SegmentationReportMetric
from monai_calib.visualize import plot_reliability_diagram

from .report import ReportHandler
from .report_files import RELIABILITY_PNG, save_figure, write_metrics_files, write_statistics

__all__ = ["SEGMENTATION_METRICS", "SegmentationCalibrationReport"]


class SegmentationCalibrationReport(ReportHandler):
    r"""Streams segmentation and pooled voxel calibration statistics; writes a report per run.

    Per iteration, every image of the batch (channel-first probabilities ``(K, *spatial)`` and
    its label; images may differ in size) adds to fixed-size sums
    (:class:`~monai_calib.metrics.reports.SegmentationReportMetric`):

    - ``dice`` / ``mean_iou``: MONAI's :class:`monai.metrics.DiceMetric` /
      :class:`monai.metrics.MeanIoU` per image, on the one-hot argmax prediction and one-hot label
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

    Under ``torch.distributed`` the sums of all ranks are added (a rank without images adds
    nothing). At ``EPOCH_COMPLETED`` rank 0 writes into ``output_dir``: ``metrics.json`` /
    ``metrics.csv`` (the keys of :data:`SEGMENTATION_METRICS` plus ``n``, the number of images;
    plain fractions),
    ``reliability_statistics.npy`` (top-label statistics ``(1, num_bins, 3)``, read by
    ``python -m monai_calib compare``) and ``reliability.png``. The numbers also go into
    ``engine.state.metrics`` as ``prefix + name``.

    Args:
        output_dir: folder for the files (created).
        num_bins: equal-width bins of the pooled ECE / MCE / SCE and the diagram. Defaults to 15.
        num_bins_per_image: bins of ``ece_per_image`` (MONAI's default is 20).
        include_background: keep class 0 in Dice, IoU and ``ece_per_image``. Defaults to False
            (the foreground classes, as usual for segmentation).
        kwargs: ``output_transform`` (default: the decollated ``pred`` / ``label`` items;
            ``pred`` must be probabilities), ``prefix`` (``"test_"``), ``plots`` (write
            ``reliability.png``, True), ``title``: see
            :class:`~monai_calib.handlers.report.ReportHandler` (keywords only).

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
        *,
        num_bins: int = 15,
        num_bins_per_image: int = 20,
        include_background: bool = False,
        **kwargs: Any,
    ) -> None:
        self.metric = SegmentationReportMetric(num_bins, num_bins_per_image, include_background)
        super().__init__(output_dir, num_bins=num_bins, **kwargs)

    def reset(self, engine: Any = None) -> None:
        """Zero the running sums (fixed size: independent of the number of images)."""
        self.metric.reset()

    def state_size(self) -> int:
        """Number of numbers in the running state (for checking that memory stays fixed)."""
        return self.metric.state_size()

    def add(
        self,
        y_pred: torch.Tensor | Sequence[torch.Tensor],
        y: torch.Tensor | Sequence[torch.Tensor],
    ) -> None:
        """Add a batch (or a list of channel-first items) of probabilities and labels."""
        self.metric.update(y_pred, y)

    def compute(self) -> dict[str, float]:
        """The report's numbers from the running sums of all ranks."""
        results = self.metric.aggregate()
        self.statistics = self.metric.statistics()
        return results

    def write(self) -> None:
        """Write metrics.json / metrics.csv / reliability_statistics.npy / reliability.png."""
        write_metrics_files(self.output_dir, self.results)
        write_statistics(self.output_dir, self.statistics)
        if self.plots:
            fig, _ = plot_reliability_diagram(self.statistics, title=self.figure_title)
            save_figure(self.output_dir, RELIABILITY_PNG, fig)
