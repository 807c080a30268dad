# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib: calibration-aware training for MONAI.

Importing the package imports its subpackages so that MONAI's bundle ``ComponentLocator`` (which
scans loaded modules whose names start with ``monai``) can also resolve short ``_target_`` names.
Shipped bundles always use fully qualified names.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import bundles, calibration, data, enums, handlers, losses, metrics, transforms, visualize

__all__ = [
    "__version__",
    "bundles",
    "calibration",
    "data",
    "enums",
    "handlers",
    "losses",
    "metrics",
    "transforms",
    "visualize",
]
