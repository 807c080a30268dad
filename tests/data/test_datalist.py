# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``monai_calib.data.load_datalist`` / ``DatalistDataset`` and the ``make-datalist`` converters:
what each layout becomes, the seeded split, the inferred classes, and every bad-entry check."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from datalist_data import CLASSES, write_class_folders, write_multilabel_npz
from PIL import Image

from monai_calib.cli.make_datalist import main as make_datalist
from monai_calib.data import (
    DATALIST_SPLIT_FILE,
    DatalistDataset,
    check_datalist_classes,
    load_datalist,
)


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_class_folders(tmp_path / "lesions", per_class=4, size=8)


def _write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def _gray(path: Path, size: int = 8, value: int = 100) -> str:
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path.name


# ---- converters ---------------------------------------------------------------------------------


def test_folder_per_class_labels_are_the_sorted_folder_names(folder, tmp_path):
    out = tmp_path / "dl.json"
    assert make_datalist(["folder", str(folder), "-o", str(out)]) == 0
    dl = json.loads(out.read_text())
    names = sorted(p.name for p in folder.iterdir())
    assert dl["labels"] == names == sorted(CLASSES)
    assert len(dl["training"]) == 12 and "validation" not in dl
    for e in dl["training"]:  # label = index of the image's own folder; path relative to out
        path = (out.parent / e["image"]).resolve()
        assert path.is_file() and e["label"] == names.index(path.parent.name)


def test_folder_with_split_folders_fills_the_sections(tmp_path):
    write_class_folders(tmp_path / "r" / "train", per_class=2, size=8)
    write_class_folders(tmp_path / "r" / "test", per_class=1, size=8)
    out = tmp_path / "dl.json"
    assert make_datalist(["folder", str(tmp_path / "r"), "-o", str(out)]) == 0
    dl = json.loads(out.read_text())
    assert [len(dl.get(k, [])) for k in ("training", "validation", "test")] == [6, 0, 3]


