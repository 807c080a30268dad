# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Own data through a MONAI datalist: a tiny data set in each layout ``make-datalist`` converts
(folder per class, CSV, MedMNIST-style npz, plus a hand-written NIfTI datalist) trains every
bundle family for one epoch with ``_shared/<family>/datalist.json``, then evaluates on its test
section; ``compare --datalist`` runs end to end; a ``num_classes`` that does not fit the datalist
stops the run before training, naming the entry."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from datalist_data import (
    CLASSES,
    write_class_folders,
    write_multilabel_npz,
    write_nifti_datalist,
    write_segmentation_csv,
)
from monai.bundle import ConfigParser, ConfigWorkflow

from monai_calib.bundles import BUNDLE_FAMILIES, bundle_dir, datalist_overlay, logging_file
from monai_calib.cli.make_datalist import main as make_datalist
from monai_calib.data import DATALIST_SPLIT_FILE


@pytest.fixture(scope="module")
def folder_datalist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    write_class_folders(root / "lesions")
    assert make_datalist(["folder", str(root / "lesions"), "-o", str(root / "lesions.json")]) == 0
    return root / "lesions.json"


def _files(name: str, evaluate: bool = False) -> list[str]:
    configs = Path(bundle_dir(name)) / "configs"
    files = [str(configs / "train.json"), datalist_overlay(name)]
    return [*files, str(configs / "evaluate.json")] if evaluate else files


