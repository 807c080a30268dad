# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Test-wide settings: headless matplotlib, quiet MONAI bundle security warnings, one thread."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message=".*security.*", category=UserWarning)

# One intra-op thread per test process: CI runs two xdist workers on two cores, and oversubscribed
# threads made a training step ~20x slower on a loaded machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _monai_track_meta() -> Iterator[None]:
    """The classification bundles switch MONAI's global ``track_meta`` off while they run; a
    test that stops a bundle half-way must not leave it off for the next test."""
    from monai.data import set_track_meta

    yield
    set_track_meta(True)
