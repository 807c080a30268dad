# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Faults (docs/reliability.md): checkpoints, dataset files, bundle options.

- every ``torch.load`` in the package and the bundles passes ``weights_only=True``;
- a truncated, empty, garbage or missing checkpoint makes MONAI's ``CheckpointLoader`` raise
  (the run never goes on with freshly initialised weights);
- dataset loaders name the first missing or unreadable file, and keep every listed sample
  (count in = count out);
- bundles and ``compare`` reject an unknown loss name, dataset flag, image size or a missing data
  root with a message that lists the valid choices (matched along the exception chain, since
  ``ConfigWorkflow`` wraps errors).

The resume-equals-straight-run row is backed by ``tests/handlers/test_handlers_resume.py``.
"""

from __future__ import annotations

import ast
import csv
import inspect
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader
from PIL import Image
from synthetic import write_medmnist_npz, write_pad_ufes20_folder, write_rfmid_folder
from torch import nn

from monai_calib.bundles import bundle_dir, overlay_file, overlays
from monai_calib.data import (
    DSB2018_INDEX_COLUMNS,
    MedMNISTDataset,
    PADUFES20Dataset,
    RFMiDDataset,
    dsb2018_datalist,
    dsb2018_transforms,
)

REPO = Path(__file__).resolve().parents[2]


def _chain(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


# ------------------------------------------------------------------ torch.load audit


def _torch_load_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            if name == "load" and owner == "torch":
                calls.append(node)
    return calls


def _weights_only_true(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def test_every_torch_load_in_package_and_bundles_uses_weights_only() -> None:
    py_files = sorted((REPO / "monai_calib").rglob("*.py")) + sorted(
        (REPO / "bundles").rglob("*.py")
    )
    assert py_files
    bad = [
        f"{p.relative_to(REPO)}:{c.lineno}"
        for p in py_files
        for c in _torch_load_calls(p)
        if not _weights_only_true(c)
    ]
    assert not bad, f"torch.load without weights_only=True: {bad}"
    # bundle configs: "$torch.load(...)" expressions must pass weights_only=True too
    for cfg in sorted((REPO / "bundles").rglob("*.json")) + sorted(
        (REPO / "bundles").rglob("*.yaml")
    ):
        for expr in re.findall(r"torch\.load\([^\"]*", cfg.read_text()):
            assert "weights_only=True" in expr, f"{cfg.relative_to(REPO)}: {expr}"


def test_audit_detects_a_bare_torch_load(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import torch\na = torch.load('x')\nb = torch.load('x', weights_only=True)\n")
    calls = _torch_load_calls(src)
    assert [_weights_only_true(c) for c in calls] == [False, True]


def test_monai_checkpoint_loader_uses_weights_only() -> None:
    """The bundles load checkpoints through MONAI's CheckpointLoader / load helpers."""
    src = inspect.getsource(CheckpointLoader.__call__)
    assert "torch.load(" in src and "weights_only=True" in src


# -------------------------------------------------------------------- bad checkpoints


def _trainer(net: nn.Module) -> SupervisedTrainer:
    batch = {"image": torch.randn(2, 3), "label": torch.tensor([0, 1])}
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=nn.CrossEntropyLoss(),
    )


@pytest.mark.parametrize(
    "fault,exc,pattern",
    [
        ("truncated", RuntimeError, r"checkpoint file is corrupted"),
        ("empty", EOFError, r""),
        ("garbage", Exception, r"Weights only load failed|invalid load key|could not"),
        ("missing", FileNotFoundError, r"ckpt\.pt"),
    ],
)
def test_bad_checkpoint_stops_the_run(tmp_path: Path, fault: str, exc: type, pattern: str) -> None:
    net = nn.Linear(3, 2)
    good = tmp_path / "good.pt"
    torch.save({"net": net.state_dict()}, good)
    path = tmp_path / "ckpt.pt"
    data = good.read_bytes()
    content = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"nope" * 64}
    if fault in content:
        path.write_bytes(content[fault])
    fresh = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    trainer = _trainer(fresh)
    CheckpointLoader(str(path), {"net": fresh}).attach(trainer)
    with pytest.raises(exc, match=pattern):
        trainer.run()
    assert trainer.state.iteration == 0  # no training step on unloaded weights
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("fault", ["truncated", "empty", "garbage", "not_a_dict"])
def test_bundle_checkpoint_check_names_the_file(tmp_path: Path, fault: str) -> None:
    """The bundles' evaluate/inference configs call ``require_checkpoint`` before loading, so an
    empty or foreign file gives a message naming it (torch's own EOFError names nothing)."""
    from monai_calib.bundles import require_checkpoint

    good = tmp_path / "good.pt"
    torch.save({"model": nn.Linear(3, 2).state_dict()}, good)
    assert require_checkpoint(str(good)) == str(good)
    path = tmp_path / "model.pt"
    data = good.read_bytes()
    content = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"nope" * 64}
    if fault in content:
        path.write_bytes(content[fault])
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=re.escape(repr(str(path)))):
        require_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        require_checkpoint(str(tmp_path / "missing.pt"))


