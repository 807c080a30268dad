# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""A user's own data set as a MONAI datalist: load, check every entry, split, name the classes.

The datalist is MONAI's JSON convention (what ``monai.data.load_decathlon_datalist`` reads and the
model-zoo bundles use)::

    {
        "labels": ["benign", "malignant"],          # optional: class names (or {"0": ..., ...})
        "training":   [{"image": "imgs/a.png", "label": 1}, ...],
        "validation": [...],                         # optional: carved out of training if absent
        "test":       [...]                          # optional: carved out of training if absent
    }

Paths are relative to the JSON file's folder (or absolute). ``label`` is a class index
(classification), a list of 0/1 (multi-label) or a mask path (segmentation). Images and masks
are read with MONAI's ``LoadImage`` (PNG, JPEG, TIFF, NIfTI, DICOM, ... as its readers handle).

:func:`load_datalist` reads the file, checks every entry (file exists and loads, label type,
range and length, channels and dimensions) and returns the three sections with the number of
classes, the class names and the number of image channels. :class:`DatalistDataset` serves one
section to a classification or multi-label bundle; :func:`segmentation_transforms` reads a
segmentation entry. The bundles use these through ``bundles/_shared/<family>/datalist.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "DATALIST_SECTIONS",
    "DATALIST_SPLIT_FILE",
    "DATALIST_TASKS",
    "DatalistDataset",
    "check_datalist_classes",
    "load_datalist",
    "segmentation_transforms",
]

DATALIST_TASKS = ("classification", "multilabel", "segmentation")
# datalist key -> split name the bundles use
DATALIST_SECTIONS = {"training": "train", "validation": "val", "test": "test"}
DATALIST_SPLIT_FILE = "datalist_split.json"

logger = logging.getLogger(__name__)


def _where(path: str, section: str, index: int, entry: Mapping[str, Any]) -> str:
    return f"datalist {path!r}, {section}[{index}] (image {entry.get('image')!r})"


@functools.cache
def _loader() -> Any:
    """One ``LoadImage`` (channel first, the file's own dtype): building one per file (registering
    every reader) cost more than reading a small PNG."""
    from monai.transforms import LoadImage

    return LoadImage(image_only=True, ensure_channel_first=True, dtype=None)


def _load_image(file: str) -> Any:
    """Read ``file`` with :func:`_loader` with metadata on: finding the channel axis needs it,
    and the classification bundles switch MONAI's ``track_meta`` off for speed."""
    from monai.data import get_track_meta, set_track_meta

    tracked = get_track_meta()
    set_track_meta(True)
    try:
        return _loader()(file)
    finally:
        set_track_meta(tracked)


def _read(file: str, what: str) -> np.ndarray:
    """Load ``file`` channel-first with MONAI's reader choice; a short reason on failure."""
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{what}: file not found: {file!r}.")
    try:
        img = _load_image(file)
    except Exception as e:  # each reader raises its own type; name the file instead
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{what}: {file!r} could not be read as an image ({reason}).") from e
    return np.asarray(img)


