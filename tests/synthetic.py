# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Small synthetic data sets written in the exact real layouts (for tests; no network)."""

from __future__ import annotations

import csv
import os

import numpy as np


def write_medmnist_npz(
    root: str | os.PathLike,
    flag: str = "breastmnist",
    sizes: tuple[int, int, int] = (48, 24, 24),
    image_size: int = 28,
    channels: int = 1,
    num_classes: int = 2,
    multi_label: bool = False,
    seed: int = 0,
) -> str:
    """Write ``{flag}.npz`` (or ``{flag}_{size}.npz``) with MedMNIST's keys, dtypes and shapes.

    Images are ``uint8`` ``(N, H, W)`` (``channels == 1``) or ``(N, H, W, 3)``; labels ``uint8``
    ``(N, 1)`` (or ``(N, K)`` multi-hot). The class shifts the mean intensity so a network can
    learn something in one epoch.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        if multi_label:
            labels = (rng.random((n, num_classes)) < 0.3).astype(np.uint8)
            level = labels.mean(axis=1)
        else:
            labels = rng.integers(0, num_classes, size=(n, 1)).astype(np.uint8)
            level = labels[:, 0] / max(num_classes - 1, 1)
        shape = (n, image_size, image_size) + ((3,) if channels == 3 else ())
        noise = rng.normal(0.0, 30.0, size=shape)
        base = (60 + 120 * level).reshape((n,) + (1,) * (len(shape) - 1))
        arrays[f"{split}_images"] = np.clip(base + noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    fname = f"{flag}.npz" if image_size == 28 else f"{flag}_{image_size}.npz"
    path = os.path.join(os.fspath(root), fname)
    os.makedirs(os.fspath(root), exist_ok=True)
    ordered = {
        k: arrays[k]
        for k in (
            "train_images",
            "val_images",
            "test_images",
            "train_labels",
            "val_labels",
            "test_labels",
        )
    }
    np.savez_compressed(path, **ordered)
    return path


PAD_UFES20_COLUMNS = (
    "patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age",
    "pesticide", "gender", "skin_cancer_history", "cancer_history", "has_piped_water",
    "has_sewage_system", "fitspatrick", "region", "diameter_1", "diameter_2", "diagnostic",
    "itch", "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed",
)  # fmt: skip


def write_pad_ufes20_folder(
    root: str | os.PathLike,
    num_patients: int = 12,
    images_per_patient: int | tuple[int, ...] = (1, 2, 3),
    sizes: tuple[tuple[int, int], ...] = ((30, 40), (36, 24), (32, 32), (45, 27)),
    rgba_every: int = 3,
    subfolders: bool = False,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Write PAD-UFES-20's layout: ``metadata.csv`` (its 26 columns) and ``images/<img_id>``.

    Patient ``p`` (``PAT_<p+1>``) gets ``images_per_patient[p % len]`` images; image ``k``
    (counted over the whole folder) has diagnostic ``CLASSES[k % 6]`` so every class occurs,
    size ``sizes[k % len]`` (``(H, W)``, mixed) and mode RGBA when ``k % rgba_every == 0``
    (RGB otherwise). The class shifts the mean intensity so a network can learn something.
    ``subfolders`` spreads the PNGs over ``images/imgs_part_{1,2}`` like the official archive.

    Returns:
        the rows written, ``{"patient_id", "img_id", "diagnostic", "label", "size", "mode"}``.
    """
    import csv

    from PIL import Image

    classes = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
    per = (images_per_patient,) if isinstance(images_per_patient, int) else images_per_patient
    rng = np.random.default_rng(seed)
    root = os.fspath(root)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    written: list[dict[str, object]] = []
    csv_rows: list[dict[str, str]] = []
    k = 0
    for p in range(num_patients):
        pid = f"PAT_{p + 1}"
        for j in range(per[p % len(per)]):
            label = k % len(classes)
            h, w = sizes[k % len(sizes)]
            mode = "RGBA" if rgba_every and k % rgba_every == 0 else "RGB"
            level = 40 + 170 * label / (len(classes) - 1)
            arr = np.clip(level + rng.normal(0.0, 25.0, size=(h, w, 3)), 0, 255).astype(np.uint8)
            if mode == "RGBA":
                alpha = rng.integers(0, 256, size=(h, w, 1), dtype=np.uint8)
                arr = np.concatenate([arr, alpha], axis=-1)
            lesion = 1000 + 10 * p + j
            img_id = f"{pid}_{lesion}_{k + 100}.png"
            folder = os.path.join(root, "images", f"imgs_part_{1 + k % 2}" if subfolders else "")
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(arr, mode=mode).save(os.path.join(folder, img_id))
            row = dict.fromkeys(PAD_UFES20_COLUMNS, "")
            row.update(
                patient_id=pid,
                lesion_id=str(lesion),
                age=str(30 + p),
                region="FACE",
                diagnostic=classes[label],
                img_id=img_id,
                biopsed="True",
            )
            csv_rows.append(row)
            written.append(
                {
                    "patient_id": pid,
                    "img_id": img_id,
                    "diagnostic": classes[label],
                    "label": label,
                    "size": (h, w),
                    "mode": mode,
                }
            )
            k += 1
    with open(os.path.join(root, "metadata.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PAD_UFES20_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows)
    return written


RFMID_SPLITS = {
    "train": ("Training_Set", "Training", "RFMiD_Training_Labels.csv"),
    "val": ("Evaluation_Set", "Validation", "RFMiD_Validation_Labels.csv"),
    "test": ("Test_Set", "Test", "RFMiD_Testing_Labels.csv"),
}


def write_rfmid_folder(
    root: str | os.PathLike,
    sizes: tuple[int, int, int] = (32, 16, 16),
    diseases: tuple[str, ...] = ("DR", "ARMD", "MH", "DN", "MYA", "BRVO"),
    image_shapes: tuple[tuple[int, int], ...] = ((40, 60), (36, 48)),
    seed: int = 0,
) -> dict[str, tuple[str, str]]:
    """Write RFMiD's official layout: per split ``<Split_Set>/<Folder>/<ID>.png`` and the CSV.

    Splits (``RFMID_SPLITS``): ``Training_Set/Training`` + ``RFMiD_Training_Labels.csv``,
    ``Evaluation_Set/Validation`` + ``RFMiD_Validation_Labels.csv``, ``Test_Set/Test`` +
    ``RFMiD_Testing_Labels.csv``; columns ``ID, Disease_Risk, <diseases...>`` (0/1), IDs
    numbered from 1 per split as in the release, ``Disease_Risk`` = any disease. RGB images of
    mixed sizes ``image_shapes`` (H, W); each disease brightens its own horizontal band so a
    network can learn something.

    Returns:
        ``{split: (image_dir, csv_path)}``.
    """
    import csv

    from PIL import Image

    rng = np.random.default_rng(seed)
    root = os.fspath(root)
    out: dict[str, tuple[str, str]] = {}
    for (split, (set_dir, img_dir, csv_name)), n in zip(RFMID_SPLITS.items(), sizes, strict=True):
        image_dir = os.path.join(root, set_dir, img_dir)
        os.makedirs(image_dir, exist_ok=True)
        csv_path = os.path.join(root, set_dir, csv_name)
        labels = (rng.random((n, len(diseases))) < 0.35).astype(int)
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "Disease_Risk", *diseases])
            for i in range(n):
                w.writerow([i + 1, int(labels[i].any()), *labels[i].tolist()])
                h, wd = image_shapes[i % len(image_shapes)]
                arr = rng.normal(60.0, 20.0, size=(h, wd, 3))
                for k, present in enumerate(labels[i]):
                    if present:
                        band = slice(k * h // len(diseases), (k + 1) * h // len(diseases))
                        arr[band] += 120.0
                img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")
                img.save(os.path.join(image_dir, f"{i + 1}.png"))
        out[split] = (image_dir, csv_path)
    return out


def dsb2018_rle_encode(mask: np.ndarray) -> str:
    """Kaggle DSB2018 run-length code, written plainly: columns left to right, rows top to
    bottom, 1-based starts."""
    h, w = mask.shape
    runs: list[list[int]] = []
    pos = 0
    prev = False
    for c in range(w):
        for r in range(h):
            pos += 1
            on = bool(mask[r, c])
            if on and not prev:
                runs.append([pos, 0])
            if on:
                runs[-1][1] += 1
            prev = on
    return " ".join(f"{s} {n}" for s, n in runs)


def _dsb2018_nuclei(h: int, w: int, seed: int, n: int) -> list[np.ndarray]:
    """``n`` disjoint small rectangles (one may wrap from a column into the next run)."""
    rng = np.random.default_rng(seed)
    taken = np.zeros((h, w), bool)
    out: list[np.ndarray] = []
    while len(out) < n:
        r, c = rng.integers(0, h - 3), rng.integers(0, w - 3)
        m = np.zeros((h, w), bool)
        m[r : r + rng.integers(1, 4), c : c + rng.integers(1, 4)] = True
        if not (m & taken).any():
            taken |= m
            out.append(m)
    return out


def write_dsb2018_image(path: str | os.PathLike, h: int, w: int, mode: str, seed: int) -> None:
    """A random uint8 PNG of ``mode`` (``"RGB"``/``"RGBA"``), ``h x w``."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


def write_dsb2018_kaggle(
    root: str | os.PathLike,
    specs: dict[str, tuple[int, int, str, int]],
    solution_csv: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """The official Kaggle DSB2018 layout: ``<root>/<id>/images/<id>.png`` per image, and either
    one binary ``<root>/<id>/masks/m<k>.png`` per nucleus (``stage1_train``) or, with
    ``solution_csv``, no masks and a ``stage1_solution.csv`` (``ImageId, EncodedPixels, Height,
    Width, Usage``; ``stage1_test``).

    Args:
        root: the folder to write.
        specs: ``{image_id: (height, width, mode, n_nuclei)}``.
        solution_csv: where to write the run-length CSV instead of masks.
        seed: seed of the images and nuclei.

    Returns:
        ``{image_id: [mask of nucleus 1, mask of nucleus 2, ...]}`` (boolean ``(H, W)``).
    """
    from PIL import Image

    truth: dict[str, list[np.ndarray]] = {}
    rows: list[list[object]] = []
    for i, (image_id, (h, w, mode, n)) in enumerate(specs.items()):
        folder = os.path.join(root, image_id)
        write_dsb2018_image(os.path.join(folder, "images", f"{image_id}.png"), h, w, mode, seed + i)
        masks = _dsb2018_nuclei(h, w, seed + 100 + i, n)
        truth[image_id] = masks
        if solution_csv is None:
            os.makedirs(os.path.join(folder, "masks"))
            for k, m in enumerate(masks):  # m0, m1, ... sort in the order written (k < 10)
                path = os.path.join(folder, "masks", f"m{k}.png")
                Image.fromarray((m * 255).astype(np.uint8)).save(path)
        else:
            rows += [[image_id, dsb2018_rle_encode(m), h, w, "Public"] for m in masks]
    if solution_csv is not None:
        with open(solution_csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "EncodedPixels", "Height", "Width", "Usage"])
            writer.writerows(rows)
    return truth
