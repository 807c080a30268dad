# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Crash-safe checkpoints and resumable runs of a real bundle (``python -m monai.bundle run``).

Each run is a subprocess started through a small harness (written next to the outputs) that can
SIGKILL its own process at a chosen moment: half-way through writing the n-th save of a checkpoint
file, or in the middle of an epoch. The medmnist bundle trains 3 epochs of 6 iterations on CPU with
its own shuffled ``DataLoader`` and random augmentation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from synthetic import write_medmnist_npz

from monai_calib.bundles import bundle_dir, logging_file, require_checkpoint

BUNDLE = "medmnist_classification"
EPOCHS, BATCH, N_TRAIN = 3, 16, 96  # 6 iterations per epoch

HARNESS = r"""
import atexit, io, os, runpy, signal, sys
import torch

mode, arg = os.environ.get("HARNESS_MODE", ""), os.environ.get("HARNESS_ARG", "")
iterations = [0]

if mode == "kill_in_save":  # SIGKILL half-way through the n-th save of a file
    from ignite.handlers import Checkpoint

    Checkpoint._compare_fn = lambda self, new: True  # model selection saves at every epoch
    target, nth = arg.split(":")
    original, count = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        if target in os.path.basename(str(getattr(f, "name", f))):
            count[0] += 1
            if count[0] == int(nth):
                buf = io.BytesIO()
                original(obj, buf, *args, **kwargs)
                half = buf.getvalue()[: len(buf.getvalue()) // 2]
                if hasattr(f, "write"):
                    f.write(half)
                    f.flush()
                else:
                    with open(f, "wb") as out:
                        out.write(half)
                os.kill(os.getpid(), signal.SIGKILL)
        return original(obj, f, *args, **kwargs)

    torch.save = save

from monai.engines import SupervisedTrainer

step = SupervisedTrainer._iteration


def counted(self, engine, batch):
    out = step(self, engine, batch)
    iterations[0] += 1
    if mode == "kill_at":  # SIGKILL after iteration <i> of epoch <e>
        epoch, i = map(int, arg.split(":"))
        length = engine.state.epoch_length
        if engine.state.epoch == epoch and (engine.state.iteration - 1) % length + 1 == i:
            os.kill(os.getpid(), signal.SIGKILL)
    return out


SupervisedTrainer._iteration = counted
atexit.register(lambda: open(os.environ["HARNESS_COUNT"], "w").write(str(iterations[0])))
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__")
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("medmnist")
    write_medmnist_npz(root, sizes=(N_TRAIN, 24, 24))
    return str(root)


def run_bundle(
    out: Path, data_root: str, mode: str = "", arg: str = "", **overrides: Any
) -> tuple[subprocess.CompletedProcess, int | None]:
    """One ``monai.bundle run`` of train.json in a subprocess; the process and how many training
    iterations it ran (None when it was killed)."""
    configs = Path(bundle_dir(BUNDLE)) / "configs"
    harness = out.parent / "harness.py"
    harness.write_text(HARNESS)
    count = out.parent / f"{out.name}.{mode or 'plain'}.count"
    count.unlink(missing_ok=True)
    cmd = [sys.executable, str(harness), "run", "--config_file", str(configs / "train.json")]
    cmd += ["--meta_file", str(configs / "metadata.json"), "--logging_file", logging_file(BUNDLE)]
    settings = {
        "data_root": data_root,
        "output_dir": str(out),
        "max_epochs": EPOCHS,
        "batch_size": BATCH,
        "seed": 0,
        **overrides,
    }
    for key, value in settings.items():
        cmd += [f"--{key}", str(value)]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        HARNESS_MODE=mode,
        HARNESS_ARG=arg,
        HARNESS_COUNT=str(count),
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return proc, int(count.read_text()) if count.exists() else None


def assert_equal(a: Any, b: Any, where: str = "") -> None:
    """Bitwise equality of nested checkpoint contents."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("file", ["model.pt", "resume.pt"])
