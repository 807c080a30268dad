# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.visualize: public names are re-exported here, one module per line."""

from __future__ import annotations

from .density import confidence_by_correctness, plot_confidence_density
from .panels import plot_reliability_panels
from .reliability import plot_reliability_diagram, reliability_statistics
from .retention import plot_retention_curve
