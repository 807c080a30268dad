# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Locating the MONAI bundles shipped with the package, their overlays, and config-time checks.

The bundles live in the repository's top-level ``bundles/`` folder; a built wheel carries the same
files as package data under ``monai_calib/_bundles/`` (``pyproject.toml`` maps the folder there).
Next to the bundles, ``_shared/`` holds what the bundles of one task family share, once::

    _shared/logging.conf                      every bundle's logging configuration
    _shared/<family>/loss_<name>.json         the family's loss overlays
    _shared/<family>/regime_<name>.json       the family's training-regime overlays
    _shared/<family>/datalist.json            the family's own-data overlay (``--datalist PATH``)

so ``<bundle>/../_shared/...`` is a valid path in a clone and in an installed wheel alike.
``python -m monai_calib bundle-path <name>`` prints a bundle's folder for shell commands.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BUNDLE_FAMILIES",
    "BUNDLE_NAMES",
    "METHOD_NAMES",
    "TS_SUFFIX",
    "bundle_dir",
    "datalist_overlay",
    "logging_file",
    "main",
    "method_name",
    "overlay_file",
    "overlays",
    "require",
    "require_checkpoint",
    "require_file",
    "shared_dir",
]

# bundle -> task family: the bundles of one family share the overlays in _shared/<family>/
BUNDLE_FAMILIES = {
    "medmnist_classification": "classification",
    "pad_ufes20_classification": "classification",
    "cell_segmentation": "segmentation",
    "organ_segmentation": "segmentation",
    "chestmnist_multilabel": "multilabel",
    "rfmid_multilabel": "multilabel",
}
BUNDLE_NAMES = tuple(BUNDLE_FAMILIES)
SHARED = "_shared"

# Display names of the loss overlays (``loss_<name>.json``): the methods' names in their papers,
# used in compare's tables and in every figure title / legend (overlay file names stay the ids).
METHOD_NAMES = {
    "ce": "CE",
    "ls": "LS",
    "focal": "Focal",
    "dca": "DCA",
    "mdca": "MDCA",
    "ls_plus": "LS+",
    "tet": "TET",
    "mit": "MiT",
    "mit_init": "MiT (T fitted at start)",
    "cct_eal": "CCT-EAL",
    "bce": "BCE",
    "ldace": "LDACE",
    "ldace_ccl": "LDACE+CCL",
    "dice_ce": "DiceCE",
    "ml": "ML",
    "caml": "CAML",
}
TS_SUFFIX = "+ts"  # a loss evaluated after post-hoc temperature scaling, e.g. "ce+ts"


def method_name(name: str) -> str:
    """Display name of a loss overlay / compare row: ``"ls_plus"`` -> ``"LS+"``,
    ``"ce+ts"`` -> ``"CE + TS"``; other names (a user's own title) are returned as is."""
    if name.endswith(TS_SUFFIX):
        return f"{method_name(name[: -len(TS_SUFFIX)])} + TS"
    return METHOD_NAMES.get(name, name)


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


def shared_dir(bundle: str | None = None) -> str:
    """The ``_shared`` folder next to ``bundle`` (a name or folder), or next to the named bundles.

    For a bundle folder that has no ``_shared`` sibling (a copy outside the package), the shipped
    ``_shared`` folder is returned.
    """
    if bundle is not None:
        sibling = Path(bundle_dir(bundle)).parent / SHARED
        if sibling.is_dir():
            return str(sibling)
    return str(_bundles_root() / SHARED)


def logging_file(bundle: str | None = None) -> str:
    """The logging configuration every bundle uses (``_shared/logging.conf``), for
    ``python -m monai.bundle run --logging_file`` or ``ConfigWorkflow(logging_file=...)``."""
    return str(Path(shared_dir(bundle)) / "logging.conf")


def overlays(bundle: str, kind: str = "loss") -> dict[str, str]:
    """Every ``<kind>_<name>.json`` overlay of ``bundle``, as ``{name: absolute path}``, sorted.

    The overlays are those of the bundle's task family (``_shared/<family>/``, see
    ``BUNDLE_FAMILIES``); a file of the same name in the bundle's own ``configs/`` replaces the
    shared one, so a bundle (or a copy of one) can specialise an overlay.

    Args:
        bundle: bundle name or folder, as for :py:func:`bundle_dir`.
        kind: overlay prefix: ``"loss"`` or ``"regime"``.
    """
    root = Path(bundle_dir(bundle))
    found: dict[str, str] = {}
    family = BUNDLE_FAMILIES.get(root.name)
    folders = [Path(shared_dir(bundle)) / family] if family else []
    for folder in [*folders, root / "configs"]:
        for path in folder.glob(f"{kind}_*.json"):
            found[path.stem[len(kind) + 1 :]] = str(path)
    return dict(sorted(found.items()))


