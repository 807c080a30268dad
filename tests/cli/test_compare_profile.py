# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The ``MONAI_CALIB_PROFILE`` phase timer of ``compare`` (accounting only, no timings)."""

from __future__ import annotations

import json

import pytest

from monai_calib.cli._profile import PROFILE_ENV, PhaseTimer


def test_disabled_timer_records_nothing() -> None:
    timer = PhaseTimer(enabled=False)
    with timer.phase("setup"):
        pass
    timer.attach(object(), "trainer")  # not an engine: never touched when disabled
    assert dict(timer.raw) == {}
    assert timer.report() is None


def test_enabled_timer_derives_phases(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "phases.json"
    monkeypatch.setenv(PROFILE_ENV, str(target))
    timer = PhaseTimer()
    assert timer.enabled
    with timer.phase("plotting"):
        pass
    timer.raw.update(
        train_workflow=10.0,
        trainer_data=2.0,
        epoch_validation=3.0,
        epoch_validation_data=0.5,
        eval_workflow=4.0,
        evaluator_data=1.0,
        writing=6.0,
        plotting=5.0,
    )
    out = timer.report()
    assert out is not None
    assert out["training"] == pytest.approx(10.0 - 2.0 - 3.0)
    assert out["validation"] == pytest.approx(2.5)
    assert out["evaluation"] == pytest.approx(3.0)
    assert out["data_loading"] == pytest.approx(3.5)
    assert out["writing"] == pytest.approx(1.0)  # the figures are counted under plotting
    assert out["other"] == 0.0  # the fake phases exceed the elapsed time: clipped at zero
    assert json.loads(target.read_text()) == pytest.approx(out)
