# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Checks every shipped bundle shares: each config file parses as JSON, every ``_target_``
resolves (our own classes fully qualified), and ``metadata.json`` verifies against the local
schema (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import verify_metadata
from monai.bundle.config_item import ComponentLocator

from monai_calib.bundles import BUNDLE_NAMES, bundle_dir

ROOT = Path(bundle_dir(BUNDLE_NAMES[0])).parent
SCHEMA = ROOT / "schema" / "meta_schema_monai_calib.json"
CONFIGS = sorted(ROOT.glob("*/configs/*.json"))


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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parts[-3]}/{p.name}")
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
