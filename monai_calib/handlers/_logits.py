# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Running a trainer's network over a loader outside the training loop, to collect its logits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["collect_logits", "engine_device"]


def engine_device(engine: Any, network: torch.nn.Module) -> torch.device:
    """``engine.state.device`` if set, else the device of ``network``'s first parameter (CPU if
    it has none)."""
    device = getattr(getattr(engine, "state", None), "device", None)
    if device is not None:
        return torch.device(device)
    param = next(network.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def collect_logits(
    network: torch.nn.Module,
    data_loader: Iterable,
    prepare_batch: Callable,
    device: torch.device,
    inferer: Callable | None = None,
    non_blocking: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``network`` in eval mode without gradients over ``data_loader``.

    ``prepare_batch(batchdata, device, non_blocking)`` returns ``(inputs, targets)`` or
    ``(inputs, targets, args, kwargs)`` as MONAI's ``default_prepare_batch`` does; ``inferer``
    is called as ``inferer(inputs, network, *args, **kwargs)`` (``network(inputs)`` if None).
    The network's previous train/eval mode is restored afterwards.

    Returns:
        logits ``(N, K)`` and the raw targets concatenated along dim 0 (on ``device``).

    Raises:
        ValueError: the loader is empty or a batch has no targets.
    """
    was_training = network.training
    network.eval()
    logits, targets = [], []
    try:
        for batchdata in data_loader:
            batch = prepare_batch(batchdata, device, non_blocking)
            inputs, target = batch[0], batch[1]
            args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
            if target is None:
                raise ValueError("the data loader's batches must hold targets (labels), got None.")
            out = inferer(inputs, network, *args, **kwargs) if inferer else network(inputs)
            logits.append(torch.as_tensor(out).detach())
            targets.append(torch.as_tensor(target).detach())
    finally:
        network.train(was_training)
    if not logits:
        raise ValueError("data_loader yielded no batch; cannot collect logits.")
    return torch.cat(logits), torch.cat(targets)
