# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""RFMiD (Retinal Fundus Multi-Disease Image Dataset) as a multi-label MONAI-friendly dataset.

The RFMiD release ships, per split, a folder of fundus photographs named ``<ID>.png`` and a CSV
whose columns are ``ID``, ``Disease_Risk`` and then one 0/1 column per disease (``DR``, ``ARMD``,
``MH``, ``DN``, ...). Everything is validated when the dataset is built, so a wrong path or a
malformed CSV fails at once with a message that names the file, row and column, not in the
middle of an epoch.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["RFMID_DEFAULT_EXTENSIONS", "RFMiDDataset"]

RFMID_DEFAULT_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_ID_COLUMN = "ID"
_RISK_COLUMN = "Disease_Risk"


def _parse_binary(cell: str) -> float | None:
    """``0.0``/``1.0`` for a cell holding 0 or 1 (``"1"``, ``"1.0"``, ``" 0 "``), else None."""
    try:
        value = float(cell.strip())
    except ValueError:
        return None
    return value if value in (0.0, 1.0) else None


class RFMiDDataset(Dataset):
    r"""RFMiD split as dictionaries ``{"image", "label", "id"}`` for MONAI pipelines.

    Each row of the CSV becomes one item, in CSV order (count in = count out; no row is ever
    dropped or merged). The label is the multi-hot vector of the chosen disease columns, the
    target format of :class:`~monai_calib.losses.LDACELoss` and ``BCEWithLogitsLoss``.

    Items:
        - ``"image"``: ``float32`` tensor ``(3, H, W)`` (RGB, channel first) scaled to
          ``[0, 1]``, at the file's own size (resizing is left to ``transform``); with
          ``load_image=False`` the image file path (``str``) instead, for a MONAI
          ``LoadImaged`` pipeline.
        - ``"label"``: ``float32`` multi-hot tensor ``(K,)``.
        - ``"id"``: the ``ID`` cell as written in the CSV (``str``).

    Args:
        image_dir: folder holding the images ``<ID><ext>``.
        csv_path: the labels CSV (``ID``, ``Disease_Risk``, then one 0/1 column per disease).
        label_columns: the label columns, in output order. ``None`` (default) takes every
            column after ``Disease_Risk`` (the 45 diseases of the RFMiD training CSV), or every
            column except ``ID`` when the CSV has no ``Disease_Risk`` column.
        include_disease_risk: with ``label_columns=None``, put ``Disease_Risk`` first in the
            label vector. Defaults to ``False``.
        extensions: file extensions tried, in order, for each ID (the first existing file is
            used). Defaults to ``(".png", ".jpg", ".jpeg", ".tif", ".tiff")``.
        transform: a MONAI dictionary transform (or any callable) applied to each item dict.
        load_image: read the image with Pillow (default). ``False`` puts the path in
            ``"image"`` instead.

    Raises:
        FileNotFoundError: ``csv_path`` or ``image_dir`` does not exist; image files are missing
            (the message names the first missing ID and how many are missing).
        ValueError: the CSV is empty or lacks the ``ID`` column or a requested label column,
            holds a duplicate or empty ID, or a label cell that is not 0/1 (named by row ID and
            column); ``extensions`` is empty; no label column is left.

    Example::

        from monai.transforms import Compose, Resized
        ds = RFMiDDataset(
            "Training_Set/Training", "Training_Set/RFMiD_Training_Labels.csv",
            transform=Resized(keys="image", spatial_size=(512, 512)),
        )
        item = ds[0]  # {"image": (3, 512, 512), "label": (45,), "id": "1"}

    References:
        Pachade et al., "Retinal Fundus Multi-Disease Image Dataset (RFMiD): A Dataset for
        Multi-Disease Detection Research", Data 6(2):14 (2021), doi 10.3390/data6020014.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        csv_path: str | os.PathLike,
        label_columns: Sequence[str] | None = None,
        include_disease_risk: bool = False,
        extensions: Sequence[str] = RFMID_DEFAULT_EXTENSIONS,
        transform: Callable | None = None,
        load_image: bool = True,
    ) -> None:
        self.image_dir = os.fspath(image_dir)
        self.csv_path = os.fspath(csv_path)
        if isinstance(extensions, str):
            extensions = (extensions,)
        self.extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
        if not self.extensions:
            raise ValueError("extensions must name at least one file extension, got none.")
        if not os.path.isfile(self.csv_path):
            raise FileNotFoundError(f"RFMiD labels CSV csv_path={self.csv_path!r} does not exist.")
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(
                f"RFMiD image folder image_dir={self.image_dir!r} does not exist or is not a "
                "folder."
            )
        self.transform = transform
        self.load_image = bool(load_image)

        header, rows = self._read_csv()
        self.label_columns = self._select_columns(header, label_columns, include_disease_risk)
        self.ids, labels = self._parse_rows(header, rows)
        self._labels = torch.as_tensor(np.asarray(labels, dtype=np.float32).reshape(len(rows), -1))
        self.image_paths = self._find_images()

    def _read_csv(self) -> tuple[list[str], list[list[str]]]:
        with open(self.csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [r for r in reader if any(c.strip() for c in r)]  # skip blank lines only
        if header is None:
            raise ValueError(f"RFMiD labels CSV {self.csv_path!r} is empty (no header row).")
        header = [h.strip() for h in header]
        if _ID_COLUMN not in header:
            raise ValueError(
                f"RFMiD labels CSV {self.csv_path!r} must have an {_ID_COLUMN!r} column, got "
                f"columns {header}."
            )
        if not rows:
            raise ValueError(f"RFMiD labels CSV {self.csv_path!r} has a header but no rows.")
        return header, rows

    def _select_columns(
        self, header: list[str], label_columns: Sequence[str] | None, include_risk: bool
    ) -> list[str]:
        if label_columns is None:
            if _RISK_COLUMN in header:
                cols = header[header.index(_RISK_COLUMN) + 1 :]
                if include_risk:
                    cols = [_RISK_COLUMN, *cols]
            else:
                if include_risk:
                    raise ValueError(
                        f"include_disease_risk=True but {self.csv_path!r} has no "
                        f"{_RISK_COLUMN!r} column (columns {header})."
                    )
                cols = [h for h in header if h != _ID_COLUMN]
        else:
            if isinstance(label_columns, str):
                label_columns = [label_columns]
            cols = list(label_columns)
            missing = [c for c in cols if c not in header]
            if missing:
                raise ValueError(
                    f"label_columns {missing} are not in {self.csv_path!r} (columns {header})."
                )
            dup = sorted({c for c in cols if cols.count(c) > 1})
            if dup:
                raise ValueError(f"label_columns lists {dup} more than once.")
        if not cols:
            raise ValueError(f"No label column selected from {self.csv_path!r} (columns {header}).")
        return cols

    def _parse_rows(
        self, header: list[str], rows: list[list[str]]
    ) -> tuple[list[str], list[list[float]]]:
        id_pos = header.index(_ID_COLUMN)
        col_pos = [header.index(c) for c in self.label_columns]
        ids: list[str] = []
        labels: list[list[float]] = []
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            if len(row) != len(header):
                raise ValueError(
                    f"{self.csv_path!r} line {line}: expected {len(header)} cells, got {len(row)}."
                )
            rid = row[id_pos].strip()
            if not rid:
                raise ValueError(f"{self.csv_path!r} line {line}: empty {_ID_COLUMN!r} cell.")
            if rid in seen:
                raise ValueError(
                    f"{self.csv_path!r}: duplicate ID {rid!r} on lines {seen[rid]} and {line}."
                )
            seen[rid] = line
            values = []
            for col, pos in zip(self.label_columns, col_pos, strict=True):
                v = _parse_binary(row[pos])
                if v is None:
                    raise ValueError(
                        f"{self.csv_path!r}: label cell for ID {rid!r}, column {col!r} must be "
                        f"0 or 1, got {row[pos]!r}."
                    )
                values.append(v)
            ids.append(rid)
            labels.append(values)
        return ids, labels

    def _find_images(self) -> list[str]:
        present = set(os.listdir(self.image_dir))
        paths: list[str] = []
        missing: list[str] = []
        for rid in self.ids:
            name = next((rid + e for e in self.extensions if rid + e in present), None)
            if name is None:
                missing.append(rid)
            else:
                paths.append(os.path.join(self.image_dir, name))
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.ids)} images listed in {self.csv_path!r} are missing "
                f"from image_dir={self.image_dir!r}; first missing: ID {missing[0]!r} (looked for "
                f"{[missing[0] + e for e in self.extensions]})."
            )
        return paths

    @property
    def num_classes(self) -> int:
        """Number of labels ``K``."""
        return len(self.label_columns)

    @property
    def labels(self) -> torch.Tensor:
        """All labels, ``float32`` ``(N, K)`` in CSV order (e.g. for label prevalences)."""
        return self._labels.clone()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.image_paths[index]
        image: Any = path
        if self.load_image:
            from PIL import Image

            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            except OSError as e:  # Pillow's "image file is truncated" names no file
                raise OSError(f"cannot read image {path!r}: {e}") from e
            image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        item = {"image": image, "label": self._labels[index].clone(), "id": self.ids[index]}
        return self.transform(item) if self.transform is not None else item
