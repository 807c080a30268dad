# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``AttachToEngine``: handlers listed for one engine run on another."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events
from ignite.metrics import Average

from monai_calib.handlers import AttachToEngine


class Recorder:
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.record)

    def record(self, engine: Engine) -> None:
        self.epochs.append(engine.state.epoch)


def test_handlers_run_on_the_given_engine_not_the_caller():
    trainer, validator = Engine(lambda e, b: b), Engine(lambda e, b: b)
    rec = Recorder()
    AttachToEngine(validator, [rec, None]).attach(trainer)  # None: a disabled config item
    trainer.run([0, 1], max_epochs=3)
    assert rec.epochs == []
    validator.run([0], max_epochs=2)
    assert rec.epochs == [1, 2]


def test_metrics_attach_under_their_names_to_the_caller_by_default():
    trainer = Engine(lambda e, b: float(b))
    AttachToEngine(metrics={"mean": Average()}).attach(trainer)
    trainer.run([1, 2, 6], max_epochs=1)
    assert trainer.state.metrics["mean"] == pytest.approx(3.0)


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(TypeError, match="engine must be an ignite Engine or None, got list"):
        AttachToEngine([], [Recorder()])
    with pytest.raises(TypeError, match="metrics must be a mapping of names to metrics"):
        AttachToEngine(metrics=[Average()])
    with pytest.raises(TypeError, match="metrics must map names"):
        AttachToEngine(metrics={"mean": 1.0})
    with pytest.raises(TypeError, match=r"handlers must have an attach\(engine\) method, got int"):
        AttachToEngine(Engine(lambda e, b: b), [1])
