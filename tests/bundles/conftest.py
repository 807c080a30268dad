# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""One way to run a shipped bundle in the bundle tests: the ``bundle`` fixture.

A test module names its bundle (``BUNDLE = "medmnist_classification"``) and may set ``DEFAULTS``,
the overrides every run of that module starts from (tiny data, one epoch). ``bundle.run(files,
**overrides)`` then does what ``python -m monai.bundle run`` does (``ConfigWorkflow`` with the
bundle's ``metadata.json`` and the shared ``logging.conf``; initialize, run, finalize); file names
are looked up as the documentation writes them: ``train.json`` in the bundle's ``configs/``,
``loss_<name>.json`` / ``regime_<name>.json`` through ``monai_calib.bundles.overlay_file``, and an
absolute path (a test's own overlay) as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from monai_calib.bundles import bundle_dir, logging_file, overlay_file

OVERLAY_KINDS = ("loss", "regime")


class BundleRunner:
    """Runs one shipped bundle with a module's default overrides."""

    def __init__(self, name: str, defaults: dict[str, Any] | None = None) -> None:
        self.name = name
        self.root = Path(bundle_dir(name))
        self.configs = self.root / "configs"
        self.meta = str(self.configs / "metadata.json")
        self.logging = logging_file(name)
        self.defaults = dict(defaults or {})

    def path(self, file: str | os.PathLike) -> str:
        """Where a config file of this bundle is: see the module docstring."""
        p = Path(file)
        if p.is_absolute() or (self.configs / p).is_file():
            return str(p if p.is_absolute() else self.configs / p)
        kind, _, name = p.stem.partition("_")
        if kind in OVERLAY_KINDS and name:
            return overlay_file(self.name, name, kind)
        return str(self.configs / p)  # missing: ConfigWorkflow names it

    def files(self, files: Sequence[str | os.PathLike]) -> list[str]:
        return [self.path(f) for f in files]

    def parser(self, files: Sequence[str | os.PathLike], **updates: Any) -> ConfigParser:
        """The merged configs, with ``updates`` applied (no defaults), not yet parsed."""
        parser = ConfigParser()
        parser.read_config(self.files(files))
        if updates:
            parser.update(updates)
        return parser

    def run(self, files: Sequence[str | os.PathLike], **overrides: Any) -> ConfigWorkflow:
        """Initialize, run and finalize the merged configs in this process; the workflow."""
        wf = ConfigWorkflow(
            config_file=self.files(files),
            meta_file=self.meta,
            logging_file=self.logging,
            workflow_type=None,
            **{**self.defaults, **overrides},
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        return wf

    def train_and_evaluate(self, loss: str, output_dir: Path, **overrides: Any) -> dict[str, Any]:
        """Train ``train.json`` + ``loss_<loss>.json``, check that the checkpoint holds the network
        and the loss state, evaluate it with ``evaluate.json``; the ``eval/metrics.json`` report."""
        files = ["train.json", f"loss_{loss}.json"]
        self.run(files, output_dir=str(output_dir), loss_name=loss, **overrides)
        state = torch.load(Path(output_dir) / "models" / "model.pt", weights_only=True)
        assert {"model", "loss"} <= set(state)
        self.run([*files, "evaluate.json"], output_dir=str(output_dir), loss_name=loss, **overrides)
        return json.loads((Path(output_dir) / "eval" / "metrics.json").read_text())

    def run_cli(
        self, files: Sequence[str | os.PathLike], nproc: int | None = None, **overrides: Any
    ) -> subprocess.CompletedProcess:
        """``python -m monai.bundle run`` in a subprocess (through ``torchrun`` when ``nproc`` is
        given), with one CPU thread per process; asserts that it succeeded."""
        launcher = [sys.executable]
        if nproc is not None:
            launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd = [*launcher, "-m", "monai.bundle", "run", "--config_file", str(self.files(files))]
        cmd += ["--meta_file", self.meta, "--logging_file", self.logging]
        for key, value in {**self.defaults, **overrides}.items():
            cmd += [f"--{key}", str(value)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    @staticmethod
    def exceptions(exc: BaseException | None) -> Iterator[BaseException]:
        """An exception and its causes (``ConfigWorkflow`` wraps the original error)."""
        while exc is not None:
            yield exc
            exc = exc.__cause__ or exc.__context__

    @classmethod
    def error_text(cls, exc: BaseException) -> str:
        """``Type: message`` of an exception and each of its causes, one per line."""
        return "\n".join(f"{type(e).__name__}: {e}" for e in cls.exceptions(exc))


@pytest.fixture(scope="module")
def bundle(request: pytest.FixtureRequest) -> BundleRunner:
    """The bundle named by the test module's ``BUNDLE``, run with its ``DEFAULTS``."""
    return BundleRunner(request.module.BUNDLE, getattr(request.module, "DEFAULTS", None))


@pytest.fixture(scope="module")
def ce_run(bundle: BundleRunner, tmp_path_factory: pytest.TempPathFactory, data_root: str) -> Path:
    """A classification bundle's one-epoch cross-entropy run on the module's ``data_root``: the
    baseline that ``loss_ls_plus`` reads (``--baseline_checkpoint``)."""
    out = tmp_path_factory.mktemp("ce")
    bundle.run(["train.json", "loss_ce.json"], data_root=data_root, output_dir=str(out))
    return out
