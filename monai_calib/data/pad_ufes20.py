# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""PAD-UFES-20 (skin lesions photographed with smartphones) as MONAI-style dictionaries.

The public release (Pacheco et al., Data in Brief 32, 106221, 2020; CC BY 4.0) is a folder with
``metadata.csv`` (26 columns, among them ``patient_id``, ``lesion_id``, ``img_id`` and
``diagnostic``) and an ``images/`` folder of PNG files named by ``img_id`` (e.g.
``PAT_46_881_939.png``), of mixed sizes, RGB or RGBA. The official archive ships the PNGs in
``images/imgs_part_1`` ... ``imgs_part_3``; both that layout and a flat ``images/`` folder are
accepted.

The release has no official split, so this module defines a **patient-level** one (a patient's
images never fall in two splits) that is deterministic for a seed; see
:func:`pad_ufes20_datalist`. Everything is validated when a split is built (columns, codes, every
image file of the metadata), so a wrong folder fails at once with a message naming the file or
value, not in the middle of an epoch.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "PAD_UFES20_CLASSES",
    "PAD_UFES20_SPLITS",
    "PADUFES20Dataset",
    "pad_ufes20_datalist",
    "pad_ufes20_info",
    "pad_ufes20_patient_split",
]

PAD_UFES20_CLASSES: tuple[str, ...] = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
PAD_UFES20_DESCRIPTIONS: dict[str, str] = {
    "ACK": "actinic keratosis",
    "BCC": "basal cell carcinoma",
    "MEL": "melanoma",
    "NEV": "nevus",
    "SCC": "squamous cell carcinoma (incl. Bowen's disease)",
    "SEK": "seborrheic keratosis",
}
PAD_UFES20_SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
_REQUIRED_COLUMNS = ("patient_id", "img_id", "diagnostic")
_METADATA = "metadata.csv"
_IMAGES = "images"


def pad_ufes20_info() -> dict[str, Any]:
    """Task facts of PAD-UFES-20, in the same form as :func:`~monai_calib.data.medmnist_info`.

    Returns:
        ``{"flag": "pad_ufes20", "num_classes": 6, "num_channels": 3, "task": "multi-class",
        "multi_label": False, "class_names": ["ACK", ..., "SEK"], "class_descriptions": {...}}``;
        class ``i`` is ``PAD_UFES20_CLASSES[i]``.
    """
    return {
        "flag": "pad_ufes20",
        "num_classes": len(PAD_UFES20_CLASSES),
        "num_channels": 3,
        "task": "multi-class",
        "multi_label": False,
        "class_names": list(PAD_UFES20_CLASSES),
        "class_descriptions": dict(PAD_UFES20_DESCRIPTIONS),
    }


def _check_root(root: str | os.PathLike | None) -> str:
    if root is None or str(root) in ("", "None"):
        raise FileNotFoundError(
            "PAD-UFES-20 data_root is not set. No data is shipped with monai_calib: download "
            "PAD-UFES-20 (https://data.mendeley.com/datasets/zr7vgbcyr2/1, CC BY 4.0) and pass "
            "the folder holding metadata.csv and images/ (bundle: --data_root PATH)."
        )
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"PAD-UFES-20 data_root {root!r} does not exist or is not a folder."
        )
    if not os.path.isfile(os.path.join(root, _METADATA)):
        raise FileNotFoundError(
            f"PAD-UFES-20 metadata file {os.path.join(root, _METADATA)!r} not found (data_root "
            f"must hold {_METADATA} and {_IMAGES}/; it holds {sorted(os.listdir(root))[:20]})."
        )
    if not os.path.isdir(os.path.join(root, _IMAGES)):
        raise FileNotFoundError(
            f"PAD-UFES-20 image folder {os.path.join(root, _IMAGES)!r} not found (data_root must "
            f"hold {_METADATA} and {_IMAGES}/)."
        )
    return root


