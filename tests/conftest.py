# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Test-wide settings: headless matplotlib, quiet MONAI bundle security warnings, one thread."""

from __future__ import annotations

import os
import warnings

import torch

os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message=".*security.*", category=UserWarning)

# One intra-op thread per test process: CI runs two xdist workers on two cores, and oversubscribed
# threads made a training step ~20x slower on a loaded machine.
torch.set_num_threads(1)
