# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""A fast command line: ``import monai_calib`` and ``compare --help`` load neither torch nor MONAI,
the subpackages still load on first access, and ``--help`` shows every option's default."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types

import pytest

import monai_calib
from monai_calib.cli.compare import build_parser

HEAVY = ("torch", "monai", "ignite", "matplotlib")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_loads_neither_torch_nor_monai():
    assert _loaded_after("import monai_calib") == []


def test_compare_help_loads_neither_torch_nor_monai():
    code = (
        "import contextlib, io\n"
        "from monai_calib.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['compare', '--help'])\n"
    )
    assert _loaded_after(code) == []
    # the probe can see torch: importing a subpackage loads it
    assert "torch" in _loaded_after("import monai_calib.losses")


@pytest.mark.parametrize("name", monai_calib.__all__[1:])
def test_subpackages_load_on_first_access(name):
    module = getattr(monai_calib, name)
    assert isinstance(module, types.ModuleType) and module.__name__ == f"monai_calib.{name}"
    assert sys.modules[f"monai_calib.{name}"] is module
    assert name in dir(monai_calib)


def test_from_import_and_unknown_names():
    from monai_calib import handlers, losses

    assert losses.MiTLoss.__module__.startswith("monai_calib.losses")
    assert handlers.CalibrationReport.__module__.startswith("monai_calib.handlers")
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        monai_calib.nonexistent  # noqa: B018


def test_compare_help_shows_every_default():
    parser = build_parser()
    # the option list (not the usage line), unwrapped; each entry runs to the next one
    text = " ".join(parser.format_help().split("options:", 1)[1].split())
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    starts = sorted((text.index(f"{a.option_strings[0]} "), i) for i, a in enumerate(options))
    ends = [start for start, _ in starts[1:]] + [len(text)]
    for (start, i), end in zip(starts, ends, strict=True):
        action = options[i]
        block = text[start:end]
        assert "default:" in block, f"{action.option_strings[0]} shows no default: {block!r}"
    assert "(default: 2000)" in text  # argparse's own, from the option's default
    assert re.search(r"--seeds SEEDS number of seeds \(0, 1, \.\.\.\) \(default: 1\)", text)


@pytest.mark.parametrize(
    "argv,dest,value",
    [
        (["--data_root", "/d"], "data_root", "/d"),
        (["--data-root", "/d"], "data_root", "/d"),
        (["--batch_size", "8"], "batch_size", 8),
        (["--image_size", "32"], "image_size", 32),
    ],
)
def test_compare_accepts_the_bundle_spelling_too(argv, dest, value):
    """The bundles' errors say ``--data_root`` (``monai.bundle run``); compare takes it as well."""
    assert getattr(build_parser().parse_args(argv), dest) == value
