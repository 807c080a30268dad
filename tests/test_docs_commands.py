# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Every shell command of README.md and bundles/*/docs/README.md works on a fresh clone.

The shell blocks (and inline ``python -m ...`` spans) are expanded by bash itself, with ``python``,
``pip``, ``pytest``, ``torchrun`` and the download tools replaced by functions that record their
arguments (``bundle-path`` answers with the repository's bundle folder). Each recorded command is
then checked: the configs it names exist, every ``--id`` it overrides exists in them (a bool id
gets a Python bool, as ``python -m monai.bundle`` parses values with fire), every option is
accepted by the command's argparse parser, extras exist in pyproject.toml. A command that needs
data the package does not ship must come after the text that says how to get that data (its
official download address, and the converter where one is needed). ``verify_metadata`` commands
run offline (sockets refused), and the MedMNIST bundle commands, which need only the shipped
BreastMNIST copy, run for one epoch. A new kind of command fails here until a rule is added.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from fire.parser import DefaultParseValue
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata

from monai_calib.bundles import BUNDLE_NAMES, logging_file
from monai_calib.data import DSB2018_DOWNLOAD_URL

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "bundles").glob("*/docs/README.md"))]
SHELL_LANGS = ("bash", "sh", "shell")
DOWNLOAD_TOOLS = ("unzip", "wget", "curl", "tar", "kaggle")
# what a doc must say (before the command) for data that is not shipped
DATA_MARKERS: dict[str, tuple[str, ...]] = {
    "dsb2018": (DSB2018_DOWNLOAD_URL, "convert-dsb2018"),
    "dsb2018_download": (DSB2018_DOWNLOAD_URL,),
    "msd": ("http://medicaldecathlon.com/",),
    "pad_ufes20": ("https://data.mendeley.com/datasets/zr7vgbcyr2/1",),
    "rfmid": (
        "https://ieee-dataport.org/open-access/retinal-fundus-multi-disease-image-dataset-rfmid",
    ),
    "medmnist": ("--download True",),
}
BUNDLE_DATA = {
    "cell_segmentation": "dsb2018",
    "organ_segmentation": "msd",
    "pad_ufes20_classification": "pad_ufes20",
    "rfmid_multilabel": "rfmid",
    "chestmnist_multilabel": "medmnist",
}
SHIPPED_FLAG = "breastmnist"
RUN_ARGS = ("config_file", "meta_file", "logging_file", "tracking", "args_file")

STUBS = r"""
set -eu
rec() { printf '%s\037' "$@" >> "$REC"; printf '\036' >> "$REC"; }
python() {
    rec python "$@"
    if [ "$#" -ge 4 ] && [ "$1 $2 $3" = "-m monai_calib bundle-path" ]; then
        if [ "${5:-}" = "--shared" ]; then echo "$BUNDLES/_shared"; else echo "$BUNDLES/$4"; fi
    fi
}
pip() { rec pip "$@"; }
pytest() { rec pytest "$@"; }
torchrun() { rec torchrun "$@"; }
"""
STUBS += "".join(f'{t}() {{ rec {t} "$@"; }}\n' for t in DOWNLOAD_TOOLS)


@dataclass
class DocCommand:
    doc: Path
    pos: int  # offset of its block in the doc: the text before it is what a reader has seen
    argv: list[str]

    def __str__(self) -> str:
        doc = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc
        return f"{doc}: {' '.join(self.argv)}"


def _doc_id(doc: Path) -> str:
    return "README" if doc == DOCS[0] else doc.parent.parent.name


