# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DSB2018 converter: official Kaggle layouts (stage1_train masks, stage1_solution.csv) -> bundle
layout; the real stage-1 test set must come out pixel-exactly as the shipped labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_calib.cli.convert_dsb2018 import main as convert_main
from monai_calib.data import (
    DSB2018_DOWNLOAD_URL,
    convert_dsb2018,
    dsb2018_datalist,
    dsb2018_index,
    dsb2018_rle_decode,
    dsb2018_root,
    dsb2018_transforms,
)

REAL_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsb2018_stage1_test"
if not REAL_ROOT.is_dir():
    REAL_ROOT = Path("/work/shared/data/dsb2018_stage1_test")
needs_real = pytest.mark.skipif(not REAL_ROOT.is_dir(), reason="DSB2018 folder not available")


def _encode(mask: np.ndarray) -> str:
    """Kaggle RLE written plainly: walk columns left to right, rows top to bottom, 1-based."""
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


def _nuclei(h: int, w: int, seed: int, n: int) -> list[np.ndarray]:
    """``n`` disjoint rectangles (a nucleus may wrap from one column into the next run)."""
    rng = np.random.default_rng(seed)
    taken = np.zeros((h, w), bool)
    out = []
    while len(out) < n:
        r, c = rng.integers(0, h - 3), rng.integers(0, w - 3)
        m = np.zeros((h, w), bool)
        m[r : r + rng.integers(1, 4), c : c + rng.integers(1, 4)] = True
        if not (m & taken).any():
            taken |= m
            out.append(m)
    return out


def _write_image(path: Path, h: int, w: int, mode: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


SPECS = {"aa01": (9, 7, "RGBA", 3), "bb02": (6, 11, "RGB", 2)}  # id: (H, W, mode, nuclei)


def _kaggle_train(src: Path) -> dict[str, list[np.ndarray]]:
    """stage1_train layout: <id>/images/<id>.png and one masks/<mask id>.png per nucleus."""
    truth = {}
    for i, (image_id, (h, w, mode, n)) in enumerate(SPECS.items()):
        _write_image(src / image_id / "images" / f"{image_id}.png", h, w, mode, i)
        masks = _nuclei(h, w, i, n)
        (src / image_id / "masks").mkdir()
        for k, m in enumerate(masks):  # mask file names sort in the order written
            Image.fromarray((m * 255).astype(np.uint8)).save(src / image_id / "masks" / f"m{k}.png")
        truth[image_id] = masks
    return truth


def _kaggle_test(src: Path, csv_path: Path) -> dict[str, list[np.ndarray]]:
    """stage1_test layout (<id>/images/<id>.png, no masks) + a stage1_solution.csv."""
    truth = {}
    rows = []
    for i, (image_id, (h, w, mode, n)) in enumerate(SPECS.items()):
        _write_image(src / image_id / "images" / f"{image_id}.png", h, w, mode, i)
        masks = _nuclei(h, w, 10 + i, n)
        truth[image_id] = masks
        rows += [[image_id, _encode(m), h, w, "Public"] for m in masks]
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "EncodedPixels", "Height", "Width", "Usage"])
        writer.writerows(rows)
    return truth


def _check_output(dst: Path, src: Path, truth: dict[str, list[np.ndarray]]) -> None:
    index = {r["image_id"]: r for r in dsb2018_index(dst)}
    assert sorted(index) == sorted(SPECS)
    for image_id, masks in truth.items():
        h, w, mode, n = SPECS[image_id]
        expected = np.zeros((h, w), np.uint16)
        for k, m in enumerate(masks, start=1):
            expected[m] = k
        label = Image.open(dst / "labels" / f"{image_id}.png")
        arr = np.asarray(label)
        assert arr.dtype == np.uint16 and np.array_equal(arr, expected)
        assert (dst / "images" / f"{image_id}.png").read_bytes() == (
            src / image_id / "images" / f"{image_id}.png"
        ).read_bytes()
        row = index[image_id]
        assert (row["height"], row["width"], row["channels"], row["n_nuclei"]) == (
            h,
            w,
            len(mode),
            n,
        )
        assert row["foreground_fraction"] == pytest.approx((expected > 0).mean(), abs=5e-5)


def test_rle_decode_by_hand():
    # 3 rows x 2 columns, column-major 1-based: pixels 2,3 are (1,0),(2,0); pixel 6 is (2,1)
    expected = np.array([[0, 0], [1, 0], [1, 1]], bool)
    assert np.array_equal(dsb2018_rle_decode("2 2 6 1", (3, 2)), expected)
    # a run that wraps from column 0 into column 1
    assert np.array_equal(
        dsb2018_rle_decode("3 2", (3, 2)), np.array([[0, 1], [0, 0], [1, 0]], bool)
    )
    for bad in ("", "1", "0 2", "5 3", "a b"):
        with pytest.raises(ValueError, match="rle"):
            dsb2018_rle_decode(bad, (3, 2))


