# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""2018 Data Science Bowl (BBBC038) stage-1 test set with released labels, as MONAI data lists.

Expected layout of ``root`` (the developers' copy is ``shared/data/dsb2018_stage1_test``)::

    root/
        index.csv               image_id,height,width,channels,n_nuclei,foreground_fraction
        images/<image_id>.png   RGB or RGBA uint8, mixed sizes (alpha is constant)
        labels/<image_id>.png   uint16 instance map, 0 = background, k = k-th nucleus

The data is not shipped. The official release (Kaggle, ``stage1_train.zip``: one folder per image
with ``images/<id>.png`` and one ``masks/*.png`` per nucleus; or ``stage1_test.zip`` plus the
run-length encoded ``stage1_solution.csv``) is turned into this layout by
:func:`convert_dsb2018` (``python -m monai_calib convert-dsb2018 SRC DST``).

``index.csv`` is authoritative: the data list holds exactly its ids (files on disk that it does
not list are ignored). The helpers return plain MONAI data dictionaries
``{"image": path, "label": path, "id": image_id}`` and a transform chain that reads them with
MONAI's ``LoadImaged`` (``PILReader``), so any MONAI ``Dataset``/``CacheDataset`` works.

Reference: J. C. Caicedo et al., "Nucleus segmentation across imaging experiments: the 2018 Data
Science Bowl", Nature Methods 16, 1247-1253 (2019).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import PILReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    ScaleIntensityRanged,
)

__all__ = [
    "DSB2018_DOWNLOAD_URL",
    "DSB2018_INDEX_COLUMNS",
    "PrepareDSB2018d",
    "convert_dsb2018",
    "dsb2018_datalist",
    "dsb2018_index",
    "dsb2018_rle_decode",
    "dsb2018_root",
    "dsb2018_split",
    "dsb2018_transforms",
]

DSB2018_INDEX_COLUMNS = (
    "image_id",
    "height",
    "width",
    "channels",
    "n_nuclei",
    "foreground_fraction",
)
_INT_COLUMNS = ("height", "width", "channels", "n_nuclei")
_SPLITS = ("train", "test")
DSB2018_DOWNLOAD_URL = "https://www.kaggle.com/competitions/data-science-bowl-2018/data"
_SOLUTION_CSV = "stage1_solution.csv"
_HOW_TO_GET = (
    "DSB2018 is not shipped: download stage1_train.zip (or stage1_test.zip and "
    f"{_SOLUTION_CSV}) from {DSB2018_DOWNLOAD_URL} and convert it with "
    "'python -m monai_calib convert-dsb2018 SRC DST'."
)


def dsb2018_root(root: str | os.PathLike | None) -> str:
    """``root`` if it is a DSB2018 folder in the layout this module reads, else a clear error.

    The bundles call it on ``data_root`` before anything else, so a missing or unconverted
    folder stops the run with one message that says where the data is expected, where to
    download it and which converter to run.

    Args:
        root: the folder that should hold ``index.csv``, ``images/`` and ``labels/``.

    Returns:
        ``root`` as a string.

    Raises:
        ValueError: ``root`` is None (the bundles' ``data_root`` default: no data is shipped).
        TypeError: ``root`` is not a path.
        FileNotFoundError: ``root`` is not a folder, or lacks ``index.csv``, ``images/``
            or ``labels/`` (the message says so when it holds the official Kaggle layout).
    """
    where = "a folder holding index.csv, images/ and labels/"
    if root is None or str(root) in ("", "None"):
        raise ValueError(
            f"data_root is not set: pass --data_root PATH (compare: --data-root PATH) to {where} "
            f"(DSB2018). {_HOW_TO_GET}"
        )
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}.")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(
            f"DSB2018 data_root {str(path)!r} does not exist or is not a folder; expected {where}. "
            f"{_HOW_TO_GET}"
        )
    missing = [n for n in ("index.csv", "images", "labels") if not (path / n).exists()]
    if missing:
        official = (path / _SOLUTION_CSV).is_file() or any(
            (d / "images" / f"{d.name}.png").is_file() for d in path.iterdir() if d.is_dir()
        )
        state = (
            "holds the official Kaggle layout, not the converted one"
            if official
            else f"lacks {missing}"
        )
        raise FileNotFoundError(
            f"DSB2018 data_root {str(path)!r} {state}; expected {where}. {_HOW_TO_GET}"
        )
    return str(path)


def _check_root(root: str | os.PathLike) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}.")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"root {str(path)!r} does not exist or is not a folder.")
    return path


def dsb2018_index(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``root/index.csv`` as dictionaries, sorted by ``image_id``.

    Integer columns (``height``, ``width``, ``channels``, ``n_nuclei``) are ``int``,
    ``foreground_fraction`` is ``float``, ``image_id`` is ``str``.

    Args:
        root: the dataset folder.

    Returns:
        one dictionary per image, keys :data:`DSB2018_INDEX_COLUMNS`.

    Raises:
        TypeError: When ``root`` is not a path.
        FileNotFoundError: When ``root`` or ``root/index.csv`` does not exist.
        ValueError: When ``index.csv`` lacks a column, has a malformed value, a duplicated
            ``image_id``, or no rows.
    """
    path = _check_root(root) / "index.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"index file {str(path)!r} not found; the DSB2018 folder must hold index.csv "
            f"with columns {list(DSB2018_INDEX_COLUMNS)}."
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in DSB2018_INDEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{str(path)!r} must have columns {list(DSB2018_INDEX_COLUMNS)}, missing {missing} "
                f"(got {reader.fieldnames})."
            )
        rows: list[dict[str, Any]] = []
        for line, raw in enumerate(reader, start=2):
            try:
                row: dict[str, Any] = {"image_id": raw["image_id"].strip()}
                row.update({c: int(raw[c]) for c in _INT_COLUMNS})
                row["foreground_fraction"] = float(raw["foreground_fraction"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{str(path)!r} line {line}: malformed row {raw} ({e}).") from e
            if not row["image_id"]:
                raise ValueError(f"{str(path)!r} line {line}: empty image_id.")
            rows.append(row)
    if not rows:
        raise ValueError(f"{str(path)!r} lists no images.")
    ids = [r["image_id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{str(path)!r} lists duplicated image_id values: {dup[:5]}.")
    return sorted(rows, key=lambda r: r["image_id"])


def dsb2018_split(
    root: str | os.PathLike, num_test: int = 20, seed: int = 0
) -> dict[str, list[str]]:
    """Fixed, deterministic train/test split of the image ids in ``root/index.csv``.

    Rule: sort the ids lexicographically, draw the permutation
    ``numpy.random.RandomState(seed).permutation(n)`` (NumPy's legacy generator, whose stream is
    frozen across NumPy versions), and put the ids at the first ``num_test`` permuted positions
    in the test set and the rest in the train set. Both lists are returned sorted. With the
    shipped 65-image folder and the defaults this gives 45 train and 20 test images.

    Args:
        root: the dataset folder.
        num_test: number of test images, ``0 <= num_test <= n``. Defaults to ``20``.
        seed: seed of the permutation. Defaults to ``0``.

    Returns:
        ``{"train": [...ids], "test": [...ids]}``, disjoint, together all ids.

    Raises:
        TypeError: When ``num_test`` or ``seed`` is not an int.
        ValueError: When ``num_test`` is outside ``[0, n]`` or ``seed`` is negative.
        FileNotFoundError: As :func:`dsb2018_index`.
    """
    for name, value in (("num_test", num_test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if seed < 0 or seed >= 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
    ids = [r["image_id"] for r in dsb2018_index(root)]
    n = len(ids)
    if not 0 <= num_test <= n:
        raise ValueError(f"num_test must be in [0, {n}] (the number of images), got {num_test}.")
    perm = np.random.RandomState(int(seed)).permutation(n)
    test = {ids[i] for i in perm[: int(num_test)]}
    return {"train": [i for i in ids if i not in test], "test": [i for i in ids if i in test]}


def dsb2018_datalist(
    root: str | os.PathLike,
    ids: Sequence[str] | None = None,
    split: str | None = None,
    num_test: int = 20,
    seed: int = 0,
) -> list[dict[str, str]]:
    """MONAI data dictionaries ``{"image": path, "label": path, "id": image_id}``.

    Paths are ``root/images/<id>.png`` and ``root/labels/<id>.png`` (strings). Every listed file
    must exist: a missing one raises, nothing is silently dropped, so the output has exactly one
    entry per requested id, in the requested order (sorted ids when ``ids`` is None).

    Args:
        root: the dataset folder.
        ids: image ids to list, in that order. Defaults to ``None``: all ids of ``index.csv``
            (or of ``split``).
        split: ``"train"`` or ``"test"`` of :func:`dsb2018_split` (with ``num_test``, ``seed``),
            or ``None`` for all images. Defaults to ``None``. Cannot be combined with ``ids``.
        num_test: passed to :func:`dsb2018_split` when ``split`` is set. Defaults to ``20``.
        seed: passed to :func:`dsb2018_split` when ``split`` is set. Defaults to ``0``.

    Returns:
        the data list.

    Raises:
        TypeError: When ``ids`` is a single string or holds non-strings.
        ValueError: When both ``ids`` and ``split`` are given, ``split`` is unknown, ``ids``
            holds duplicates or ids absent from ``index.csv``.
        FileNotFoundError: When ``root``, ``index.csv``, an image or a label file is missing
            (the message names the file).

    Example:
        >>> from monai.data import Dataset
        >>> data = dsb2018_datalist("shared/data/dsb2018_stage1_test", split="train")
        >>> ds = Dataset(data, transform=dsb2018_transforms())
    """
    if ids is not None and split is not None:
        raise ValueError(f"give either ids or split, not both (got split={split!r} and ids).")
    if split is not None and split not in _SPLITS:
        raise ValueError(f"split must be one of {list(_SPLITS)} or None, got {split!r}.")
    path = _check_root(root)
    known = [r["image_id"] for r in dsb2018_index(path)]
    if split is not None:
        wanted = dsb2018_split(path, num_test=num_test, seed=seed)[split]
    elif ids is None:
        wanted = known
    else:
        if isinstance(ids, (str, bytes)):
            raise TypeError(
                f"ids must be a sequence of image id strings, got a single {type(ids).__name__}."
            )
        wanted = list(ids)
        bad_types = [type(i).__name__ for i in wanted if not isinstance(i, str)]
        if bad_types:
            raise TypeError(
                f"ids must hold strings, got elements of type {sorted(set(bad_types))}."
            )
        if len(set(wanted)) != len(wanted):
            dup = sorted({i for i in wanted if wanted.count(i) > 1})
            raise ValueError(f"ids holds duplicated values: {dup[:5]}.")
        known_set = set(known)
        unknown = [i for i in wanted if i not in known_set]
        if unknown:
            raise ValueError(
                f"{len(unknown)} of the requested ids are not in {str(path / 'index.csv')!r}, "
                f"e.g. {unknown[:3]}."
            )
    out: list[dict[str, str]] = []
    for image_id in wanted:
        item = {
            "image": str(path / "images" / f"{image_id}.png"),
            "label": str(path / "labels" / f"{image_id}.png"),
            "id": image_id,
        }
        for key in ("image", "label"):
            if not os.path.isfile(item[key]):
                raise FileNotFoundError(
                    f"{key} file {item[key]!r} of image id {image_id!r} not found."
                )
        out.append(item)
    return out


class PrepareDSB2018d(MapTransform):
    """Keep the first ``num_channels`` image channels and turn the instance map into foreground.

    Applied after ``LoadImaged`` + ``EnsureChannelFirstd``: the image ``(C, H, W)`` becomes
    ``image[:num_channels]`` (RGBA -> RGB; the DSB2018 alpha channel is constant; a 1-channel image
    is repeated to ``num_channels``), and with ``binary_label=True`` the label ``(1, H, W)``
    becomes

    .. math::

        \\text{label}' = \\mathbb 1[\\text{label} > 0]

    in the label's dtype (0 = background, 1 = nucleus); otherwise the instance ids are kept.
    MetaTensors keep their metadata.

    Args:
        image_key: key of the image. Defaults to ``"image"``.
        label_key: key of the label, or ``None`` for images only. Defaults to ``"label"``.
        num_channels: image channels to keep. Defaults to ``3``.
        binary_label: map instance ids to a binary foreground mask. Defaults to ``True``.
        allow_missing_keys: do not raise when a key is missing. Defaults to ``False``.

    Raises:
        ValueError: When ``num_channels < 1``; at call time when the image has fewer channels
            than ``num_channels`` (and more than one), the label is not single-channel, or image
            and label spatial shapes differ.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        num_channels: int = 3,
        binary_label: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        keys: KeysCollection = [image_key] if label_key is None else [image_key, label_key]
        super().__init__(keys, allow_missing_keys)
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"num_channels must be an int >= 1, got {num_channels!r}.")
        self.image_key = image_key
        self.label_key = label_key
        self.num_channels = num_channels
        self.binary_label = binary_label

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key in d:
            img = d[self.image_key]
            c = img.shape[0]
            if c >= self.num_channels:
                img = img[: self.num_channels]
            elif c == 1:
                reps = (self.num_channels,) + (1,) * (img.ndim - 1)
                img = np.tile(img, reps) if isinstance(img, np.ndarray) else img.repeat(*reps)
            else:
                raise ValueError(
                    f"{self.image_key} must be channel-first with >= {self.num_channels} channels "
                    f"(or 1), got shape {tuple(img.shape)}."
                )
            d[self.image_key] = img
        elif not self.allow_missing_keys:
            raise KeyError(f"key {self.image_key!r} not found in the data dictionary.")
        if self.label_key is None:
            return d
        if self.label_key in d:
            lab = d[self.label_key]
            if lab.ndim < 2 or lab.shape[0] != 1:
                raise ValueError(
                    f"{self.label_key} must be channel-first with 1 channel, got shape "
                    f"{tuple(lab.shape)}."
                )
            if self.image_key in d and tuple(d[self.image_key].shape[1:]) != tuple(lab.shape[1:]):
                raise ValueError(
                    f"{self.image_key} spatial shape {tuple(d[self.image_key].shape[1:])} differs "
                    f"from {self.label_key} spatial shape {tuple(lab.shape[1:])}."
                )
            if self.binary_label:
                if isinstance(lab, np.ndarray):
                    lab = (lab > 0).astype(lab.dtype)
                else:
                    lab = (lab > 0).to(lab.dtype if lab.dtype != torch.bool else torch.uint8)
            d[self.label_key] = lab
        elif not self.allow_missing_keys:
            raise KeyError(f"key {self.label_key!r} not found in the data dictionary.")
        return d


def dsb2018_transforms(
    image_key: str = "image",
    label_key: str | None = "label",
    binary_label: bool = True,
    scale_intensity: bool = True,
) -> Compose:
    """Read a :func:`dsb2018_datalist` entry into channel-first tensors.

    The chain is::

        LoadImaged(keys, reader=PILReader(reverse_indexing=False), image_only=True)
        EnsureChannelFirstd(keys)                      # image (C, H, W), label (1, H, W)
        PrepareDSB2018d(image_key, label_key, 3, binary_label)
        ScaleIntensityRanged(image_key, 0, 255, 0, 1)  # only with scale_intensity=True

    ``reverse_indexing=False`` keeps PIL's ``(H, W)`` order, so the shapes match ``index.csv``
    (MONAI's default for PIL is ``(W, H)``). The uint16 label PNG is read exactly (as float32,
    which holds every id up to 2**24); the image is float32.

    Args:
        image_key: key of the image path. Defaults to ``"image"``.
        label_key: key of the label path, or ``None`` for images only. Defaults to ``"label"``.
        binary_label: map instance ids to foreground ``label > 0``. Defaults to ``True``.
        scale_intensity: scale uint8 intensities ``[0, 255]`` to ``[0, 1]``. Defaults to ``True``.

    Returns:
        the ``Compose`` chain.
    """
    keys = [image_key] if label_key is None else [image_key, label_key]
    chain: list[Any] = [
        LoadImaged(keys, reader=PILReader(reverse_indexing=False), image_only=True),
        EnsureChannelFirstd(keys),
        PrepareDSB2018d(image_key, label_key, num_channels=3, binary_label=binary_label),
    ]
    if scale_intensity:
        chain.append(
            ScaleIntensityRanged(image_key, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True)
        )
    return Compose(chain)


def dsb2018_rle_decode(rle: str, shape: Sequence[int]) -> np.ndarray:
    """Decode one Kaggle DSB2018 run-length code into a boolean mask of ``shape`` ``(H, W)``.

    The code is ``"start length start length ..."`` with 1-indexed starts into the image
    flattened **column-major** (top to bottom, then left to right): pixel ``p`` (1-based) is
    row ``(p - 1) % H``, column ``(p - 1) // H``.

    Args:
        rle: the ``EncodedPixels`` cell.
        shape: ``(H, W)`` of the image.

    Returns:
        ``bool`` array ``(H, W)``.

    Raises:
        ValueError: the code is empty, has an odd count or non-integer values, a start < 1, a
            length < 1, or a run past the end of the image.
    """
    h, w = (int(v) for v in shape)
    try:
        values = [int(v) for v in str(rle).split()]
    except ValueError as e:
        raise ValueError(f"rle must hold integers 'start length ...', got {rle[:40]!r}.") from e
    if not values or len(values) % 2:
        raise ValueError(
            f"rle must hold a positive, even number of integers (start length pairs), got "
            f"{len(values)}."
        )
    starts = np.asarray(values[0::2], dtype=np.int64) - 1
    lengths = np.asarray(values[1::2], dtype=np.int64)
    if starts.min() < 0 or lengths.min() < 1 or (starts + lengths).max() > h * w:
        raise ValueError(
            f"rle runs must have start >= 1, length >= 1 and end within the {h}x{w} image "
            f"({h * w} pixels), got starts in [{starts.min() + 1}, {starts.max() + 1}] and "
            f"lengths in [{lengths.min()}, {lengths.max()}]."
        )
    flat = np.zeros(h * w, dtype=bool)
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        flat[s : s + n] = True
    return flat.reshape(w, h).T


def _find_source_images(src: Path) -> dict[str, dict[str, Any]]:
    """``image_id -> {"image": path, "masks": folder or None}`` for both official layouts."""
    flat = src / "images"
    found: dict[str, dict[str, Any]] = {}
    if flat.is_dir() and any(flat.glob("*.png")):  # <src>/images/<id>.png
        for p in sorted(flat.glob("*.png")):
            found[p.stem] = {"image": p, "masks": None}
        return found
    for d in sorted(p for p in src.iterdir() if p.is_dir()):  # Kaggle <src>/<id>/images/<id>.png
        image = d / "images" / f"{d.name}.png"
        if image.is_file():
            masks = d / "masks"
            found[d.name] = {"image": image, "masks": masks if masks.is_dir() else None}
    return found


def _read_rle_csv(path: Path) -> dict[str, list[str]]:
    """``ImageId -> [EncodedPixels, ...]`` in file order (instance k = the k-th row)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        if "ImageId" not in cols or "EncodedPixels" not in cols:
            raise ValueError(
                f"run-length CSV {str(path)!r} must have the columns ImageId and EncodedPixels "
                f"(as Kaggle's {_SOLUTION_CSV} and stage1_train_labels.csv), got {cols}."
            )
        out: dict[str, list[str]] = {}
        for line, row in enumerate(reader, start=2):
            image_id = (row["ImageId"] or "").strip()
            code = (row["EncodedPixels"] or "").strip()
            if not image_id or not code:
                raise ValueError(f"{str(path)!r} line {line}: empty ImageId or EncodedPixels.")
            out.setdefault(image_id, []).append(code)
    if not out:
        raise ValueError(f"run-length CSV {str(path)!r} has no rows.")
    return out


def convert_dsb2018(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    rle_csv: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Convert the official DSB2018 release into the layout :func:`dsb2018_datalist` reads.

    Sources (``src``), as downloaded from :data:`DSB2018_DOWNLOAD_URL`:

    - ``stage1_train`` (unzipped): ``<src>/<ImageId>/images/<ImageId>.png`` and one binary
      ``<src>/<ImageId>/masks/*.png`` per nucleus; instance ``k`` is the ``k``-th mask in file
      name order.
    - ``stage1_test`` (unzipped) with ``stage1_solution.csv`` (or any images with a run-length
      CSV, e.g. ``stage1_train_labels.csv``): the same image folders without masks, or a flat
      ``<src>/images/<ImageId>.png``; instance ``k`` of an image is its ``k``-th CSV row
      (decoded by :func:`dsb2018_rle_decode`). Without ``rle_csv``, ``<src>/stage1_solution.csv``
      is used when the images have no masks.

    Output (``dst``): ``images/<id>.png`` (byte copies), ``labels/<id>.png`` (``uint16``
    instance map, 0 = background) and ``index.csv`` (:data:`DSB2018_INDEX_COLUMNS`, the
    foreground fraction rounded to 4 decimals).

    Args:
        src: the official folder.
        dst: the output folder; created; must be empty unless ``overwrite``.
        rle_csv: a run-length CSV with ``ImageId`` and ``EncodedPixels`` columns. Defaults to
            ``None``: masks, else ``<src>/stage1_solution.csv``.
        overwrite: write into a non-empty ``dst``. Defaults to ``False``.

    Returns:
        the ``index.csv`` rows, sorted by image id.

    Raises:
        FileNotFoundError: ``src`` or ``rle_csv`` is missing, ``src`` holds no image in either
            layout, or an image has neither masks nor a CSV to decode.
        FileExistsError: ``dst`` is not empty and ``overwrite`` is False.
        ValueError: ``dst`` is ``src``; the CSV and the images disagree (ids without image or
            without rows, a ``Height``/``Width`` that differs from the image); a mask of another
            size; two nuclei sharing a pixel; more than 65535 nuclei in one image.
    """
    from PIL import Image

    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_dir():
        raise FileNotFoundError(f"src {str(src_p)!r} does not exist or is not a folder.")
    if dst_p.resolve() == src_p.resolve():
        raise ValueError(f"dst must differ from src, got {str(dst_p)!r} for both.")
    if dst_p.is_dir() and any(dst_p.iterdir()) and not overwrite:
        raise FileExistsError(
            f"dst {str(dst_p)!r} is not empty; pass overwrite=True (CLI: --overwrite) to write "
            "into it."
        )
    images = _find_source_images(src_p)
    if not images:
        raise FileNotFoundError(
            f"src {str(src_p)!r} holds no DSB2018 image: expected <ImageId>/images/<ImageId>.png "
            "folders (Kaggle stage1_train / stage1_test) or images/<ImageId>.png."
        )
    codes: dict[str, list[str]] | None = None
    sizes: dict[str, tuple[int, int]] = {}
    if rle_csv is None and not all(v["masks"] is not None for v in images.values()):
        if (src_p / _SOLUTION_CSV).is_file():
            rle_csv = src_p / _SOLUTION_CSV
        else:
            no_mask = next(k for k, v in images.items() if v["masks"] is None)
            raise FileNotFoundError(
                f"image {no_mask!r} has no masks/ folder and no run-length CSV was given: pass "
                f"rle_csv (Kaggle's {_SOLUTION_CSV} for the stage-1 test images)."
            )
    if rle_csv is not None:
        if not os.path.isfile(rle_csv):
            raise FileNotFoundError(f"rle_csv {os.fspath(rle_csv)!r} not found.")
        codes = _read_rle_csv(Path(rle_csv))
        extra, lacking = sorted(set(codes) - set(images)), sorted(set(images) - set(codes))
        if extra or lacking:
            raise ValueError(
                f"rle_csv {os.fspath(rle_csv)!r} and the images of {str(src_p)!r} disagree: "
                f"{len(extra)} CSV id(s) without an image (e.g. {extra[:2]}), {len(lacking)} "
                f"image(s) without CSV rows (e.g. {lacking[:2]})."
            )
        sizes = _csv_sizes(Path(rle_csv))
    (dst_p / "images").mkdir(parents=True, exist_ok=True)
    (dst_p / "labels").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for image_id, entry in sorted(images.items()):
        with Image.open(entry["image"]) as im:
            w, h = im.size
            channels = len(im.getbands())
        if codes is not None:
            if image_id in sizes and sizes[image_id] != (h, w):
                raise ValueError(
                    f"rle_csv gives Height, Width {sizes[image_id]} for {image_id!r}, but its "
                    f"image is {h}x{w}."
                )
            masks = [dsb2018_rle_decode(c, (h, w)) for c in codes[image_id]]
            names = [f"CSV row {k + 1} of {image_id}" for k in range(len(masks))]
        else:
            files = sorted(entry["masks"].glob("*.png"))
            names = [str(f) for f in files]
            masks = []
            for f in files:
                with Image.open(f) as m:
                    arr = np.asarray(m)
                arr = arr if arr.ndim == 2 else arr[..., 0]
                if arr.shape != (h, w):
                    raise ValueError(f"mask {str(f)!r} is {arr.shape}, its image is {(h, w)}.")
                masks.append(arr > 0)
        if not masks:
            raise ValueError(f"image {image_id!r} has no nucleus (no mask file or CSV row).")
        if len(masks) > np.iinfo(np.uint16).max:
            raise ValueError(f"image {image_id!r} has {len(masks)} nuclei; uint16 holds 65535.")
        label = np.zeros((h, w), dtype=np.uint16)
        for k, (mask, name) in enumerate(zip(masks, names, strict=True), start=1):
            if (label[mask] > 0).any():
                raise ValueError(f"{name} overlaps an earlier nucleus of image {image_id!r}.")
            label[mask] = k
        shutil.copyfile(entry["image"], dst_p / "images" / f"{image_id}.png")
        Image.fromarray(label).save(dst_p / "labels" / f"{image_id}.png")
        rows.append(
            {
                "image_id": image_id,
                "height": h,
                "width": w,
                "channels": channels,
                "n_nuclei": len(masks),
                "foreground_fraction": round(float((label > 0).mean()), 4),
            }
        )
    with open(dst_p / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(DSB2018_INDEX_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _csv_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """``ImageId -> (Height, Width)`` when the CSV has those columns (the solution CSV does)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not {"Height", "Width"} <= set(reader.fieldnames or []):
            return {}
        return {r["ImageId"].strip(): (int(r["Height"]), int(r["Width"])) for r in reader}
