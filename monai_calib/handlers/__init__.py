# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.handlers: public names are re-exported here, one module per line."""

from __future__ import annotations

from .attach import AttachToEngine
from .checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    ResumeCheckpoint,
    RNGState,
    atomic_save,
)
from .class_prior import LSPlusClassPrior
from .grad_clip import GradientClipping
from .loss_state import LossStateUpdater
from .metric_handlers import (
    NLL,
    BrierScore,
    PooledCalibrationError,
    RetentionAUC,
    lower_is_better_cmp,
)
from .multilabel_report import (
    MULTILABEL_METRICS,
    MultiLabelAUC,
    MultiLabelCalibrationReport,
    multilabel_report,
)
from .prediction_writer import ProbabilityWriter
from .report import (
    CLASSIFICATION_METRICS,
    CalibrationReport,
    ReportHandler,
    classification_report,
    write_curve_files,
)
from .segmentation_report import SEGMENTATION_METRICS, SegmentationCalibrationReport
from .temperature_init import MiTTemperatureInit
from .warmup import CCTEALWarmup