def test_stage1_train_masks(tmp_path):
    truth = _kaggle_train(tmp_path / "stage1_train")
    rows = convert_dsb2018(tmp_path / "stage1_train", tmp_path / "out")
    assert [r["image_id"] for r in rows] == sorted(SPECS)
    _check_output(tmp_path / "out", tmp_path / "stage1_train", truth)
    # the bundle's reader takes the output as it is
    item = dsb2018_transforms(binary_label=False)(dsb2018_datalist(tmp_path / "out")[0])
    assert tuple(item["image"].shape) == (3, 9, 7) and int(item["label"].max()) == 3
    assert dsb2018_root(tmp_path / "out") == str(tmp_path / "out")


def test_stage1_test_with_solution_csv(tmp_path):
    src = tmp_path / "stage1_test"
    truth = _kaggle_test(src, tmp_path / "stage1_solution.csv")
    convert_dsb2018(src, tmp_path / "out", rle_csv=tmp_path / "stage1_solution.csv")
    _check_output(tmp_path / "out", src, truth)


@needs_real
def test_real_solution_csv_reproduces_the_shipped_labels(tmp_path):
    rows = convert_dsb2018(REAL_ROOT, tmp_path / "out")  # flat images/ + stage1_solution.csv
    assert len(rows) == 65 and sum(r["n_nuclei"] for r in rows) == 4152
    for r in rows:
        ref = np.asarray(Image.open(REAL_ROOT / "labels" / f"{r['image_id']}.png"))
        got = np.asarray(Image.open(tmp_path / "out" / "labels" / f"{r['image_id']}.png"))
        assert got.dtype == ref.dtype == np.uint16 and np.array_equal(got, ref), r["image_id"]
    assert dsb2018_index(tmp_path / "out") == dsb2018_index(REAL_ROOT)


def test_errors(tmp_path):
    src = tmp_path / "stage1_train"
    _kaggle_train(src)
    # two nuclei on one pixel
    one = np.asarray(Image.open(src / "aa01" / "masks" / "m0.png"))
    Image.fromarray(one).save(src / "aa01" / "masks" / "m9.png")
    with pytest.raises(ValueError, match=r"m9\.png overlaps"):
        convert_dsb2018(src, tmp_path / "o1")
    (src / "aa01" / "masks" / "m9.png").unlink()
    # a non-empty destination
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_dsb2018(src, tmp_path / "o2")
    # a CSV that names an image that is not there
    with open(tmp_path / "s.csv", "w") as f:
        f.write("ImageId,EncodedPixels\naa01,1 1\nbb02,1 1\nzz99,1 1\n")
    with pytest.raises(ValueError, match=r"1 CSV id\(s\) without an image"):
        convert_dsb2018(src, tmp_path / "o3", rle_csv=tmp_path / "s.csv")
    # test images without masks and without a CSV
    test_src = tmp_path / "stage1_test"
    _write_image(test_src / "cc03" / "images" / "cc03.png", 4, 4, "RGB", 0)
    with pytest.raises(FileNotFoundError, match=r"stage1_solution\.csv"):
        convert_dsb2018(test_src, tmp_path / "o4")
    with pytest.raises(FileNotFoundError, match="holds no DSB2018 image"):
        convert_dsb2018(tmp_path / "o2", tmp_path / "o5")


def test_root_check_says_how_to_get_the_data(tmp_path):
    with pytest.raises(ValueError, match="data_root is not set") as err:
        dsb2018_root(None)
    for text in (DSB2018_DOWNLOAD_URL, "convert-dsb2018", "index.csv"):
        assert text in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        dsb2018_root(tmp_path / "nope")
    assert "convert-dsb2018" in str(err.value)
    _kaggle_train(tmp_path / "stage1_train")
    with pytest.raises(FileNotFoundError, match="official Kaggle layout") as err:
        dsb2018_root(tmp_path / "stage1_train")
    assert "convert-dsb2018" in str(err.value)


def test_cli(tmp_path, capsys):
    from monai_calib.__main__ import main as root_main

    truth = _kaggle_train(tmp_path / "stage1_train")
    assert (
        root_main(["convert-dsb2018", str(tmp_path / "stage1_train"), str(tmp_path / "out")]) == 0
    )
    assert "wrote 2 images (5 nuclei)" in capsys.readouterr().out
    _check_output(tmp_path / "out", tmp_path / "stage1_train", truth)
    assert convert_main([str(tmp_path / "stage1_train"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convert-dsb2018: error: ") and "not empty" in err and "\n" not in err
    args = [str(tmp_path / "stage1_train"), str(tmp_path / "out"), "--overwrite"]
    assert convert_main(args) == 0


def test_compare_without_data_is_one_clear_line(tmp_path, capsys):
    """The README's cell_segmentation comparison on a fresh clone: no traceback, one line that
    says where the data goes, where to download it and which converter to run."""
    from monai_calib.cli.compare import main as compare_main

    for extra in ([], ["--data-root", str(tmp_path)]):
        args = ["--bundle", "cell_segmentation", "--epochs", "1", "--output", str(tmp_path / "o")]
        assert compare_main(args + extra) != 0
        err = capsys.readouterr().err
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]
        for text in ("data_root", "index.csv", DSB2018_DOWNLOAD_URL, "convert-dsb2018"):
            assert text in line, (text, line)
