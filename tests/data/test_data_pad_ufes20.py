# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""PAD-UFES-20 adapter: items, patient-level splits and every error path, on a synthetic folder
written in the release's layout (metadata.csv with its 26 columns, images/<img_id>)."""

from __future__ import annotations

import csv
import math
import os
import random
import re
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from synthetic import write_pad_ufes20_folder

from monai_calib.data import (
    PAD_UFES20_CLASSES,
    PADUFES20Dataset,
    pad_ufes20_datalist,
    pad_ufes20_info,
    pad_ufes20_patient_split,
)

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pad")
    rows = write_pad_ufes20_folder(root, num_patients=12, images_per_patient=(1, 2, 3, 4))
    return str(root), rows


@pytest.fixture
def copy(folder, tmp_path):
    """A private copy of the folder that a test may break."""
    dst = tmp_path / "pad"
    shutil.copytree(folder[0], dst)
    return str(dst)


def _read_csv(root):
    with open(os.path.join(root, "metadata.csv"), newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _write_csv(root, header, rows):
    with open(os.path.join(root, "metadata.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def test_synthetic_folder_is_what_the_tests_claim(folder):
    root, rows = folder
    assert len(rows) == 30 and len({r["patient_id"] for r in rows}) == 12
    assert {r["mode"] for r in rows} == {"RGB", "RGBA"}
    assert len({r["size"] for r in rows}) > 1
    assert {r["diagnostic"] for r in rows} == set(PAD_UFES20_CLASSES)
    header, _ = _read_csv(root)
    assert len(header) == 26 and {"patient_id", "lesion_id", "img_id", "diagnostic"} <= set(header)


def test_info_and_classes():
    info = pad_ufes20_info()
    assert PAD_UFES20_CLASSES == ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
    assert info["num_classes"] == 6 and info["num_channels"] == 3
    assert info["class_names"] == list(PAD_UFES20_CLASSES) and not info["multi_label"]


def test_items_shapes_dtypes_and_labels(folder):
    root, rows = folder
    by_id = {r["img_id"]: r for r in rows}
    for split in SPLITS:
        ds = PADUFES20Dataset(root, split, image_size=32)
        assert ds.num_classes == 6 and ds.class_names == list(PAD_UFES20_CLASSES)
        assert len(ds) == len(ds.datalist) == len(ds.labels)
        for i in range(len(ds)):
            item = ds[i]
            assert set(item) == {"image", "label"}
            assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
            assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
            assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
            written = by_id[ds.datalist[i]["img_id"]]
            assert int(item["label"]) == written["label"] == ds.labels[i]
            assert PAD_UFES20_CLASSES[int(item["label"])] == written["diagnostic"]


def test_pixels_native_size_exact_and_resized_mean_kept(folder):
    root, rows = folder
    ds = PADUFES20Dataset(root, "all", image_size=32)
    n_exact = 0
    for i, entry in enumerate(ds.datalist):
        with Image.open(entry["image"]) as im:
            raw = np.asarray(im, dtype=np.float64) / 255.0
        rgb = torch.from_numpy(raw[..., :3].transpose(2, 0, 1))  # alpha dropped
        got = ds[i]["image"].double()
        if raw.shape[:2] == (32, 32):
            torch.testing.assert_close(got, rgb, atol=1e-6, rtol=0)
            n_exact += 1
        else:  # bilinear resizing keeps each channel's mean intensity closely
            torch.testing.assert_close(got.mean((1, 2)), rgb.mean((1, 2)), atol=0.02, rtol=0)
    rgba_32 = [r for r in rows if r["size"] == (32, 32) and r["mode"] == "RGBA"]
    assert n_exact > 0 and rgba_32  # the exact check covered an RGBA image too


def test_image_size_pair_transform_and_cache(folder):
    root, _ = folder

    def transform(item):
        return {**item, "image": item["image"] * 2.0, "seen": True}

    ds = PADUFES20Dataset(root, "train", image_size=(20, 28), transform=transform, cache=True)
    first = ds[0]
    assert first["image"].shape == (3, 20, 28) and first["seen"]
    plain = PADUFES20Dataset(root, "train", image_size=(20, 28))
    torch.testing.assert_close(first["image"], plain[0]["image"] * 2.0)
    torch.testing.assert_close(ds[0]["image"], first["image"])  # from the cache, same values
    assert 0 in ds._cache and not plain._cache


def test_dataloader_batches(folder):
    loader = torch.utils.data.DataLoader(PADUFES20Dataset(folder[0], "train", 16), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].shape == (4,)


def test_splits_partition_the_metadata_by_patient(folder):
    root, rows = folder
    lists = {s: pad_ufes20_datalist(root, s) for s in SPLITS}
    patients = {s: {r["patient_id"] for r in lists[s]} for s in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not patients[a] & patients[b], (a, b)
    ids = [r["img_id"] for s in SPLITS for r in lists[s]]
    assert sorted(ids) == sorted(r["img_id"] for r in rows)  # count in = count out
    assert [r["img_id"] for r in pad_ufes20_datalist(root, "all")] == [r["img_id"] for r in rows]
    # every image of a patient is in the patient's split
    for s in SPLITS:
        assert len(lists[s]) == sum(r["patient_id"] in patients[s] for r in rows)


def test_split_rule_as_documented(folder):
    root, rows = folder
    patients = sorted({r["patient_id"] for r in rows})
    n = len(patients)
    for seed, (fv, ft) in ((0, (0.15, 0.15)), (3, (0.25, 0.1)), (7, (0.0, 0.3))):
        order = [patients[i] for i in np.random.default_rng(seed).permutation(n)]
        a = math.floor(n * (1 - fv - ft) + 0.5)
        b = math.floor(n * (1 - ft) + 0.5)
        expected = {"train": order[:a], "val": order[a:b], "test": order[b:]}
        assert pad_ufes20_patient_split([r["patient_id"] for r in rows], fv, ft, seed) == expected
        for s in SPLITS:
            if not expected[s]:
                continue
            got = {r["patient_id"] for r in pad_ufes20_datalist(root, s, fv, ft, seed)}
            assert got == set(expected[s])
    sizes = {s: len(v) for s, v in pad_ufes20_patient_split(patients).items()}
    assert sizes == {"train": 8, "val": 2, "test": 2}  # 12 patients at 70/15/15 %


def test_split_is_deterministic_and_seeded(folder):
    root, _ = folder

    def split_ids(seed):
        return {s: [r["img_id"] for r in pad_ufes20_datalist(root, s, seed=seed)] for s in SPLITS}

    assert split_ids(0) == split_ids(0)
    assert any(split_ids(seed) != split_ids(0) for seed in (1, 2, 3))
    ds = PADUFES20Dataset(root, "test", image_size=8, seed=5)
    assert [r["img_id"] for r in ds.datalist] == split_ids(5)["test"]


def test_split_ignores_row_order(copy):
    header, rows = _read_csv(copy)
    before = {s: {r["img_id"] for r in pad_ufes20_datalist(copy, s)} for s in SPLITS}
    random.Random(0).shuffle(rows)
    _write_csv(copy, header, rows)
    after = {s: {r["img_id"] for r in pad_ufes20_datalist(copy, s)} for s in SPLITS}
    assert before == after


def test_official_subfolder_layout(tmp_path):
    rows = write_pad_ufes20_folder(tmp_path, num_patients=6, images_per_patient=2, subfolders=True)
    assert {d.name for d in (tmp_path / "images").iterdir()} == {"imgs_part_1", "imgs_part_2"}
    ds = PADUFES20Dataset(str(tmp_path), "all", image_size=8)
    assert len(ds) == len(rows)
    assert ds[0]["image"].shape == (3, 8, 8)


def test_img_id_without_extension(copy):
    header, rows = _read_csv(copy)
    for r in rows:
        r["img_id"] = r["img_id"][: -len(".png")]
    _write_csv(copy, header, rows)
    assert len(pad_ufes20_datalist(copy, "all")) == len(rows)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    fv=st.floats(0.0, 0.45),
    ft=st.floats(0.0, 0.45),
    seed=st.integers(0, 2**31 - 1),
)
def test_patient_split_property(n, fv, ft, seed):
    ids = [f"PAT_{i}" for i in range(n)] * 2  # repeats: one entry per image
    groups = pad_ufes20_patient_split(ids, fv, ft, seed)
    flat = groups["train"] + groups["val"] + groups["test"]
    assert sorted(flat) == sorted(set(ids))  # a partition of the patients
    assert len(groups["train"]) == math.floor(n * (1 - fv - ft) + 0.5)
    assert len(groups["test"]) == n - math.floor(n * (1 - ft) + 0.5)
    assert pad_ufes20_patient_split(list(reversed(ids)), fv, ft, seed) == groups


# --------------------------------------------------------------------------- errors


def test_data_root_none_says_pass_data_root():
    with pytest.raises(FileNotFoundError, match="--data_root"):
        PADUFES20Dataset(None)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pad_ufes20_datalist(tmp_path / "nowhere")


def test_missing_metadata(copy):
    os.remove(os.path.join(copy, "metadata.csv"))
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv"):
        pad_ufes20_datalist(copy)


def test_missing_images_folder(copy):
    shutil.rmtree(os.path.join(copy, "images"))
    with pytest.raises(FileNotFoundError, match="images"):
        pad_ufes20_datalist(copy)


@pytest.mark.parametrize("column", ["patient_id", "img_id", "diagnostic"])
def test_missing_column_is_named(copy, column):
    header, rows = _read_csv(copy)
    header.remove(column)
    for r in rows:
        del r[column]
    _write_csv(copy, header, rows)
    with pytest.raises(ValueError, match=f"lacks the column.*'{column}'"):
        pad_ufes20_datalist(copy)


def test_missing_image_file_is_named(copy, folder):
    _, rows = folder
    victim = rows[7]["img_id"]
    os.remove(os.path.join(copy, "images", victim))
    with pytest.raises(FileNotFoundError, match=f"1 of 30 .*{re.escape(victim)}"):
        PADUFES20Dataset(copy, "train")  # checked whatever the split


def test_unknown_diagnostic_names_value_row_and_codes(copy):
    header, rows = _read_csv(copy)
    rows[4]["diagnostic"] = "MELANOMA"
    _write_csv(copy, header, rows)
    with pytest.raises(ValueError) as info:
        pad_ufes20_datalist(copy, "test")
    msg = str(info.value)
    assert "'MELANOMA'" in msg and rows[4]["img_id"] in msg
    assert all(code in msg for code in PAD_UFES20_CLASSES)


def test_duplicate_img_id(copy):
    header, rows = _read_csv(copy)
    rows[3]["img_id"] = rows[2]["img_id"]
    _write_csv(copy, header, rows)
    with pytest.raises(ValueError, match=re.escape(rows[2]["img_id"])):
        pad_ufes20_datalist(copy)


def test_empty_split_names_split_and_fractions(folder):
    with pytest.raises(ValueError, match=r"'val'.*val_fraction=0\.0.*test_fraction=0\.15"):
        PADUFES20Dataset(folder[0], "val", val_fraction=0.0)
    with pytest.raises(ValueError, match=r"'test'.*test_fraction=0\.01"):
        pad_ufes20_datalist(folder[0], "test", test_fraction=0.01)  # 12 * 0.01 rounds to 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "validation"}, "split must be one of"),
        ({"val_fraction": 1.2}, "val_fraction must be a number in"),
        ({"test_fraction": -0.1}, "test_fraction must be a number in"),
        ({"val_fraction": "0.1"}, "val_fraction must be a number in"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction \+ test_fraction must be"),
    ],
)
def test_bad_options(folder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pad_ufes20_datalist(folder[0], **kwargs)


@pytest.mark.parametrize("size", [0, -3, (32,), (32, 0), 32.5, "64", True])
def test_bad_image_size(folder, size):
    with pytest.raises(ValueError, match="image_size"):
        PADUFES20Dataset(folder[0], "train", image_size=size)


def test_image_in_two_subfolders_is_an_error_only_if_used(tmp_path):
    rows = write_pad_ufes20_folder(tmp_path, num_patients=4, images_per_patient=2, subfolders=True)
    images = tmp_path / "images"
    stray = images / "imgs_part_3"
    stray.mkdir()
    (stray / "unrelated.png").write_bytes((images / "imgs_part_1" / rows[0]["img_id"]).read_bytes())
    shutil.copy(images / "imgs_part_1" / rows[0]["img_id"], images / "unrelated.png")
    assert len(pad_ufes20_datalist(str(tmp_path), "all")) == len(rows)  # unused duplicate: fine
    shutil.copy(images / "imgs_part_1" / rows[0]["img_id"], stray / rows[0]["img_id"])
    with pytest.raises(ValueError, match=f"{re.escape(rows[0]['img_id'])}.*more than once"):
        pad_ufes20_datalist(str(tmp_path), "all")


def test_empty_patient_id_cell(copy):
    header, rows = _read_csv(copy)
    rows[5]["patient_id"] = " "
    _write_csv(copy, header, rows)
    with pytest.raises(ValueError, match="line 7: empty"):
        pad_ufes20_datalist(copy)


def test_one_image_named_twice_with_and_without_extension(copy):
    """``PAT_0.png`` and ``PAT_0`` name one file: rejected, else it lands in two splits."""
    header, rows = _read_csv(copy)
    rows[5]["img_id"] = rows[0]["img_id"][: -len(".png")]  # another patient's row, same file
    _write_csv(copy, header, rows)
    with pytest.raises(ValueError, match=re.escape(rows[0]["img_id"])) as info:
        pad_ufes20_datalist(copy, "all")
    assert "lines 2 and 7" in str(info.value)


def test_truncated_png_names_the_file(copy):
    ds = PADUFES20Dataset(copy, "all")
    path = ds.datalist[1]["image"]
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(OSError, match=re.escape(f"cannot read image {path!r}")):
        ds[1]
