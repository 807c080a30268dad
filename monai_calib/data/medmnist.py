# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MedMNIST through medmnist's own dataset classes, as MONAI-style dictionaries.

medmnist loads (and, with ``download=True``, fetches) the official ``.npz`` files; this adapter
only turns its arrays into ``{"image": (C, H, W) float32 in [0, 1], "label": ...}`` dictionaries
that MONAI dictionary transforms and ``SupervisedTrainer`` understand, and validates the options
with messages that list the valid choices.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "MEDMNIST_2D_FLAGS",
    "MEDMNIST_SIZES",
    "MedMNISTDataset",
    "default_medmnist_root",
    "medmnist_info",
]

MEDMNIST_SIZES = (28, 64, 128, 224)
MEDMNIST_SPLITS = ("train", "val", "test")


def _medmnist_info_table() -> dict[str, dict[str, Any]]:
    import medmnist

    return medmnist.INFO


def _flags_2d() -> tuple[str, ...]:
    return tuple(k for k in _medmnist_info_table() if not k.endswith("3d"))


MEDMNIST_2D_FLAGS: tuple[str, ...] = _flags_2d()


def default_medmnist_root() -> str:
    """Folder of the files shipped with the package (BreastMNIST, 28 px, CC BY 4.0)."""
    return str(Path(__file__).resolve().parent / "assets")


def _check_flag(dataset_flag: str) -> str:
    flag = str(dataset_flag).lower()
    if flag not in MEDMNIST_2D_FLAGS:
        raise ValueError(
            f"dataset_flag must be one of the 2D MedMNIST flags {list(MEDMNIST_2D_FLAGS)}, "
            f"got {dataset_flag!r}."
        )
    return flag


def medmnist_info(dataset_flag: str) -> dict[str, Any]:
    """Task facts of a 2D MedMNIST flag: ``num_classes``, ``num_channels``, ``task``, names.

    ``task`` is medmnist's (``"binary-class"``, ``"multi-class"``, ``"ordinal-regression"``,
    ``"multi-label, binary-class"``); ``multi_label`` is True for the last one.
    """
    flag = _check_flag(dataset_flag)
    info = _medmnist_info_table()[flag]
    names = [info["label"][k] for k in sorted(info["label"], key=int)]
    return {
        "flag": flag,
        "num_classes": len(names),
        "num_channels": int(info["n_channels"]),
        "task": info["task"],
        "multi_label": info["task"].startswith("multi-label"),
        "class_names": names,
        "python_class": info["python_class"],
    }


def _check_split_arrays(
    path: str, split: str, images: np.ndarray, labels: np.ndarray, size: int, info: dict[str, Any]
) -> None:
    """Check one split's arrays against the official layout; the message names file, key, value.

    Vectorised and run once when a split is opened: a wrong file fails at once instead of
    training on truncated labels or unscaled images. ``uint8`` images skip the range pass.
    """
    img_key, lab_key = f"{split}_images", f"{split}_labels"
    n = len(images)
    if n == 0:
        raise ValueError(f"MedMNIST file {path!r}: the {split} split ({img_key}) is empty.")
    channels = int(info["num_channels"])
    expected = (n, size, size) if channels == 1 else (n, size, size, channels)
    if tuple(images.shape) != expected:
        raise ValueError(
            f"MedMNIST file {path!r}: {img_key} must have shape {expected} ({info['flag']!r} has "
            f"{channels} channel(s), size {size}), got {tuple(images.shape)}."
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer):
            raise ValueError(
                f"MedMNIST file {path!r}: {img_key} must be uint8 in [0, 255] as in the official "
                f"files, got {images.dtype}."
            )
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"MedMNIST file {path!r}: {img_key} must be in [0, 255], got values in "
                f"[{lo}, {hi}]."
            )
    k = int(info["num_classes"])
    multi = bool(info["multi_label"])
    shapes = [(n, k)] if multi else [(n, 1), (n,)]
    if tuple(labels.shape) not in shapes:
        raise ValueError(
            f"MedMNIST file {path!r}: {lab_key} must have shape {shapes[0]} "
            f"({'multi-hot over' if multi else 'one class index of'} {k} classes) to match "
            f"{img_key}, got {tuple(labels.shape)}."
        )
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"MedMNIST file {path!r}: {lab_key} must be numeric, got {labels.dtype}.")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            raise ValueError(
                f"MedMNIST file {path!r}: {lab_key} must be integer-valued, got "
                f"{labels[bad].reshape(-1)[0]!r} at index {int(np.flatnonzero(bad)[0])}."
            )
    hi_ok = 1 if multi else k - 1
    bad = (labels < 0) | (labels > hi_ok)
    if bad.any():
        allowed = "0 or 1" if multi else f"class indices in [0, {k})"
        raise ValueError(
            f"MedMNIST file {path!r}: {lab_key} must hold {allowed} for {info['flag']!r}, got "
            f"{labels[bad].reshape(-1)[0].item()!r} at index {int(np.flatnonzero(bad)[0])}."
        )


