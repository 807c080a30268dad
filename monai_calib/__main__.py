# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``python -m monai_calib <command>`` (also the ``monai-calib`` console script)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = ("compare", "bundle-path", "convert-dsb2018", "make-datalist")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: python -m monai_calib <command> [options]\n\n"
            "commands:\n"
            "  compare          train a bundle once per loss and seed, write a calibration report\n"
            "  bundle-path      print the folder of a shipped bundle (clone or installed wheel)\n"
            "  convert-dsb2018  official DSB2018 release -> cell_segmentation's data layout\n"
            "  make-datalist    write a MONAI datalist from a folder per class, a CSV or an npz\n\n"
            "'python -m monai_calib <command> --help' lists its options."
        )
        return 0 if args else 2
    if args[0] == "compare":
        from monai_calib.cli.compare import main as compare_main

        return compare_main(args[1:])
    if args[0] == "bundle-path":
        from monai_calib.bundles import main as bundle_path_main

        return bundle_path_main(args[1:])
    if args[0] == "convert-dsb2018":
        from monai_calib.cli.convert_dsb2018 import main as convert_main

        return convert_main(args[1:])
    if args[0] == "make-datalist":
        from monai_calib.cli.make_datalist import main as make_datalist_main

        return make_datalist_main(args[1:])
    print(f"unknown command {args[0]!r}; valid commands: {list(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
