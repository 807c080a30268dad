# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MiTTemperatureInit and LSPlusClassPrior in real SupervisedTrainer / SupervisedEvaluator runs."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from monai_calib.calibration.temperature import fit_temperature
from monai_calib.handlers import LSPlusClassPrior, MiTTemperatureInit
from monai_calib.losses.cct_eal import CCTEALLoss
from monai_calib.losses.ls_plus import PRIOR_CLAMP_DELTA, LSPlusLoss
from monai_calib.losses.mit import MiTLoss
from monai_calib.losses.tet import TETLoss

K, D = 3, 4
CPU = torch.device("cpu")


def make_tensors(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    y = torch.arange(n) % K  # every class present
    return x, y


def make_loader(seed: int = 0, n: int = 24, batch: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(*make_tensors(seed, n)), batch_size=batch, shuffle=False)


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, K))


def nll64(logits: torch.Tensor, y: torch.Tensor, t: float) -> float:
    z = logits.double() / t
    return float(-(z.log_softmax(dim=1)[torch.arange(len(y)), y]).mean())


def make_trainer(net, loss, loader, handlers, params=None) -> SupervisedTrainer:
    params = list(net.parameters()) + list(loss.parameters()) if params is None else params
    return SupervisedTrainer(
        device=CPU,
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(params, lr=0.1),
        loss_function=loss,
        train_handlers=handlers,
    )


# ---------------------------------------------------------------- MiTTemperatureInit


def test_mit_temperature_init_in_trainer():
    net, loss = make_net(), MiTLoss(K)
    x0, _ = make_tensors(0, 24)
    x0 = x0 * 3.0  # scaled inputs: the initial logits are far from calibrated (T* clearly != 1)
    with torch.no_grad():  # the logits the handler must see: initial network, whole loader
        logits0 = net(x0)
    # labels the initial network mostly predicts (an informative fit), every 4th one wrong
    y0 = logits0.argmax(dim=1)
    y0[::4] = (y0[::4] + 1) % K
    modes = []
    net.register_forward_pre_hook(lambda m, a: modes.append((m.training, torch.is_grad_enabled())))
    loader = DataLoader(TensorDataset(x0, y0), batch_size=8)
    handler = MiTTemperatureInit(max_iter=50)  # loss / network / loader from the engine
    trainer = make_trainer(net, loss, loader, [handler])
    used = []
    trainer.add_event_handler(
        IterationEvents.FORWARD_COMPLETED, lambda e: used.append(float(loss.temperature))
    )
    trainer.run()

    t_fit = handler.fitted_temperature
    assert not handler.skipped and handler.skip_reason is None
    assert t_fit is not None and abs(t_fit - 1.0) > 0.05
    assert handler.applied_temperature == t_fit  # inside the default range [0.1, 10]
    # the loss trained from the fitted temperature (softplus floor 1e-6, float32 parameter)
    assert used[0] == pytest.approx(t_fit, rel=1e-5)
    # the handler fitted on the initial network's logits of the whole loader
    assert t_fit == pytest.approx(fit_temperature(logits0, y0), rel=1e-6)
    # independent check: T* minimises the float64 NLL along T
    best = nll64(logits0, y0, t_fit)
    for factor in (0.9, 0.97, 1.03, 1.1):
        assert best <= nll64(logits0, y0, t_fit * factor) + 1e-7
    assert handler.nll == pytest.approx(best, rel=1e-9)
    assert handler.num_samples == 24
    # calibration pass in eval mode without gradients, then training in train mode with them
    n_batches = len(loader)
    assert modes[:n_batches] == [(False, False)] * n_batches
    assert modes[n_batches:] == [(True, True)] * n_batches


def test_mit_temperature_init_explicit_loader_and_skip_on_resume():
    net, loss = make_net(), MiTLoss(K)
    x, _ = make_tensors(5, 12)
    with torch.no_grad():  # labels the network mostly gets right: a finite optimum T*
        y = net(x * 4).argmax(dim=1)
    y[:3] = (y[:3] + 1) % K
    x = x * 4
    onehot = nn.functional.one_hot(y, K).float()
    held_out = DataLoader([{"image": a, "label": b} for a, b in zip(x, onehot, strict=True)], 4)
    handler = MiTTemperatureInit(loss, network=net, data_loader=held_out)
    trainer = make_trainer(net, loss, make_loader(), [handler])
    with torch.no_grad():
        expected = fit_temperature(net(x), y)
    # resumed run (iteration > 0 at EPOCH_STARTED): nothing happens
    trainer.state.iteration = 3
    before = loss.raw_temperature.detach().clone()
    handler.setup(trainer)
    handler(trainer)
    assert handler.fitted_temperature is None and handler.applied_temperature is None
    assert handler.skipped and "resumed" in handler.skip_reason
    assert torch.equal(loss.raw_temperature, before)
    trainer.state.iteration = 0
    trainer.run()
    assert not handler.skipped
    assert handler.fitted_temperature == pytest.approx(expected, rel=1e-6)