def test_csv_class_names_multi_hot_header_and_split_column(tmp_path):
    for n in range(4):
        _gray(tmp_path / f"{n}.png")
    (tmp_path / "names.csv").write_text("path,label\n0.png,cat\n1.png,dog\n2.png,cat\n3.png,emu\n")
    assert make_datalist(["csv", str(tmp_path / "names.csv"), "-o", str(tmp_path / "a.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["labels"] == ["cat", "dog", "emu"]
    assert [e["label"] for e in a["training"]] == [0, 1, 0, 2]

    rows = [["path", "effusion", "mass", "split"], ["0.png", "1", "0", "train"]]
    rows += [["1.png", "0", "1", "train"], ["2.png", "1", "1", "val"], ["3.png", "0", "0", "test"]]
    with open(tmp_path / "multi.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert make_datalist(["csv", str(tmp_path / "multi.csv"), "-o", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["labels"] == ["effusion", "mass"]
    assert [e["label"] for e in b["training"]] == [[1, 0], [0, 1]]
    assert [e["label"] for e in b["validation"]] == [[1, 1]]
    assert [e["label"] for e in b["test"]] == [[0, 0]]


def test_npz_is_unpacked_to_the_same_pixels_and_labels(tmp_path):
    write_multilabel_npz(tmp_path / "x.npz", sizes=(5, 2, 2))
    assert make_datalist(["npz", str(tmp_path / "x.npz"), "-o", str(tmp_path / "out")]) == 0
    dl = json.loads((tmp_path / "out" / "datalist.json").read_text())
    raw = np.load(tmp_path / "x.npz")
    for split, key in (("train", "training"), ("val", "validation"), ("test", "test")):
        assert len(dl[key]) == len(raw[f"{split}_images"])
        for e, img, lab in zip(
            dl[key], raw[f"{split}_images"], raw[f"{split}_labels"], strict=True
        ):
            png = np.asarray(Image.open(tmp_path / "out" / e["image"]))
            np.testing.assert_array_equal(png, img)
            assert e["label"] == lab.tolist()
    assert "labels" not in dl  # none given: load_datalist infers them


def test_converter_errors_are_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert make_datalist(["folder", str(tmp_path / "empty"), "-o", str(tmp_path / "x.json")]) == 2
    assert "no class folders" in capsys.readouterr().err


# ---- load_datalist ------------------------------------------------------------------------------


def test_missing_sections_are_a_seeded_stratified_split_written_to_the_output(folder, tmp_path):
    dl = tmp_path / "dl.json"
    make_datalist(["folder", str(folder), "-o", str(dl)])
    a = load_datalist(dl, "classification", seed=3, output_dir=tmp_path / "run")
    b = load_datalist(dl, "classification", seed=3)
    c = load_datalist(dl, "classification", seed=4)
    ids = {k: [e["image"] for e in a[k]] for k in ("train", "val", "test")}
    assert ids == {k: [e["image"] for e in b[k]] for k in ("train", "val", "test")}
    assert ids != {k: [e["image"] for e in c[k]] for k in ("train", "val", "test")}
    every = [i for v in ids.values() for i in v]
    assert len(every) == len(set(every)) == 12 and a["carved"] == ["validation", "test"]
    # round(0.2 * 12) = 2 each, and both held-out sections see 2 distinct classes of the 3
    assert len(ids["val"]) == len(ids["test"]) == 2
    assert len({e["label"] for e in a["val"]}) == len({e["label"] for e in a["test"]}) == 2
    written = json.loads((tmp_path / "run" / DATALIST_SPLIT_FILE).read_text())
    assert [e["image"] for e in written["validation"]] == ids["val"]
    # the written split is itself a datalist that reproduces the run
    again = load_datalist(tmp_path / "run" / DATALIST_SPLIT_FILE, "classification")
    assert {k: [e["image"] for e in again[k]] for k in ("train", "val", "test")} == ids
    assert again["carved"] == []


def test_classes_are_inferred_and_stated_in_the_log(tmp_path, caplog):
    for i in range(4):
        _gray(tmp_path / f"{i}.png", value=10 * i)
    items = [{"image": f"{i}.png", "label": i % 2 * 3} for i in range(4)]  # labels 0 and 3
    dl = _write(
        tmp_path / "dl.json", {"training": items[:2], "validation": items[2:3], "test": items[3:]}
    )
    with caplog.at_level(logging.INFO, logger="monai_calib.data.datalist"):
        info = load_datalist(dl, "classification")
    assert info["num_classes"] == 4 and info["label_names"] == [f"class_{k}" for k in range(4)]
    assert "4 classes inferred" in caplog.text
    assert info["num_channels"] == 1 and info["carved"] == []


def test_dataset_items_are_the_images_scaled_to_unit_range(folder, tmp_path):
    dl = tmp_path / "dl.json"
    make_datalist(["folder", str(folder), "-o", str(dl)])
    info = load_datalist(dl, "classification")
    ds = DatalistDataset(info, "train", image_size=8)
    assert len(ds) == len(info["train"])
    item = ds[0]
    expected = np.asarray(Image.open(info["train"][0]["image"]), np.float32) / 255.0
    # MONAI's PIL reader gives (W, H): the transpose of PIL's array, channel first
    np.testing.assert_allclose(item["image"][0], expected.T, atol=1e-6)
    assert item["label"].dtype == torch.long and int(item["label"]) == info["train"][0]["label"]


# ---- bad entries --------------------------------------------------------------------------------


def test_missing_file_names_the_entry(tmp_path):
    items = [{"image": _gray(tmp_path / "a.png"), "label": 0}, {"image": "gone.png", "label": 1}]
    dl = _write(tmp_path / "dl.json", {"training": items})
    with pytest.raises(FileNotFoundError, match=r"training\[1\].*gone\.png"):
        load_datalist(dl, "classification")


def test_unreadable_image_names_the_entry(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    items = [{"image": _gray(tmp_path / "a.png"), "label": 0}, {"image": "broken.png", "label": 1}]
    dl = _write(tmp_path / "dl.json", {"training": items})
    with pytest.raises(ValueError, match=r"training\[1\].*broken\.png.*could not be read"):
        load_datalist(dl, "classification")


def test_label_out_of_range_of_the_named_classes(tmp_path):
    items = [{"image": _gray(tmp_path / "a.png"), "label": 0}, {"image": "a.png", "label": 2}]
    dl = _write(tmp_path / "dl.json", {"labels": ["no", "yes"], "training": items})
    with pytest.raises(ValueError, match=r"training\[1\].*label 2 is out of range.*2 classes"):
        load_datalist(dl, "classification")


@pytest.mark.parametrize(
    "label, error, match",
    [
        ("1", TypeError, "class index"),
        (True, TypeError, "class index"),
        (-1, ValueError, ">= 0"),
        (1.5, ValueError, ">= 0"),
    ],
)
def test_label_of_the_wrong_type(tmp_path, label, error, match):
    items = [{"image": _gray(tmp_path / "a.png"), "label": label}]
    dl = _write(tmp_path / "dl.json", {"training": items})
    with pytest.raises(error, match=rf"training\[0\].*{match}"):
        load_datalist(dl, "classification")


def test_multi_hot_of_the_wrong_length_or_values(tmp_path):
    name = _gray(tmp_path / "a.png")
    short = [{"image": name, "label": [1, 0, 1]}, {"image": name, "label": [1, 0]}]
    dl = _write(tmp_path / "dl.json", {"training": short})
    with pytest.raises(ValueError, match=r"training\[1\].*2 values, expected 3"):
        load_datalist(dl, "multilabel")
    named = _write(tmp_path / "n.json", {"labels": ["a", "b"], "training": short[:1]})
    with pytest.raises(ValueError, match=r"training\[0\].*3 values, expected 2"):
        load_datalist(named, "multilabel")
    two = _write(tmp_path / "t.json", {"training": [{"image": name, "label": [0, 2]}]})
    with pytest.raises(ValueError, match="only 0 and 1"):
        load_datalist(two, "multilabel")


def test_mismatch_with_the_networks_num_classes_names_the_entry(tmp_path):
    items = [{"image": _gray(tmp_path / f"{i}.png"), "label": i} for i in range(3)]
    dl = _write(tmp_path / "dl.json", {"training": items, "validation": items, "test": items})
    info = load_datalist(dl, "classification")
    assert info["num_classes"] == 3
    with pytest.raises(ValueError, match=r"training\[2\].*label 2.*num_classes=2"):
        check_datalist_classes(info, 2)
    with pytest.raises(ValueError, match=r"names 3 classes.*num_classes=5"):
        DatalistDataset(info, "val", num_classes=5)
    hot = [{"image": items[0]["image"], "label": [0, 1, 1, 0]}]
    info = load_datalist(_write(tmp_path / "m.json", {"training": hot * 5}), "multilabel")
    with pytest.raises(ValueError, match=r"4 values but the network has num_classes=14"):
        check_datalist_classes(info, 14)


def test_segmentation_masks_are_checked(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "i.png")
    _gray(tmp_path / "m_ok.png", value=1)
    _gray(tmp_path / "m_big.png", size=6, value=1)
    _gray(tmp_path / "m_3.png", value=3)
    base = {"image": "i.png"}
    ok = _write(tmp_path / "ok.json", {"training": [{**base, "label": "m_ok.png"}] * 5})
    info = load_datalist(ok, "segmentation")
    assert info["num_classes"] == 2 and info["num_channels"] == 3
    bad = _write(tmp_path / "b.json", {"training": [{**base, "label": "m_big.png"}]})
    with pytest.raises(ValueError, match=r"training\[0\].*spatial shape \(8, 8\)"):
        load_datalist(bad, "segmentation")
    out = _write(
        tmp_path / "o.json",
        {"labels": ["bg", "fg"], "training": [{**base, "label": "m_3.png"}]},
    )
    with pytest.raises(ValueError, match=r"training\[0\].*mask value 3 is out of range"):
        load_datalist(out, "segmentation")
    three_d = _write(tmp_path / "3.json", {"training": [{**base, "label": "m_ok.png"}]})
    with pytest.raises(ValueError, match="3 spatial dimensions"):
        load_datalist(three_d, "segmentation", spatial_dims=3)


def test_datalist_not_set_or_malformed(tmp_path):
    with pytest.raises(ValueError, match="--datalist PATH"):
        load_datalist(None, "classification")
    with pytest.raises(ValueError, match="non-empty 'training'"):
        load_datalist(_write(tmp_path / "e.json", {"validation": []}), "classification")
    with pytest.raises(ValueError, match="task must be one of"):
        load_datalist(_write(tmp_path / "t.json", {"training": [{}]}), "detection")
    with pytest.raises(ValueError, match=r"training\[0\] must be an object with 'image'"):
        load_datalist(_write(tmp_path / "k.json", {"training": [{"image": "a"}]}), "multilabel")
    items = [{"image": _gray(tmp_path / "a.png"), "label": k} for k in (0, 1)]
    with pytest.raises(ValueError, match="too few to carve"):
        load_datalist(_write(tmp_path / "f.json", {"training": items}), "classification")


def test_npz_volumes_become_nifti_with_class_indices(tmp_path):
    import nibabel as nib

    rng = np.random.RandomState(0)
    vols = rng.randint(0, 255, (3, 6, 7, 8)).astype(np.uint8)
    np.savez(tmp_path / "v.npz", train_images=vols, train_labels=np.array([[0], [2], [1]]))
    assert make_datalist(["npz", str(tmp_path / "v.npz"), "-o", str(tmp_path / "o")]) == 0
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    assert [e["label"] for e in dl["training"]] == [0, 2, 1]
    for e, vol in zip(dl["training"], vols, strict=True):
        assert e["image"].endswith(".nii.gz")
        np.testing.assert_array_equal(
            np.asarray(nib.load(tmp_path / "o" / e["image"]).dataobj), vol
        )
