# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""LossStateUpdater and CCTEALWarmup in a real SupervisedTrainer (+ SupervisedEvaluator).

The reference for every state sequence is a plain PyTorch loop in which the loss updates itself
(``update_state_in_forward=True``) and ``set_progress`` is called by hand.
"""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import ParamSchedulerHandler, ValidationHandler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from monai_calib.calibration.temperature import fit_temperature
from monai_calib.handlers import CCTEALWarmup, LossStateUpdater, MiTTemperatureInit
from monai_calib.losses.cct_eal import CCTEALLoss
from monai_calib.losses.mit import MiTLoss
from monai_calib.losses.tet import TETLoss
from monai_calib.transforms import TemperatureScaled

K, D, N, BATCH, EPOCHS = 3, 5, 24, 8, 2
CPU = torch.device("cpu")


def make_loader(seed: int = 0, n: int = N) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    # labels the initial network mostly predicts (so a fitted temperature is finite), with
    # every 4th one wrong
    with torch.no_grad():
        y = make_net()(x).argmax(dim=1)
    y[::4] = (y[::4] + 1) % K
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(D, K)


def make_trainer(
    loss: nn.Module,
    handlers=(),
    net: nn.Module | None = None,
    params=None,
    max_epochs: int = 1,
    lr: float = 0.1,
    **kwargs,
) -> SupervisedTrainer:
    """A SupervisedTrainer on ``make_loader()`` whose SGD holds ``params`` (default: the
    network's and the loss's parameters)."""
    net = make_net() if net is None else net
    params = list(net.parameters()) + list(loss.parameters()) if params is None else params
    return SupervisedTrainer(
        device=CPU,
        max_epochs=max_epochs,
        train_data_loader=make_loader(),
        network=net,
        optimizer=torch.optim.SGD(params, lr=lr),
        loss_function=loss,
        train_handlers=list(handlers),
        **kwargs,
    )


def snapshot(loss: nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in loss.state_dict().items()}
    if isinstance(loss, MiTLoss):
        state["T"] = loss.temperature.clone()
    else:
        state["T"] = loss.temperatures.clone()
    return state


def plain_loop(make_loss, warmup: bool, init_t: bool = False) -> list[dict[str, torch.Tensor]]:
    net, loss, loader = make_net(), make_loss(), make_loader()
    opt = torch.optim.SGD(list(net.parameters()) + list(loss.parameters()), lr=0.5)
    if init_t:  # what the reference does in the loss constructor
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(x) for x, _ in loader])
        labels = torch.cat([y for _, y in loader])
        loss.set_temperature(fit_temperature(logits, labels))
        net.train()
    total = EPOCHS * len(loader)
    history, it = [], 0
    for _ in range(EPOCHS):
        for x, y in loader:
            if warmup:
                loss.set_progress(it / total)
            net.train()
            opt.zero_grad(set_to_none=True)
            value = loss(net(x), y).mean()
            value.backward()
            opt.step()
            history.append(snapshot(loss))
            it += 1
    return history


def run_trainer(make_loss, warmup: bool, val_loss_call: bool = False, init_t: bool = False):
    net, loss = make_net(), make_loss()
    history: list[dict[str, torch.Tensor]] = []
    handlers = [LossStateUpdater(loss=loss)]
    if init_t:
        handlers.append(MiTTemperatureInit(loss=loss))
    if warmup:
        handlers.append(CCTEALWarmup(loss=loss))
    trainer = make_trainer(loss, handlers, net=net, max_epochs=EPOCHS, lr=0.5)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(snapshot(loss)))
    if val_loss_call:
        # a "validation loss" computed with the loss in training mode must not touch the state
        @trainer.on(Events.EPOCH_COMPLETED)
        def _val_loss(engine: Engine) -> None:
            x, y = next(iter(make_loader(seed=1)))
            with torch.no_grad():
                loss(net(x), y)

    trainer.run()
    return trainer, loss, history


def assert_same_history(a, b) -> None:
    assert len(a) == len(b)
    for i, (sa, sb) in enumerate(zip(a, b, strict=True)):
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"iteration {i}, {key}: {sa[key]} != {sb[key]}"


@pytest.mark.parametrize("val_loss_call, init_t", [(False, False), (True, False), (False, True)])
def test_mit_trainer_matches_plain_loop(val_loss_call, init_t):
    make_loss = lambda: MiTLoss(K, init_temperature=0.2)  # noqa: E731
    reference = plain_loop(make_loss, warmup=False, init_t=init_t)
    trainer, loss, history = run_trainer(
        make_loss, warmup=False, val_loss_call=val_loss_call, init_t=init_t
    )
    assert_same_history(history, reference)
    # exactly one update per training iteration, and the values actually moved
    assert int(loss.step) == trainer.state.iteration == EPOCHS * len(make_loader())
    if init_t:  # trained from the fitted temperature, not from init_temperature=0.2
        assert abs(float(reference[0]["T"]) - 0.2) > 0.1
    else:  # sharp predictions: the entropy deficit is positive
        assert float(loss.dual_lambda) > 0
    assert not torch.equal(reference[0]["T"], reference[-1]["T"])
    # label counts = Laplace prior + every training label seen, counted independently
    y = torch.cat([yb for _, yb in make_loader()])
    expected = 1.0 + EPOCHS * torch.bincount(y, minlength=K).double()
    assert torch.equal(loss.label_counts.double(), expected)


def test_cct_eal_trainer_with_warmup_matches_plain_loop():
    make_loss = lambda: CCTEALLoss(K, momentum=0.8)  # noqa: E731
    reference = plain_loop(make_loss, warmup=True)
    _, loss, history = run_trainer(make_loss, warmup=True)
    assert_same_history(history, reference)
    # EMA recomputed plainly in float64 from the batches
    ema = torch.full((K,), 1.0 / K, dtype=torch.float64)
    for _ in range(EPOCHS):
        for _, y in make_loader():
            ema = 0.8 * ema + 0.2 * torch.bincount(y, minlength=K).double() / y.numel()
    torch.testing.assert_close(loss.label_ema.double(), ema, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "epoch_level, max_epochs, alpha_max, warmup_ratio",
    [(False, EPOCHS, 8.0, 0.5), (True, 4, 4.0, 1.0)],
)
def test_warmup_alpha_schedule(epoch_level, max_epochs, alpha_max, warmup_ratio):
    loss = CCTEALLoss(K, alpha_max=alpha_max, warmup_ratio=warmup_ratio)
    # iteration level: the loss taken from engine.loss_function
    handler = CCTEALWarmup(loss, epoch_level=True) if epoch_level else CCTEALWarmup()
    assert isinstance(handler, ParamSchedulerHandler)
    trainer = make_trainer(loss, [handler], max_epochs=max_epochs)
    alphas = []
    # the alpha each forward pass (each epoch) used
    event = Events.EPOCH_COMPLETED if epoch_level else IterationEvents.FORWARD_COMPLETED
    trainer.add_event_handler(event, lambda e: alphas.append(float(loss.alpha)))
    trainer.run()
    steps = max_epochs if epoch_level else max_epochs * len(make_loader())
    expected = [alpha_max * min(1.0, (i / steps) / warmup_ratio) for i in range(steps)]
    assert alphas == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert alphas[0] == 0.0  # without the handler alpha would start at alpha_max


def test_warmup_needs_epoch_length():
    engine = Engine(lambda e, b: None)
    CCTEALWarmup(CCTEALLoss(K)).attach(engine)
    with pytest.raises(ValueError, match="epoch_length"):  # an iterator has no length
        engine.run(iter([0, 1]), max_epochs=1)


def test_state_is_committed_by_handler_not_forward():
    probe = []

    loss = MiTLoss(K)
    trainer = make_trainer(loss)
    # registered before the updater, so it runs between the loss call and the commit
    trainer.add_event_handler(
        IterationEvents.LOSS_COMPLETED,
        lambda e: probe.append((loss.has_pending_state, int(loss.step), e.state.iteration)),
    )
    LossStateUpdater(loss).attach(trainer)
    trainer.run()
    assert loss.update_state_in_forward is False
    assert probe == [(True, i - 1, i) for i in range(1, len(make_loader()) + 1)]
    assert not loss.has_pending_state


def test_metric_prefix_and_evaluator_post_transform():
    loss = MiTLoss(K, init_temperature=2.0)
    net, val_loader = make_net(), make_loader(seed=3, n=10)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=val_loader,
        network=net,
        postprocessing=TemperatureScaled(keys="pred", temperature=loss),
    )
    outputs = []
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output)
    )
    handlers = [
        LossStateUpdater(loss, metric_prefix="mit/"),
        ValidationHandler(validator=evaluator, interval=1),
    ]
    trainer = make_trainer(loss, handlers, net=net, max_epochs=EPOCHS)
    used_t = []
    trainer.add_event_handler(
        IterationEvents.FORWARD_COMPLETED, lambda e: used_t.append(float(loss.temperature))
    )
    trainer.run()
    metrics = trainer.state.metrics
    assert metrics["mit/dual_lambda"] == pytest.approx(float(loss.dual_lambda))
    assert metrics["mit/temperature"] == pytest.approx(used_t[-1], rel=1e-6)
    # the evaluator's last epoch used the final temperature; evaluation did not touch the state
    assert int(loss.step) == EPOCHS * len(make_loader())
    x = torch.cat([xb for xb, _ in val_loader])
    with torch.no_grad():
        expected = torch.softmax(net(x).double() / float(loss.temperature), dim=1)
    last = outputs[-len(val_loader) :]
    got = torch.stack([item["pred"] for out in last for item in out]).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "handler, loss",
    [
        (LossStateUpdater, TETLoss()),
        (LossStateUpdater, nn.CrossEntropyLoss()),
        (CCTEALWarmup, MiTLoss(K)),
    ],
)
def test_wrong_kind_raises(handler, loss):
    # given explicitly: at attach (i.e. while the trainer is built)
    with pytest.raises(TypeError, match="drives a loss of kind"):
        make_trainer(loss, [handler(loss=loss)], params=make_net().parameters())
    # taken from engine.loss_function (the bundle default): when the run starts
    trainer = make_trainer(loss, [handler()], params=make_net().parameters())
    with pytest.raises(TypeError, match="drives a loss of kind"):
        trainer.run()


@pytest.mark.parametrize(
    "handler, make_loss, param",
    [
        (LossStateUpdater, lambda: MiTLoss(K), "raw_temperature"),
        (LossStateUpdater, lambda: CCTEALLoss(K), "raw_temperatures"),
        (CCTEALWarmup, lambda: CCTEALLoss(K), "raw_temperatures"),
    ],
)
def test_missing_loss_parameters_raise(handler, make_loss, param):
    loss = make_loss()
    trainer = make_trainer(loss, [handler()], params=make_net().parameters())
    with pytest.raises(ValueError, match=param):
        trainer.run()
    # opt-out: runs (the temperature is then frozen on purpose)
    loss = make_loss()
    unchecked = handler(loss, check_optimizer=False)
    trainer = make_trainer(loss, [unchecked], params=make_net().parameters())
    trainer.run()
    assert trainer.state.iteration == len(make_loader())


class ProgressOnlyLoss(nn.Module):
    """Not a CCTEALLoss: only the capability CCTEALWarmup drives, ``set_progress``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def set_progress(self, progress: float) -> None:
        self.seen.append(progress)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(input, target)