def overlay_file(bundle: str, name: str, kind: str = "loss") -> str:
    """Absolute path of the overlay ``<kind>_<name>.json`` of ``bundle`` (see :py:func:`overlays`).

    Raises:
        ValueError: ``bundle`` has no such overlay; the message lists the valid names.
    """
    found = overlays(bundle, kind)
    require(
        name in found,
        f"{kind} overlay {name!r} not found for bundle {Path(bundle).name!r}: expected one of "
        f"{list(found)}.",
    )
    return found[name]


def datalist_overlay(bundle: str) -> str:
    """Absolute path of the overlay that makes ``bundle`` read a MONAI datalist (``--datalist``).

    It is the task family's ``_shared/<family>/datalist.json``; a ``datalist.json`` in the
    bundle's own ``configs/`` replaces it. Merged after ``train.json`` (and before
    ``evaluate.json``), it replaces the bundle's data set, ``num_classes``, ``in_channels`` and
    ``label_names`` by those of the datalist (see ``monai_calib.data.load_datalist``).

    Raises:
        ValueError: ``bundle`` has no such overlay (not a known family, no own file).
    """
    root = Path(bundle_dir(bundle))
    own = root / "configs" / "datalist.json"
    if own.is_file():
        return str(own)
    family = BUNDLE_FAMILIES.get(root.name)
    shared = Path(shared_dir(bundle)) / family / "datalist.json" if family else None
    require(
        shared is not None and shared.is_file(),
        f"bundle {root.name!r} has no datalist overlay: expected configs/datalist.json or one of "
        f"the families {sorted(set(BUNDLE_FAMILIES.values()))} (a bundle named as in "
        f"{list(BUNDLE_NAMES)}).",
    )
    return str(shared)


def require(condition: object, message: str, error: type[Exception] = ValueError) -> bool:
    """Return ``True`` if ``condition`` is truthy, else raise ``error(message)``.

    The bundles' configs call it in ``$`` expressions (``initialize`` lists, ids that must hold)
    to stop early with a message for the user, e.g.
    ``"$monai_calib.bundles.require(@task_info['multi_label'], 'dataset_flag must be ...')"``.

    Raises:
        ValueError: or ``error``, with ``message``, when ``condition`` is falsy.
    """
    if not condition:
        raise error(message)
    return True


def require_file(path: str, what: str = "file") -> str:
    """Return ``path`` if it is a file.

    Raises:
        FileNotFoundError: naming ``what`` and ``path`` when it is not.
    """
    require(os.path.isfile(path), f"{what} not found: {path!r}.", FileNotFoundError)
    return path


def require_checkpoint(path: str, what: str = "checkpoint") -> str:
    """Return ``path`` if it holds a checkpoint that loads with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: an empty, truncated or foreign file, naming the file and the reason, before any
            network or loss is touched (torch's own messages for these cases name no file).
    """
    import torch  # deferred: locating bundles must not cost a torch import

    require_file(path, what)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # EOFError, UnpicklingError, RuntimeError ("corrupted"), ...
        raise ValueError(
            f"{what} {path!r} could not be read as a PyTorch checkpoint with weights_only=True "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'empty or truncated'})."
        ) from e
    require(
        isinstance(state, dict),
        f"{what} {path!r} must hold a dict of state_dicts (as CheckpointSaver writes), got "
        f"{type(state).__name__}.",
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_calib bundle-path NAME``: print the folder of a shipped bundle.

    With ``--shared`` it prints the ``_shared`` folder next to it instead.
    """
    p = argparse.ArgumentParser(
        prog="python -m monai_calib bundle-path",
        description="Print the folder of a shipped bundle (in a clone or an installed wheel).",
    )
    p.add_argument("name", choices=BUNDLE_NAMES, help="bundle name")
    p.add_argument("--shared", action="store_true", help="print its _shared folder instead")
    args = p.parse_args(argv)
    print(shared_dir(args.name) if args.shared else bundle_dir(args.name))
    return 0
