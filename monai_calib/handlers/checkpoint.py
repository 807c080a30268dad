# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Crash-safe checkpoints and resumable training runs.

* :func:`atomic_save` writes a checkpoint to a temporary file in the target folder, flushes it to
  disk and renames it over the target (``os.replace``), so a process killed at any moment leaves
  either the previous file or the new one, never a truncated one.
* :class:`AtomicCheckpointSaver` is MONAI's ``CheckpointSaver`` with that write. MONAI's saver
  writes in place and, for a fixed file name such as ``model.pt``, even deletes the previous best
  model before writing the new one; here the old file stays until the new one replaces it.
* :class:`ResumeCheckpoint` saves (atomically) at every epoch end all a run needs to continue:
  trainer, network, optimizer, scheduler, loss state, the selection savers' best scores, the
  evaluator's best metric and the random number generators (torch, numpy, ``random``, the train
  loader's generator and the random transforms of its dataset); with ``resume=True`` it loads that
  file, when it exists, at ``STARTED``. A run killed mid-epoch loses the partial epoch and repeats
  it exactly: on CPU the resumed run ends bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Randomizable, Transform
from torch.nn import DataParallel
from torch.nn.parallel import DistributedDataParallel

from monai_calib._utils.distributed import get_rank, is_main_rank

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "RNGState",
    "ResumeCheckpoint",
    "atomic_save",
]

