# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""What ``compare`` tells while it runs: the torch threads it chose and why, the device, one line
per training epoch (mean training loss, ETAs), and a closing line with the report's path."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from monai_calib.cli.compare import _choose_threads, _duration, _Progress, main


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "cpus,torch_default,load,expected",
    [
        (4, 8, 0.0, 4),  # idle machine: every usable CPU, not torch's count of the host's cores
        (4, 2, 0.0, 2),  # torch's physical-core count is lower
        (4, 8, 1.2, 3),  # one CPU busy elsewhere
        (2, 2, 5.0, 1),  # oversubscribed: one thread, never zero
    ],
)
def test_threads_follow_cores_and_load(monkeypatch, cpus, torch_default, load, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(torch, "get_num_threads", lambda: torch_default)
    threads, why = _choose_threads(None)
    assert threads == expected
    assert f"load average {load:.1f}" in why and f"{cpus} usable CPU(s)" in why


def test_threads_option_and_environment_win(monkeypatch):
    assert _choose_threads(3) == (3, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert _choose_threads(None) == (2, "OMP_NUM_THREADS=2")


def test_epoch_line_is_the_mean_training_loss(capsys):
    losses = [[0.9, 0.5, 0.1], [0.4, 0.2, 0.3]]  # two epochs of three iterations
    flat = iter([x for epoch in losses for x in epoch])
    # SupervisedTrainer's output after decollation: a list of per-item dicts sharing the loss
    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(next(flat))}] * 2)
    progress = _Progress(total_runs=3, epochs=2)
    progress.start_run(1, "ce seed 0")
    progress.attach(trainer)
    trainer.run(range(3), max_epochs=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "train loss" in ln]
    assert len(lines) == 2
    for epoch, (line, values) in enumerate(zip(lines, losses, strict=True), start=1):
        assert line.startswith(f"[1/3] ce seed 0: epoch {epoch}/2, train loss ")
        shown = float(re.search(r"train loss ([0-9.]+)", line).group(1))
        assert shown == pytest.approx(np.mean(values), abs=1e-4)
        assert "ETA run " in line and ", comparison " in line


def test_eta_counts_the_epochs_and_evaluations_left():
    progress = _Progress(total_runs=3, epochs=5)
    progress.start_run(1, "ce seed 0")
    progress.epoch_seconds = [2.0, 4.0]  # 3 s per epoch
    progress.eval_seconds = [3.0]  # 3 s of evaluation per run
    run_left, total_left = progress.eta(epochs_left_in_run=2)
    assert run_left == pytest.approx(2 * 3.0 + 3.0)
    assert total_left == pytest.approx(run_left + 2 * (5 * 3.0 + 3.0))  # two runs after this one


@pytest.mark.parametrize(
    "seconds,text", [(0.4, "0 s"), (59, "59 s"), (65, "1 min 05 s"), (3725, "1 h 02 min")]
)
def test_duration(seconds, text):
    assert _duration(seconds) == text


def test_compare_on_shipped_breastmnist_reports_progress(tmp_path, capsys, keep_threads):
    out = tmp_path / "out"
    argv = ["--epochs", "1", "--seeds", "1", "--losses", "ce", "--no-plots", "--no-ts"]
    assert main([*argv, "--bootstrap", "0", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    threads = next(ln for ln in lines if ln.startswith("torch CPU threads: "))
    assert int(re.match(r"torch CPU threads: (\d+) \(.+\)$", threads).group(1)) == (
        torch.get_num_threads()
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = "on" if torch.cuda.is_available() else "off"
    assert any(re.fullmatch(rf"device: {device}\S*( \(.+\))?, AMP {amp}", ln) for ln in lines)
    epoch = [ln for ln in lines if re.match(r"\[1/1\] ce seed 0: epoch 1/1, train loss \d", ln)]
    assert len(epoch) == 1
    assert 0.0 < float(re.search(r"train loss ([0-9.]+)", epoch[0]).group(1)) < 5.0
    assert lines[-1].startswith("compare finished: 1 run(s) in ")
    assert lines[-1].endswith(f"report written to {out / 'report.md'}")
    assert (out / "report.md").is_file()
    # not a terminal: no progress bar redrawn on stderr
    assert "\r" not in captured.err and "it/s" not in captured.err