# ------------------------------------------------------------------------- datasets


def _corrupt_png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)  # signature, then nothing valid


@pytest.mark.parametrize("fault", ["truncated", "garbage"])
def test_medmnist_unreadable_file_is_named(tmp_path: Path, fault: str) -> None:
    path = Path(write_medmnist_npz(tmp_path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if fault == "truncated" else b"garbage")
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + r" could not be read"):
        MedMNISTDataset("breastmnist", "train", root=str(tmp_path))


def test_medmnist_count_in_equals_count_out(tmp_path: Path) -> None:
    write_medmnist_npz(tmp_path, sizes=(17, 5, 9))
    raw = np.load(tmp_path / "breastmnist.npz")
    for split in ("train", "val", "test"):
        ds = MedMNISTDataset("breastmnist", split, root=str(tmp_path))
        assert len(ds) == len(raw[f"{split}_labels"]) == len(list(ds))


def test_pad_ufes20_counts_and_unreadable_image(tmp_path: Path) -> None:
    rows = write_pad_ufes20_folder(tmp_path, num_patients=6, images_per_patient=(1, 2, 3))
    splits = {s: PADUFES20Dataset(str(tmp_path), s) for s in ("train", "val", "test")}
    ids = [r["img_id"] for ds in splits.values() for r in ds.datalist]
    assert sorted(ids) == sorted(r["img_id"] for r in rows)  # count in = count out, no overlap
    ds = splits["train"]
    victim = Path(ds.datalist[0]["image"])
    _corrupt_png(victim)
    with pytest.raises(Exception) as info:
        ds[0]
    assert victim.name in _chain(info.value)
    assert len(ds[1]["image"].shape) == 3  # the other items still load


def test_rfmid_counts_and_unreadable_image(tmp_path: Path) -> None:
    img_dir, csv_path = write_rfmid_folder(tmp_path, sizes=(6, 3, 3))["train"]
    with open(csv_path, newline="") as f:
        n_rows = sum(1 for _ in csv.DictReader(f))
    ds = RFMiDDataset(img_dir, csv_path)
    assert len(ds) == n_rows == len(ds.labels)
    victim = Path(ds.image_paths[2])
    _corrupt_png(victim)
    with pytest.raises(Exception) as info:
        ds[2]
    assert victim.name in _chain(info.value)


