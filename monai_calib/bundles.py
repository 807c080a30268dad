# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Locating the MONAI bundles shipped with the package.

The bundles live in the repository's top-level ``bundles/`` folder; a built wheel carries the same
files as package data under ``monai_calib/_bundles/`` (``pyproject.toml`` maps the folder there).
"""

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


# Wheel (non-editable) install: the bundles are package data next to this module.
_PACKAGED_BUNDLES = Path(__file__).resolve().parent / "_bundles"
# Source checkout or editable install: the repository's top-level folder.
_SOURCE_BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def _bundles_root() -> Path:
    env = os.environ.get("MONAI_CALIB_BUNDLES")
    if env:
        return Path(env)
    if _PACKAGED_BUNDLES.is_dir():
        return _PACKAGED_BUNDLES
    return _SOURCE_BUNDLES


def bundle_dir(name: str) -> str:
    """Absolute path of a shipped bundle.

    Named bundles are looked up in the installed package (``monai_calib/_bundles/<name>``, what a
    wheel carries) when that folder exists, else in the repository (``bundles/<name>``: a source
    checkout or an editable install). ``MONAI_CALIB_BUNDLES`` overrides where the named bundles
    are looked up. A path to an existing bundle folder is returned unchanged (made absolute), so
    configs and the ``compare`` command accept either a bundle name or a folder.

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