def _run(name: str, evaluate: bool = False, **overrides) -> None:
    """What ``python -m monai.bundle run`` does with the bundle's metadata and logging."""
    wf = ConfigWorkflow(
        config_file=_files(name, evaluate),
        meta_file=str(Path(bundle_dir(name)) / "configs" / "metadata.json"),
        logging_file=logging_file(name),
        workflow_type=None,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()


def _train_evaluate(name: str, datalist: Path, out: Path, **overrides) -> dict:
    ov = {
        "max_epochs": 1,
        "seed": 0,
        "datalist": str(datalist),
        "output_dir": str(out),
        **overrides,
    }
    _run(name, **ov)
    assert (out / "models" / "model.pt").is_file()
    _run(name, evaluate=True, **ov)
    return json.loads((out / "eval" / "metrics.json").read_text())


def test_every_bundle_has_a_datalist_overlay_of_its_family():
    for name, family in BUNDLE_FAMILIES.items():
        assert Path(datalist_overlay(name)).parts[-2:] == (family, "datalist.json")


def test_classification_from_a_folder_per_class(folder_datalist, tmp_path):
    metrics = _train_evaluate("medmnist_classification", folder_datalist, tmp_path, batch_size=8)
    split = json.loads((tmp_path / DATALIST_SPLIT_FILE).read_text())
    # validation and test were carved out of the 18 training images, disjointly
    sections = [split[k] for k in ("training", "validation", "test")]
    images = [e["image"] for s in sections for e in s]
    assert len(images) == len(set(images)) == 18 and all(sections)
    assert split["labels"] == list(CLASSES)
    # evaluation ran on the written test section: one prediction row per test entry, 3 classes
    pred = torch.from_numpy(np.load(tmp_path / "eval" / "predictions.npz")["probs"])
    assert pred.shape == (len(split["test"]), 3)
    assert 0.0 <= metrics["ece"] <= 1.0


@pytest.mark.parametrize("name", ["pad_ufes20_classification", "rfmid_multilabel"])
def test_the_other_bundles_of_a_family_read_the_datalist(name, folder_datalist, tmp_path):
    task = BUNDLE_FAMILIES[name]
    datalist = folder_datalist
    if task == "multilabel":  # the folder's classes as one-hot rows
        raw = json.loads(folder_datalist.read_text())
        for e in raw["training"]:
            e["image"] = str((folder_datalist.parent / e["image"]).resolve())
            e["label"] = [int(k == e["label"]) for k in range(3)]
        datalist = tmp_path / "onehot.json"
        datalist.write_text(json.dumps(raw))
    parser = ConfigParser()
    parser.read_config(_files(name, evaluate=True))
    parser.update({"datalist": str(datalist), "output_dir": str(tmp_path), "image_size": 16})
    ds = parser.get_parsed_content("validate#dataset")
    assert parser.get_parsed_content("num_classes") == 3
    assert parser.get_parsed_content("in_channels") == 1
    assert parser.get_parsed_content("label_names") == list(CLASSES)
    split = json.loads((tmp_path / DATALIST_SPLIT_FILE).read_text())
    assert len(ds) == len(split["test"])  # evaluate.json's eval_split reaches the data set


def test_multilabel_from_a_medmnist_style_npz(tmp_path):
    write_multilabel_npz(tmp_path / "mine.npz")
    out = tmp_path / "unpacked"
    names = "effusion,nodule,mass,edema"
    assert (
        make_datalist(["npz", str(tmp_path / "mine.npz"), "-o", str(out), "--labels", names]) == 0
    )
    metrics = _train_evaluate(
        "chestmnist_multilabel", out / "datalist.json", tmp_path / "run", batch_size=4
    )
    # 4 labels from the datalist, not ChestMNIST's 14
    assert {"ece", "auc_macro"} <= set(metrics)
    pred = np.load(tmp_path / "run" / "eval" / "predictions.npz")
    assert pred["probs"].shape == (4, 4)


def test_2d_segmentation_from_a_csv(tmp_path):
    csv = write_segmentation_csv(tmp_path / "cells")
    dl = tmp_path / "cells.json"
    assert make_datalist(["csv", str(csv), "-o", str(dl), "--labels", "background,cell"]) == 0
    metrics = _train_evaluate(
        "cell_segmentation",
        dl,
        tmp_path / "run",
        batch_size=2,
        num_samples=1,
        image_size=32,
        datalist_val_fraction=0.2,
        datalist_test_fraction=0.2,
    )
    assert {"dice", "ece"} <= set(metrics)
    split = json.loads((tmp_path / "run" / DATALIST_SPLIT_FILE).read_text())
    assert [len(split[k]) for k in ("training", "validation", "test")] == [4, 1, 1]


def test_3d_segmentation_from_a_nifti_datalist(tmp_path):
    dl = write_nifti_datalist(tmp_path / "organs")
    metrics = _train_evaluate(
        "organ_segmentation",
        dl,
        tmp_path / "run",
        batch_size=1,
        num_samples=1,
        image_size=16,
        datalist_pixdim=[4.0, 4.0, 4.0],
    )
    assert {"dice", "ece"} <= set(metrics)


def test_a_num_classes_that_does_not_fit_stops_before_training(folder_datalist, tmp_path):
    with pytest.raises(Exception) as err:
        _run(
            "medmnist_classification",
            max_epochs=1,
            datalist=str(folder_datalist),
            output_dir=str(tmp_path),
            num_classes=2,
        )
    exc, causes = err.value, []
    while exc is not None:  # ConfigWorkflow wraps the original error
        causes.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    text = "\n".join(causes)
    assert "num_classes=2" in text and "label 2 is out of range" in text
    assert "training[" in text or "validation[" in text or "test[" in text
    assert not (tmp_path / "models").exists()  # nothing trained


def test_compare_runs_on_a_datalist(folder_datalist, tmp_path):
    from monai_calib.cli.compare import main

    rc = main(
        [
            "--datalist", str(folder_datalist), "--losses", "ce", "--epochs", "1",
            "--batch-size", "8", "--bootstrap", "0", "--no-plots", "--output", str(tmp_path),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["dataset"] == "lesions"
    assert (tmp_path / "runs" / "ce_seed0" / DATALIST_SPLIT_FILE).is_file()


def test_compare_datalist_excludes_dataset_and_checks_the_file(tmp_path, capsys):
    from monai_calib.cli.compare import main

    assert main(["--datalist", str(tmp_path / "nope.json"), "--output", str(tmp_path)]) != 0
    assert "nope.json" in capsys.readouterr().err
    (tmp_path / "d.json").write_text("{}")
    rc = main(["--datalist", str(tmp_path / "d.json"), "--dataset", "x", "--output", str(tmp_path)])
    assert rc != 0 and "--datalist" in capsys.readouterr().err


def _own_data_commands(name: str) -> list[list[str]]:
    """The config-file lists of the bundle doc's "Your own data" commands, with B and S set."""
    root = Path(bundle_dir(name))
    doc = (root / "docs" / "README.md").read_text()
    block = doc[doc.index("### Your own data") :].split("\n## ", 1)[0]
    lists = re.findall(r'--config_file "(\[.*?\])"', block)
    shared = str(root.parent / "_shared")
    return [ast.literal_eval(s.replace("$B", str(root)).replace("$S", shared)) for s in lists]


@pytest.fixture(scope="module")
def own_data(tmp_path_factory, folder_datalist) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("docs")
    raw = json.loads(folder_datalist.read_text())
    for e in raw["training"]:
        e["image"] = str((folder_datalist.parent / e["image"]).resolve())
        e["label"] = [int(k == e["label"]) for k in range(3)]
    (root / "onehot.json").write_text(json.dumps(raw))
    csv = write_segmentation_csv(root / "cells")
    make_datalist(["csv", str(csv), "-o", str(root / "cells.json")])
    return {
        "classification": folder_datalist,
        "multilabel": root / "onehot.json",
        "cell_segmentation": root / "cells.json",
        "organ_segmentation": write_nifti_datalist(root / "organs"),
    }


@pytest.mark.parametrize("name", sorted(BUNDLE_FAMILIES))
def test_bundle_docs_own_data_commands_resolve(name, own_data, tmp_path):
    commands = _own_data_commands(name)
    assert len(commands) == 2 and commands[1][:-1] == commands[0]  # train, then + evaluate.json
    assert Path(commands[1][-1]).name == "evaluate.json"
    family = BUNDLE_FAMILIES[name]
    datalist = own_data.get(name, own_data.get(family))
    for files in commands:
        assert all(Path(f).is_file() for f in files), files
        parser = ConfigParser()
        parser.read_config(files)
        parser.update({"datalist": str(datalist), "output_dir": str(tmp_path), "image_size": 32})
        expected = 2 if family == "segmentation" else 3  # masks 0/1 (inferred, named); 3 classes
        assert parser.get_parsed_content("num_classes") == expected
        split = json.loads((tmp_path / DATALIST_SPLIT_FILE).read_text())
        section = "test" if Path(files[-1]).name == "evaluate.json" else "validation"
        assert len(parser.get_parsed_content("validate#dataset")) == len(split[section])
