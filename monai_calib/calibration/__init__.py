# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.calibration: public names are re-exported here, one module per line."""

from __future__ import annotations

from .temperature import TemperatureScaler, fit_temperature
