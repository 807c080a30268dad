# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Locating the MONAI bundles shipped in the repository's ``bundles/`` folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLE_NAMES", "bundle_dir", "require_checkpoint", "require_file"]

BUNDLE_NAMES = (
    "medmnist_classification",
    "pad_ufes20_classification",
    "cell_segmentation",
    "organ_segmentation",
    "chestmnist_multilabel",
    "rfmid_multilabel",
)


def _bundles_root() -> Path:
    env = os.environ.get("MONAI_CALIB_BUNDLES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "bundles"


def bundle_dir(name: str) -> str:
    """Absolute path of a shipped bundle (``bundles/<name>`` next to the package sources).

    A path to an existing bundle folder is returned unchanged (made absolute), so configs and the
    ``compare`` command accept either a bundle name or a folder. ``MONAI_CALIB_BUNDLES`` overrides
    where the named bundles are looked up.

    Raises:
        FileNotFoundError: no such bundle; the message lists the bundles that exist.
    """
    p = Path(name)
    if (p / "configs").is_dir():
        return str(p.resolve())
    root = _bundles_root()
    cand = root / name
    if (cand / "configs").is_dir():
        return str(cand)
    found = (
        sorted(d.name for d in root.iterdir() if (d / "configs").is_dir()) if root.is_dir() else []
    )
    raise FileNotFoundError(
        f"bundle {name!r} not found: expected a folder with configs/ or one of {found} under "
        f"{str(root)!r}."
    )


def require_file(path: str, what: str = "file") -> str:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming ``what``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}.")
    return path


def require_checkpoint(path: str, what: str = "checkpoint") -> str:
    """Return ``path`` if it holds a checkpoint that loads with ``weights_only=True``.

    A missing file raises ``FileNotFoundError``; an empty, truncated or foreign file raises
    ``ValueError`` naming the file and the reason, before any network or loss is touched (torch's
    own messages for these cases name no file).
    """
    import torch

    require_file(path, what)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # EOFError, UnpicklingError, RuntimeError ("corrupted"), ...
        raise ValueError(
            f"{what} {path!r} could not be read as a PyTorch checkpoint with weights_only=True "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'empty or truncated'})."
        ) from e
    if not isinstance(state, dict):
        raise ValueError(
            f"{what} {path!r} must hold a dict of state_dicts (as CheckpointSaver writes), got "
            f"{type(state).__name__}."
        )
    return path
