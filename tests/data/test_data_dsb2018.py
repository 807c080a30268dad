# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DSB2018 data list, split and reading: the real folder vs PIL reads, synthetic error paths; the
converter from the official Kaggle layouts (stage1_train masks, stage1_solution.csv), which must
reproduce the shipped labels of the real stage-1 test set pixel-exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import write_dsb2018_image, write_dsb2018_kaggle

from monai_calib.cli.convert_dsb2018 import main as convert_main
from monai_calib.data import (
    DSB2018_DOWNLOAD_URL,
    DSB2018_INDEX_COLUMNS,
    PrepareDSB2018d,
    convert_dsb2018,
    dsb2018_datalist,
    dsb2018_index,
    dsb2018_rle_decode,
    dsb2018_root,
    dsb2018_split,
    dsb2018_transforms,
)

REAL_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsb2018_stage1_test"
if not REAL_ROOT.is_dir():
    REAL_ROOT = Path("/work/shared/data/dsb2018_stage1_test")
needs_real = pytest.mark.skipif(not REAL_ROOT.is_dir(), reason="DSB2018 folder not available")


def _real_index_rows() -> list[dict[str, str]]:
    with open(REAL_ROOT / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def _make_folder(root: Path, specs: dict[str, tuple[int, int, int]]) -> Path:
    """Write a tiny DSB2018-like folder: {id: (height, width, channels)}."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(DSB2018_INDEX_COLUMNS)
        for image_id, (h, wd, c) in specs.items():
            img = rng.integers(0, 256, (h, wd, c), dtype=np.uint8)
            Image.fromarray(img, mode="RGBA" if c == 4 else "RGB").save(
                root / "images" / f"{image_id}.png"
            )
            lab = np.zeros((h, wd), dtype=np.uint16)
            lab[1:3, 1:3] = 1
            lab[-2:, -2:] = 300  # > 255: needs a true 16-bit read
            Image.fromarray(lab).save(root / "labels" / f"{image_id}.png")
            w.writerow([image_id, h, wd, c, 2, float((lab > 0).mean())])
    return root


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _make_folder(tmp_path / "dsb", {"b": (6, 5, 4), "a": (7, 4, 3), "c": (5, 5, 3)})


@needs_real
def test_real_datalist_and_split():
    rows = _real_index_rows()
    ids = sorted(r["image_id"] for r in rows)
    data = dsb2018_datalist(REAL_ROOT)
    assert [d["id"] for d in data] == ids
    assert len(data) == len(rows) == 65
    for d in data:
        assert Path(d["image"]) == REAL_ROOT / "images" / f"{d['id']}.png"
        assert Path(d["label"]) == REAL_ROOT / "labels" / f"{d['id']}.png"
    split = dsb2018_split(REAL_ROOT)
    assert len(split["train"]) == 45 and len(split["test"]) == 20
    assert set(split["train"]).isdisjoint(split["test"])
    assert sorted(split["train"] + split["test"]) == ids
    assert split["train"] == sorted(split["train"]) and split["test"] == sorted(split["test"])
    # the documented rule, written out
    perm = np.random.RandomState(0).permutation(len(ids))
    assert split["test"] == sorted(ids[i] for i in perm[:20])
    assert dsb2018_split(REAL_ROOT) == split  # deterministic
    assert dsb2018_split(REAL_ROOT, seed=1)["test"] != split["test"]
    assert [d["id"] for d in dsb2018_datalist(REAL_ROOT, split="test")] == split["test"]
    assert [d["id"] for d in dsb2018_datalist(REAL_ROOT, split="train")] == split["train"]
    # index typed values agree with the csv
    index = dsb2018_index(REAL_ROOT)
    by_id = {r["image_id"]: r for r in rows}
    for r in index[:5]:
        raw = by_id[r["image_id"]]
        assert (r["height"], r["width"], r["channels"]) == (
            int(raw["height"]),
            int(raw["width"]),
            int(raw["channels"]),
        )


@needs_real
@pytest.mark.parametrize("channels", [4, 3])
def test_real_read_matches_pil(channels):
    rows = [r for r in _real_index_rows() if int(r["channels"]) == channels]
    # the first square and the first non-square image of this channel count
    square = [r for r in rows if r["height"] == r["width"]][:1]
    picks = square + [r for r in rows if r["height"] != r["width"]][:1]
    assert len(picks) == 2
    data = dsb2018_datalist(REAL_ROOT, ids=[r["image_id"] for r in picks])
    assert [d["id"] for d in data] == [r["image_id"] for r in picks]
    raw_t = dsb2018_transforms(binary_label=False, scale_intensity=False)
    bin_t = dsb2018_transforms()
    for d, r in zip(data, picks, strict=True):
        pil_img = np.asarray(Image.open(d["image"]))
        pil_lab = np.asarray(Image.open(d["label"]))
        h, w = int(r["height"]), int(r["width"])
        assert pil_img.shape == (h, w, channels) and pil_lab.dtype == np.uint16

        out = raw_t(d)
        assert tuple(out["image"].shape) == (3, h, w)
        assert tuple(out["label"].shape) == (1, h, w)
        np.testing.assert_array_equal(out["image"].numpy(), np.moveaxis(pil_img[..., :3], -1, 0))
        np.testing.assert_array_equal(out["label"].numpy()[0], pil_lab.astype(np.float32))
        assert int(out["label"].max()) == int(r["n_nuclei"]) == int(pil_lab.max())

        out = bin_t(d)
        np.testing.assert_array_equal(out["label"].numpy()[0], (pil_lab > 0).astype(np.float32))
        np.testing.assert_allclose(
            out["image"].numpy(), np.moveaxis(pil_img[..., :3], -1, 0) / 255.0, rtol=1e-6
        )
        np.testing.assert_allclose(
            float(out["label"].mean()), float(r["foreground_fraction"]), atol=5e-5
        )


def test_synthetic_reads_16bit_labels_and_rgba(tiny):
    data = dsb2018_datalist(tiny)
    assert [d["id"] for d in data] == ["a", "b", "c"]
    out = dsb2018_transforms(binary_label=False, scale_intensity=False)(data[1])  # "b": RGBA
    pil_img = np.asarray(Image.open(data[1]["image"]))
    assert tuple(out["image"].shape) == (3, 6, 5)
    np.testing.assert_array_equal(out["image"].numpy(), np.moveaxis(pil_img[..., :3], -1, 0))
    assert sorted(np.unique(out["label"].numpy()).tolist()) == [0.0, 1.0, 300.0]
    out = dsb2018_transforms()(data[1])
    assert sorted(np.unique(out["label"].numpy()).tolist()) == [0.0, 1.0]


def test_ids_order_and_errors(tiny):
    assert [d["id"] for d in dsb2018_datalist(tiny, ids=["c", "a"])] == ["c", "a"]
    with pytest.raises(ValueError, match=r"not in .*index\.csv.*\['zz'\]"):
        dsb2018_datalist(tiny, ids=["a", "zz"])
    with pytest.raises(ValueError, match="duplicated"):
        dsb2018_datalist(tiny, ids=["a", "a"])
    with pytest.raises(TypeError, match="single str"):
        dsb2018_datalist(tiny, ids="a")
    with pytest.raises(ValueError, match="either ids or split"):
        dsb2018_datalist(tiny, ids=["a"], split="train")
    with pytest.raises(ValueError, match="split must be one of"):
        dsb2018_datalist(tiny, split="val")


def test_missing_root_index_and_files(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dsb2018_datalist(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"index\.csv"):
        dsb2018_datalist(empty)
    (tiny / "labels" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"label file .*b\.png"):
        dsb2018_datalist(tiny)
    assert len(dsb2018_datalist(tiny, ids=["a", "c"])) == 2
    (tiny / "images" / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image file .*c\.png"):
        dsb2018_datalist(tiny, ids=["c"])


def test_bad_index(tmp_path):
    root = _make_folder(tmp_path / "d", {"a": (4, 4, 3)})
    text = (root / "index.csv").read_text()
    (root / "index.csv").write_text(text.replace("n_nuclei", "count"))
    with pytest.raises(ValueError, match="missing \\['n_nuclei'\\]"):
        dsb2018_index(root)
    (root / "index.csv").write_text(text + text.splitlines()[1] + "\n")
    with pytest.raises(ValueError, match="duplicated image_id"):
        dsb2018_index(root)
    (root / "index.csv").write_text(text.splitlines()[0] + "\na,x,4,3,2,0.5\n")
    with pytest.raises(ValueError, match="line 2: malformed row"):
        dsb2018_index(root)


def test_split_arguments(tiny):
    s = dsb2018_split(tiny, num_test=1, seed=3)
    assert len(s["test"]) == 1 and len(s["train"]) == 2
    ids = ["a", "b", "c"]
    assert s["test"] == [ids[int(np.random.RandomState(3).permutation(3)[0])]]
    assert dsb2018_split(tiny, num_test=0)["test"] == []
    assert dsb2018_split(tiny, num_test=3)["train"] == []
    with pytest.raises(ValueError, match=r"num_test must be in \[0, 3\]"):
        dsb2018_split(tiny, num_test=4)
    with pytest.raises(TypeError, match="num_test must be an int"):
        dsb2018_split(tiny, num_test=1.5)
    with pytest.raises(ValueError, match="seed must be in"):
        dsb2018_split(tiny, seed=-1)


def test_prepare_transform_errors_and_arrays():
    t = PrepareDSB2018d()
    img = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    with pytest.raises(ValueError, match="channel-first with >= 3 channels"):
        t({"image": img, "label": torch.zeros(1, 3, 3)})
    with pytest.raises(ValueError, match="spatial shape"):
        t({"image": torch.zeros(3, 3, 3), "label": torch.zeros(1, 3, 4)})
    with pytest.raises(ValueError, match="1 channel"):
        t({"image": torch.zeros(3, 3, 3), "label": torch.zeros(2, 3, 3)})
    with pytest.raises(KeyError, match="label"):
        t({"image": torch.zeros(3, 3, 3)})
    with pytest.raises(ValueError, match="num_channels"):
        PrepareDSB2018d(num_channels=0)
    gray = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    lab = np.array([[[0, 2, 5], [0, 0, 1], [7, 0, 0]]], dtype=np.float32)
    out = t({"image": gray, "label": lab})
    np.testing.assert_array_equal(out["image"], np.repeat(gray, 3, axis=0))
    np.testing.assert_array_equal(out["label"], (lab > 0).astype(np.float32))
    out = PrepareDSB2018d(label_key=None)({"image": torch.zeros(4, 2, 2)})
    assert tuple(out["image"].shape) == (3, 2, 2)


# --- converter from the official release (Kaggle layouts)

SPECS = {"aa01": (9, 7, "RGBA", 3), "bb02": (6, 11, "RGB", 2)}  # id: (H, W, mode, nuclei)


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
    truth = write_dsb2018_kaggle(tmp_path / "stage1_train", SPECS)
    rows = convert_dsb2018(tmp_path / "stage1_train", tmp_path / "out")
    assert [r["image_id"] for r in rows] == sorted(SPECS)
    _check_output(tmp_path / "out", tmp_path / "stage1_train", truth)
    # the bundle's reader takes the output as it is
    item = dsb2018_transforms(binary_label=False)(dsb2018_datalist(tmp_path / "out")[0])
    assert tuple(item["image"].shape) == (3, 9, 7) and int(item["label"].max()) == 3
    assert dsb2018_root(tmp_path / "out") == str(tmp_path / "out")


def test_stage1_test_with_solution_csv(tmp_path):
    src = tmp_path / "stage1_test"
    truth = write_dsb2018_kaggle(src, SPECS, tmp_path / "stage1_solution.csv", seed=10)
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


def test_convert_errors(tmp_path):
    src = tmp_path / "stage1_train"
    write_dsb2018_kaggle(src, SPECS)
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
    write_dsb2018_image(test_src / "cc03" / "images" / "cc03.png", 4, 4, "RGB", 0)
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
    write_dsb2018_kaggle(tmp_path / "stage1_train", SPECS)
    with pytest.raises(FileNotFoundError, match="official Kaggle layout") as err:
        dsb2018_root(tmp_path / "stage1_train")
    assert "convert-dsb2018" in str(err.value)


def test_convert_cli(tmp_path, capsys):
    from monai_calib.__main__ import main as root_main

    truth = write_dsb2018_kaggle(tmp_path / "stage1_train", SPECS)
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
