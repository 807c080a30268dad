# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Loss state through MONAI's CheckpointSaver / CheckpointLoader: 4 epochs == 2 + resume + 2.

Data are shuffled with a ``DistributedSampler(num_replicas=1)``, whose order depends only on
``(seed, epoch)`` (MONAI's workflow calls ``set_epoch``), so a resumed run sees the same batches as
the straight run and the comparison is bit-exact. The bundles' own loader (``shuffle=True`` with a
seeded generator) is resumed exactly by ``monai_calib.handlers.ResumeCheckpoint``, which saves the
generators too (last test).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from monai_calib.handlers import (
    CCTEALWarmup,
    LossStateUpdater,
    MiTTemperatureInit,
    ResumeCheckpoint,
)
from monai_calib.losses.cct_eal import CCTEALLoss
from monai_calib.losses.mit import MiTLoss

K, D, N, BATCH = 3, 6, 30, 8


@pytest.fixture(autouse=True)
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)
    set_determinism(None)


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, K))


def make_loader(shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g) * 10
    # labels the initial network (seed 0, as in `build`) predicts, every 10th one wrong, so
    # MiTTemperatureInit's fit is informative and really sets T in the straight run
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        y = make_net()(x).argmax(dim=1)
    y[::10] = (y[::10] + 1) % K
    ds = TensorDataset(x, y)
    if shuffle:  # what the bundles use: the order depends on the generator's state, not the epoch
        return DataLoader(
            ds, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(7)
        )
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=7)
    return DataLoader(ds, batch_size=BATCH, sampler=sampler)


def build(kind: str, max_epochs: int, handlers: list, shuffle: bool = False):
    set_determinism(seed=0)
    net = make_net()
    loss = MiTLoss(K) if kind == "mit" else CCTEALLoss(K)
    opt = torch.optim.Adam(list(net.parameters()) + list(loss.parameters()), lr=0.05)
    state_handlers = [LossStateUpdater(loss)]
    if kind == "mit":
        state_handlers.append(MiTTemperatureInit(loss, max_iter=20))
    else:
        state_handlers.append(CCTEALWarmup(loss))
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=make_loader(shuffle),
        network=net,
        optimizer=opt,
        loss_function=loss,
        train_handlers=state_handlers,
    )
    save_dict = {"trainer": trainer, "net": net, "opt": opt, "loss": loss}
    for make_handler in handlers:
        make_handler(save_dict).attach(trainer)
    return trainer, net, loss, opt, state_handlers[-1]


def final_state(net, loss, opt):
    state = {f"net.{k}": v.clone() for k, v in net.state_dict().items()}
    state.update({f"loss.{k}": v.clone() for k, v in loss.state_dict().items()})
    for i, s in opt.state_dict()["state"].items():
        state.update({f"opt.{i}.{k}": torch.as_tensor(v).clone() for k, v in s.items()})
    return state


@pytest.mark.parametrize("kind", ["mit", "cct_eal"])
def test_resume_is_bit_identical(kind: str, tmp_path: Path):
    trainer, net, loss, opt, init = build(kind, 4, [])
    trainer.run()
    straight = final_state(net, loss, opt)
    if kind == "mit":  # the straight run did fit T (so a refit on resume would show)
        assert not init.skipped and abs(init.applied_temperature - 1.0) > 0.05
    iterations = trainer.state.iteration

    # the same 4-epoch run, interrupted after epoch 2 (the warm-up schedule depends on
    # max_epochs, so the interrupted run must be configured like the straight one)
    saver = lambda d: CheckpointSaver(str(tmp_path), d, save_interval=1, n_saved=None)  # noqa: E731
    trainer, net, loss, opt, _ = build(kind, 4, [saver])
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda engine: engine.terminate())
    trainer.run()
    assert trainer.state.epoch == 2
    ckpt = tmp_path / "checkpoint_epoch=2.pt"
    assert ckpt.exists(), sorted(p.name for p in tmp_path.iterdir())
    # the checkpoint holds the loss's state and loads with weights_only=True
    content = torch.load(ckpt, weights_only=True)
    assert set(content["loss"]) == set(loss.state_dict())
    for key, value in loss.state_dict().items():
        assert torch.equal(content["loss"][key], value)

    # resume in a fresh process-like setup: new objects, different random initial weights
    loader = lambda d: CheckpointLoader(str(ckpt), d)  # noqa: E731
    trainer, net, loss, opt, init = build(kind, 4, [loader])
    torch.manual_seed(123)
    for p in net.parameters():
        nn.init.normal_(p)
    trainer.run()
    resumed = final_state(net, loss, opt)
    assert trainer.state.iteration == iterations

    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    if kind == "mit":
        assert int(loss.step) == iterations
        assert init.skipped and "resumed" in init.skip_reason  # the checkpointed T was kept
    else:
        assert float(loss.progress) == pytest.approx((iterations - 1) / iterations)


@pytest.mark.parametrize("kind", ["mit", "cct_eal"])
def test_resume_with_a_shuffled_loader_is_bit_identical(kind: str, tmp_path: Path):
    """``ResumeCheckpoint`` with the bundles' ``DataLoader(shuffle=True, generator=...)``: the
    loader's generator is saved with the rest, so the resumed epochs see the same batches (with
    only ``CheckpointSaver`` / ``CheckpointLoader`` the resumed weights differ)."""
    trainer, net, loss, opt, _ = build(kind, 4, [], shuffle=True)
    trainer.run()
    straight = final_state(net, loss, opt)

    path = tmp_path / "resume.pt"

    def resumable(resume: bool):
        def make(d: dict) -> ResumeCheckpoint:
            return ResumeCheckpoint(path, {k: v for k, v in d.items() if k != "trainer"}, resume)

        return make

    trainer, net, loss, opt, _ = build(kind, 4, [resumable(False)], shuffle=True)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda engine: engine.terminate())
    trainer.run()
    assert torch.load(path, weights_only=True)["trainer"]["iteration"] == trainer.state.iteration

    trainer, net, loss, opt, _ = build(kind, 4, [resumable(True)], shuffle=True)
    torch.manual_seed(123)  # a fresh process: other weights, other RNG state
    for p in net.parameters():
        nn.init.normal_(p)
    trainer.run()
    resumed = final_state(net, loss, opt)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
