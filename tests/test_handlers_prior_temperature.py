# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""MiTTemperatureInit and LSPlusClassPrior in real SupervisedTrainer / SupervisedEvaluator runs."""

from __future__ import annotations

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
    net, loss, loader = make_net(), MiTLoss(K), make_loader()
    with torch.no_grad():  # the logits the handler must see: initial network, whole loader
        x0, y0 = make_tensors(0, 24)
        logits0 = net(x0 * 3.0)
    modes = []
    net.register_forward_pre_hook(lambda m, a: modes.append((m.training, torch.is_grad_enabled())))
    # scale inputs so the initial logits are far from calibrated (T* clearly != 1)
    loader = DataLoader(TensorDataset(x0 * 3.0, y0), batch_size=8)
    handler = MiTTemperatureInit(max_iter=50)  # loss / network / loader from the engine
    trainer = make_trainer(net, loss, loader, [handler])
    used = []
    trainer.add_event_handler(
        IterationEvents.FORWARD_COMPLETED, lambda e: used.append(float(loss.temperature))
    )
    trainer.run()

    t_fit = handler.fitted_temperature
    assert t_fit is not None and abs(t_fit - 1.0) > 0.05
    # the loss trained from the fitted temperature (softplus floor 1e-6, float32 parameter)
    assert used[0] == pytest.approx(t_fit, rel=1e-5)
    # the handler fitted on the initial network's logits of the whole loader
    assert t_fit == pytest.approx(fit_temperature(logits0, y0), rel=1e-6)
    # independent check: T* minimises the float64 NLL along T
    best = nll64(logits0, y0, t_fit)
    for factor in (0.9, 0.97, 1.03, 1.1):
        assert best <= nll64(logits0, y0, t_fit * factor) + 1e-7
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
    assert handler.fitted_temperature is None
    assert torch.equal(loss.raw_temperature, before)
    trainer.state.iteration = 0
    trainer.run()
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
    trainer.state.iteration = 0
    trainer.run()
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
