# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for RFMiDDataset on a tiny synthetic RFMiD-style folder and CSV built with Pillow."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_calib.data import RFMiDDataset

DISEASES = ["DR", "ARMD", "MH", "DN"]
HEADER = ["ID", "Disease_Risk", *DISEASES]


def _rows() -> list[list[str]]:
    return [
        ["1", "1", "1", "0", "0", "1"],
        ["2", "0", "0", "0", "0", "0"],
        ["3", "1", "0", "1", "1", "0"],
        ["10", "1", "1", "1", "0", "0"],
    ]


def _make(
    root: Path,
    rows: list[list[str]] | None = None,
    header: list[str] | None = None,
    ext: str = ".png",
    skip_images: tuple[str, ...] = (),
) -> tuple[Path, Path, dict[str, np.ndarray]]:
    rows = _rows() if rows is None else rows
    header = HEADER if header is None else header
    img_dir = root / "Training"
    img_dir.mkdir(parents=True, exist_ok=True)
    csv_path = root / "RFMiD_Training_Labels.csv"
    csv_path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    arrays = {}
    rng = np.random.default_rng(0)
    for i, r in enumerate(rows):
        rid = r[0]
        if rid in skip_images:
            continue
        arr = rng.integers(0, 256, size=(6 + i, 8, 3), dtype=np.uint8)  # sizes differ
        Image.fromarray(arr, mode="RGB").save(img_dir / f"{rid}{ext}")
        arrays[rid] = arr
    return img_dir, csv_path, arrays


def test_happy_path(tmp_path: Path) -> None:
    img_dir, csv_path, arrays = _make(tmp_path)
    ds = RFMiDDataset(img_dir, csv_path)
    rows = _rows()
    assert len(ds) == len(rows)  # count in = count out
    assert ds.label_columns == DISEASES and ds.num_classes == 4
    assert ds.ids == [r[0] for r in rows]
    expected_labels = torch.tensor([[float(c) for c in r[2:]] for r in rows])
    torch.testing.assert_close(ds.labels, expected_labels)
    for i, r in enumerate(rows):
        item = ds[i]
        assert set(item) == {"image", "label", "id"}
        assert item["id"] == r[0]
        assert item["label"].dtype == torch.float32 and item["label"].shape == (4,)
        torch.testing.assert_close(item["label"], expected_labels[i])
        img = item["image"]
        assert img.dtype == torch.float32 and img.shape == (3, 6 + i, 8)
        expected = torch.from_numpy(arrays[r[0]].astype(np.float32).transpose(2, 0, 1) / 255.0)
        torch.testing.assert_close(img, expected)


def test_include_disease_risk_and_explicit_columns(tmp_path: Path) -> None:
    img_dir, csv_path, _ = _make(tmp_path)
    ds = RFMiDDataset(img_dir, csv_path, include_disease_risk=True)
    assert ds.label_columns == ["Disease_Risk", *DISEASES]
    torch.testing.assert_close(ds[0]["label"], torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]))
    ds2 = RFMiDDataset(img_dir, csv_path, label_columns=["MH", "DR"])
    assert ds2.label_columns == ["MH", "DR"]
    torch.testing.assert_close(ds2[2]["label"], torch.tensor([1.0, 0.0]))


def test_transform_and_path_mode(tmp_path: Path) -> None:
    from monai.transforms import Compose, LoadImaged, Resized

    img_dir, csv_path, _ = _make(tmp_path)
    ds = RFMiDDataset(img_dir, csv_path, transform=Resized(keys="image", spatial_size=(16, 16)))
    assert tuple(ds[1]["image"].shape) == (3, 16, 16)
    ds_path = RFMiDDataset(img_dir, csv_path, load_image=False)
    item = ds_path[3]
    assert item["image"] == os.path.join(os.fspath(img_dir), "10.png")
    monai_ds = RFMiDDataset(
        img_dir,
        csv_path,
        load_image=False,
        transform=Compose([LoadImaged(keys="image", ensure_channel_first=True)]),
    )
    assert monai_ds[0]["image"].shape[0] == 3


def test_dataloader_collates(tmp_path: Path) -> None:
    from monai.transforms import Resized

    img_dir, csv_path, _ = _make(tmp_path)
    ds = RFMiDDataset(img_dir, csv_path, transform=Resized(keys="image", spatial_size=(8, 8)))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].shape == (4, 4)
    assert list(batch["id"]) == ["1", "2", "3", "10"]


