# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""GradientClipping: clips before optimizer.step() inside a real SupervisedTrainer."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.engines import SupervisedTrainer

from monai_calib.handlers import GradientClipping


def _trainer(net, data, lr=1.0, handlers=(), accumulation_steps=1):
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.BCEWithLogitsLoss(),
        train_handlers=list(handlers),
        accumulation_steps=accumulation_steps,
    )


def _batch(seed=0, n=8, k=5, d=4):
    g = torch.Generator().manual_seed(seed)
    x = 10 * torch.randn(n, d, generator=g)
    y = (torch.rand(n, k, generator=g) < 0.5).float()
    return {"image": x, "label": y}


@pytest.mark.parametrize("max_norm", [0.1, 1e6])
def test_update_equals_clipped_gradient_step(max_norm):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 5).double()
    batch = {k: v.double() for k, v in _batch().items()}
    before = [p.detach().clone() for p in net.parameters()]
    # independent reference: the raw gradient of the same loss, clipped by hand (float64)
    ref = torch.nn.Linear(4, 5).double()
    ref.load_state_dict(net.state_dict())
    torch.nn.functional.binary_cross_entropy_with_logits(
        ref(batch["image"]), batch["label"]
    ).backward()
    grads = [p.grad.detach().clone() for p in ref.parameters()]
    total = torch.sqrt(sum((g * g).sum() for g in grads))
    scale = min(1.0, max_norm / (float(total) + 1e-6))

    clip = GradientClipping(max_norm=max_norm)
    _trainer(net, [batch], handlers=[clip]).run()
    for p0, p1, g in zip(before, net.parameters(), grads, strict=True):
        torch.testing.assert_close(p0 - p1.detach(), scale * g, rtol=1e-10, atol=1e-12)
    assert clip.last_norm == pytest.approx(float(total), rel=1e-10)
    if max_norm == 0.1:
        assert float(total) > 0.1  # the clip was active
        step = torch.sqrt(
            sum(
                ((p0 - p1.detach()) ** 2).sum()
                for p0, p1 in zip(before, net.parameters(), strict=True)
            )
        )
        assert float(step) == pytest.approx(0.1, rel=1e-4)


def test_accumulation_clips_only_when_stepping():
    net = torch.nn.Linear(4, 5)
    clip = GradientClipping(max_norm=0.1)
    calls = []
    orig = clip.__call__

    class Spy(GradientClipping):
        def __call__(self, engine):
            calls.append((engine.state.iteration, self._steps_now(engine)))
            orig(engine)

    spy = Spy(max_norm=0.1)
    _trainer(net, [_batch(i) for i in range(5)], handlers=[spy], accumulation_steps=2).run()
    assert [s for _, s in calls] == [False, True, False, True, True]


def test_explicit_parameters_only():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 5))
    clip = GradientClipping(max_norm=1e-3, parameters=net[1].parameters())
    grads = {}

    def keep(engine):
        grads["g0"] = net[0].weight.grad.norm().item()
        grads["g1"] = torch.sqrt(sum((p.grad**2).sum() for p in net[1].parameters())).item()

    trainer = _trainer(net, [_batch()], handlers=[clip])
    from monai.engines.utils import IterationEvents

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, keep)
    trainer.run()
    assert grads["g1"] == pytest.approx(1e-3, rel=1e-3)
    assert grads["g0"] > 1e-3  # untouched


@pytest.mark.parametrize("kwargs", [{"max_norm": 0.0}, {"max_norm": -1}, {"norm_type": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GradientClipping(**kwargs)


def test_attach_to_plain_engine_raises():
    with pytest.raises(RuntimeError, match="BACKWARD_COMPLETED"):
        GradientClipping().attach(Engine(lambda e, b: None))
