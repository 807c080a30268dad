# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The PAD-UFES-20 classification bundle: configs resolve, metadata verifies, the overlays and
shared configs are the MedMNIST bundle's, and a one-epoch CE train / evaluate / inference run
works on a synthetic folder in PAD-UFES-20's layout."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_pad_ufes20_folder

from monai_calib.bundles import bundle_dir, logging_file, overlays
from monai_calib.data import PAD_UFES20_CLASSES, pad_ufes20_datalist

BUNDLE = "pad_ufes20_classification"
DEFAULTS = {"image_size": 32, "max_epochs": 1, "batch_size": 16, "seed": 0}
ROOT = Path(bundle_dir(BUNDLE))
CONFIGS = ROOT / "configs"
MEDMNIST_CONFIGS = ROOT.parent / "medmnist_classification" / "configs"
LOSSES = list(overlays(BUNDLE))


def test_bundle_files_exist():
    for rel in ("LICENSE", "docs/README.md", "docs/data_license.txt"):
        assert (ROOT / rel).is_file(), rel
    for name in ("train", "evaluate", "inference", "metadata", "multi_gpu_train"):
        assert (CONFIGS / f"{name}.json").is_file(), name
    assert Path(logging_file(BUNDLE)).is_file()


def test_overlays_are_the_medmnist_bundles():
    expected = {"ce", "ls", "focal", "dca", "mdca", "ls_plus", "tet", "mit", "mit_init", "cct_eal"}
    assert expected <= set(LOSSES)
    # one file each, shared by the classification family
    for kind in ("loss", "regime"):
        assert overlays(BUNDLE, kind) == overlays("medmnist_classification", kind)
    assert logging_file(BUNDLE) == logging_file("medmnist_classification")


@pytest.mark.parametrize("name", ["evaluate.json", "multi_gpu_train.json"])
def test_shared_configs_are_the_medmnist_bundles(name):
    assert (CONFIGS / name).read_text() == (MEDMNIST_CONFIGS / name).read_text()


# ids whose value is PAD-UFES-20's own; every other id must equal the MedMNIST bundle's
OWN_IDS = {"bundle_root", "dataset_flag", "image_size", "task_info", "dataset"}
MEDMNIST_ONLY = {"download"}
PAD_ONLY = {"val_fraction", "test_fraction", "split_seed", "cache_images"}


def _compare_tree(pad, med, path=""):
    assert set(pad) - PAD_ONLY == set(med) - MEDMNIST_ONLY, path or "top level"
    for key in set(pad) & set(med):
        if key in OWN_IDS:
            continue
        if isinstance(pad[key], dict) and isinstance(med[key], dict):
            _compare_tree(pad[key], med[key], f"{path}#{key}")
        else:
            assert pad[key] == med[key], f"{path}#{key}"


@pytest.mark.parametrize("name", ["train.json", "inference.json"])
def test_structure_mirrors_the_medmnist_bundle(name):
    pad = json.loads((CONFIGS / name).read_text())
    med = json.loads((MEDMNIST_CONFIGS / name).read_text())
    _compare_tree(pad, med)
    assert pad["bundle_root"] == "$monai_calib.bundles.bundle_dir('pad_ufes20_classification')"
    sections = [pad["train"], pad["validate"]] if name == "train.json" else [pad]
    for section in sections:
        assert section["dataset"]["_target_"] == "monai_calib.data.PADUFES20Dataset"


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        device="cpu",
    )


def test_config_ids_users_override_exist(bundle):
    parser = bundle.parser(["train.json"])
    # own ids; the ids every bundle has: test_bundles_common.COMMON_IDS
    assert {"val_fraction", "test_fraction", "split_seed"} <= set(parser.get())
    assert parser.get("data_root") is None and parser.get("image_size") == 64
    assert os.path.isdir(parser.get_parsed_content("bundle_root"))
    assert parser.get_parsed_content("num_classes") == 6
    net = parser.get_parsed_content("network_def")
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 6)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    # 20 patients x one image of each class: 3 patients (18 images) in val and in test.
    root = tmp_path_factory.mktemp("pad_ufes20")
    write_pad_ufes20_folder(
        root, num_patients=20, images_per_patient=6, sizes=((20, 28), (28, 20), (24, 24))
    )
    return str(root)


