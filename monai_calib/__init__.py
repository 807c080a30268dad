# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib: calibration-aware training for MONAI.

The subpackages are imported lazily (PEP 562): ``import monai_calib`` loads neither torch nor
MONAI, so the command line (``python -m monai_calib ... --help``) starts fast, while
``monai_calib.losses`` and ``from monai_calib import losses`` work as with eager imports.
Shipped bundles use fully qualified ``_target_`` names (``monai_calib.losses.MiTLoss``), which
MONAI's ``ComponentLocator`` imports on demand; a short name of a monai_calib class resolves only
once its subpackage has been imported (the locator scans loaded modules whose names start with
``monai``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_SUBPACKAGES = (
    "bundles",
    "calibration",
    "data",
    "enums",
    "handlers",
    "losses",
    "metrics",
    "transforms",
    "visualize",
)

__all__ = ["__version__", *_SUBPACKAGES]

if TYPE_CHECKING:  # static analysers see the subpackages as attributes
    from . import (
        bundles,
        calibration,
        data,
        enums,
        handlers,
        losses,
        metrics,
        transforms,
        visualize,
    )


def __getattr__(name: str) -> Any:
    """Import a subpackage on first access (``monai_calib.losses``)."""
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later accesses skip this hook
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBPACKAGES})