def test_mit_temperature_init_errors():
    with pytest.raises(TypeError, match="drives a loss of kind MiTLoss"):
        make_trainer(make_net(), CCTEALLoss(K), make_loader(), [MiTTemperatureInit(CCTEALLoss(K))])
    trainer = make_trainer(make_net(), TETLoss(), make_loader(), [MiTTemperatureInit()])
    with pytest.raises(TypeError, match="drives a loss of kind MiTLoss"):
        trainer.run()
    net, loss = make_net(), MiTLoss(K)
    trainer = make_trainer(net, loss, make_loader(), [MiTTemperatureInit()], net.parameters())
    with pytest.raises(ValueError, match="raw_temperature"):
        trainer.run()
    with pytest.raises(ValueError, match="max_iter"):
        MiTTemperatureInit(max_iter=0)
    with pytest.raises(ValueError, match="lr"):
        MiTTemperatureInit(lr=0.0)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.05", True, None])
def test_mit_temperature_init_rejects_bad_min_nll_gain(bad):
    with pytest.raises(ValueError, match=r"min_nll_gain must be a finite number >= 0.*got"):
        MiTTemperatureInit(min_nll_gain=bad)


@pytest.mark.parametrize(
    "bad",
    [
        (1.0, 0.5),
        (0.5, 0.5),
        (0.0, 1.0),
        (-1.0, 1.0),
        (0.1, math.inf),
        (math.nan, 1.0),
        (0.1,),
        (0.1, 1.0, 10.0),
        "ab",
        None,
        5.0,
    ],
)
def test_mit_temperature_init_rejects_bad_temperature_range(bad):
    with pytest.raises(ValueError, match=r"temperature_range must be a pair \(low, high\).*got"):
        MiTTemperatureInit(temperature_range=bad)


def test_mit_temperature_init_accepts_edge_arguments():
    handler = MiTTemperatureInit(min_nll_gain=0, temperature_range=[0.5, 2])  # a JSON list
    assert handler.min_nll_gain == 0.0 and handler.temperature_range == (0.5, 2.0)
    assert handler.skipped is False and handler.fitted_temperature is None


# --- the skip rule and the bounds: a random network vs a trained one

C = 3  # classes of the separable problem


