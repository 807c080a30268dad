# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Checks every shipped bundle shares: each config file (the bundles' own and the overlays in
``_shared/``) parses as JSON, every ``_target_`` resolves (our own classes fully qualified),
``metadata.json`` verifies against the local schema (offline), every overlay exists once, and the
``require`` family of config checks raises what it says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, verify_metadata
from monai.bundle.config_item import ComponentLocator

from monai_calib.bundles import (
    BUNDLE_FAMILIES,
    BUNDLE_NAMES,
    bundle_dir,
    logging_file,
    overlay_file,
    overlays,
    require,
    require_file,
    shared_dir,
)

ROOT = Path(bundle_dir(BUNDLE_NAMES[0])).parent
SHARED = ROOT / "_shared"
SCHEMA = ROOT / "schema" / "meta_schema_monai_calib.json"
CONFIGS = sorted([*ROOT.glob("*/configs/*.json"), *SHARED.glob("*/*.json"), *SHARED.glob("*.json")])


def config_targets(node: object, found: list[str]) -> list[str]:
    """Every ``_target_`` value in a parsed config, depth first."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                found.append(v)
            else:
                config_targets(v, found)
    elif isinstance(node, list):
        for v in node:
            config_targets(v, found)
    return found


def test_every_listed_bundle_exists_and_every_bundle_is_listed():
    on_disk = {p.parent.name for p in ROOT.glob("*/configs")}
    assert set(BUNDLE_NAMES) == on_disk


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_config_parses_and_targets_resolve(path: Path):
    cfg = json.loads(path.read_text())
    locator = ComponentLocator()
    for target in config_targets(cfg, []):
        if "." in target:
            mod, _, attr = target.rpartition(".")
            module = __import__(mod, fromlist=[attr])
            assert hasattr(module, attr), f"{path}: {target} does not resolve"
        else:
            assert locator.get_component_module_name(target) is not None, (
                f"{path}: short name {target} does not resolve"
            )
        if target.startswith("monai_calib"):
            assert target.count(".") >= 2, f"{path}: {target} is not fully qualified"


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_verify_metadata(name: str):
    verify_metadata(meta_file=str(ROOT / name / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_each_overlay_and_logging_conf_exists_once():
    """No bundle keeps a copy of a shared file: overlays live in ``_shared/<family>/`` only."""
    assert sorted(p.name for p in ROOT.glob("*/configs/loss_*.json")) == []
    assert sorted(p.name for p in ROOT.glob("*/configs/regime_*.json")) == []
    assert sorted(p.name for p in ROOT.glob("*/configs/logging.conf")) == []
    assert sorted(p.name for p in SHARED.iterdir() if p.is_dir()) == sorted(
        set(BUNDLE_FAMILIES.values())
    )
    for name, family in BUNDLE_FAMILIES.items():
        found = overlays(name)
        assert found, name
        assert {Path(p).parent for p in found.values()} == {SHARED / family}, name
        assert all(Path(p).name == f"loss_{k}.json" for k, p in found.items())
    assert Path(logging_file()).is_file() and Path(logging_file()).parent == SHARED
    assert shared_dir("cell_segmentation") == str(SHARED)


def test_a_bundle_copy_may_specialise_an_overlay(tmp_path: Path):
    """An overlay in a bundle folder's own ``configs/`` replaces the family's shared one."""
    copy = tmp_path / "medmnist_classification"
    (copy / "configs").mkdir(parents=True)
    own = copy / "configs" / "loss_mit.json"
    own.write_text("{}")
    found = overlays(str(copy))
    assert found["mit"] == str(own)
    assert found["ce"] == str(SHARED / "classification" / "loss_ce.json")
    assert overlay_file(str(copy), "converged", "regime").endswith("regime_converged.json")


def test_unknown_overlay_lists_the_valid_names():
    with pytest.raises(
        ValueError, match=r"loss overlay 'mit' not found .*\['caml', 'dice_ce', 'ml'\]"
    ):
        overlay_file("organ_segmentation", "mit")


def test_require_family(tmp_path: Path):
    assert require(1, "unused") is True
    with pytest.raises(ValueError, match=r"^data_root is not set$"):
        require(None, "data_root is not set")
    with pytest.raises(FileNotFoundError, match="nothing here"):
        require([], "nothing here", FileNotFoundError)
    path = tmp_path / "a.csv"
    with pytest.raises(FileNotFoundError, match=r"labels CSV not found: '.*a\.csv'\."):
        require_file(str(path), "labels CSV")
    path.write_text("x")
    assert require_file(str(path)) == str(path)


@pytest.mark.parametrize("shared", [False, True])
def test_bundle_path_command(shared: bool):
    extra = ["--shared"] if shared else []
    cmd = [sys.executable, "-m", "monai_calib", "bundle-path", "rfmid_multilabel", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    assert out.strip() == (str(SHARED) if shared else bundle_dir("rfmid_multilabel"))


README_SECTIONS = [
    "Overview",
    "Data",
    "Training configuration",
    "Input",
    "Output",
    "Performance",
    "Commands",
    "References",
    "Licence",
]


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_readme_follows_the_template_and_names_existing_files(name: str):
    """Model-zoo order of sections; every ``$B/configs/...`` and ``$S/...`` path its commands use
    exists (``B`` = the bundle folder, ``S`` = ``$B/../_shared``)."""
    text = (ROOT / name / "docs" / "README.md").read_text()
    assert re.findall(r"^## (.+)$", text, flags=re.M) == README_SECTIONS
    commands = text[text.index("## Commands") : text.index("## References")]
    assert f"bundle-path {name})" in commands
    used = re.findall(r"\$([BS])/([\w./]+\.(?:json|conf))", commands)
    assert used
    for var, rel in used:
        base = ROOT / name if var == "B" else SHARED
        assert (base / rel).is_file(), f"{var}/{rel}"
    assert not re.search(r"configs/(loss|regime)_|configs/logging\.conf", text)


# ids every bundle's train.json defines (users override them; compare and the docs rely on them)
COMMON_IDS = (
    "bundle_root", "data_root", "dataset_dir", "image_size", "max_epochs", "batch_size",
    "learning_rate", "seed", "device", "amp", "output_dir", "ckpt_dir", "loss_name", "loss_def",
    "loss",
    "loss_handlers", "probability_transform", "val_metrics", "select_metric", "num_classes",
)  # fmt: skip


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_train_json_has_the_common_ids(name: str):
    parser = ConfigParser()
    parser.read_config([str(ROOT / name / "configs" / "train.json")])
    for key in COMMON_IDS:
        assert key in parser.get(), key
    assert os.path.isdir(parser.get_parsed_content("bundle_root"))
    assert parser.get_parsed_content("bundle_root") == bundle_dir(name)
