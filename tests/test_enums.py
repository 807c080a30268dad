# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.enums: one StrEnum per option, validated with MONAI's look_up_option."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import CalibrationReduction as MonaiCalibrationReduction

from monai_calib import enums
from monai_calib.losses import CCTEALLoss, MDCALoss
from monai_calib.metrics import calibration_error


def test_values_are_the_documented_strings() -> None:
    assert [e.value for e in enums.CalibrationTarget] == ["top_label", "classwise", "marginal"]
    assert [e.value for e in enums.Binning] == ["equal_width", "equal_mass"]
    assert [e.value for e in enums.CalibrationNorm] == ["l1", "l2"]
    assert [e.value for e in enums.LabelReduction] == ["macro", "micro", "weighted", "none"]
    assert [e.value for e in enums.RetentionGrid] == ["log", "linear"]
    assert [e.value for e in enums.Uncertainty] == ["max_prob", "entropy", "predicted_class"]
    assert [e.value for e in enums.MDCABaseLoss] == ["nll", "focal", "label_smoothing"]
    assert [e.value for e in enums.CCTEALInferenceRule] == [
        "none",
        "predicted",
        "expected",
        "oracle",
    ]
    # the bin-gap reduction is MONAI's own enum
    assert enums.CalibrationReduction is MonaiCalibrationReduction


def test_members_and_strings_are_interchangeable() -> None:
    """Bundle configs pass plain strings; both spellings give the same object and value."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(30, 3, generator=g), dim=1)
    y = torch.randint(0, 3, (30,), generator=g)
    a = calibration_error(p, y, binning="equal_mass", reduction="maximum", norm="l2")
    b = calibration_error(
        p,
        y,
        binning=enums.Binning.EQUAL_MASS,
        reduction=enums.CalibrationReduction.MAXIMUM,
        norm=enums.CalibrationNorm.L2,
    )
    assert torch.equal(a, b)
    loss = MDCALoss(base_loss="focal")
    assert loss.base_loss == enums.MDCABaseLoss.FOCAL == "focal"
    assert "base_loss='focal'" in repr(loss)
    assert CCTEALLoss(3, inference_rule="expected").inference_rule == "expected"


def test_bad_value_names_the_value_and_the_closest_option() -> None:
    with pytest.raises(ValueError, match=r"By 'equal_widht', did you mean 'equal_width'"):
        calibration_error(torch.full((2, 2), 0.5), torch.tensor([0, 1]), binning="equal_widht")
