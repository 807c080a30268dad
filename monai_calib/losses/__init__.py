# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.losses: public names are re-exported here, one module per line."""

from __future__ import annotations

from .caml import CAMLLoss, caml_default_modulation
from .ccl import CanonicalCalibrationLoss
from .cct_eal import CCTEALLoss
from .dca import DCALoss
from .ldace import LDACELoss
from .ldace_ccl import LDACECCLoss
from .ls_plus import LSPlusLoss, class_prior_from_predictions
from .mdca import MDCALoss
from .mit import MiTLoss
from .multiplicative import MultiplicativeLoss
from .tet import TETLoss