@pytest.mark.parametrize("ext", [".jpg", ".tif"])
def test_other_extensions(tmp_path: Path, ext: str) -> None:
    img_dir, csv_path, _ = _make(tmp_path, ext=ext)
    ds = RFMiDDataset(img_dir, csv_path)
    assert ds.image_paths[0].endswith(f"1{ext}")
    assert ds[0]["image"].shape == (3, 6, 8)
    with pytest.raises(FileNotFoundError, match="missing"):
        RFMiDDataset(img_dir, csv_path, extensions=(".png",))
    assert len(RFMiDDataset(img_dir, csv_path, extensions=ext.lstrip("."))) == 4


def test_missing_csv_and_folder(tmp_path: Path) -> None:
    img_dir, csv_path, _ = _make(tmp_path)
    with pytest.raises(FileNotFoundError, match="csv_path"):
        RFMiDDataset(img_dir, tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="image_dir"):
        RFMiDDataset(tmp_path / "nope", csv_path)


def test_missing_images_named_and_counted(tmp_path: Path) -> None:
    img_dir, csv_path, _ = _make(tmp_path, skip_images=("2", "10"))
    with pytest.raises(FileNotFoundError, match=r"2 of 4 images.*first missing: ID '2'"):
        RFMiDDataset(img_dir, csv_path)


def test_missing_columns(tmp_path: Path) -> None:
    img_dir, csv_path, _ = _make(tmp_path)
    with pytest.raises(ValueError, match=r"\['XYZ'\] are not in"):
        RFMiDDataset(img_dir, csv_path, label_columns=["DR", "XYZ"])
    with pytest.raises(ValueError, match="more than once"):
        RFMiDDataset(img_dir, csv_path, label_columns=["DR", "DR"])
    rows = [[r[0], *r[2:]] for r in _rows()]
    other = tmp_path / "noid"
    img_dir2, csv2, _ = _make(other, rows=[r[1:] for r in rows], header=DISEASES)
    with pytest.raises(ValueError, match="'ID' column"):
        RFMiDDataset(img_dir2, csv2)
    # no Disease_Risk column: every non-ID column is a label, include_disease_risk is an error
    third = tmp_path / "norisk"
    img_dir3, csv3, _ = _make(third, rows=rows, header=["ID", *DISEASES])
    assert RFMiDDataset(img_dir3, csv3).label_columns == DISEASES
    with pytest.raises(ValueError, match="Disease_Risk"):
        RFMiDDataset(img_dir3, csv3, include_disease_risk=True)


@pytest.mark.parametrize("bad", ["2", "0.5", "", "yes"])
def test_non_binary_cell_named(tmp_path: Path, bad: str) -> None:
    rows = _rows()
    rows[2][4] = bad  # ID "3", column "MH"
    img_dir, csv_path, _ = _make(tmp_path, rows=rows)
    with pytest.raises(ValueError, match=r"ID '3', column 'MH' must be 0 or 1"):
        RFMiDDataset(img_dir, csv_path)


def test_float_formatted_cells_accepted(tmp_path: Path) -> None:
    rows = _rows()
    rows[0][2] = "1.0"
    rows[1][3] = " 0 "
    img_dir, csv_path, _ = _make(tmp_path, rows=rows)
    ds = RFMiDDataset(img_dir, csv_path)
    assert float(ds.labels[0, 0]) == 1.0 and float(ds.labels[1, 1]) == 0.0


def test_malformed_csv(tmp_path: Path) -> None:
    rows = _rows()
    rows[1] = rows[1][:-1]  # short row
    img_dir, csv_path, _ = _make(tmp_path, rows=rows)
    with pytest.raises(ValueError, match="line 3: expected 6 cells, got 5"):
        RFMiDDataset(img_dir, csv_path)
    dup = _rows()
    dup[3][0] = "1"
    d2 = tmp_path / "dup"
    img_dir2, csv2, _ = _make(d2, rows=dup)
    with pytest.raises(ValueError, match="duplicate ID '1'"):
        RFMiDDataset(img_dir2, csv2)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        RFMiDDataset(img_dir, empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(HEADER) + "\n")
    with pytest.raises(ValueError, match="no rows"):
        RFMiDDataset(img_dir, header_only)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    img_dir, csv_path, _ = _make(tmp_path)
    ds = RFMiDDataset(img_dir, csv_path)
    path = Path(ds.image_paths[1])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=re.escape(f"cannot read image {str(path)!r}")):
        ds[1]
