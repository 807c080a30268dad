# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Small helpers shared by the loss tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import pytest
import torch

#: MONAI DiceLoss's default smoothing terms
DICE_SMOOTH = 1e-5


def reduce_values(values: Sequence[float], reduction: str) -> torch.Tensor:
    """A plain float64 ``"mean"`` / ``"sum"`` / ``"none"`` of per-sample values."""
    v = torch.tensor(list(values), dtype=torch.float64)
    return {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]


def skewed_batch_stream(
    n: int, class_probs: Sequence[float], b: int = 8, scale: float = 3.0, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` float64 logit batches ``(b, K)`` with labels drawn from ``class_probs`` (skewed, so
    that the label entropy differs from ``log K``)."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.tensor(list(class_probs))
    out = []
    for _ in range(n):
        z = torch.randn(b, len(probs), generator=g, dtype=torch.float64) * scale
        y = torch.multinomial(probs, b, True, generator=g)
        out.append((z, y))
    return out


def multilabel_batch(
    b: int, k: int, seed: int = 0, scale: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits ``(b, k)`` and multi-hot labels with about 40 % positives."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g, dtype=torch.float64) * scale
    y = (torch.rand(b, k, generator=g) < 0.4).double()
    return z, y


def seg_batch(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits of ``shape`` ``(B, N, *S)`` and class indices ``(B, 1, *S)``."""
    g = torch.Generator().manual_seed(seed)
    b, n, *spatial = shape
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    idx = torch.randint(0, n, (b, 1, *spatial), generator=g)
    return logits, idx


def np_onehot(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, 1, *S) int -> (B, n, *S) float64."""
    return (idx == np.arange(n).reshape((1, n) + (1,) * (idx.ndim - 2))).astype(np.float64)


def np_ml_factors(
    logits: np.ndarray, onehot: np.ndarray, mode: str, include_background: bool = True
) -> tuple[float, float]:
    """Plain float64 (L_Dice, L_CE) of the Multiplicative Loss paper (MONAI's smoothing)."""
    z = logits.astype(np.float64)
    y = onehot.astype(np.float64)
    if mode == "softmax":
        zs = z - z.max(axis=1, keepdims=True)
        logp = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        ce = float(np.mean(-(y * logp).sum(axis=1)))
    else:
        p = 1.0 / (1.0 + np.exp(-z))
        ce = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    if not include_background:
        p, y = p[:, 1:], y[:, 1:]
    dices = []
    for c in range(p.shape[1]):
        inter = float((p[:, c] * y[:, c]).sum())
        dices.append((2 * inter + DICE_SMOOTH) / (y[:, c].sum() + p[:, c].sum() + DICE_SMOOTH))
    return 1.0 - float(np.mean(dices)), ce


def patch_all_reduce(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, other: torch.Tensor
) -> list[torch.Size]:
    """Simulate a second rank: ``module.all_reduce_sum`` adds ``other`` (that rank's packed
    statistics); returns the list of the shapes it was called with."""
    calls: list[torch.Size] = []

    def fake_all_reduce(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return x + other

    monkeypatch.setattr(module, "all_reduce_sum", fake_all_reduce)
    # a second rank means a process group is ready: modules that skip packing their
    # statistics without one (MiT, CCT-EAL) must take the collective path
    if hasattr(module, "is_dist_ready"):
        monkeypatch.setattr(module, "is_dist_ready", lambda: True)
    return calls
