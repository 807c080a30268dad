# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Input normalisation shared by every loss, metric and transform.

One place decides what a "class target", "multi-label target" or "logits" tensor may look like, so
that every public entry point accepts the same inputs and rejects bad ones with the same message
(argument name, what was expected, what was received).
"""

from __future__ import annotations

import torch

__all__ = [
    "accumulation_dtype",
    "check_finite",
    "check_logits_2d",
    "check_multilabel_target",
    "normalize_class_target",
    "reduce_per_sample",
]


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (AMP), the input's own dtype otherwise."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return x.dtype if x.is_floating_point() else torch.float32


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (one reduction pass, no copy)."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"{name} must be finite, got {n_nan} NaN and {n_inf} Inf values "
            f"in a tensor of shape {tuple(x.shape)}."
        )


def check_logits_2d(
    input: torch.Tensor, name: str = "input", min_classes: int = 2, finite: bool = True
) -> torch.Tensor:
    """Validate classification logits of shape ``(B, K)`` and return them unchanged.

    Raises:
        TypeError: when ``input`` is not a floating point tensor.
        ValueError: wrong ndim, empty batch, fewer than ``min_classes`` classes, NaN/Inf values.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}.")
    if not input.is_floating_point():
        raise TypeError(
            f"{name} must be a floating point tensor of logits, got dtype {input.dtype}."
        )
    if input.ndim != 2:
        raise ValueError(
            f"{name} must have shape (B, K) (batch, classes), got {input.ndim}-d shape "
            f"{tuple(input.shape)}."
        )
    if input.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(input.shape)}); B must be >= 1.")
    if input.shape[1] < min_classes:
        raise ValueError(
            f"{name} must have at least {min_classes} classes in dim 1, got shape "
            f"{tuple(input.shape)}."
        )
    if finite:
        check_finite(input, name)
    return input


def normalize_class_target(
    target: torch.Tensor,
    num_classes: int,
    batch_size: int | None = None,
    name: str = "target",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Return class indices of shape ``(B,)`` (``torch.long``) from any accepted target layout.

    Accepted layouts: indices ``(B,)`` or ``(B, 1)`` (integer, or float holding whole numbers, as
    MONAI transforms often produce), or one-hot ``(B, K)``. ``squeeze(-1)`` / ``argmax`` are used,
    never a bare ``squeeze()``, so a batch of one works.

    Raises:
        TypeError: when ``target`` is not a tensor or is a boolean tensor.
        ValueError: batch mismatch, wrong shape, non-integral float indices, indices outside
            ``[0, num_classes)``, one-hot rows that are not exactly one 1.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}.")
    if target.dtype == torch.bool:
        raise TypeError(f"{name} must hold class indices or one-hot rows, got dtype torch.bool.")
    if device is not None and target.device != device:
        target = target.to(device)
    if target.ndim == 2 and target.shape[1] == num_classes and num_classes > 1:
        if target.is_floating_point():
            is_binary = bool(((target == 0) | (target == 1)).all())
        else:
            is_binary = bool(((target == 0) | (target == 1)).all())
        if not is_binary or not bool((target.sum(dim=1) == 1).all()):
            raise ValueError(
                f"{name} of shape {tuple(target.shape)} is read as one-hot (B, K={num_classes}) "
                "and every row must hold exactly one 1 and zeros elsewhere; soft or multi-hot "
                "targets are not supported here."
            )
        idx = target.argmax(dim=1)
    elif target.ndim == 2 and target.shape[1] == 1:
        idx = target.squeeze(-1)
    elif target.ndim == 1:
        idx = target
    else:
        raise ValueError(
            f"{name} must be class indices of shape (B,) or (B, 1), or one-hot of shape "
            f"(B, {num_classes}), got shape {tuple(target.shape)}."
        )
    if batch_size is not None and idx.shape[0] != batch_size:
        raise ValueError(
            f"{name} has batch size {idx.shape[0]} but input has batch size {batch_size} "
            f"(target shape {tuple(target.shape)})."
        )
    if idx.is_floating_point():
        if not bool(torch.isfinite(idx).all()) or not bool((idx == idx.round()).all()):
            raise ValueError(
                f"{name} holds float values that are not whole class indices (e.g. "
                f"{idx[(idx != idx.round()) | ~torch.isfinite(idx)][:3].tolist()}); "
                "expected integers in [0, num_classes)."
            )
    idx = idx.long()
    if idx.numel() > 0:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} class indices must be in [0, {num_classes - 1}], got values in "
                f"[{lo}, {hi}]."
            )
    return idx


def check_multilabel_target(
    target: torch.Tensor, input_shape: torch.Size | tuple[int, ...], name: str = "target"
) -> torch.Tensor:
    """Validate a multi-hot target with the same shape as ``input`` and values in {0, 1}.

    Returns the target as a float tensor (same device).
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}.")
    if tuple(target.shape) != tuple(input_shape):
        raise ValueError(
            f"{name} must be multi-hot with the same shape as input {tuple(input_shape)}, got "
            f"shape {tuple(target.shape)}."
        )
    t = target.float() if not target.is_floating_point() else target
    bad = ~((t == 0) | (t == 1))
    if bool(bad.any()):
        raise ValueError(
            f"{name} must be binary (0/1) multi-hot labels, got non-binary values such as "
            f"{t[bad][:3].tolist()}."
        )
    return t


def reduce_per_sample(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a MONAI ``LossReduction`` value to per-sample losses of shape ``(B,)``."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(
        f'Unsupported reduction: {reduction}, available options are ["mean", "sum", "none"].'
    )
