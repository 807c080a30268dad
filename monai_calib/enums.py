# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""String options of monai_calib, one :class:`monai.utils.StrEnum` per option.

Each option is spelled once, here. Parameters are annotated ``SomeEnum | str`` and validated with
:func:`monai.utils.look_up_option`, as MONAI does: a plain string (what bundle configs pass) and
an enum member are both accepted, and a bad value raises ``ValueError`` naming it, suggesting the
closest valid name and listing the valid ones. The members compare equal to their string values.

The reduction of the per-bin calibration gaps is MONAI's own
:class:`monai.metrics.CalibrationReduction` (``"expected"``, ``"average"``, ``"maximum"``),
re-exported here.
"""

from __future__ import annotations

from monai.metrics import CalibrationReduction
from monai.utils import StrEnum

__all__ = [
    "Binning",
    "CCTEALInferenceRule",
    "CalibrationNorm",
    "CalibrationReduction",
    "CalibrationTarget",
    "LabelReduction",
    "MDCABaseLoss",
    "RetentionGrid",
    "Uncertainty",
]


class CalibrationTarget(StrEnum):
    """Which probabilities a calibration error measures.

    - ``"top_label"``: the confidence of the predicted class (softmax outputs).
    - ``"classwise"``: every class's probability against that class's indicator.
    - ``"marginal"``: independent per-label probabilities against multi-hot labels (sigmoid).
    """

    TOP_LABEL = "top_label"
    CLASSWISE = "classwise"
    MARGINAL = "marginal"


class Binning(StrEnum):
    """Bins of a calibration error: ``"equal_width"`` intervals or ``"equal_mass"`` quantiles."""

    EQUAL_WIDTH = "equal_width"
    EQUAL_MASS = "equal_mass"


class CalibrationNorm(StrEnum):
    """Norm of the per-bin gap ``|accuracy - confidence|``: ``"l1"`` or ``"l2"``."""

    L1 = "l1"
    L2 = "l2"


class LabelReduction(StrEnum):
    """How per-label calibration errors of a multi-label problem are combined.

    - ``"macro"``: mean over labels; ``"weighted"``: mean weighted by each label's positives;
    - ``"micro"``: the per-label bin statistics pooled into one calibration error;
    - ``"none"``: one value per label.
    """

    MACRO = "macro"
    MICRO = "micro"
    WEIGHTED = "weighted"
    NONE = "none"


class RetentionGrid(StrEnum):
    """Retention fractions of an accuracy-retention curve: ``"log"`` or ``"linear"`` spaced."""

    LOG = "log"
    LINEAR = "linear"


class Uncertainty(StrEnum):
    """Score that orders the samples of a retention curve (most uncertain dropped first).

    - ``"max_prob"``: ``1 - max_k p_k``; ``"entropy"``: the predictive entropy;
    - ``"predicted_class"``: the predicted class index (the LS+ code's ordering, a bug kept for
      reproducing its numbers only).
    """

    MAX_PROB = "max_prob"
    ENTROPY = "entropy"
    PREDICTED_CLASS = "predicted_class"


class MDCABaseLoss(StrEnum):
    """Base classification loss of :class:`~monai_calib.losses.MDCALoss`."""

    NLL = "nll"
    FOCAL = "focal"
    LABEL_SMOOTHING = "label_smoothing"


class CCTEALInferenceRule(StrEnum):
    r"""Temperature of a CCT-EAL model at inference (:class:`~monai_calib.losses.CCTEALLoss`).

    .. math::
        \text{none: } 1, \quad \text{predicted: } T_{\arg\max_c z_c}, \quad
        \text{expected: } \textstyle\sum_c \mathrm{softmax}(z)_c\, T_c, \quad
        \text{oracle: } T_y

    ``"oracle"`` uses the label (reproduction of the reference's numbers only).
    """

    NONE = "none"
    PREDICTED = "predicted"
    EXPECTED = "expected"
    ORACLE = "oracle"