def test_handlers_check_the_capability_not_the_class():
    loss = ProgressOnlyLoss()
    make_trainer(loss, [CCTEALWarmup(loss)], max_epochs=EPOCHS).run()
    total = EPOCHS * len(make_loader())
    assert loss.seen == [i / total for i in range(total)]
    # the message names the kind and the members it needs
    engine = Engine(lambda e, b: None)
    with pytest.raises(TypeError, match=r"kind CCTEALLoss \(any loss with `set_progress\(\)`\)"):
        CCTEALWarmup(MiTLoss(K)).attach(engine)
    with pytest.raises(TypeError, match=r"`update_state\(\)`.*, got ProgressOnlyLoss"):
        LossStateUpdater(loss).attach(engine)


def test_engine_without_loss_completed_raises():
    loss = MiTLoss(K)
    engine = Engine(lambda e, b: None)
    with pytest.raises(TypeError, match="LOSS_COMPLETED"):
        LossStateUpdater(loss).attach(engine)
    evaluator = SupervisedEvaluator(device=CPU, val_data_loader=make_loader(), network=make_net())
    with pytest.raises(TypeError, match="evaluator"):
        LossStateUpdater(loss).attach(evaluator)
    engine = Engine(lambda e, b: None)
    engine.register_events(*IterationEvents)
    LossStateUpdater().attach(engine)
    with pytest.raises(TypeError, match="loss_function"):
        engine.run([0], max_epochs=1)