def _check_fractions(val_fraction: float, test_fraction: float) -> tuple[float, float]:
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {v!r}.")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise ValueError(
            "val_fraction + test_fraction must be < 1 (some patients must be left for training), "
            f"got val_fraction={val_fraction!r}, test_fraction={test_fraction!r}."
        )
    return float(val_fraction), float(test_fraction)


def _index_images(image_dir: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """File name -> path for ``images/*`` and ``images/*/*`` (the official ``imgs_part_k``),
    and the names found more than once (with all their paths)."""
    index: dict[str, str] = {}
    twice: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
        entries = [entry]
        if entry.is_dir():
            entries = sorted(
                (e for e in os.scandir(entry.path) if e.is_file()), key=lambda e: e.name
            )
        for e in entries:
            if not e.is_file():
                continue
            if e.name in index:
                twice.setdefault(e.name, [index[e.name]]).append(e.path)
            else:
                index[e.name] = e.path
    return index, twice


def _read_metadata(root: str) -> list[dict[str, Any]]:
    """Validated rows of ``metadata.csv`` with image paths, in file order."""
    path = os.path.join(root, _METADATA)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM written by Excel
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        # skip blank lines only (a short row has None cells, a long one a list under None)
        raw = [r for r in reader if any(isinstance(v, str) and v.strip() for v in r.values())]
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"PAD-UFES-20 metadata {path!r} lacks the column(s) {missing}; it has {header}."
        )
    if not raw:
        raise ValueError(f"PAD-UFES-20 metadata {path!r} has a header but no rows.")
    codes = {c: i for i, c in enumerate(PAD_UFES20_CLASSES)}
    images, twice = _index_images(os.path.join(root, _IMAGES))
    rows: list[dict[str, Any]] = []
    seen: dict[str, tuple[int, str]] = {}
    missing_files: list[str] = []
    for line, r in enumerate(raw, start=2):  # line 1 is the header
        img_id = (r["img_id"] or "").strip()
        pid = (r["patient_id"] or "").strip()
        code = (r["diagnostic"] or "").strip()
        if not img_id or not pid:
            raise ValueError(f"{path!r} line {line}: empty 'img_id' or 'patient_id' cell.")
        # "X.png" and "X" name one file: compare ids without the extension, or the one image
        # would be listed twice and could land in two splits under two patient ids.
        key = img_id[: -len(".png")] if img_id.lower().endswith(".png") else img_id
        if key in seen:
            first_line, first_id = seen[key]
            raise ValueError(
                f"{path!r}: lines {first_line} and {line} name the same image (img_id "
                f"{first_id!r} and {img_id!r}); each image must be listed once."
            )
        seen[key] = (line, img_id)
        if code not in codes:
            raise ValueError(
                f"{path!r} line {line}: unknown diagnostic {code!r} for img_id {img_id!r}; "
                f"valid codes are {list(PAD_UFES20_CLASSES)}."
            )
        # The release's img_id carries the ".png" extension; accept it without one as well.
        name = img_id if img_id in images else img_id + ".png"
        if name in twice:  # an ambiguous image is an error only when the metadata uses it
            raise ValueError(
                f"image {name!r} (img_id {img_id!r}) occurs more than once under "
                f"{os.path.join(root, _IMAGES)!r}: {twice[name]}."
            )
        file = images.get(name)
        if file is None:
            missing_files.append(img_id)
            continue
        rows.append({"image": file, "label": codes[code], "patient_id": pid, "img_id": img_id})
    if missing_files:
        raise FileNotFoundError(
            f"{len(missing_files)} of {len(raw)} images listed in {path!r} are missing from "
            f"{os.path.join(root, _IMAGES)!r} (or its subfolders); first missing: "
            f"{missing_files[0]!r}."
        )
    return rows


