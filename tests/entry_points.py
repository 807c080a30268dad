# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Every public loss and metric class by name: the shared tables of the cross-cutting tests.

``tests/reliability/test_reliability_inputs.py`` (bad-input matrix) and
``tests/reliability/test_reliability_precision.py`` (mixed precision, properties) run each
table row; a new loss or metric class is added here once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from monai_calib.losses import (
    CAMLLoss,
    CanonicalCalibrationLoss,
    CCTEALLoss,
    DCALoss,
    LDACECCLoss,
    LDACELoss,
    LSPlusLoss,
    MDCALoss,
    MiTLoss,
    MultiplicativeLoss,
    TETLoss,
)
from monai_calib.metrics import (
    BrierScoreMetric,
    NLLMetric,
    PooledCalibrationErrorMetric,
    RetentionAUCMetric,
    brier_score,
    calibration_error,
    negative_log_likelihood,
    retention_auc,
)

#: segmentation loss classes (their constructors take MONAI's activation arguments)
SEG_LOSS_CLASSES: dict[str, Callable[..., torch.nn.Module]] = {
    "MultiplicativeLoss": MultiplicativeLoss,
    "CAMLLoss": CAMLLoss,
}

#: name -> (factory(num_classes), kind); kind is "class", "multilabel" or "seg"
LOSSES: dict[str, tuple[Callable[[int], torch.nn.Module], str]] = {
    "DCALoss": (lambda k: DCALoss(), "class"),
    "MDCALoss": (lambda k: MDCALoss(), "class"),
    "MDCALoss-focal": (lambda k: MDCALoss(base_loss="focal"), "class"),
    "MDCALoss-label_smoothing": (lambda k: MDCALoss(base_loss="label_smoothing"), "class"),
    "LSPlusLoss": (lambda k: LSPlusLoss([0.6] * k), "class"),
    "TETLoss": (lambda k: TETLoss(), "class"),
    "MiTLoss": (lambda k: MiTLoss(num_classes=k), "class"),
    "CCTEALLoss": (lambda k: CCTEALLoss(num_classes=k), "class"),
    "LDACELoss": (lambda k: LDACELoss(), "multilabel"),
    "CanonicalCalibrationLoss": (lambda k: CanonicalCalibrationLoss(), "multilabel"),
    "LDACECCLoss": (lambda k: LDACECCLoss(), "multilabel"),
    **{
        name: ((lambda k, cls=cls: cls(to_onehot_y=True, softmax=True)), "seg")
        for name, cls in SEG_LOSS_CLASSES.items()
    },
}


def losses_of_kind(kind: str) -> dict[str, Callable[[int], torch.nn.Module]]:
    """The factories of :data:`LOSSES` of one kind."""
    return {name: make for name, (make, k) in LOSSES.items() if k == kind}


#: metric class name -> (factory, the functional metric it streams)
METRIC_CLASSES: dict[str, tuple[Callable[[], object], Callable[..., torch.Tensor]]] = {
    "PooledCalibrationErrorMetric": (PooledCalibrationErrorMetric, calibration_error),
    "BrierScoreMetric": (BrierScoreMetric, brier_score),
    "NLLMetric": (NLLMetric, negative_log_likelihood),
    "RetentionAUCMetric": (RetentionAUCMetric, retention_auc),
}
