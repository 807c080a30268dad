# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tiny own-data sets in the layouts ``make-datalist`` converts (the README's worked example).

``write_class_folders`` is the README's synthetic folder: ``root/<class>/<i>.png``, one class per
folder, each class brighter than the last so that one epoch learns something.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("benign", "malignant", "normal")


def write_class_folders(root: Path, per_class: int = 6, size: int = 16, seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` grayscale images for the classes in ``CLASSES``."""
    rng = np.random.RandomState(seed)
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.randint(0, 90, (size, size)) + 70 * c
            Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def write_multilabel_npz(path: Path, sizes=(12, 4, 4), labels: int = 4, size: int = 16) -> Path:
    """A MedMNIST-style multi-label npz: ``<split>_images (N, size, size)`` uint8,
    ``<split>_labels (N, labels)`` 0/1; label ``k`` brightens quadrant ``k``."""
    rng = np.random.RandomState(1)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        hot = rng.randint(0, 2, (n, labels))
        hot[:labels, :] = np.eye(labels, dtype=int)[: min(n, labels)]  # every label present
        imgs = rng.randint(0, 60, (n, size, size))
        h = size // 2
        for k in range(labels):
            r, c = divmod(k % 4, 2)
            imgs[hot[:, k] == 1, r * h : (r + 1) * h, c * h : (c + 1) * h] += 150
        arrays[f"{split}_images"] = imgs.astype(np.uint8)
        arrays[f"{split}_labels"] = hot.astype(np.uint8)
    np.savez(path, **arrays)
    return path


def write_segmentation_csv(root: Path, n: int = 6, size: int = 32, seed: int = 2) -> Path:
    """``root/images/<i>.png`` RGB with a bright disc, ``root/masks/<i>.png`` its 0/1 mask, and
    ``root/pairs.csv`` of ``image,mask`` rows."""
    rng = np.random.RandomState(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = ["image,mask"]
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= (size / 5) ** 2
        img = rng.randint(0, 60, (size, size, 3)) + 150 * mask[..., None]
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i}.png")
        rows.append(f"images/{i}.png,masks/{i}.png")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def write_nifti_datalist(root: Path, n: int = 5, shape=(20, 20, 16), seed: int = 3) -> Path:
    """``n`` NIfTI phantoms (a bright ellipsoid, label 1) and a datalist with ``labels`` and no
    validation/test sections."""
    import nibabel as nib

    rng = np.random.RandomState(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "seg").mkdir(exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    training = []
    for i in range(n):
        center = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        label = (((grid - center) / np.array(shape) * 3.5) ** 2).sum(-1) <= 1.0
        image = 100.0 * label + rng.normal(0.0, 20.0, shape)
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "img" / f"{i}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), root / "seg" / f"{i}.nii.gz")
        training.append({"image": f"img/{i}.nii.gz", "label": f"seg/{i}.nii.gz"})
    path = root / "datalist.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "organ"}, "training": training}))
    return path