def test_kill_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, data_root: str, file):
    """SIGKILL half-way through the second save of a checkpoint: the first one is intact."""
    out = tmp_path / "run"
    proc, _ = run_bundle(out, data_root, "kill_in_save", f"{file}:2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    path = out / "models" / file
    require_checkpoint(str(path))  # present, complete, loads with weights_only=True
    state = load(path)
    if file == "resume.pt":
        assert state["trainer"]["iteration"] == N_TRAIN // BATCH  # epoch 1
    else:
        assert {"model", "loss"} <= set(state)
    proc, _ = run_bundle(tmp_path / "again", data_root, "kill_in_save", f"{file}:99")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the same epoch-1 model as a run that was not killed; no temporary file is left visible
    epoch1 = run_bundle(tmp_path / "one", data_root, max_epochs=1)[0]
    assert epoch1.returncode == 0, epoch1.stderr[-3000:]
    key = "network" if file == "resume.pt" else "model"
    assert_equal(state[key], load(tmp_path / "one" / "models" / file)[key], key)
    assert not [p for p in (tmp_path / "again" / "models").iterdir() if p.suffix == ".tmp"]


def test_killed_run_resumes_bitwise(tmp_path: Path, data_root: str):
    """SIGKILL mid-epoch 2, resume with ``--resume True``: the same weights, optimizer, loss state,
    best model, metrics and RNG state as the uninterrupted run; only epochs 2 and 3 are re-run."""
    proc, straight_its = run_bundle(tmp_path / "straight", data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert straight_its == EPOCHS * N_TRAIN // BATCH

    out = tmp_path / "killed"
    proc, _ = run_bundle(out, data_root, "kill_at", "2:3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert load(out / "models" / "resume.pt")["trainer"]["iteration"] == N_TRAIN // BATCH  # epoch 1
    proc, resumed_its = run_bundle(out, data_root, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert resumed_its == (EPOCHS - 1) * N_TRAIN // BATCH  # epoch 1 was not trained again

    a, b = load(tmp_path / "straight" / "models" / "resume.pt"), load(out / "models" / "resume.pt")
    assert {"network", "optimizer", "lr_scheduler", "loss", "trainer", "rng", "evaluator"} <= set(a)
    assert a["evaluator"]["metrics"], a["evaluator"]
    assert_equal(a, b, "resume.pt")
    assert_equal(
        load(tmp_path / "straight" / "models" / "model.pt"), load(out / "models" / "model.pt")
    )


def test_resume_without_a_checkpoint_starts_fresh(tmp_path: Path, data_root: str):
    """``--resume True`` on a new output folder is a normal run (so a script can always pass it)."""
    proc, its = run_bundle(tmp_path / "new", data_root, resume=True, max_epochs=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert its == N_TRAIN // BATCH


def test_compare_resume_skips_finished_runs_and_resumes_the_others(
    tmp_path: Path, data_root: str, monkeypatch: pytest.MonkeyPatch
):
    """An interrupted ``compare`` rerun with ``--resume``: the finished run is read back, not
    trained again; the unfinished one trains with the bundle's ``resume``; the results are those
    of an uninterrupted comparison."""
    from monai_calib.cli import compare

    def args(out: Path) -> list[str]:
        return [
            "--data-root", data_root, "--losses", "ce,ls", "--epochs", "2", "--batch-size", "16",
            "--bootstrap", "0", "--no-ts", "--no-plots", "--threads", "1", "--output", str(out),
        ]  # fmt: skip

    assert compare.main(args(tmp_path / "straight")) == 0

    calls: list[tuple[str, bool]] = []
    workflow = compare._run_workflow

    def crash_at_ls(files: list[str], meta: str, overrides: dict[str, Any], *rest: Any) -> None:
        calls.append((overrides["loss_name"], overrides.get("resume", None)))
        if overrides["loss_name"] == "ls":
            raise KeyboardInterrupt  # the comparison is killed in its second run
        workflow(files, meta, overrides, *rest)

    monkeypatch.setattr(compare, "_run_workflow", crash_at_ls)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        compare.main(args(out))
    assert (out / "runs" / "ce_seed0" / compare.RUN_COMPLETE).is_file()
    assert not (out / "runs" / "ls_seed0" / compare.RUN_COMPLETE).exists()

    calls.clear()
    monkeypatch.setattr(
        compare, "_run_workflow", lambda *a, **k: calls.append(a[2]) or workflow(*a, **k)
    )
    assert compare.main([*args(out), "--resume"]) == 0
    assert [c["loss_name"] for c in calls] == ["ls", "ls"]  # ce was not run again
    assert calls[0]["resume"] is True
    assert (out / "results.csv").read_text() == (tmp_path / "straight" / "results.csv").read_text()
