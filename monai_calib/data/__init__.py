# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""monai_calib.data: public names are re-exported here, one module per line."""

from __future__ import annotations

from .datalist import (
    DATALIST_SECTIONS,
    DATALIST_SPLIT_FILE,
    DATALIST_TASKS,
    DatalistDataset,
    check_datalist_classes,
    load_datalist,
    segmentation_transforms,
)
from .dsb2018 import (
    DSB2018_DOWNLOAD_URL,
    DSB2018_INDEX_COLUMNS,
    PrepareDSB2018d,
    convert_dsb2018,
    dsb2018_datalist,
    dsb2018_index,
    dsb2018_rle_decode,
    dsb2018_root,
    dsb2018_split,
    dsb2018_transforms,
)
from .medmnist import (
    MEDMNIST_2D_FLAGS,
    MEDMNIST_SIZES,
    MedMNISTDataset,
    default_medmnist_root,
    medmnist_info,
)
from .pad_ufes20 import (
    PAD_UFES20_CLASSES,
    PADUFES20Dataset,
    pad_ufes20_datalist,
    pad_ufes20_info,
    pad_ufes20_patient_split,
)
from .rfmid import RFMID_DEFAULT_EXTENSIONS, RFMiDDataset
