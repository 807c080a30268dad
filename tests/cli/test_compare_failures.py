# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``compare`` on bad input: option checks that list the choices, one-line errors from inside a
bundle run (``--debug`` for the traceback), and no stale or partial outputs after a failure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_medmnist_npz

from monai_calib.cli import compare
from monai_calib.cli.compare import main

FINAL = ("report.md", "summary.json", "results.csv", "reliability.png", "retention.png")
FAST = ["--losses", "ce", "--epochs", "1", "--no-ts", "--no-plots", "--threads", "1"]


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_medmnist_npz(root, "breastmnist", sizes=(24, 12, 12))
    return root


def _plant_previous_outputs(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in FINAL:
        (out / name).write_text("from an earlier comparison")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--losses", ""], r"--losses is empty.*'ce'"),
        (["--losses", " , "], r"--losses is empty"),
        (["--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
        (["--batch-size", "-3"], r"--batch-size must be >= 1, got -3"),
        (["--image-size", "0"], r"--image-size must be >= 1, got 0"),
        (
            ["--override", "select_metric=bogus"],
            r"select_metric must be one of .*\[.*'auc'.*'ece'.*\].*got 'bogus'",
        ),
        (
            ["--override", "batch_size=0"],
            r"batch_size \(--override batch_size\) must be >= 1, got 0",
        ),
    ],
)
def test_bad_options_are_clear_errors_before_any_run(tmp_path, capsys, argv, pattern):
    out = tmp_path / "out"
    assert main([*argv, "--output", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("compare: error: ")
    assert re.search(pattern, line), line
    assert not out.exists()  # nothing run, nothing written


def _corrupt(root: Path) -> Path:
    path = root / "breastmnist.npz"
    path.write_bytes(path.read_bytes()[:200])
    return path


def _label_out_of_range(root: Path) -> Path:
    path = root / "breastmnist.npz"
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["train_labels"][3, 0] = 7
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize(
    "fault,expected",
    [
        ("dataset", "compare: error: dataset_flag must be one of"),
        ("missing_root", "compare: error: data_root "),
        ("corrupt", "compare: error: MedMNIST file "),
        ("label", "compare: error: MedMNIST file "),
    ],
)
def test_errors_inside_a_bundle_run_are_one_line(tmp_path, data_root, capsys, fault, expected):
    argv = ["--data-root", str(data_root), *FAST, "--output", str(tmp_path / "out")]
    if fault == "dataset":
        argv += ["--dataset", "nosuchmnist"]
    elif fault == "missing_root":
        argv[1] = str(tmp_path / "nowhere")
    elif fault == "corrupt":
        _corrupt(data_root)
    else:
        _label_out_of_range(data_root)
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = _one_line(err)
    assert line.startswith(expected), line
    assert "Failed to" not in line and "Traceback" not in err
    if fault == "label":
        assert "train_labels" in line and "7" in line


def test_debug_prints_the_traceback_then_the_line(tmp_path, data_root, capsys):
    argv = ["--data-root", str(data_root), *FAST, "--output", str(tmp_path / "out")]
    assert main([*argv, "--dataset", "nosuchmnist", "--debug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and "Failed to" in "\n".join(err)
    assert err[-1].startswith("compare: error: dataset_flag must be one of")


def test_a_failing_rerun_removes_the_previous_outputs(tmp_path, data_root, capsys):
    out = tmp_path / "out"
    _plant_previous_outputs(out)
    _corrupt(data_root)
    assert main(["--data-root", str(data_root), *FAST, "--output", str(out)]) == 2
    assert not [n for n in FINAL if (out / n).exists()]
    assert "could not be read" in capsys.readouterr().err


def test_outputs_are_written_together_or_not_at_all(tmp_path, data_root, monkeypatch, capsys):
    out = tmp_path / "out"
    _plant_previous_outputs(out)

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(compare, "_write_report", broken)
    assert main(["--data-root", str(data_root), *FAST, "--output", str(out)]) == 2
    assert _one_line(capsys.readouterr().err) == "compare: error: No space left on device"
    assert not [n for n in FINAL if (out / n).exists()]  # no summary.json without report.md
    assert sorted(p.name for p in out.iterdir()) == ["runs"]  # no staging folder left
    monkeypatch.undo()
    assert main(["--data-root", str(data_root), *FAST, "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "report.md",
        "results.csv",
        "runs",
        "summary.json",
    ]
    assert set(json.loads((out / "summary.json").read_text())["losses"]) == {"ce"}