def test_handlers_from_bundle_config():
    """The handlers and the post-transform resolve and run from a MONAI bundle-style config."""
    from monai.bundle import ConfigParser

    config = {
        "imports": ["$import torch"],
        "network": {"_target_": "torch.nn.Linear", "in_features": D, "out_features": K},
        "loss": {"_target_": "monai_calib.losses.mit.MiTLoss", "num_classes": K},
        "optimizer": {
            "_target_": "torch.optim.SGD",
            "params": "$list(@network.parameters()) + list(@loss.parameters())",
            "lr": 0.1,
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "$torch.device('cpu')",
            "val_data_loader": "$@loader",
            "network": "@network",
            "postprocessing": {
                "_target_": "monai_calib.transforms.TemperatureScaled",
                "keys": "pred",
                "temperature": "@loss",
            },
        },
        "trainer": {
            "_target_": "SupervisedTrainer",
            "device": "$torch.device('cpu')",
            "max_epochs": 1,
            "train_data_loader": "$@loader",
            "network": "@network",
            "optimizer": "@optimizer",
            "loss_function": "@loss",
            "train_handlers": [
                {"_target_": "monai_calib.handlers.LossStateUpdater", "loss": "@loss"},
                {
                    "_target_": "monai_calib.handlers.MiTTemperatureInit",
                    "loss": "@loss",
                    "max_iter": 5,
                },
                {"_target_": "ValidationHandler", "validator": "@evaluator", "interval": 1},
            ],
        },
    }
    parser = ConfigParser(config)
    parser["loader"] = make_loader()
    trainer = parser.get_parsed_content("trainer")
    trainer.run()
    loss = parser.get_parsed_content("loss")
    assert int(loss.step) == len(make_loader())
    assert loss.update_state_in_forward is False


def test_one_update_per_iteration_with_gradient_accumulation():
    loss = MiTLoss(K)
    handlers = [LossStateUpdater(loss)]
    trainer = make_trainer(loss, handlers, max_epochs=EPOCHS, accumulation_steps=2)
    trainer.run()
    assert int(loss.step) == trainer.state.iteration == EPOCHS * len(make_loader())
    y = torch.cat([yb for _, yb in make_loader()])
    assert torch.equal(loss.label_counts, 1.0 + EPOCHS * torch.bincount(y, minlength=K).float())