def _label_names(raw: Any, path: str) -> list[str] | None:
    """The optional ``labels`` entry as a list of names, index order."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):  # MSD style {"0": "background", "1": "organ"}
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"datalist {path!r}: 'labels' as a mapping must have integer keys 0..K-1, got "
                f"{list(raw)}."
            ) from e
        if keys != list(range(len(keys))):
            raise ValueError(
                f"datalist {path!r}: 'labels' keys must be 0..{len(keys) - 1}, got {keys}."
            )
        return [str(raw[str(k)] if str(k) in raw else raw[k]) for k in keys]
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        return [str(n) for n in raw]
    raise TypeError(
        f"datalist {path!r}: 'labels' must be a list of class names or a mapping "
        f"{{index: name}}, got {type(raw).__name__}."
    )


def _class_index(label: Any, where: str) -> int:
    if isinstance(label, list) and len(label) == 1:  # [k] is accepted as k
        label = label[0]
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        raise TypeError(
            f"{where}: label must be a class index (an integer), got {type(label).__name__} "
            f"{label!r}."
        )
    if label != int(label) or label < 0:
        raise ValueError(f"{where}: label must be a class index >= 0, got {label!r}.")
    return int(label)


def _multi_hot(label: Any, where: str) -> list[int]:
    if not isinstance(label, list):
        raise TypeError(
            f"{where}: label must be a list of 0/1 (one per class), got {type(label).__name__} "
            f"{label!r}."
        )
    bad = [v for v in label if isinstance(v, bool) or v not in (0, 1)]
    if bad:
        raise ValueError(f"{where}: label must hold only 0 and 1, got {bad[0]!r} in {label!r}.")
    return [int(v) for v in label]


def _carve(
    entries: list[dict[str, Any]],
    fractions: dict[str, float],
    seed: int,
    path: str,
    stratify: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Seeded split of the training entries into the missing sections.

    With ``stratify`` (class-index labels) the permutation is reordered so that every prefix holds
    the classes in about their training proportions: each entry is keyed by its rank within its
    class over the class size, so a small validation split still sees every class.
    """
    n = len(entries)
    sizes = {k: max(1, round(f * n)) for k, f in fractions.items()}
    if n - sum(sizes.values()) < 1:
        raise ValueError(
            f"datalist {path!r}: {n} training entries are too few to carve out "
            f"{', '.join(f'{k} ({v})' for k, v in sizes.items())}; add 'validation'/'test' "
            "sections or more training entries."
        )
    perm = np.random.RandomState(seed).permutation(n).tolist()
    if stratify:
        rank: dict[int, float] = {}
        seen: dict[Any, int] = {}
        counts: dict[Any, int] = {}
        for i in perm:
            counts[entries[i]["label"]] = counts.get(entries[i]["label"], 0) + 1
        for i in perm:
            c = entries[i]["label"]
            rank[i] = (seen.get(c, 0) + 0.5) / counts[c]
            seen[c] = seen.get(c, 0) + 1
        perm = sorted(perm, key=lambda i: rank[i])  # stable: ties keep the seeded order
    out: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for key, size in sizes.items():
        out[key] = [entries[i] for i in sorted(perm[start : start + size])]
        start += size
    out["training"] = [entries[i] for i in sorted(perm[start:])]
    return out