def test_train_evaluate_inference_one_epoch_ce(bundle, ce_run, data_root):
    test_items = pad_ufes20_datalist(data_root, "test")
    n_test = len(test_items)
    assert n_test == 18
    tmp_path = ce_run

    ckpt = tmp_path / "models" / "model.pt"
    state = torch.load(ckpt, weights_only=True)
    assert {"model", "loss"} <= set(state)
    assert state["model"]["fc.weight"].shape == (6, 128)

    run_dir = {"data_root": data_root, "output_dir": str(tmp_path)}
    bundle.run(["train.json", "loss_ce.json", "evaluate.json"], **run_dir)
    eval_dir = tmp_path / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("acc", "auc", "ece", "ace", "sce", "mce", "nll", "brier", "r_auc"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert metrics["n"] == n_test
    for png in ("reliability.png", "confidence_density.png", "retention.png"):
        assert (eval_dir / png).stat().st_size > 1000
    saved = np.load(eval_dir / "predictions.npz")
    assert saved["labels"].reshape(-1).tolist() == [r["label"] for r in test_items]

    bundle.run(["inference.json", "loss_ce.json"], **run_dir)
    with open(tmp_path / "inference" / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][3:] == list(PAD_UFES20_CLASSES)
    assert len(rows) == 1 + n_test
    probs = torch.tensor([[float(v) for v in r[3:]] for r in rows[1:]])
    torch.testing.assert_close(probs.sum(1), torch.ones(n_test), atol=1e-4, rtol=0)
    # inference reproduces the evaluation probabilities (same split, weights and transform)
    torch.testing.assert_close(probs, torch.from_numpy(saved["probs"]).float(), atol=1e-5, rtol=0)


def test_missing_data_root_tells_the_user_to_pass_it(bundle, tmp_path):
    with pytest.raises(Exception) as info:
        bundle.run(["train.json", "loss_ce.json"], data_root=None, output_dir=str(tmp_path))
    assert "--data_root" in bundle.error_text(info.value)
    assert any(isinstance(e, FileNotFoundError) for e in bundle.exceptions(info.value))


# Every overlay trains (its handlers run there); the ones whose probability transform is not a
# plain softmax also evaluate. Fewer runs keep the file fast.
OWN_PROBABILITIES = ("cct_eal", "mit", "tet")


@pytest.mark.parametrize("loss", [name for name in LOSSES if name != "ce"])
def test_every_overlay_works_with_this_train_json(bundle, loss, tmp_path, data_root, ce_run):
    extra = {"loss_name": loss, "data_root": data_root, "output_dir": str(tmp_path)}
    if loss == "ls_plus":
        extra["baseline_checkpoint"] = str(ce_run / "models" / "model.pt")
    files = ["train.json", f"loss_{loss}.json"]
    bundle.run(files, **extra)
    assert (tmp_path / "models" / "model.pt").is_file()
    if loss in OWN_PROBABILITIES:
        bundle.run([*files, "evaluate.json"], **extra)
        metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert metrics["n"] == 18
        assert all(metrics[k] == metrics[k] for k in ("acc", "auc", "ece", "nll", "brier"))


def test_multi_gpu_config_runs_as_one_cpu_process(bundle, tmp_path, data_root, monkeypatch):
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    files = ["train.json", "loss_ce.json", "multi_gpu_train.json"]
    bundle.run(files, data_root=data_root, output_dir=str(tmp_path))
    assert not dist.is_initialized()
    assert (tmp_path / "models" / "model.pt").is_file()
