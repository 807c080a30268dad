# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``python -m monai_calib make-datalist``: write a MONAI datalist from the layouts people have.

Three sources, one command each::

    make-datalist folder ROOT -o datalist.json   # ROOT/<class>/*.png (or ROOT/<split>/<class>/*)
    make-datalist csv FILE.csv -o datalist.json  # path,label[,label...] (header optional)
    make-datalist npz FILE.npz -o OUT_DIR        # MedMNIST-style arrays -> OUT_DIR/images/ +
                                                 # OUT_DIR/datalist.json

The datalist holds ``training`` (and ``validation`` / ``test`` where the source has them) lists of
``{"image": path, "label": ...}`` with paths relative to the JSON file, and a ``labels`` entry
naming the classes. ``compare --datalist`` and every bundle's ``datalist`` id read it
(``monai_calib.data.load_datalist``), carving missing sections out of training.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLIT_FOLDERS",
    "build_parser",
    "datalist_from_csv",
    "datalist_from_folder",
    "datalist_from_npz",
    "main",
]

IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".dcm",
)
# sub-folder names of ROOT read as the datalist's sections
SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
    "test": "test",
}
NPZ_SPLITS = {"train": "training", "val": "validation", "test": "test"}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)


def _rel(path: Path, out_dir: Path) -> str:
    return os.path.relpath(path.resolve(), out_dir.resolve())


def _names(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",")] if text else None


def _write(datalist: dict[str, Any], output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(datalist, indent=1) + "\n")
    counts = ", ".join(f"{k}: {len(v)}" for k, v in datalist.items() if isinstance(v, list))
    print(f"wrote {output} ({counts.replace('labels: ', 'classes: ')})")
    return output


def datalist_from_folder(root: str | os.PathLike, output: str | os.PathLike) -> dict[str, Any]:
    """``root/<class>/<image>`` (or ``root/<split>/<class>/<image>``) as a datalist.

    Classes are the sub-folder names, sorted; their index is the label. Split folders are
    ``train``/``training``, ``val``/``validation`` and ``test``.

    Raises:
        ValueError: ``root`` is not a folder, has no class folders, a class folder has no image,
            or split folders name different classes.
    """
    root_p, out = Path(root), Path(output)
    if not root_p.is_dir():
        raise ValueError(f"root must be a folder of class folders, got {str(root)!r}.")
    subdirs = sorted(d for d in root_p.iterdir() if d.is_dir())
    splits = {SPLIT_FOLDERS[d.name]: d for d in subdirs if d.name in SPLIT_FOLDERS}
    if not splits or len(splits) != len(subdirs):
        splits = {"training": root_p}
    if "training" not in splits:
        raise ValueError(f"root {str(root)!r} has split folders {list(splits)} but no train/.")
    classes = sorted(d.name for d in splits["training"].iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"root {str(root)!r} has no class folders (expected root/<class>/*.png).")
    result: dict[str, Any] = {"labels": classes}
    for key, folder in splits.items():
        found = sorted(d.name for d in folder.iterdir() if d.is_dir())
        extra = [c for c in found if c not in classes]
        if extra:
            raise ValueError(
                f"folder {str(folder)!r} has classes {extra} that training ({classes}) lacks."
            )
        entries = []
        for k, name in enumerate(classes):
            images = sorted(p for p in (folder / name).glob("*") if _is_image(p))
            if not images and key == "training":
                raise ValueError(
                    f"class folder {str(folder / name)!r} has no image "
                    f"({', '.join(IMAGE_SUFFIXES)})."
                )
            entries += [{"image": _rel(p, out.parent), "label": k} for p in images]
        result[key] = entries
    return result


