# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.metrics: public names are re-exported here, one module per line."""

from __future__ import annotations

from .bootstrap import (
    BootstrapStatistic,
    PairedBootstrapResult,
    paired_bootstrap,
    top_label_arrays,
)
from .calibration_error import (
    calibration_error,
    calibration_error_from_statistics,
    calibration_statistics,
)
from .multilabel import hamming_loss, multilabel_auc
from .pooled_calibration import PooledCalibrationErrorMetric
from .registry import METRIC_INFO, MetricInfo, metric_cmp_fn, metric_info
from .reports import (
    CLASSIFICATION_METRICS,
    MULTILABEL_METRICS,
    SEGMENTATION_METRICS,
    SegmentationReportMetric,
    classification_report,
    multilabel_report,
)
from .retention import retention_auc, retention_curve
from .retention_metric import RetentionAUCMetric
from .score_metrics import BrierScoreMetric, NLLMetric
from .scores import brier_score, brier_statistics, negative_log_likelihood, nll_statistics