def _snippets(text: str) -> list[tuple[int, str]]:
    out = [
        (m.start(), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
        if m.group(1) in SHELL_LANGS
    ]
    fenced = [(m.start(), m.end()) for m in re.finditer(r"^```.*?^```", text, flags=re.M | re.S)]
    for m in re.finditer(r"`((?:python|pip|pytest|torchrun) [^`]+)`", text):
        words = m.group(1).split()
        if any(a <= m.start() < b for a, b in fenced) or "..." in m.group(1):
            continue
        if words[:2] == ["python", "-m"] and len(words) <= 4 and words[2] == "monai.bundle":
            continue  # the bare name of the tool in prose ("python -m monai.bundle run")
        out.append((m.start(), m.group(1)))
    return sorted(out)


def _expand(doc: Path, tmp: Path) -> list[DocCommand]:
    """Run each snippet through bash with the recording stubs; the commands it would run."""
    commands = []
    for k, (pos, code) in enumerate(_snippets(doc.read_text())):
        rec = tmp / f"{_doc_id(doc)}_{k}.rec"
        rec.write_text("")
        env = {"PATH": os.environ["PATH"], "REC": str(rec), "BUNDLES": str(ROOT / "bundles")}
        res = subprocess.run(
            ["bash", "-c", STUBS + code], env=env, cwd=tmp, capture_output=True, text=True
        )
        assert res.returncode == 0, f"{doc}: shell block at offset {pos} fails:\n{res.stderr}"
        for item in rec.read_text().split("\036")[:-1]:
            commands.append(DocCommand(doc, pos, item.split("\037")[:-1]))
    return commands


def _all_commands(tmp: Path) -> list[DocCommand]:
    return [c for doc in DOCS for c in _expand(doc, tmp)]


def _bundle_args(cmd: DocCommand, args: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` pairs, values parsed as fire (monai.bundle's CLI) does."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        assert args[i].startswith("--"), f"{cmd}: expected --key value, got {args[i]!r}"
        key, eq, value = args[i][2:].partition("=")
        if not eq:
            assert i + 1 < len(args), f"{cmd}: --{key} has no value"
            value, i = args[i + 1], i + 1
        out[key] = DefaultParseValue(value)
        i += 1
    return out


def _check_bundle_run(cmd: DocCommand, args: list[str]) -> tuple[str | None, dict[str, Any]]:
    """Check a ``monai.bundle run`` command; the data set it needs and its parsed arguments."""
    kw = _bundle_args(cmd, args)
    files = kw.get("config_file")
    assert files, f"{cmd}: no --config_file"
    files = [files] if isinstance(files, str) else list(files)
    for f in [*files, *(kw[k] for k in ("meta_file", "logging_file") if k in kw)]:
        assert Path(f).is_file(), f"{cmd}: {f} does not exist"
    parser = ConfigParser()
    parser.read_config(files)
    for key, value in kw.items():
        if key in RUN_ARGS:
            continue
        assert key in parser, f"{cmd}: --{key} is not an id of {files}"
        default = parser[key]
        if isinstance(default, bool):  # fire gives "true" as a string, which is always truthy
            assert isinstance(value, bool), f"{cmd}: --{key} needs True or False, got {value!r}"
    bundle = Path(files[0]).resolve().parents[1].name
    assert bundle in BUNDLE_NAMES, f"{cmd}: {files[0]} is not in a shipped bundle"
    need = BUNDLE_DATA.get(bundle)
    if "datalist" in kw:  # the user's own data, through the family's datalist overlay
        assert any(Path(f).name == "datalist.json" for f in files), f"{cmd}: no datalist overlay"
        need = None
    elif bundle == "medmnist_classification":
        flag = kw.get("dataset_flag", parser.get("dataset_flag"))
        need = None if flag == SHIPPED_FLAG else "medmnist"
    return need, kw


def _extras() -> dict[str, list[str]]:
    """``[project.optional-dependencies]`` of pyproject.toml (tomllib needs Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, re.M | re.S)
    assert section, "pyproject.toml has no [project.optional-dependencies]"
    found = re.findall(r"^([\w-]+)\s*=\s*(\[.*?\])\s*$", section.group(1), re.M | re.S)
    return {name: ast.literal_eval(deps) for name, deps in found}


def _check(cmd: DocCommand) -> str | None:
    """Check one command; the data set it needs (None: runs on the shipped data)."""
    argv = cmd.argv
    tool = argv[0]
    if tool in DOWNLOAD_TOOLS:
        return None
    if tool == "pip":
        assert argv[1] == "install", cmd
        extras = _extras()
        args = argv[2:]
        targets = [
            a
            for i, a in enumerate(args)
            if not a.startswith("-") and (i == 0 or not args[i - 1].endswith("index-url"))
        ]
        for target in targets:
            m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
            if m:
                missing = set((m.group(1) or "").split(",")) - {""} - set(extras)
                assert not missing, f"{cmd}: extras {missing} are not in pyproject.toml"
            else:
                assert target == "torch" and "--index-url" in argv, f"{cmd}: unexpected target"
        return None
    if tool == "pytest":
        if "-n" in argv:
            assert any(d.startswith("pytest-xdist") for d in _extras()["test"]), (
                f"{cmd}: -n needs pytest-xdist in the test extra"
            )
        return None
    if tool == "torchrun":
        m = argv.index("-m")
        assert argv[m + 1 : m + 3] == ["monai.bundle", "run"], cmd
        return _check_bundle_run(cmd, argv[m + 3 :])[0]
    if argv[:2] == ["python", "-"]:
        return None  # a script on stdin (the README's synthetic example folder): plain Python
    assert tool == "python" and argv[1] == "-m", f"{cmd}: no rule checks this command"
    module, sub, rest = argv[2], (argv[3:4] or [""])[0], argv[4:]
    if module == "monai_calib":
        parsed = _parse_subcommand(cmd, argv[3:])
        if parsed is None:  # --help
            return None
        if sub == "bundle-path":
            return None
        if sub == "compare":
            if getattr(parsed, "datalist", None):
                return None  # the user's own data
            if parsed.bundle != "medmnist_classification":
                return BUNDLE_DATA[Path(parsed.bundle).name]
            download = any(o.replace(" ", "") == "download=true" for o in parsed.override)
            return None if parsed.dataset in (None, SHIPPED_FLAG) or download else "medmnist"
        if sub == "convert-dsb2018":
            return "dsb2018_download"
        return None  # another subcommand: its options parse (it reads the user's own files)
    if module == "monai.bundle":
        if sub == "run":
            return _check_bundle_run(cmd, rest)[0]
        if sub == "verify_metadata":
            return None  # run by test_verify_metadata_commands_run_offline
    raise AssertionError(f"{cmd}: no rule checks this command")


class _Parsed(BaseException):  # not an Exception: compare's main turns those into one line
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def _parse_subcommand(cmd: DocCommand, args: list[str]) -> argparse.Namespace | None:
    """Run ``python -m monai_calib ARGS`` up to its argparse parse, with the real parser; the
    parsed options (None for ``--help``). Nothing after the parse runs."""
    from monai_calib.__main__ import COMMANDS, main

    assert args and args[0] in COMMANDS, f"{cmd}: not a monai_calib command ({list(COMMANDS)})"
    parse = argparse.ArgumentParser.parse_args

    def parse_and_stop(self: argparse.ArgumentParser, *a: Any, **k: Any) -> None:
        raise _Parsed(parse(self, *a, **k))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop):
        try:
            main(args)
        except _Parsed as done:
            return done.namespace
        except SystemExit as e:  # argparse: 0 after --help, 2 for an option it does not take
            assert e.code == 0, f"{cmd}: the options are not accepted"
            return None
    raise AssertionError(f"{cmd}: ran without an argparse parse; add a rule to this test")


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> list[DocCommand]:
    return _all_commands(tmp_path_factory.mktemp("doc_commands"))


def test_every_doc_command_parses_and_says_how_to_get_its_data(commands):
    assert {c.doc for c in commands} == set(DOCS)  # every doc has commands, all were found
    for cmd in commands:
        need = _check(cmd)
        if need is None:
            continue
        before = cmd.doc.read_text()[: cmd.pos]
        missing = [m for m in DATA_MARKERS[need] if m not in before]
        assert not missing, f"{cmd}: needs {need} data; say {missing} before the command"


def test_docs_write_ids_and_options_one_way():
    """Ids are written with ``#`` as in the configs (MONAI 1.6 prints ``::``, accepts both)."""
    for doc in DOCS:
        text = doc.read_text()
        assert not re.findall(r"\b\w+::\w+", text), f"{doc}: write config ids with '#'"
        assert "--download true" not in text, f"{doc}: python -m monai.bundle needs --download True"


def test_readme_first_commands_are_unchanged():
    # the two commands a new user runs first stay the README's first lines of code
    code = _snippets((ROOT / "README.md").read_text())[0][1].splitlines()
    assert code[:2] == [
        "pip install -e . && python -m monai_calib compare",
        'pip install -e ".[test]" && pytest -q -n auto',
    ]


def test_verify_metadata_commands_run_offline(commands, monkeypatch):
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    verified = set()
    for cmd in commands:
        if cmd.argv[:4] != ["python", "-m", "monai.bundle", "verify_metadata"]:
            continue
        kw = _bundle_args(cmd, cmd.argv[4:])
        assert Path(kw["filepath"]).is_file(), f"{cmd}: the local schema is missing"
        verify_metadata(**kw)
        verified.add(Path(kw["meta_file"]).resolve().parents[1].name)
    bundle_docs = {_doc_id(d) for d in DOCS[1:]}
    assert verified == bundle_docs == set(BUNDLE_NAMES)


def test_verify_metadata_offline_rejects_bad_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError))
    meta = ConfigParser.load_config_file(ROOT / "bundles/cell_segmentation/configs/metadata.json")
    del meta["version"]
    ConfigParser.export_config_file(meta, str(tmp_path / "metadata.json"))
    with pytest.raises(ValueError, match="version"):
        verify_metadata(
            meta_file=str(tmp_path / "metadata.json"),
            filepath=str(ROOT / "bundles/schema/meta_schema_monai_calib.json"),
        )


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda d: _doc_id(d))
def test_shipped_data_commands_run(doc, tmp_path, monkeypatch):
    """The bundle commands that need only the shipped BreastMNIST copy run (one epoch each), in
    the doc's order, from a fresh folder (outputs under runs/ as documented)."""
    ran = 0
    monkeypatch.chdir(tmp_path)
    for cmd in _expand(doc, tmp_path):
        if cmd.argv[:4] != ["python", "-m", "monai.bundle", "run"]:
            continue
        need, kw = _check_bundle_run(cmd, cmd.argv[4:])
        if need is not None:
            continue
        if "tracking" in kw or "args_file" in kw or "datalist" in kw:
            continue  # parsed above; tracking / own-data runs are tested with their features
        files = kw.pop("config_file")
        kw.setdefault("logging_file", logging_file())
        wf = ConfigWorkflow(config_file=files, workflow_type=None, **{**kw, "max_epochs": 1})
        wf.initialize()
        wf.run()
        wf.finalize()
        ran += 1
    if _doc_id(doc) in ("README", "medmnist_classification"):
        assert ran >= 2, f"{doc}: expected shipped-data commands to run"


def test_the_checks_catch_a_rotten_command(tmp_path):
    """Each rule fails on a command that would not work (so the doc tests above can fail)."""
    doc = tmp_path / "doc.md"
    b = str(ROOT / "bundles" / "medmnist_classification")
    s = str(ROOT / "bundles" / "_shared")
    run = ["python", "-m", "monai.bundle", "run", "--config_file"]
    compare = ["python", "-m", "monai_calib", "compare"]
    files = f"['{b}/configs/train.json','{s}/classification/loss_mit.json']"
    rotten = {
        "an option compare does not take": [
            "python",
            "-m",
            "monai_calib",
            "compare",
            "--epocs",
            "1",
        ],
        "an id the configs do not define": [*run, files, "--max_epoch", "1"],
        "a bool id given 'true'": [*run, files, "--download", "true"],
        "a config file that is not there": [*run, f"['{b}/configs/train_x.json']"],
        "an extra that is not declared": ["pip", "install", "-e", ".[nope]"],
        "an unknown tool": ["python", "-m", "http.server"],
    }
    for what, argv in rotten.items():
        with pytest.raises(AssertionError):
            _check(DocCommand(doc, 0, argv))
            pytest.fail(f"not caught: {what}")
    # data that is not shipped: told by the bundle, the MedMNIST flag, or the converter
    need = _check(DocCommand(doc, 0, [*run, files, "--dataset_flag", "retinamnist"]))
    assert need == "medmnist"
    assert _check(DocCommand(doc, 0, [*compare, "--bundle", "cell_segmentation"])) == "dsb2018"
    assert _check(DocCommand(doc, 0, [*run, files, "--max_epochs", "1"])) is None
