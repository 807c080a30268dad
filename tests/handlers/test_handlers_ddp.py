# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Two processes on gloo (CPU): every rank holds the single-process state of the union batches.

Each rank trains a ``DistributedDataParallel`` network with ``SupervisedTrainer`` and the
loss-state handlers on its half of every batch. The reference is one plain process that sees,
at every iteration, the union of the two ranks' batches.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

K, D, N, PER_RANK, WORLD, EPOCHS = 3, 5, 32, 4, 2, 2
LR = 0.3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="needs torch.distributed gloo",
    ),
]


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g) * 5
    # labels the initial network mostly predicts, every 16th wrong: the temperature fit is
    # informative (MiTTemperatureInit does not skip it) and finite
    with torch.no_grad():
        y = make_net()(x).argmax(dim=1)
    y[::16] = (y[::16] + 1) % K
    return TensorDataset(x, y)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, K))


def make_loss(kind: str):
    from monai_calib.losses.cct_eal import CCTEALLoss
    from monai_calib.losses.mit import MiTLoss

    return MiTLoss(K, init_temperature=2.0) if kind == "mit" else CCTEALLoss(K, momentum=0.7)


def rank_loader(rank: int) -> DataLoader:
    sampler = DistributedSampler(dataset(), num_replicas=WORLD, rank=rank, shuffle=False)
    return DataLoader(dataset(), batch_size=PER_RANK, sampler=sampler)


def snapshot(net: nn.Module, loss: nn.Module) -> dict[str, torch.Tensor]:
    state = {f"loss.{k}": v.detach().clone() for k, v in loss.state_dict().items()}
    state.update({f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()})
    return state


