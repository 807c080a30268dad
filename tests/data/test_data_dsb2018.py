# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DSB2018 data list, split and reading: the real folder vs PIL reads, synthetic error paths."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_calib.data import (
    DSB2018_INDEX_COLUMNS,
    PrepareDSB2018d,
    dsb2018_datalist,
    dsb2018_index,
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
