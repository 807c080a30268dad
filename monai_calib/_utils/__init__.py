# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Private helpers shared across subpackages (input normalisation, dtype handling)."""

from __future__ import annotations

from .validation import (
    accumulation_dtype,
    check_finite,
    check_logits_2d,
    check_multilabel_target,
    normalize_class_target,
    reduce_per_sample,
)

__all__ = [
    "accumulation_dtype",
    "check_finite",
    "check_logits_2d",
    "check_multilabel_target",
    "normalize_class_target",
    "reduce_per_sample",
]
