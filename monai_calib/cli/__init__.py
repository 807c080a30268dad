# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Command-line entry points (``python -m monai_calib ...``)."""

from __future__ import annotations