def plain_prior_entropy(y: torch.Tensor) -> float:
    p = np.bincount(y.numpy(), minlength=C) / len(y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def separable_data(seed: int, n: int, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian blobs in 2-D (separable); a fraction ``noise`` of the labels redrawn."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    centres = torch.tensor([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
    x = centres[y] + torch.randn(n, 2, generator=g)
    flip = torch.rand(n, generator=g) < noise
    y = torch.where(flip, torch.randint(0, C, (n,), generator=g), y)
    return x, y


@pytest.fixture(scope="module")
def trained_linear() -> nn.Module:
    """A linear model trained on separable data: its logits are informative (about 1 s)."""
    torch.manual_seed(0)
    net = nn.Linear(2, C)
    x, y = separable_data(0, 300)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        assert (net(x).argmax(dim=1) == y).float().mean() > 0.97
    return net


def fit_in_trainer(net: nn.Module, fit_loader: DataLoader, max_epochs: int = 1, **kwargs):
    """Run a trainer (training data: the separable set) whose MiTTemperatureInit fits on
    ``fit_loader``; returns the handler, the loss and the temperature of the first iteration."""
    loss = MiTLoss(C)
    handler = MiTTemperatureInit(loss, data_loader=fit_loader, name="test_mit_init", **kwargs)
    train = DataLoader(TensorDataset(*separable_data(1, 60)), batch_size=20)
    params = list(net.parameters()) + list(loss.parameters())
    trainer = SupervisedTrainer(
        device=CPU,
        max_epochs=max_epochs,
        train_data_loader=train,
        network=net,
        optimizer=torch.optim.SGD(params, lr=0.0),  # lr 0: the network stays as given
        loss_function=loss,
        train_handlers=[handler],
    )
    used: list[float] = []
    trainer.add_event_handler(
        IterationEvents.FORWARD_COMPLETED, lambda e: used.append(float(loss.temperature))
    )
    trainer.run()
    return handler, loss, used[0]


def test_mit_temperature_init_skips_on_random_network(caplog):
    """Labels independent of the inputs, imbalanced prior: the fit can only learn the prior."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 2, generator=g) * 3
    y = torch.multinomial(torch.tensor([0.7, 0.2, 0.1]), 300, replacement=True, generator=g)
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, C))  # random weights
    with torch.no_grad():
        logits = net(x)
    t_star = fit_temperature(logits, y)
    h_prior = plain_prior_entropy(y)
    assert 0.7 < h_prior < 0.9  # the prior is imbalanced (log 3 = 1.10)
    with caplog.at_level(logging.INFO, logger="test_mit_init"):
        handler, loss, t_used = fit_in_trainer(net, DataLoader(TensorDataset(x, y), 64))
    assert handler.skipped and handler.skip_reason.startswith("uninformative fit")
    assert handler.fitted_temperature is None and handler.applied_temperature is None
    assert t_used == pytest.approx(1.0, abs=1e-5)  # T stays at init_temperature
    assert float(loss.temperature) == pytest.approx(1.0, abs=1e-5)
    # the recorded numbers are the independent ones, and they satisfy the skip rule
    assert handler.prior_entropy == pytest.approx(h_prior, rel=1e-12)
    assert handler.nll == pytest.approx(nll64(logits, y, t_star), rel=1e-9)
    assert handler.prior_entropy - handler.nll < 0.05
    ours = [r for r in caplog.records if r.name == "test_mit_init"]
    messages = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "skipped" in messages[0]
    assert f"{handler.nll:.4f}" in messages[0] and f"{h_prior:.4f}" in messages[0]


def test_mit_temperature_init_fits_trained_network(trained_linear, caplog):
    """Held-out data with 20 % label noise: the trained network is over-confident there."""
    x, y = separable_data(2, 150, noise=0.2)
    with torch.no_grad():
        logits = trained_linear(x)
    expected = fit_temperature(logits, y)  # independently of the handler
    assert 1.2 < expected < 10.0  # over-confident, inside the default range
    with caplog.at_level(logging.INFO, logger="test_mit_init"):
        handler, loss, t_used = fit_in_trainer(
            trained_linear, DataLoader(TensorDataset(x, y), 32), max_epochs=2
        )
    assert not handler.skipped and handler.skip_reason is None
    assert handler.fitted_temperature == pytest.approx(expected, rel=1e-6)
    assert handler.applied_temperature == handler.fitted_temperature
    assert 0.1 <= handler.applied_temperature <= 10.0
    assert t_used == pytest.approx(expected, rel=1e-5)
    assert handler.num_samples == 150
    # the record and T survive the second epoch (the network and T do not train: lr 0)
    assert float(loss.temperature) == pytest.approx(expected, rel=1e-5)
    # informative: the fitted NLL is clearly below the entropy of the label prior
    assert handler.prior_entropy == pytest.approx(plain_prior_entropy(y), rel=1e-12)
    assert handler.nll == pytest.approx(nll64(logits, y, expected), rel=1e-9)
    assert handler.prior_entropy - handler.nll > 0.3
    ours = [r for r in caplog.records if r.name == "test_mit_init"]
    assert [r.levelno for r in ours] == [logging.INFO]
    infos = [r.getMessage() for r in ours]
    assert f"set T = {handler.applied_temperature:.6g}" in infos[0]


@pytest.mark.parametrize(
    "scale, temperature_range, bound",
    [(1e-3, (0.1, 10.0), 0.1), (1e3, (0.1, 10.0), 10.0), (1.0, (0.5, 1.0), 1.0)],
)
def test_mit_temperature_init_bounds_the_fit(trained_linear, scale, temperature_range, bound):
    """Scaling the logits by ``s`` scales T* by ``s`` and leaves its NLL unchanged."""
    net = nn.Linear(2, C)
    with torch.no_grad():
        net.weight.copy_(trained_linear.weight * scale)
        net.bias.copy_(trained_linear.bias * scale)
    x, y = separable_data(2, 150, noise=0.2)
    with torch.no_grad():
        expected = fit_temperature(net(x), y)
    assert not temperature_range[0] <= expected <= temperature_range[1]  # the fit is outside
    kwargs = {"temperature_range": temperature_range}
    handler, loss, t_used = fit_in_trainer(net, DataLoader(TensorDataset(x, y), 32), **kwargs)
    assert not handler.skipped
    assert handler.fitted_temperature == pytest.approx(expected, rel=1e-6)
    assert handler.applied_temperature == bound
    assert t_used == pytest.approx(bound, rel=1e-5)
    assert float(loss.temperature) == pytest.approx(bound, rel=1e-5)


# ---------------------------------------------------------------- LSPlusClassPrior


def biased_baseline() -> nn.Module:
    """A linear baseline that favours class 0 (class 1's recall is below 1/K: clamped)."""
    net = nn.Linear(D, K)
    with torch.no_grad():
        net.weight.copy_(torch.randn(K, D, generator=torch.Generator().manual_seed(3)) * 2.0)
        net.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
    return net


def plain_recall(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return np.array([(y_pred[y_true == k] == k).mean() for k in range(K)], dtype=np.float64)


def plain_clamp(c: np.ndarray) -> np.ndarray:
    return np.clip(c, 1.0 / K + PRIOR_CLAMP_DELTA, 1.0 - PRIOR_CLAMP_DELTA)


def test_ls_plus_prior_from_evaluator_with_checkpoint(tmp_path: Path):
    baseline = biased_baseline()
    ckpt = tmp_path / "baseline.pt"
    torch.save(baseline.state_dict(), ckpt)
    # the evaluator's network starts random and loads the baseline through CheckpointLoader
    eval_net = nn.Linear(D, K)
    val_loader = make_loader(seed=1, n=30, batch=7)
    evaluator = SupervisedEvaluator(
        device=CPU,
        val_data_loader=val_loader,
        network=eval_net,
        val_handlers=[CheckpointLoader(str(ckpt), {"net": eval_net})],
    )
    x, y = make_tensors(1, 30)
    with torch.no_grad():
        pred = baseline(x).argmax(dim=1).numpy()
    recall = plain_recall(y.numpy(), pred)
    assert recall[1] < 1 / K < 1 / K + PRIOR_CLAMP_DELTA < recall[0] < 1  # one value clamped

    loss = LSPlusLoss([0.5] * K)
    handler = LSPlusClassPrior(evaluator=evaluator)  # loss from the engine
    trainer = make_trainer(make_net(), loss, make_loader(), [handler])
    seen = []
    trainer.add_event_handler(
        IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(loss.class_prior.clone())
    )
    with pytest.warns(UserWarning, match="clamped"):
        trainer.run()
    np.testing.assert_allclose(handler.recall.numpy(), recall, rtol=1e-6)
    np.testing.assert_allclose(loss.class_prior.numpy(), plain_clamp(recall), rtol=1e-6)
    np.testing.assert_allclose(seen[0].numpy(), plain_clamp(recall), rtol=1e-6)
    assert evaluator.state.iteration == len(val_loader)


def test_ls_plus_prior_from_predictions_and_skip_on_resume():
    y_true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    rows = [[2, 1, 0], [0, 3, 0], [0, 1, 0], [1, 0, 0], [0, 2, 1], [0, 0, 1], [0, 0, 3]]
    scores = torch.tensor([*rows, [3, 0, 0], [0, 1, 0]], dtype=torch.float32)
    loss = LSPlusLoss([0.9] * K)
    handler = LSPlusClassPrior(loss=loss, y_true=y_true, y_pred=scores)
    trainer = make_trainer(make_net(), loss, make_loader(), [handler])
    trainer.state.iteration = 2  # resumed: the checkpointed prior is kept
    handler(trainer)
    assert handler.recall is None
    assert handler.skipped and "resumed" in handler.skip_reason
    trainer.state.iteration = 0
    trainer.run()
    assert not handler.skipped and handler.skip_reason is None
    recall = plain_recall(np.array(y_true), scores.argmax(dim=1).numpy())
    np.testing.assert_allclose(handler.recall.numpy(), recall, rtol=1e-6)
    np.testing.assert_allclose(loss.class_prior.numpy(), plain_clamp(recall), rtol=1e-6)
    assert not math.isclose(float(loss.class_prior[1]), 0.9)


def test_ls_plus_prior_errors():
    with pytest.raises(ValueError, match="exactly one source"):
        LSPlusClassPrior()
    with pytest.raises(ValueError, match="exactly one source"):
        LSPlusClassPrior(y_true=[0, 1])
    evaluator = SupervisedEvaluator(device=CPU, val_data_loader=make_loader(), network=make_net())
    with pytest.raises(ValueError, match="exactly one source"):
        LSPlusClassPrior(evaluator=evaluator, y_true=[0, 1], y_pred=[0, 1])
    with pytest.raises(TypeError, match="output_transform"):
        LSPlusClassPrior(evaluator=evaluator, output_transform="pred")
    with pytest.raises(TypeError, match="drives a loss of kind LSPlusLoss"):
        make_trainer(
            make_net(), MiTLoss(K), make_loader(), [LSPlusClassPrior(evaluator, loss=MiTLoss(K))]
        )
    trainer = make_trainer(make_net(), MiTLoss(K), make_loader(), [LSPlusClassPrior(evaluator)])
    with pytest.raises(TypeError, match="drives a loss of kind LSPlusLoss"):
        trainer.run()
