# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""DDP-exact batch-level penalties: one ``DistributedDataParallel`` step on 2 gloo ranks equals
one single-process step on the concatenated batch (DCA, MDCA with each base loss, CCT-EAL).

The batch is built so that the shards disagree: rank 0's half is over-confident and wrong, rank
1's half is under-confident and right, so each rank's own ``C - A`` (DCA) has the opposite sign
of the global one. With unequal shards, the penalty stays exact and the cross-entropy part is
DDP's mean of the ranks' means; the single-process reference then weights sample ``i`` of rank
``r`` by ``1 / (W * B_r)`` on the ``reduction="none"`` output.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

K, WORLD, LR = 3, 2, 0.5
SHARDS = {"equal": (4, 4), "unequal": (5, 3)}
CASES = {
    "dca": {},
    "mdca_nll": {"base_loss": "nll"},
    "mdca_focal": {"base_loss": "focal", "gamma": 2.0},
    "mdca_label_smoothing": {"base_loss": "label_smoothing", "smoothing": 0.1},
    "cct_eal": {},
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="needs torch.distributed gloo",
    ),
]


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 samples: rows 0-3 confident and wrong, rows 4-7 nearly uniform and mostly right.

    The label histograms of the halves differ too, so MDCA's class signs disagree.
    """
    g = torch.Generator().manual_seed(0)
    cls = torch.tensor([0, 1, 2, 0, 0, 0, 0, 1])
    scale = torch.tensor([6.0] * 4 + [0.3] * 4, dtype=torch.float64)
    x = scale[:, None] * nn.functional.one_hot(cls, K).double()
    x = x + 0.1 * torch.randn(8, K, generator=g, dtype=torch.float64)
    y = cls.clone()
    y[:4] = (cls[:4] + 1) % K
    return x, y


def make_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Linear(K, K).double()
    with torch.no_grad():
        net.weight.add_(torch.eye(K, dtype=torch.float64))
    return net


def make_loss(name: str, reduction: str = "mean", **kw):
    from monai_calib.losses import CCTEALLoss, DCALoss, MDCALoss

    args = {**CASES[name], **kw}
    if name == "dca":
        return DCALoss(beta=5.0, reduction=reduction, **args)
    if name == "cct_eal":
        return CCTEALLoss(K, alpha_max=4.0, reduction=reduction, **args).double()
    return MDCALoss(beta=2.0, reduction=reduction, **args)


def step(name: str, x, y, weights=None) -> dict[str, torch.Tensor]:
    """One SGD step; DDP-wrapped and rank-local when a process group is initialised."""
    net = make_net()
    loss_fn = make_loss(name, "mean" if weights is None else "none")
    model = nn.parallel.DistributedDataParallel(net) if dist.is_initialized() else net
    params = list(net.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.SGD(params, lr=LR)
    out = loss_fn(model(x), y)
    loss = out if weights is None else (out * weights).sum()
    loss.backward()
    if dist.is_initialized():  # what LossStateUpdater(sync_grads=True) does for the loss
        for p in loss_fn.parameters():
            dist.all_reduce(p.grad)
            p.grad.div_(dist.get_world_size())
    opt.step()
    result = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    result.update({f"loss.{k}": v.detach().clone() for k, v in loss_fn.state_dict().items()})
    result["value"] = loss.detach()
    return result


def local_value(name: str, x, y, **kw) -> torch.Tensor:
    """Loss of a shard without a graph (no collective): the rank-local loss.

    Evaluation mode: CCT-EAL's label EMA (summed over ranks in training mode) stays put.
    """
    with torch.no_grad():
        return make_loss(name, **kw).eval()(make_net()(x), y)


def bounds(shards: str, rank: int) -> slice:
    b0, b1 = SHARDS[shards]
    return slice(0, b0) if rank == 0 else slice(b0, b0 + b1)


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # first thing after fork: no OpenMP team inherited from the parent
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        x, y = batch()
        results = {}
        for shards in SHARDS:
            sl = bounds(shards, rank)
            for name in CASES:
                results[(shards, name)] = step(name, x[sl], y[sl])
                results[(shards, name)]["nograd"] = local_value(name, x[sl], y[sl])
                # sync_dist=False keeps the per-rank loss even with a graph
                z = make_net()(x[sl])
                results[(shards, name)]["unsynced"] = make_loss(name, sync_dist=False)(z, y[sl])
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp_exact")
    # fork: the children reuse the parent's imports; no CUDA is involved
    mp.start_processes(
        _worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="fork"
    )
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_shards_disagree():
    """The data makes each rank's DCA penalty sign differ from the global one."""
    x, y = batch()
    with torch.no_grad():
        p = torch.softmax(make_net()(x), dim=1)
    gap = p.max(dim=1).values - (p.argmax(dim=1) == y).double()
    for b0, _ in SHARDS.values():
        assert gap[:b0].mean() > 0 > gap[b0:].mean()
    assert gap.mean() * gap[4:].mean() < 0
    # MDCA: some class's sign(mean p_k - freq_k) differs between rank 0's shard and the batch
    onehot = nn.functional.one_hot(y, K).double()
    full = torch.sign(p.mean(0) - onehot.mean(0))
    for b0, _ in SHARDS.values():
        assert (torch.sign(p[:b0].mean(0) - onehot[:b0].mean(0)) != full).any()


@pytest.mark.parametrize("shards", list(SHARDS))
@pytest.mark.parametrize("name", list(CASES))
def test_ddp_step_equals_single_process(ranks, name, shards):
    x, y = batch()
    b0, b1 = SHARDS[shards]
    if shards == "equal":
        ref = step(name, x, y)  # plain mean over the concatenated batch
    else:
        w = torch.tensor([1 / (WORLD * b0)] * b0 + [1 / (WORLD * b1)] * b1, dtype=torch.float64)
        ref = step(name, x, y, weights=w)
    for rank, res in enumerate(ranks):
        res = res[(shards, name)]
        for key, value in ref.items():
            if key == "value":
                continue
            torch.testing.assert_close(
                res[key], value, rtol=0, atol=1e-6, msg=f"rank {rank}: {key}"
            )
    # the mean over ranks of the returned values is the single-process loss
    mean_value = sum(r[(shards, name)]["value"] for r in ranks) / WORLD
    torch.testing.assert_close(mean_value, ref["value"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(CASES))
def test_no_graph_or_sync_off_is_rank_local(ranks, name):
    x, y = batch()
    for rank, res in enumerate(ranks):
        sl = bounds("equal", rank)
        expected = local_value(name, x[sl], y[sl])
        torch.testing.assert_close(res[("equal", name)]["nograd"], expected, rtol=0, atol=0)
        single = make_loss(name)(make_net()(x[sl]), y[sl])  # no process group here
        torch.testing.assert_close(res[("equal", name)]["unsynced"], single, rtol=0, atol=0)
