# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Test-wide settings: headless matplotlib, quiet MONAI bundle security warnings."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message=".*security.*", category=UserWarning)