def prior_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Validation labels and baseline class predictions for the LS+ prior."""
    g = torch.Generator().manual_seed(1)
    y_true = torch.arange(20) % K
    y_pred = torch.where(torch.rand(20, generator=g) < 0.6, y_true, (y_true + 1) % K)
    return y_true, y_pred


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    from monai.engines import SupervisedTrainer
    from torch.nn.parallel import DistributedDataParallel

    from monai_calib.handlers import (
        CCTEALWarmup,
        LossStateUpdater,
        LSPlusClassPrior,
        MiTTemperatureInit,
    )
    from monai_calib.losses.ls_plus import LSPlusLoss

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for kind in ("mit", "cct_eal"):
            net, loss = make_net(), make_loss(kind)
            ddp = DistributedDataParallel(net)
            opt = torch.optim.SGD(list(ddp.parameters()) + list(loss.parameters()), lr=LR)
            handlers = [LossStateUpdater(loss)]
            if kind == "cct_eal":
                handlers.append(CCTEALWarmup(loss))
            else:  # fitted on the union of the ranks' shards
                handlers.append(MiTTemperatureInit(loss, network=net))
            trainer = SupervisedTrainer(
                device=torch.device("cpu"),
                max_epochs=EPOCHS,
                train_data_loader=rank_loader(rank),
                network=ddp,
                optimizer=opt,
                loss_function=loss,
                train_handlers=handlers,
            )
            trainer.run()
            torch.save(snapshot(net, loss), os.path.join(out_dir, f"{kind}_rank{rank}.pt"))
        # LS+ prior from each rank's shard of the validation predictions
        y_true, y_pred = prior_data()
        net, loss = make_net(), LSPlusLoss([0.5] * K)
        prior = LSPlusClassPrior(loss=loss, y_true=y_true[rank::WORLD], y_pred=y_pred[rank::WORLD])
        SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=1,
            train_data_loader=rank_loader(rank),
            network=DistributedDataParallel(net),
            optimizer=torch.optim.SGD(net.parameters(), lr=LR),
            loss_function=loss,
            train_handlers=[prior],
        ).run()
        torch.save({"prior": loss.class_prior}, os.path.join(out_dir, f"ls_plus_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def single_process(kind: str) -> dict[str, torch.Tensor]:
    """One process, union batches, the loss updating itself; warm-up called by hand."""
    from monai_calib.calibration.temperature import fit_temperature

    net, loss = make_net(), make_loss(kind)
    opt = torch.optim.SGD(list(net.parameters()) + list(loss.parameters()), lr=LR)
    loaders = [rank_loader(r) for r in range(WORLD)]
    if kind == "mit":
        x, y = dataset().tensors
        with torch.no_grad():
            logits = net(x)
        t_fit = fit_temperature(logits, y)
        # the handler's rule holds by construction: an informative fit inside [0.1, 10]
        p = torch.bincount(y, minlength=K).double() / len(y)
        h_prior = float(-(p[p > 0] * p[p > 0].log()).sum())
        nll = float(nn.functional.cross_entropy(logits.double() / t_fit, y))
        assert h_prior - nll > 0.2 and 0.1 < t_fit < 10
        loss.set_temperature(t_fit)
    total = EPOCHS * len(loaders[0])
    it = 0
    for _ in range(EPOCHS):
        for batches in zip(*loaders, strict=True):
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            if kind == "cct_eal":
                loss.set_progress(it / total)
            opt.zero_grad()
            loss(net(x), y).backward()
            opt.step()
            it += 1
    return snapshot(net, loss)


@pytest.fixture(scope="module")
def rank_states(tmp_path_factory) -> dict[str, list[dict[str, torch.Tensor]]]:
    tmp = tmp_path_factory.mktemp("ddp")
    # the spawned children import this module by name
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return {
        kind: [torch.load(tmp / f"{kind}_rank{r}.pt", weights_only=True) for r in range(WORLD)]
        for kind in ("mit", "cct_eal", "ls_plus")
    }


def test_ddp_state_is_rank_consistent_and_equals_union(rank_states):
    for kind in ("mit", "cct_eal"):
        states = rank_states[kind]
        reference = single_process(kind)
        r0, r1 = states
        assert r0.keys() == r1.keys() == reference.keys()
        for key in r0:  # every rank holds the same state and network (exactly)
            assert torch.equal(r0[key], r1[key]), f"{kind}: {key} differs across ranks"
        if kind == "mit":
            # counts are exact; lambda, temperature and weights up to float summation order
            assert torch.equal(r0["loss.label_counts"], reference["loss.label_counts"])
            assert torch.equal(r0["loss.step"], reference["loss.step"])
            assert float(reference["loss.dual_lambda"]) > 0
            # the fitted start temperature is far from init_temperature=2.0 (the ranks match
            # the reference only if they fitted it on the union of their shards)
            t_final = float(nn.functional.softplus(reference["loss.raw_temperature"]))
            assert abs(t_final - 2.0) > 0.5
            for key in r0:
                torch.testing.assert_close(r0[key], reference[key], rtol=1e-5, atol=1e-6)
        else:
            # CCT-EAL's alignment penalty uses each rank's own batch entropy, so only the
            # label statistics and the warm-up are compared with the union run
            for key in ("loss.label_ema", "loss.alpha", "loss.progress"):
                torch.testing.assert_close(r0[key], reference[key], rtol=1e-6, atol=1e-7)
            assert not torch.allclose(reference["loss.label_ema"], torch.full((K,), 1.0 / K))


def test_ddp_class_prior_uses_union_of_ranks(rank_states):
    from monai_calib.losses.ls_plus import PRIOR_CLAMP_DELTA

    y_true, y_pred = prior_data()
    recall = torch.tensor(
        [float((y_pred[y_true == k] == k).double().mean()) for k in range(K)], dtype=torch.float64
    )
    expected = recall.clamp(1.0 / K + PRIOR_CLAMP_DELTA, 1.0 - PRIOR_CLAMP_DELTA)
    r0, r1 = (state["prior"] for state in rank_states["ls_plus"])
    assert torch.equal(r0, r1)
    torch.testing.assert_close(r0.double(), expected, rtol=1e-6, atol=1e-7)
    # each rank's own shard would give another prior
    shard = y_pred[0::WORLD][y_true[0::WORLD] == 0]
    assert float((shard == 0).double().mean()) != float(recall[0])