def load_datalist(
    datalist: str | os.PathLike | None,
    task: str,
    *,
    spatial_dims: int = 2,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Read a MONAI datalist, check every entry, split it and name the classes.

    Every entry is checked here, before any training: the image (and mask) file exists and loads
    with ``LoadImage``, has ``spatial_dims`` spatial axes and the same number of channels as the
    others; the label has the task's type (class index, list of 0/1, mask path), its range
    (``< len(labels)`` when the datalist names its classes) and its length (every multi-hot list
    as long as the first, or as ``labels``); a mask has the image's spatial shape and integer
    values. Errors name the entry (section, index, image path).

    A missing ``validation`` (``test``) section is carved out of ``training`` with a seeded
    permutation (``val_fraction``, ``test_fraction`` of the training entries, at least one each;
    stratified by class for classification);
    with ``output_dir`` the resolved split is written to ``<output_dir>/datalist_split.json``,
    itself a datalist (absolute paths) that reproduces the run.

    Without a ``labels`` entry the number of classes is inferred (largest class index + 1, the
    multi-hot length, the largest mask value + 1, at least 2 for segmentation), names are
    ``class_<k>``, and both are stated in the log.

    Args:
        datalist: path of the datalist JSON file.
        task: ``"classification"``, ``"multilabel"`` or ``"segmentation"``.
        spatial_dims: spatial axes every image must have (2 or 3).
        val_fraction: share of training carved out when ``validation`` is absent.
        test_fraction: share of training carved out when ``test`` is absent.
        seed: seed of that split.
        output_dir: folder to write the resolved split to; ``None`` writes nothing.

    Returns:
        ``{"train", "val", "test"}`` lists of MONAI data dicts (absolute paths; segmentation entries
        also get an ``"id"``), ``num_classes``, ``label_names``, ``num_channels``,
        ``spatial_dims``, ``task``, ``datalist`` (absolute path), ``carved`` (sections carved from
        training), ``split_file`` (or ``None``) and ``mask_max`` (segmentation: each mask's largest
        value).

    Raises:
        ValueError: ``datalist`` is not set, a bad fraction, a section or entry that breaks the
            rules above (naming it), or too few training entries to carve from.
        TypeError: an entry or label of the wrong type (naming it).
        FileNotFoundError: the datalist, or an entry's image or mask, does not exist.
    """
    from monai.data import load_decathlon_datalist

    if task not in DATALIST_TASKS:
        raise ValueError(f"task must be one of {list(DATALIST_TASKS)}, got {task!r}.")
    if datalist is None or str(datalist) == "":
        raise ValueError(
            "datalist is not set: pass --datalist PATH to a MONAI datalist JSON "
            "({'training': [{'image': ..., 'label': ...}], ...}); "
            "'python -m monai_calib make-datalist --help' writes one from your files."
        )
    path = str(Path(datalist).resolve())
    if not os.path.isfile(path):
        raise FileNotFoundError(f"datalist not found: {path!r}.")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(frac) < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {frac!r}.")
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"datalist {path!r} is not valid JSON ({e}).") from e
    if not isinstance(raw, dict) or not raw.get("training"):
        raise ValueError(
            f"datalist {path!r} must be a JSON object with a non-empty 'training' list, got "
            f"keys {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}."
        )
    names = _label_names(raw.get("labels"), path)
    segmentation = task == "segmentation"
    base = os.path.dirname(path)
    sections: dict[str, list[dict[str, Any]]] = {}
    for key in DATALIST_SECTIONS:
        if raw.get(key):
            for i, item in enumerate(raw[key]):
                if not isinstance(item, dict) or "image" not in item or "label" not in item:
                    raise ValueError(
                        f"datalist {path!r}, {key}[{i}] must be an object with 'image' and "
                        f"'label', got {item!r}."
                    )
            sections[key] = load_decathlon_datalist(path, segmentation, key, base)

    # every entry: label type/range/length, file readable, dimensions and channels
    num_channels: int | None = None
    length: int | None = None
    max_label = 0
    mask_max: dict[str, int] = {}  # mask path -> largest value, for check_datalist_classes
    for key, items in sections.items():
        for i, entry in enumerate(items):
            where = _where(path, key, i, entry)
            image = _read(str(entry["image"]), where)
            if image.ndim - 1 != spatial_dims:
                raise ValueError(
                    f"{where}: expected an image with {spatial_dims} spatial dimensions, got "
                    f"shape {tuple(image.shape)} (channel first)."
                )
            if num_channels is None:
                num_channels = int(image.shape[0])
            elif image.shape[0] != num_channels:
                raise ValueError(
                    f"{where}: {image.shape[0]} channel(s), but the first image has "
                    f"{num_channels}; every image must have the same number of channels."
                )
            label = entry["label"]
            if task == "classification":
                entry["label"] = k = _class_index(label, where)
                max_label = max(max_label, k)
                if names is not None and k >= len(names):
                    raise ValueError(
                        f"{where}: label {k} is out of range for the {len(names)} classes named "
                        f"in 'labels' {names}."
                    )
            elif task == "multilabel":
                entry["label"] = hot = _multi_hot(label, where)
                expected = len(names) if names is not None else length
                if expected is not None and len(hot) != expected:
                    raise ValueError(
                        f"{where}: label has {len(hot)} values, expected {expected} (one per "
                        f"class{', as labels names them' if names is not None else ''})."
                    )
                length = len(hot)
            else:
                if not isinstance(label, str):
                    raise TypeError(
                        f"{where}: label must be a mask file path, got {type(label).__name__} "
                        f"{label!r}."
                    )
                mask = _read(label, where + " mask")
                if mask.shape[0] != 1 or mask.shape[1:] != image.shape[1:]:
                    raise ValueError(
                        f"{where}: the mask must be one channel of the image's spatial shape "
                        f"{tuple(image.shape[1:])}, got shape {tuple(mask.shape)}."
                    )
                if (
                    not np.all(np.isfinite(mask))
                    or np.any(mask != np.round(mask))
                    or mask.min() < 0
                ):
                    raise ValueError(f"{where}: mask values must be integers >= 0 (class indices).")
                k = int(mask.max())
                mask_max[label] = k
                max_label = max(max_label, k)
                if names is not None and k >= len(names):
                    raise ValueError(
                        f"{where}: mask value {k} is out of range for the {len(names)} classes "
                        f"named in 'labels' {names}."
                    )
                entry.setdefault("id", Path(str(entry["image"])).name.split(".")[0])

    if task == "multilabel":
        num_classes = len(names) if names is not None else int(length or 0)
    elif names is not None:
        num_classes = len(names)
    else:
        num_classes = max(max_label + 1, 2 if segmentation else 1)
    if num_classes < (1 if task == "multilabel" else 2):
        raise ValueError(f"datalist {path!r}: found {num_classes} class(es); need at least 2.")
    if names is not None:
        logger.info(f"datalist {path}: {num_classes} classes named in 'labels': {names}.")
    else:
        names = [f"class_{k}" for k in range(num_classes)]
        logger.info(
            f"datalist {path}: no 'labels' entry; {num_classes} classes inferred from the labels "
            f"({'label length' if task == 'multilabel' else 'largest label + 1'}), named {names}."
        )

    fractions = {
        k: f
        for k, f in (("validation", val_fraction), ("test", test_fraction))
        if k not in sections
    }
    carved = list(fractions)
    if fractions:
        sections.update(
            _carve(sections["training"], fractions, seed, path, task == "classification")
        )
        logger.info(
            f"datalist {path}: {' and '.join(carved)} carved out of training with seed {seed} "
            f"({', '.join(f'{k}: {len(v)}' for k, v in sections.items())})."
        )
    split_file = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        split_file = os.path.join(str(output_dir), DATALIST_SPLIT_FILE)
        out = {"labels": names, "source": path, "seed": seed, "carved": carved}
        for key, items in sections.items():
            out[key] = items
        tmp = split_file + ".tmp"
        Path(tmp).write_text(json.dumps(out, indent=1))
        os.replace(tmp, split_file)
    return {
        **{DATALIST_SECTIONS[k]: sections[k] for k in DATALIST_SECTIONS},
        "num_classes": num_classes,
        "label_names": names,
        "num_channels": int(num_channels or 1),
        "spatial_dims": spatial_dims,
        "task": task,
        "datalist": path,
        "carved": carved,
        "split_file": split_file,
        "mask_max": mask_max,
    }


def check_datalist_classes(
    info: Mapping[str, Any], num_classes: int, split: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Check the entries of ``info`` (from :func:`load_datalist`) against the network's classes.

    A bundle whose ``num_classes`` was overridden away from what the datalist says gets an error
    naming the first entry that does not fit, before any training.

    Args:
        info: what :func:`load_datalist` returned.
        num_classes: the network's number of outputs.
        split: one of ``"train"``, ``"val"``, ``"test"``; ``None`` checks all three.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (the sections checked).

    Raises:
        ValueError: a label out of range (classification, segmentation), a multi-hot label of
            another length (multi-label), or class names of another count.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    splits = list(DATALIST_SECTIONS.values()) if split is None else [split]
    unknown = [s for s in splits if s not in DATALIST_SECTIONS.values()]
    if unknown:
        raise ValueError(f"split must be one of {list(DATALIST_SECTIONS.values())}, got {split!r}.")
    path, task = info["datalist"], info["task"]
    section_of = {v: k for k, v in DATALIST_SECTIONS.items()}
    for s in splits:
        for i, entry in enumerate(info[s]):
            where = _where(path, section_of[s], i, entry)
            label = entry["label"]
            if task == "multilabel" and len(label) != num_classes:
                raise ValueError(
                    f"{where}: label has {len(label)} values but the network has num_classes="
                    f"{num_classes} outputs; set num_classes to {len(label)} or fix the datalist."
                )
            top = info["mask_max"][label] if task == "segmentation" else label
            if task != "multilabel" and top >= num_classes:
                raise ValueError(
                    f"{where}: label {top} is out of range for a network with num_classes="
                    f"{num_classes} outputs (class indices 0..{num_classes - 1})."
                )
    if len(info["label_names"]) != num_classes:
        raise ValueError(
            f"datalist {path!r} names {len(info['label_names'])} classes "
            f"{info['label_names']}, but the network has num_classes={num_classes} outputs."
        )
    return {s: list(info[s]) for s in splits}


def _unit_range(img: np.ndarray) -> np.ndarray:
    """uint8 / uint16 scaled by their full range, anything else min-max per image, to [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


class DatalistDataset(Dataset):
    """One section of a classification or multi-label datalist, as ``{"image", "label"}`` dicts.

    Items look like :class:`~monai_calib.data.MedMNISTDataset`'s: ``image`` a ``float32`` array
    ``(C, image_size, image_size)`` in [0, 1] (read with ``LoadImage``, resized with
    ``Resize(mode="area")``), ``label`` an ``int64`` class index or a ``float32`` multi-hot
    vector. With ``cache=True`` the resized images are read once and kept in memory.

    Args:
        info: what :func:`load_datalist` returned (task ``"classification"`` or ``"multilabel"``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        num_classes: the network's number of outputs; checked against every entry of the split.
        image_size: side of the square the images are resized to.
        transform: applied to each item dict.
        cache: keep the resized images in memory.

    Raises:
        ValueError: a task other than classification or multi-label, a bad ``image_size``, or an
            entry that does not fit ``num_classes`` (see :func:`check_datalist_classes`).
    """

    def __init__(
        self,
        info: Mapping[str, Any],
        split: str = "train",
        num_classes: int | None = None,
        image_size: int = 28,
        transform: Callable | None = None,
        cache: bool = True,
    ) -> None:
        if info.get("task") not in ("classification", "multilabel"):
            raise ValueError(
                "info must come from load_datalist(task='classification' or 'multilabel'), got "
                f"task {info.get('task')!r}."
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
        nc = int(info["num_classes"]) if num_classes is None else num_classes
        self.entries = check_datalist_classes(info, nc, split)[split]
        self.split = split
        self.num_classes = nc
        self.num_channels = int(info["num_channels"])
        self.label_names = list(info["label_names"])
        self.multi_label = info["task"] == "multilabel"
        self.image_size = image_size
        self.transform = transform
        self._cache = [self._load(i) for i in range(len(self.entries))] if cache else None

    def _load(self, index: int) -> np.ndarray:
        from monai.transforms import Resize

        img = _load_image(self.entries[index]["image"])
        img = _unit_range(np.asarray(img))
        img = Resize((self.image_size, self.image_size), mode="area")(img)
        return np.ascontiguousarray(np.asarray(img, dtype=np.float32))

    @property
    def labels(self) -> np.ndarray:
        """Labels of the split: ``(N,)`` class indices or ``(N, K)`` multi-hot."""
        return np.asarray([e["label"] for e in self.entries])

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = self._cache[index] if self._cache is not None else self._load(index)
        raw = self.entries[index]["label"]
        label = (
            torch.as_tensor(raw, dtype=torch.float32)
            if self.multi_label
            else torch.as_tensor(int(raw), dtype=torch.long)
        )
        item = {"image": img, "label": label}
        return self.transform(item) if self.transform is not None else item


def segmentation_transforms(
    spatial_dims: int = 2,
    pixdim: Sequence[float] | None = None,
    image_key: str = "image",
    label_key: str = "label",
) -> Any:
    """Read a segmentation datalist entry into channel-first tensors.

    ``LoadImaged`` (MONAI's reader for each file type), ``EnsureChannelFirstd``; for 3-D also
    ``Orientationd("RAS")`` and, with ``pixdim``, ``Spacingd`` (bilinear image, nearest mask);
    then the image's intensities: ``ScaleIntensityd`` to [0, 1] (2-D) or ``NormalizeIntensityd``
    per channel (3-D), as the shipped 2-D and 3-D bundles do.

    Args:
        spatial_dims: 2 or 3.
        pixdim: 3-D voxel spacing to resample to; ``None`` keeps the files' spacing.
        image_key: key of the image path.
        label_key: key of the mask path.

    Returns:
        the ``Compose`` chain.
    """
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityd,
        Spacingd,
    )

    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    keys = [image_key, label_key]
    chain: list[Any] = [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)]
    if spatial_dims == 3:
        chain.append(Orientationd(keys, axcodes="RAS"))
        if pixdim is not None:
            chain.append(Spacingd(keys, pixdim=pixdim, mode=("bilinear", "nearest")))
        chain.append(NormalizeIntensityd(image_key, nonzero=False, channel_wise=True))
    else:
        chain.append(ScaleIntensityd(image_key, minv=0.0, maxv=1.0, channel_wise=True))
    return Compose(chain)
