# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The built wheel carries the bundles (``bundles/`` -> ``monai_calib/_bundles/``), their shared
overlays and ``logging.conf`` (``_shared/``) and every module, and ``monai_calib.bundles`` finds
the packaged bundles and overlays before the repository's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path

import pytest

import monai_calib.bundles as mb
from monai_calib.bundles import BUNDLE_NAMES, bundle_dir

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "monai_calib/_bundles/schema/meta_schema_monai_calib.json"


def offline_build_possible() -> bool:
    """Whether this environment's setuptools can build the wheel without build isolation."""
    try:
        major_minor = tuple(int(p) for p in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    # setuptools >= 70.1 has bdist_wheel built in; older ones need the `wheel` package
    return major_minor >= (64, 0) and (major_minor >= (70, 1) or find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the sources (no build/ or egg-info left in the checkout,
    no bundle run outputs)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "runs")
    for name in ("monai_calib", "bundles"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist")]
    if offline_build_possible():
        cmd.append("--no-build-isolation")
    subprocess.run([*cmd, str(src)], check=True, cwd=tmp, timeout=600)
    (found,) = (tmp / "dist").glob("monai_calib-*.whl")
    return found


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_carries_every_bundle_file(wheel_names: set[str]):
    expected = {SCHEMA}
    for name in BUNDLE_NAMES:
        prefix = f"monai_calib/_bundles/{name}"
        expected |= {
            f"{prefix}/configs/train.json",
            f"{prefix}/configs/metadata.json",
            f"{prefix}/docs/README.md",
            f"{prefix}/LICENSE",
        }
        # every config and doc the repository holds for this bundle
        for sub in ("configs", "docs"):
            expected |= {
                f"{prefix}/{sub}/{p.name}" for p in (ROOT / "bundles" / name / sub).iterdir()
            }
    # the overlays each task family shares and the one logging.conf
    shared = ROOT / "bundles" / "_shared"
    files = [p for p in shared.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert {p.name for p in files} >= {"logging.conf", "loss_ce.json", "loss_bce.json"}
    expected |= {f"monai_calib/_bundles/{p.relative_to(shared.parent).as_posix()}" for p in files}
    assert sorted(expected - wheel_names) == []


def test_wheel_carries_every_module(wheel_names: set[str]):
    # the packages are listed by hand in pyproject.toml: a new subpackage must not go missing
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "monai_calib").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert sorted(modules - wheel_names) == []
    assert "monai_calib/data/assets/breastmnist.npz" in wheel_names


def test_wheel_has_no_top_level_bundles_or_run_outputs(wheel_names: set[str]):
    top = {n.split("/")[0] for n in wheel_names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"monai_calib"}
    assert [n for n in wheel_names if "/runs/" in n] == []


def test_installed_wheel_finds_its_own_bundles(wheel: Path, tmp_path: Path, monkeypatch):
    # a wheel install is its files unpacked; load the unpacked bundles.py itself (importing the
    # package would pick the checkout's copy and cost a torch import in a subprocess)
    monkeypatch.delenv("MONAI_CALIB_BUNDLES", raising=False)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    spec = spec_from_file_location("installed_bundles", site / "monai_calib" / "bundles.py")
    installed = module_from_spec(spec)
    spec.loader.exec_module(installed)
    packaged = site / "monai_calib" / "_bundles"
    for name in BUNDLE_NAMES:
        found = Path(installed.bundle_dir(name))
        assert found == packaged / name
        assert (found / "configs" / "train.json").is_file()
        # the overlays resolve inside the installed package, as the docs' ../_shared paths do
        family = installed.BUNDLE_FAMILIES[name]
        overlays = installed.overlays(name)
        assert overlays and {Path(p).parent for p in overlays.values()} == {
            packaged / "_shared" / family
        }
        assert Path(installed.logging_file(name)) == packaged / "_shared" / "logging.conf"
        assert (found / ".." / "_shared" / family / Path(overlays[min(overlays)]).name).is_file()


def make_bundle(root: Path, name: str) -> Path:
    (root / name / "configs").mkdir(parents=True)
    return root / name


def test_bundle_dir_prefers_the_packaged_location(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MONAI_CALIB_BUNDLES", raising=False)
    packaged = make_bundle(tmp_path / "_bundles", "medmnist_classification")
    monkeypatch.setattr(mb, "_PACKAGED_BUNDLES", tmp_path / "_bundles")
    assert bundle_dir("medmnist_classification") == str(packaged)
    # a name only the repository's folder has is not looked up there once the package has bundles
    with pytest.raises(FileNotFoundError, match=r"\['medmnist_classification'\]"):
        bundle_dir("cell_segmentation")


def test_bundle_dir_falls_back_to_the_repository(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MONAI_CALIB_BUNDLES", raising=False)
    monkeypatch.setattr(mb, "_PACKAGED_BUNDLES", tmp_path / "absent")
    source = make_bundle(tmp_path / "bundles", "organ_segmentation")
    monkeypatch.setattr(mb, "_SOURCE_BUNDLES", tmp_path / "bundles")
    assert bundle_dir("organ_segmentation") == str(source)


def test_environment_variable_overrides_the_packaged_location(tmp_path: Path, monkeypatch):
    make_bundle(tmp_path / "_bundles", "rfmid_multilabel")
    monkeypatch.setattr(mb, "_PACKAGED_BUNDLES", tmp_path / "_bundles")
    chosen = make_bundle(tmp_path / "elsewhere", "rfmid_multilabel")
    monkeypatch.setenv("MONAI_CALIB_BUNDLES", str(tmp_path / "elsewhere"))
    assert bundle_dir("rfmid_multilabel") == str(chosen)