class MedMNISTDataset(Dataset):
    """A 2D MedMNIST split as dictionaries ``{"image", "label"}`` for MONAI pipelines.

    Args:
        dataset_flag: a 2D MedMNIST flag (``"breastmnist"``, ``"retinamnist"``, ...).
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder holding ``{flag}.npz`` (28 px) or ``{flag}_{size}.npz``. ``None`` uses the
            copy shipped with the package (BreastMNIST at 28 px) unless ``download`` is set, in
            which case medmnist's default ``~/.medmnist`` is used.
        size: 28, 64, 128 or 224.
        download: let medmnist fetch the official file into ``root`` (needs internet).
        transform: a MONAI dictionary transform applied to each item.
        as_rgb: repeat grayscale images to 3 channels.

    Items:
        ``image``: ``float32`` array ``(C, H, W)`` scaled to [0, 1]; ``label``: ``int64`` class
        index (multi-class) or ``float32`` multi-hot vector ``(K,)`` (multi-label flags).

    Raises:
        ValueError: unknown flag, size or split.
        FileNotFoundError: the ``.npz`` file is not under ``root`` and ``download`` is False.
        ValueError: the ``.npz`` file is unreadable (truncated, corrupted, missing keys); or the
            split's contents break the official layout: an empty split, images that are not
            ``uint8`` ``(N, size, size[, 3])`` with the flag's channels, labels that are not
            ``(N, 1)`` (``(N, K)`` multi-hot for multi-label flags), not integer-valued, or
            outside ``[0, K)`` (``{0, 1}``). The message names the file, the key and the value.
    """

    def __init__(
        self,
        dataset_flag: str = "breastmnist",
        split: str = "train",
        root: str | os.PathLike | None = None,
        size: int = 28,
        download: bool = False,
        transform: Callable | None = None,
        as_rgb: bool = False,
    ) -> None:
        import medmnist

        self.info = medmnist_info(dataset_flag)
        self.flag = self.info["flag"]
        if split not in MEDMNIST_SPLITS:
            raise ValueError(f"split must be one of {list(MEDMNIST_SPLITS)}, got {split!r}.")
        if int(size) not in MEDMNIST_SIZES:
            raise ValueError(
                f"size (image_size) must be one of {list(MEDMNIST_SIZES)}, got {size!r}."
            )
        self.size = int(size)
        self.split = split
        if root is None or str(root) in ("", "None"):
            root = os.path.expanduser("~/.medmnist") if download else default_medmnist_root()
        root = os.fspath(root)
        if download:
            os.makedirs(root, exist_ok=True)
        elif not os.path.isdir(root):
            raise FileNotFoundError(f"data_root {root!r} does not exist or is not a folder.")
        fname = f"{self.flag}.npz" if self.size == 28 else f"{self.flag}_{self.size}.npz"
        path = os.path.join(root, fname)
        if not download and not os.path.isfile(path):
            present = sorted(f for f in os.listdir(root) if f.endswith(".npz"))
            raise FileNotFoundError(
                f"MedMNIST file {fname!r} for dataset_flag={self.flag!r}, size={self.size} was "
                f"not found in data_root {root!r} (it holds {present}). Pass a data_root that "
                "holds it, or download=True to fetch it (needs internet; bundle: --download True, "
                "compare: --override download=true)."
            )
        cls = getattr(medmnist, self.info["python_class"])
        try:
            self._ds = cls(split=split, root=root, size=self.size, download=download, as_rgb=as_rgb)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            # numpy's messages ("File is not a zip file", "pickled (object) data") name no file
            raise ValueError(
                f"MedMNIST file {path!r} could not be read (truncated or corrupted download?): "
                f"{type(e).__name__}: {e}. Delete it and download it again."
            ) from e
        self.root = root
        self.transform = transform
        self.as_rgb = as_rgb
        _check_split_arrays(path, split, self._ds.imgs, self._ds.labels, self.size, self.info)

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    @property
    def num_channels(self) -> int:
        return 3 if self.as_rgb else int(self.info["num_channels"])

    @property
    def labels(self) -> np.ndarray:
        """Raw label array ``(N, L)`` as stored in the file."""
        return np.asarray(self._ds.labels)

    def __len__(self) -> int:
        return len(self._ds.imgs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = np.asarray(self._ds.imgs[index], dtype=np.float32) / 255.0
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        if self.as_rgb and img.shape[0] == 1:
            img = np.repeat(img, 3, axis=0)
        raw = np.asarray(self._ds.labels[index])
        if self.info["multi_label"]:
            label: Any = torch.as_tensor(raw, dtype=torch.float32)
        else:
            label = torch.as_tensor(int(raw.reshape(-1)[0]), dtype=torch.long)
        item = {"image": np.ascontiguousarray(img), "label": label}
        return self.transform(item) if self.transform is not None else item
