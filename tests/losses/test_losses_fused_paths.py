# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The losses' fast paths give the same bits as the plain formulation they replace.

- the reduction inside each loss's autograd ``Function`` vs the per-sample loss
  (``reduction="none"``) reduced by autograd's own ``mean`` / ``sum``;
- MiT's dual update and CCT-EAL's alignment term on host scalars vs the same formulas as 0-d
  tensor ops (the branch the losses take off CPU);
- LS+'s cached per-class tables vs a fresh loss after the prior changes.

Each at 1 and 2 intra-op threads, compared with ``torch.equal``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from monai_calib.losses import CCTEALLoss, DCALoss, LSPlusLoss, MDCALoss, MiTLoss, TETLoss

_MIT = importlib.import_module("monai_calib.losses.mit")
_CCT = importlib.import_module("monai_calib.losses.cct_eal")

FACTORIES: dict[str, Callable[[int, str], nn.Module]] = {
    "tet": lambda k, r: TETLoss(reduction=r),
    "dca": lambda k, r: DCALoss(reduction=r),
    "mdca_nll": lambda k, r: MDCALoss(reduction=r),
    "mdca_focal": lambda k, r: MDCALoss(base_loss="focal", gamma=2.0, reduction=r),
    "mdca_ls": lambda k, r: MDCALoss(base_loss="label_smoothing", reduction=r),
    "ls_plus": lambda k, r: LSPlusLoss(torch.linspace(0.55, 0.95, k).tolist(), reduction=r),
    "mit": lambda k, r: MiTLoss(num_classes=k, init_temperature=1.3, reduction=r),
    "mit_clamped": lambda k, r: _clamped_mit(k, r),
    "cct_eal": lambda k, r: CCTEALLoss(num_classes=k, reduction=r),
}


def _clamped_mit(k: int, reduction: str) -> MiTLoss:
    """MiT whose temperature sits below its lower clamp (no gradient reaches it)."""
    loss = MiTLoss(num_classes=k, temperature_min=0.01, reduction=reduction)
    with torch.no_grad():
        loss.raw_temperature.fill_(-8.0)
    return loss


@contextlib.contextmanager
def _num_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (tests/conftest.py pins 1), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _batches(k: int, steps: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(k)
    sizes = [37, 128, 5, 64][:steps]
    return [
        (torch.randn(b, k, generator=g) * 3, torch.randint(0, k, (b,), generator=g)) for b in sizes
    ]


def _run(
    loss: nn.Module, batches: list, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Outputs, logit and parameter gradients and buffers of a training sequence."""
    out: list[torch.Tensor] = []
    for z0, y in batches:
        for p in loss.parameters():
            p.grad = None
        z = z0.clone().requires_grad_()
        value = loss(z, y)
        if reduce is not None:
            value = reduce(value)
        (value * 1.5).backward()
        out += [value.detach(), z.grad]
        out += [p.grad for p in loss.parameters()]
        out += [b.clone() for b in loss.buffers()]
    return out


def _assert_all_equal(got: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    assert len(got) == len(ref)
    for i, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert a.dtype == b.dtype and a.shape == b.shape, i
        assert torch.equal(a, b), f"item {i} differs by {(a - b).abs().max().item()}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("k", [3, 10, 100])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_reduction_inside_the_function_equals_autograd_reduction(
    name: str, k: int, reduction: str, threads: int
) -> None:
    """The reduced loss and its gradients (logits, temperatures) equal autograd's reduction of
    the per-sample losses, and the states follow the same sequence."""
    batches = _batches(k)
    with _num_threads(threads):
        torch.manual_seed(0)
        fused = _run(FACTORIES[name](k, reduction), batches)
        torch.manual_seed(0)
        plain = _run(
            FACTORIES[name](k, "none"),
            batches,
            reduce=(lambda v: v.mean()) if reduction == "mean" else (lambda v: v.sum()),
        )
    _assert_all_equal(fused, plain)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["mit", "mit_clamped", "cct_eal"])
def test_host_scalar_updates_equal_tensor_ops(
    name: str, dtype: torch.dtype, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MiT's dual update and clamp mask and CCT-EAL's alignment term on host scalars give the
    bits of the tensor formulation (the path off CPU), over train and eval calls."""
    k = 10
    batches = [(z.to(dtype), y) for z, y in _batches(k, steps=4)]

    def sequence() -> list[torch.Tensor]:
        torch.manual_seed(0)
        loss = FACTORIES[name](k, "mean").to(dtype)
        if name == "mit":  # lambda reaches the clip of 0.5 only after a few steps otherwise
            loss.lambda_max = 0.05
        out = _run(loss, batches[:3])
        loss.eval()
        return out + _run(loss, batches[3:])

    with _num_threads(threads):
        fast = sequence()
        module = _CCT if name == "cct_eal" else _MIT
        monkeypatch.setattr(module, "_NUMPY_SCALARS", {})
        if module is _MIT:
            monkeypatch.setattr(module, "_HOST_MASK_DEVICES", ())
        plain = sequence()
    _assert_all_equal(fast, plain)


@pytest.mark.parametrize("threads", [1, 2])
def test_ls_plus_tables_follow_the_prior(threads: int) -> None:
    """The cached per-class tables are rebuilt when the prior buffer changes (state_dict load,
    in-place edit, dtype conversion): the loss equals a fresh loss with that prior."""
    k = 6
    (z, y), (z2, y2) = _batches(k, steps=2)
    new_prior = torch.linspace(0.6, 0.9, k, dtype=torch.float64)
    with _num_threads(threads):
        loss = LSPlusLoss([0.8] * k)
        loss(z, y)  # fills the cache
        loss.load_state_dict({"class_prior": new_prior})
        assert torch.equal(loss(z2, y2), LSPlusLoss(new_prior)(z2, y2))
        with torch.no_grad():
            loss.class_prior.copy_(new_prior.flip(0))
        assert torch.equal(loss(z2, y2), LSPlusLoss(new_prior.flip(0))(z2, y2))
        loss.float()  # the prior buffer becomes a new float32 tensor
        fresh = LSPlusLoss(new_prior.flip(0)).float()
        assert torch.equal(loss(z2.double(), y2), fresh(z2.double(), y2))
