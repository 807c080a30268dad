# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Private helpers shared across subpackages.

- :mod:`.validation`: the one normaliser per kind of input (class scores, class / multi-hot
  targets, probabilities, ``num_bins``); import its names from there.
- :mod:`.distributed`: the cross-rank gather idiom.
"""

from __future__ import annotations

# kept for the handlers that import it from the package
from .validation import normalize_class_target

__all__ = ["normalize_class_target"]