def datalist_from_csv(
    csv_path: str | os.PathLike,
    output: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A CSV of ``path,label[,label...]`` rows as a datalist.

    One label column: a class index, or a class name (classes sorted by name) or, when every
    value is an existing file, a segmentation mask path. Several label columns: a multi-hot
    row of 0/1. A first row whose label cells are not numbers (nor files) is a header: its label
    columns name the classes of a multi-label CSV. Paths are relative to ``base_dir`` (default:
    the CSV's folder). An optional ``split`` column (``train``/``val``/``test``) fills the sections.

    Raises:
        ValueError: an empty CSV, rows of different lengths, or labels of mixed kinds.
    """
    csv_p, out = Path(csv_path), Path(output)
    base = Path(base_dir) if base_dir is not None else csv_p.parent
    with open(csv_p, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"CSV {str(csv_path)!r} is empty.")

    def number(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return False

    header: list[str] | None = None
    first = rows[0]
    if not (base / first[0].strip()).is_file() and not all(number(c) for c in first[1:]):
        header, rows = [c.strip() for c in first], rows[1:]
    split_col = header.index("split") if header and "split" in header else None
    width = len(rows[0]) if rows else 0
    if width < 2 or any(len(r) != width for r in rows):
        raise ValueError(
            f"CSV {str(csv_path)!r}: every row must be path,label[,label...] with the same number "
            f"of columns, got widths {sorted({len(r) for r in rows})}."
        )
    label_cols = [i for i in range(1, width) if i != split_col]
    values = [[r[i].strip() for i in label_cols] for r in rows]
    result: dict[str, Any] = {}
    if len(label_cols) > 1:
        bad = [v for row in values for v in row if v not in ("0", "1", "0.0", "1.0")]
        if bad:
            raise ValueError(
                f"CSV {str(csv_path)!r}: several label columns are a multi-hot row of 0/1, got "
                f"{bad[0]!r}."
            )
        result["labels"] = list(labels or ([header[i] for i in label_cols] if header else []))
        converted: list[Any] = [[int(float(v)) for v in row] for row in values]
    elif all((base / row[0]).is_file() for row in values):
        converted = [_rel(base / row[0], out.parent) for row in values]
        if labels:
            result["labels"] = list(labels)
    elif all(number(row[0]) for row in values):
        converted = [int(float(row[0])) for row in values]
        if labels:
            result["labels"] = list(labels)
    else:
        names = sorted({row[0] for row in values})
        if labels:
            unknown = sorted(set(names) - set(labels))
            if unknown:
                raise ValueError(f"CSV labels {unknown} are not in --labels {list(labels)}.")
            names = list(labels)
        result["labels"] = names
        converted = [names.index(row[0]) for row in values]
    if not result.get("labels"):
        result.pop("labels", None)
    for r, label in zip(rows, converted, strict=True):
        key = "training"
        if split_col is not None:
            s = r[split_col].strip()
            if s not in SPLIT_FOLDERS:
                raise ValueError(f"CSV split must be one of {list(SPLIT_FOLDERS)}, got {s!r}.")
            key = SPLIT_FOLDERS[s]
        result.setdefault(key, []).append(
            {"image": _rel(base / r[0].strip(), out.parent), "label": label}
        )
    return result


def datalist_from_npz(
    npz_path: str | os.PathLike, out_dir: str | os.PathLike, labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """A MedMNIST-style npz (``<split>_images``, ``<split>_labels``) unpacked to image files.

    2-D images ``(N, H, W)`` or ``(N, H, W, 3)`` become PNGs, 3-D volumes ``(N, D, H, W)`` NIfTI
    files, under ``out_dir/images/<split>/``. Labels ``(N, 1)`` are class indices, ``(N, K)`` with
    ``K > 1`` multi-hot rows.

    Raises:
        ValueError: no ``train_images``/``train_labels``, or arrays of an unexpected shape.
    """
    import numpy as np

    out = Path(out_dir)
    data = np.load(npz_path)
    if "train_images" not in data or "train_labels" not in data:
        raise ValueError(
            f"npz {str(npz_path)!r} must hold train_images and train_labels (MedMNIST layout), "
            f"got {sorted(data.files)}."
        )
    result: dict[str, Any] = {"labels": list(labels)} if labels else {}
    for split, key in NPZ_SPLITS.items():
        if f"{split}_images" not in data:
            continue
        images, lab = data[f"{split}_images"], np.asarray(data[f"{split}_labels"])
        lab = lab.reshape(len(lab), -1)
        if len(images) != len(lab) or images.ndim not in (3, 4):
            raise ValueError(
                f"npz {str(npz_path)!r}: {split}_images must be (N, H, W[, 3]) or (N, D, H, W) "
                f"with one label row each, got {images.shape} and {lab.shape}."
            )
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        volumes = images.ndim == 4 and images.shape[-1] not in (1, 3)
        entries = []
        for i, (img, row) in enumerate(zip(images, lab, strict=True)):
            name = folder / (f"{i:06d}.nii.gz" if volumes else f"{i:06d}.png")
            _save(np.asarray(img), name, volumes)
            value: Any = int(row[0]) if lab.shape[1] == 1 else [int(v) for v in row]
            entries.append({"image": _rel(name, out), "label": value})
        result[key] = entries
    return result


def _save(img: Any, path: Path, volume: bool) -> None:
    import numpy as np

    if volume:
        import nibabel as nib

        nib.save(nib.Nifti1Image(img, np.eye(4)), str(path))
        return
    from PIL import Image

    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monai_calib make-datalist",
        description="Write a MONAI datalist (training/validation/test lists of image + label) "
        "from a folder per class, a CSV or a MedMNIST-style npz, for 'compare --datalist PATH' "
        "and every bundle's datalist id.",
    )
    sub = p.add_subparsers(dest="source", required=True)
    f = sub.add_parser("folder", help="ROOT/<class>/*.png (or ROOT/<split>/<class>/*.png)")
    f.add_argument("root", help="folder of class folders")
    f.add_argument("-o", "--output", required=True, help="datalist JSON to write")
    c = sub.add_parser("csv", help="CSV rows path,label[,label...] (optional header, split)")
    c.add_argument("csv", help="CSV file")
    c.add_argument("-o", "--output", required=True, help="datalist JSON to write")
    c.add_argument("--base-dir", default=None, help="folder the CSV paths are relative to")
    c.add_argument("--labels", default=None, help="comma-separated class names, index order")
    n = sub.add_parser("npz", help="MedMNIST-style npz, unpacked to OUT_DIR/images/")
    n.add_argument("npz", help="npz file with <split>_images and <split>_labels")
    n.add_argument("-o", "--output", required=True, help="folder for images/ and datalist.json")
    n.add_argument("--labels", default=None, help="comma-separated class names, index order")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.source == "folder":
            output = Path(args.output)
            result = datalist_from_folder(args.root, output)
        elif args.source == "csv":
            output = Path(args.output)
            result = datalist_from_csv(args.csv, output, args.base_dir, _names(args.labels))
        else:
            output = Path(args.output) / "datalist.json"
            result = datalist_from_npz(args.npz, args.output, _names(args.labels))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _write(result, output)
    return 0
