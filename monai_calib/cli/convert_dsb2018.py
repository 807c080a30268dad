# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``python -m monai_calib convert-dsb2018 SRC DST``: official DSB2018 release -> bundle layout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monai_calib convert-dsb2018",
        description="Convert the official 2018 Data Science Bowl release (Kaggle stage1_train "
        "folders with masks/, or stage1_test folders with stage1_solution.csv) into the layout "
        "the cell_segmentation bundle reads: DST/index.csv, DST/images/, DST/labels/ (uint16 "
        "instance maps).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("src", help="unzipped stage1_train or stage1_test folder")
    p.add_argument("dst", help="output folder (created; must be empty unless --overwrite)")
    p.add_argument(
        "--rle-csv",
        default=None,
        help="run-length CSV (ImageId, EncodedPixels), e.g. stage1_solution.csv; default: masks/, "
        "else SRC/stage1_solution.csv",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from monai_calib.data.dsb2018 import convert_dsb2018  # deferred: keeps --help fast

    try:
        rows = convert_dsb2018(args.src, args.dst, rle_csv=args.rle_csv, overwrite=args.overwrite)
    except (OSError, ValueError) as e:
        print(f"convert-dsb2018: error: {e}", file=sys.stderr)
        return 2
    nuclei = sum(r["n_nuclei"] for r in rows)
    print(f"wrote {len(rows)} images ({nuclei} nuclei) to {args.dst} (index.csv, images/, labels/)")
    return 0
