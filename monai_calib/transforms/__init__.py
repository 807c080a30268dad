# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.transforms: public names are re-exported here, one module per line."""

from __future__ import annotations

from .post import (
    CCTEALProbability,
    CCTEALProbabilityd,
    SquaredSigmoid,
    SquaredSigmoidd,
    TemperatureScale,
    TemperatureScaled,
)