logger = logging.getLogger(__name__)
TMP_SUFFIX = ".tmp"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder and a rename.

    A kill at any moment leaves ``path`` as it was (or already replaced by the complete new file);
    the temporary file (``.<name>.<random>.tmp``) of an interrupted write is removed by the next
    write of the same ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.close(fd)
        with open(tmp, "wb") as f:  # by name: ``f.name`` is the path, as for a plain save
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the data are on disk before the name points at them
        os.chmod(tmp, 0o644)  # mkstemp's 0o600 would hide the file from group and others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` that writes with :func:`atomic_save` and removes files only after the
    next one is written.

    Ignite's ``Checkpoint`` removes the file it replaces *before* saving the new one; with a fixed
    ``filename`` (MONAI's ``model.pt``) that is the same file, so the removal is skipped here (the
    rename replaces it), and other removals wait until the new file is complete.

    Args:
        dirname: folder of the checkpoints.
        filename: a fixed file name for every save (as MONAI's ``CheckpointSaver`` uses), or None.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        if get_rank() == self.save_on_rank:
            atomic_save(checkpoint, self.dirname / filename)
        pending, self._pending = self._pending, []
        for name in pending:
            if name != filename:
                super().remove(name)

    def remove(self, filename: str) -> None:
        filename = self.filename or filename
        if filename not in self._pending:
            self._pending.append(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver``, writing every checkpoint atomically (:class:`AtomicDiskSaver`).

    Same arguments and files as ``monai.handlers.CheckpointSaver``. It also has a ``state_dict``
    (the key-metric tracking list, i.e. the best score so far), so :class:`ResumeCheckpoint` can
    save it and a resumed run keeps the best model of the epochs before the interruption.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (
            self._final_checkpoint,
            self._key_metric_checkpoint,
            self._interval_checkpoint,
        ):
            if checkpoint is not None:
                old = checkpoint.save_handler
                checkpoint.save_handler = AtomicDiskSaver(
                    old.dirname, getattr(old, "filename", None)
                )

    def state_dict(self) -> dict[str, Any]:
        """The key-metric checkpoint's tracking list (empty without ``save_key_metric``)."""
        if self._key_metric_checkpoint is None:
            return {}
        return _SaverState(self).state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            super().load_state_dict(state_dict)


def _np_state(rs: np.random.RandomState) -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = rs.get_state()
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def _set_np_state(rs: np.random.RandomState, s: Mapping[str, Any]) -> None:
    keys = s["keys"].numpy().astype(np.uint32)
    rs.set_state(("MT19937", keys, int(s["pos"]), int(s["has_gauss"]), float(s["gauss"])))


def _randomizables(obj: Any, seen: set[int], depth: int = 0) -> Iterator[Randomizable]:
    """The ``Randomizable`` objects reachable from a dataset, each once, in a fixed order: through
    ``dataset``, ``transform`` and ``transforms`` attributes, sequences, and the attributes of
    transforms (``RandAffined`` draws from its ``rand_affine`` and that one's ``rand_affine_grid``,
    each with its own ``RandomState``)."""
    if obj is None or isinstance(obj, (str, bytes)) or id(obj) in seen or depth > 12:
        return
    seen.add(id(obj))
    if isinstance(obj, Randomizable):
        yield obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _randomizables(item, seen, depth + 1)
        return
    children = [getattr(obj, attr, None) for attr in ("dataset", "transform", "transforms")]
    if isinstance(obj, Transform):
        children += [v for v in vars(obj).values() if isinstance(v, (Transform, list, tuple))]
    for child in children:
        if isinstance(child, (Transform, list, tuple)) or hasattr(child, "transform"):
            yield from _randomizables(child, seen, depth + 1)


class RNGState:
    """The random number generators a training epoch draws from, as a ``state_dict``.

    torch (CPU and CUDA), numpy and ``random`` global states, the ``torch.Generator`` of the
    trainer's data loader and of its sampler, and the ``RandomState`` of every ``Randomizable``
    transform of its dataset. The state holds tensors and numbers only, so the checkpoint loads
    with ``torch.load(weights_only=True)``.

    Args:
        engine: the trainer (its ``data_loader`` is inspected at every call).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _loader(self) -> Any:
        return getattr(self.engine, "data_loader", None) or getattr(
            self.engine.state, "dataloader", None
        )

    def _generators(self) -> list[torch.Generator]:
        loader, found = self._loader(), []
        for owner in (
            loader,
            getattr(loader, "sampler", None),
            getattr(loader, "batch_sampler", None),
        ):
            g = getattr(owner, "generator", None)
            if isinstance(g, torch.Generator) and all(g is not h for h in found):
                found.append(g)
        return found

    def _transforms(self) -> list[Randomizable]:
        return list(_randomizables(getattr(self._loader(), "dataset", None), set()))

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _np_state(np.random.mtrand._rand),
            "random": {
                "version": int(version),
                "state": torch.tensor(internal, dtype=torch.int64),
                "gauss": float(gauss) if gauss is not None else float("nan"),
            },
            "generators": [g.get_state() for g in self._generators()],
            "transforms": [_np_state(t.R) for t in self._transforms()],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        _set_np_state(np.random.mtrand._rand, state["numpy"])
        r = state["random"]
        gauss = None if np.isnan(r["gauss"]) else float(r["gauss"])
        random.setstate((int(r["version"]), tuple(int(v) for v in r["state"].tolist()), gauss))
        generators, transforms = self._generators(), self._transforms()
        if len(generators) != len(state["generators"]) or len(transforms) != len(
            state["transforms"]
        ):
            raise ValueError(
                "resume checkpoint does not match the run: expected "
                f"{len(generators)} data-loader generator(s) and {len(transforms)} random "
                f"transform(s), got {len(state['generators'])} and {len(state['transforms'])}."
            )
        for g, s in zip(generators, state["generators"], strict=True):
            g.set_state(s)
        for t, s in zip(transforms, state["transforms"], strict=True):
            _set_np_state(t.R, s)
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class _EvaluatorState:
    """The evaluator's best metric so far (MONAI keeps it in ``engine.state``, outside
    ``state_dict``) and its last metrics (numbers only), for :class:`ResumeCheckpoint`."""

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, Any]:
        s = self.evaluator.state
        metrics = {k: float(v) for k, v in (s.metrics or {}).items() if isinstance(v, (int, float))}
        return {
            "best_metric": float(getattr(s, "best_metric", -1)),
            "best_metric_epoch": int(getattr(s, "best_metric_epoch", -1)),
            "metrics": metrics,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])
        self.evaluator.state.metrics = dict(state["metrics"])


class ResumeCheckpoint:
    """Save a resumable checkpoint at every epoch end; with ``resume=True`` continue from it.

    Attach it to the trainer after every other handler (the bundles list it last), so that the
    checkpoint is written after validation and model selection, with the random generators as the
    next epoch will find them. What is saved: ``save_dict`` (network, optimizer, scheduler, loss:
    anything with ``state_dict``) plus the ``trainer`` (epoch, iteration), the :class:`RNGState`,
    the AMP grad scaler when there is one, the ``evaluator``'s best metric and the key-metric
    tracking of ``savers`` (so ``model.pt`` keeps the best model over the whole run). The file is
    written by rank 0 with :func:`atomic_save` and loads with ``weights_only=True``.

    With ``resume=True`` and an existing ``path``, a ``CheckpointLoader`` restores all of it at
    ``STARTED``: the run continues after the last completed epoch (a run that had finished does
    nothing more). Without the file the run starts fresh, so ``resume=True`` is always safe.

    Args:
        path: the checkpoint file, e.g. ``<output_dir>/models/resume.pt``.
        save_dict: ``{name: object with state_dict}``; names ``trainer``, ``rng``, ``scaler``,
            ``evaluator`` and ``saver_<i>`` are reserved.
        resume: load ``path`` at ``STARTED`` when it exists.
        evaluator: the validation engine, whose best metric is kept.
        savers: checkpoint savers whose best-score tracking is kept (``CheckpointSaver``s without
            key-metric saving are ignored).
        map_location: for ``torch.load``.
    """

    RESERVED = ("trainer", "rng", "scaler", "evaluator")

    def __init__(
        self,
        path: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume: bool = False,
        evaluator: Engine | None = None,
        savers: Sequence[Any] = (),
        map_location: Any = None,
    ) -> None:
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be a bool, got {type(resume).__name__} {resume!r}.")
        clash = [k for k in save_dict if k in self.RESERVED or k.startswith("saver_")]
        if clash:
            raise ValueError(
                f"save_dict must not use the reserved names {list(self.RESERVED)} or saver_<i>, "
                f"got {clash}."
            )
        self.path = Path(path)
        self.save_dict = dict(save_dict)
        self.resume = resume
        self.evaluator = evaluator
        self.savers = [s for s in savers if getattr(s, "_key_metric_checkpoint", None) is not None]
        self.map_location = map_location
        self.objects: dict[str, Any] = {}
        self.resumed_from: int | None = None

    def attach(self, engine: Engine) -> None:
        self.objects = {**self.save_dict, "trainer": engine, "rng": RNGState(engine)}
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and hasattr(scaler, "state_dict"):
            self.objects["scaler"] = scaler
        if self.evaluator is not None:
            self.objects["evaluator"] = _EvaluatorState(self.evaluator)
        for i, saver in enumerate(self.savers):
            self.objects[f"saver_{i}"] = _SaverState(saver)
        if self.resume and self.path.is_file():
            CheckpointLoader(str(self.path), self.objects, map_location=self.map_location).attach(
                engine
            )
            engine.add_event_handler(Events.STARTED, self._log_resumed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def _log_resumed(self, engine: Engine) -> None:
        self.resumed_from = engine.state.epoch
        engine.logger.info(f"resumed from {self.path} after epoch {engine.state.epoch}")

    @staticmethod
    def _end_data_iterator(engine: Engine) -> None:
        """Advance the epoch's exhausted data iterator to its ``StopIteration`` now.

        Ignite stops an epoch after ``epoch_length`` batches and only meets the ``StopIteration``
        at the start of the next epoch; ``RandomSampler`` draws one more permutation from the
        loader's generator on its way there. Doing it here, before the generator is saved, draws
        the same numbers in the same order (a normal run is unchanged) and puts that draw in the
        checkpoint, so a resumed run's first permutation is the uninterrupted run's.
        """
        it, loader = getattr(engine, "_dataloader_iter", None), engine.state.dataloader
        try:
            full = it is not None and engine.state.epoch_length == len(loader)
        except TypeError:  # no len(): an iterable without a fixed epoch
            return
        if full:
            try:
                next(it)
            except StopIteration:
                return
            logger.warning("the data iterator had batches left at the end of the epoch")

    def save(self, engine: Engine) -> None:
        """Write the checkpoint (rank 0; every rank ends its data iterator alike)."""
        self._end_data_iterator(engine)
        if not is_main_rank():
            return
        state = {}
        for key, obj in self.objects.items():
            if isinstance(obj, (DataParallel, DistributedDataParallel)):
                obj = obj.module
            state[key] = obj.state_dict()
        atomic_save(state, self.path)


class _SaverState:
    """A ``CheckpointSaver``'s key-metric tracking list as a ``state_dict``."""

    def __init__(self, saver: CheckpointSaver) -> None:
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        # plain numbers: ignite keeps the scores as given (numpy scalars are not weights_only-safe)
        saved = self.saver._key_metric_checkpoint._saved
        return {"_saved": [(float(priority), str(name)) for priority, name in saved]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.saver._key_metric_checkpoint.load_state_dict(state)