def pad_ufes20_patient_split(
    patient_ids: Sequence[str],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, list[str]]:
    r"""Assign patients to ``train`` / ``val`` / ``test`` (the rule of :func:`pad_ufes20_datalist`).

    The :math:`n` unique patient ids are sorted (string order), shuffled by
    ``numpy.random.default_rng(seed).permutation(n)``, and cut at

    .. math::

        a = \lfloor n (1 - f_{val} - f_{test}) + 1/2 \rfloor, \qquad
        b = \lfloor n (1 - f_{test}) + 1/2 \rfloor,

    so the first :math:`a` shuffled patients are ``train``, the next :math:`b - a` are ``val`` and
    the last :math:`n - b` are ``test``. The fractions are of **patients**, not images. The result
    depends only on the set of ids, the fractions and the seed (not on row order).

    Args:
        patient_ids: patient id of every image (repeats allowed).
        val_fraction: fraction of patients in ``val``, in ``[0, 1)``. Defaults to 0.15.
        test_fraction: fraction of patients in ``test``, in ``[0, 1)``. Defaults to 0.15.
        seed: seed of the permutation. Defaults to 0.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` lists of patient ids.

    Raises:
        ValueError: a fraction outside ``[0, 1)`` or ``val_fraction + test_fraction >= 1``.
    """
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    patients = sorted({str(p) for p in patient_ids})
    n = len(patients)
    order = [patients[i] for i in np.random.default_rng(int(seed)).permutation(n)]
    a = math.floor(n * (1.0 - val_fraction - test_fraction) + 0.5)
    b = math.floor(n * (1.0 - test_fraction) + 0.5)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def pad_ufes20_datalist(
    root: str | os.PathLike | None,
    split: str = "train",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The images of one patient-level split of a PAD-UFES-20 folder, as a MONAI datalist.

    Patients are assigned to splits by :func:`pad_ufes20_patient_split` (sorted unique patient
    ids, a ``numpy.random.default_rng(seed)`` permutation, cuts at the rounded cumulative patient
    fractions ``1 - val - test`` and ``1 - test``); every image of a patient goes to that
    patient's split. Items keep the order of ``metadata.csv``. ``split="all"`` returns every row.

    Every row of the metadata is validated and every image file is looked up (in ``images/`` and
    its immediate subfolders) whatever the split, so the three splits always partition the
    metadata: no row is dropped.

    Args:
        root: folder holding ``metadata.csv`` and ``images/``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        val_fraction: fraction of patients in ``val``. Defaults to 0.15.
        test_fraction: fraction of patients in ``test``. Defaults to 0.15.
        seed: seed of the patient permutation. Defaults to 0.

    Returns:
        ``[{"image": path, "label": int, "patient_id": str, "img_id": str}, ...]``, ``label`` the
        index of the ``diagnostic`` code in :data:`PAD_UFES20_CLASSES`.

    Raises:
        FileNotFoundError: ``root`` is None or not a folder; ``metadata.csv`` or ``images/`` is
            missing; image files are missing (named, with the count).
        ValueError: unknown ``split``; bad fractions; a required column is missing (named, with the
            columns present); an unknown ``diagnostic`` code (named, with the row's ``img_id``
            and the valid codes); an empty or duplicate ``img_id`` (``X.png`` and ``X`` name the
            same image); an image file name found twice under ``images/`` (in two subfolders);
            the split has no patient.

    References:
        Pacheco et al., "PAD-UFES-20: A skin lesion dataset composed of patient data and clinical
        images collected from smartphones", Data in Brief 32, 106221 (2020).
    """
    if split not in PAD_UFES20_SPLITS:
        raise ValueError(f"split must be one of {list(PAD_UFES20_SPLITS)}, got {split!r}.")
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    rows = _read_metadata(_check_root(root))
    if split == "all":
        return rows
    groups = pad_ufes20_patient_split(
        [r["patient_id"] for r in rows], val_fraction, test_fraction, seed
    )
    chosen = set(groups[split])
    out = [r for r in rows if r["patient_id"] in chosen]
    if not out:
        raise ValueError(
            f"split {split!r} of PAD-UFES-20 at {os.fspath(root)!r} is empty: "
            f"{len({r['patient_id'] for r in rows})} patients with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} leave no patient for it; raise the fraction or use "
            "more patients."
        )
    return out


def _check_image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    try:
        hw = tuple(size)  # type: ignore[arg-type]
    except TypeError:
        hw = ()
    if (
        len(hw) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in hw)
        or min(hw) < 1
    ):
        raise ValueError(
            f"image_size must be a positive int or a pair (H, W) of positive ints, got "
            f"{image_size!r}."
        )
    return int(hw[0]), int(hw[1])


class PADUFES20Dataset(Dataset):
    """A patient-level PAD-UFES-20 split as dictionaries ``{"image", "label"}`` for MONAI.

    Each image is read with Pillow, converted to RGB (an alpha channel is dropped, grayscale or
    palette images are expanded), and resized to ``image_size`` with Pillow's bilinear filter
    (antialiased when shrinking). The aspect ratio is not kept: the lesion photographs have mixed
    sizes and are stretched to one shape, as is common for this dataset. Intensities are scaled
    to ``[0, 1]``; ``transform`` (a MONAI dictionary transform) is applied last.

    Items:
        ``"image"``: ``float32`` tensor ``(3, H, W)`` in ``[0, 1]``; ``"label"``: ``int64`` scalar
        tensor, the index of the ``diagnostic`` code in :data:`PAD_UFES20_CLASSES`. The i-th item
        is ``self.datalist[i]`` (path, patient and image ids), so predictions written in item
        order map back to images.

    Args:
        root: folder holding ``metadata.csv`` and ``images/`` (see :func:`pad_ufes20_datalist`).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``. Defaults to ``"train"``.
        image_size: output size, an int (square) or ``(H, W)``. Defaults to 64.
        transform: a MONAI dictionary transform (or any callable on the item dict).
        val_fraction: fraction of patients in ``val``. Defaults to 0.15.
        test_fraction: fraction of patients in ``test``. Defaults to 0.15.
        seed: seed of the patient split (not of training). Defaults to 0.
        cache: keep each resized image (``uint8``) in memory after its first read, so later epochs
            skip PNG decoding (about ``3 * H * W`` bytes per image; per worker process).
            Defaults to False.

    Raises:
        FileNotFoundError, ValueError: see :func:`pad_ufes20_datalist`; also ``ValueError`` for a
            bad ``image_size``.

    Example::

        from monai.transforms import RandFlipd
        ds = PADUFES20Dataset("PAD-UFES-20", "train", image_size=64,
                              transform=RandFlipd(keys="image", prob=0.5, spatial_axis=1))
        item = ds[0]  # {"image": (3, 64, 64) float32, "label": tensor(k)}
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        split: str = "train",
        image_size: int | Sequence[int] = 64,
        transform: Callable | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        self.image_size = _check_image_size(image_size)
        self.datalist = pad_ufes20_datalist(root, split, val_fraction, test_fraction, seed)
        self.root = os.fspath(root)  # type: ignore[arg-type]
        self.split = split
        self.transform = transform
        self.cache = bool(cache)
        self._cache: dict[int, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        """Number of diagnostic classes (6)."""
        return len(PAD_UFES20_CLASSES)

    @property
    def num_channels(self) -> int:
        """Image channels (3, RGB)."""
        return 3

    @property
    def class_names(self) -> list[str]:
        """Diagnostic codes in label order: ``["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]``."""
        return list(PAD_UFES20_CLASSES)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the split, ``int64`` ``(N,)`` in item order (e.g. for class counts)."""
        return np.asarray([r["label"] for r in self.datalist], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.datalist)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image

        arr = self._cache.get(index)
        if arr is None:
            h, w = self.image_size
            path = self.datalist[index]["image"]
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if im.size != (w, h):
                        im = im.resize((w, h), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except OSError as e:  # Pillow's "image file is truncated" names no file
                raise OSError(f"cannot read image {path!r}: {e}") from e
            if self.cache:
                self._cache[index] = arr
        return arr

    def __getitem__(self, index: int) -> dict[str, Any]:
        arr = self._load(index)
        image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)
        label = torch.as_tensor(self.datalist[index]["label"], dtype=torch.long)
        item = {"image": image, "label": label}
        return self.transform(item) if self.transform is not None else item