def _dsb_folder(root: Path, ids: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(DSB2018_INDEX_COLUMNS)
        for i in ids:
            Image.fromarray(np.full((6, 5, 3), 40, np.uint8)).save(root / "images" / f"{i}.png")
            lab = np.zeros((6, 5), np.uint16)
            lab[1:3, 1:3] = 1
            Image.fromarray(lab).save(root / "labels" / f"{i}.png")
            w.writerow([i, 6, 5, 3, 1, float((lab > 0).mean())])
    return root


def test_dsb2018_counts_and_unreadable_image(tmp_path: Path) -> None:
    root = _dsb_folder(tmp_path / "dsb", ["b", "a", "c", "d"])
    data = dsb2018_datalist(root)
    assert sorted(d["id"] for d in data) == ["a", "b", "c", "d"]
    os.remove(root / "labels" / "c.png")
    with pytest.raises(FileNotFoundError, match=r"c\.png"):
        dsb2018_datalist(root)
    victim = root / "images" / "d.png"
    _corrupt_png(victim)
    transform = dsb2018_transforms()
    item = next(d for d in data if d["id"] == "d")
    with pytest.raises(Exception) as info:
        transform(item)
    assert "d.png" in _chain(info.value)


# -------------------------------------------------------------------------- bundles

MEDMNIST = Path(bundle_dir("medmnist_classification")) / "configs"


def _medmnist_run(out: Path, data_root: str, **overrides: object) -> None:
    wf = ConfigWorkflow(
        config_file=[str(MEDMNIST / "train.json"), overlay_file("medmnist_classification", "ce")],
        meta_file=str(MEDMNIST / "metadata.json"),
        workflow_type=None,
        data_root=data_root,
        max_epochs=1,
        output_dir=str(out),
        **overrides,
    )
    wf.initialize()
    wf.run()


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        ({"image_size": 30}, r"size \(image_size\) must be one of \[28, 64, 128, 224\], got 30"),
        ({"dataset_flag": "nosuchmnist"}, r"dataset_flag must be one of .*'breastmnist'"),
    ],
)
def test_medmnist_bundle_bad_option_lists_choices(tmp_path: Path, overrides, pattern) -> None:
    write_medmnist_npz(tmp_path)
    with pytest.raises(Exception) as info:
        _medmnist_run(tmp_path / "out", str(tmp_path), **overrides)
    assert re.search(pattern, _chain(info.value)), _chain(info.value)


def test_medmnist_bundle_missing_data_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(Exception) as info:
        _medmnist_run(tmp_path / "out", str(missing))
    assert f"data_root {str(missing)!r} does not exist" in _chain(info.value)


def test_compare_unknown_loss_lists_choices(tmp_path: Path, capsys) -> None:
    from monai_calib.cli.compare import main

    available = list(overlays("medmnist_classification"))
    out = tmp_path / "out"
    rc = main(
        ["--bundle", "medmnist_classification", "--losses", "ce,nosuch", "--output", str(out)]
    )
    assert rc != 0
    msg = capsys.readouterr().err
    assert "unknown loss name(s) ['nosuch']" in msg
    assert all(repr(name) in msg for name in available)
    assert not out.exists()  # nothing trained, nothing written


def test_compare_unknown_bundle_lists_choices(tmp_path: Path, capsys) -> None:
    from monai_calib.cli.compare import main

    assert main(["--bundle", "nosuch_bundle", "--output", str(tmp_path / "out")]) != 0
    msg = capsys.readouterr().err
    assert "'nosuch_bundle' not found" in msg and "'medmnist_classification'" in msg


# ------------------------------------------------------------------ prediction writer


def _write_predictions(tmp_path: Path, batches: list[torch.Tensor], **kwargs: object) -> Path:
    from ignite.engine import Engine

    from monai_calib.handlers import ProbabilityWriter

    out = tmp_path / "sub" / "probs.csv"
    engine = Engine(lambda e, batch: batch)
    ProbabilityWriter(str(out), output_transform=lambda o: o, **kwargs).attach(engine)
    engine.run(batches, max_epochs=1)
    return out


def test_probability_writer_one_row_per_sample(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    batches = [torch.softmax(torch.randn(n, 3, generator=g), 1) for n in (4, 1, 3)]
    out = _write_predictions(tmp_path, [b.to(torch.bfloat16) for b in batches])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    probs = torch.cat(batches).to(torch.bfloat16).float()
    assert len(rows) == probs.shape[0] == 8  # count in = count out
    for row, p in zip(rows, probs, strict=True):
        assert int(row["predicted_class"]) == int(p.argmax())
        assert float(row["confidence"]) == pytest.approx(float(p.max()), abs=1e-6)


def test_probability_writer_rejects_nan_and_bad_class_names(tmp_path: Path) -> None:
    bad = torch.full((2, 3), 1.0 / 3)
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"pred must be finite, got 1 NaN"):
        _write_predictions(tmp_path, [bad])
    with pytest.raises(ValueError, match=r"class_names has 2 names but predictions have 3"):
        _write_predictions(tmp_path, [torch.full((2, 3), 1.0 / 3)], class_names=["a", "b"])
