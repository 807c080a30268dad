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
"""Input normalisation shared by every loss, metric, handler and transform.

One place per input rule: what a tensor of class scores (logits or probabilities), a class
target (indices or one-hot), a multi-hot target or a number of bins may look like. Every public
entry point calls these, so they accept the same inputs and reject bad ones with the same message
(argument name, what was expected, what was received): ``TypeError`` for a bad type, ``ValueError``
for a bad value.

Layouts: the class (or label) axis is dim 1, ``(B, K)`` for classification and
``(B, K, *spatial)`` for dense predictions, where every voxel is one sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import Any

import torch
from monai.utils import look_up_option

from monai_calib._utils.threads import map_chunks, outer_intra_op_threads

__all__ = [
    "accumulation_dtype",
    "check_class_indices",
    "check_class_scores",
    "check_finite",
    "check_finite_number",
    "check_floating",
    "check_logits_2d",
    "check_multilabel_target",
    "check_num_bins",
    "check_one_hot",
    "check_probabilities",
    "check_temperature",
    "check_threshold",
    "normalize_class_target",
    "normalize_dense_class_target",
    "reduce_per_sample",
]


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (AMP), the input's own dtype otherwise."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return x.dtype if x.is_floating_point() else torch.float32


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf.

    One ``sum`` decides in the common case (NaN/Inf anywhere make it non-finite, so a finite sum
    proves every value finite; read with ``item``, no ``isfinite`` tensor). Only a non-finite sum,
    which huge finite values can also give by overflow, runs the exact element-wise test.
    """
    if not x.is_floating_point():
        return
    # detach: no autograd node for the check
    if math.isfinite(x.detach().sum(dtype=accumulation_dtype(x)).item()):
        return
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"{name} must be finite, got {n_nan} NaN and {n_inf} Inf values "
            f"in a tensor of shape {tuple(x.shape)}."
        )


def check_floating(x: object, name: str, what: str = "logits") -> torch.Tensor:
    """Return ``x`` if it is a floating point tensor of ``what``.

    Raises:
        TypeError: ``x`` is not a tensor, or not a floating point one.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor of {what}, got dtype {x.dtype}.")
    return x


def check_num_bins(num_bins: int, name: str = "num_bins") -> int:
    """Validate a number of bins: a positive ``int`` (bools rejected).

    Raises:
        TypeError: ``num_bins`` is not an ``int`` (or is a ``bool``).
        ValueError: ``num_bins < 1``.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int):
        raise TypeError(f"{name} must be a positive int, got {num_bins!r}.")
    if num_bins < 1:
        raise ValueError(f"{name} must be a positive int, got {num_bins!r}.")
    return num_bins


def check_temperature(value: float, name: str = "temperature") -> float:
    """Return a temperature as a ``float`` after checking it is finite and > 0.

    Raises:
        ValueError: ``value`` is not finite and > 0.
    """
    value = float(value)
    if not (0 < value < math.inf):
        raise ValueError(f"{name} must be finite and > 0, got {value}.")
    return value


def check_class_scores(
    x: torch.Tensor,
    name: str = "y_pred",
    min_classes: int = 2,
    what: str = "probabilities (or logits with logits=True)",
) -> torch.Tensor:
    """Validate class scores of shape ``(B, K)`` or ``(B, K, *spatial)`` (classes in dim 1).

    Raises:
        TypeError: not a floating point tensor.
        ValueError: fewer than 2 dims or fewer than ``min_classes`` classes.
    """
    check_floating(x, name, what)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (B, K) or (B, K, *spatial) with the classes in dim 1, got "
            f"shape {tuple(x.shape)}."
        )
    if x.shape[1] < min_classes:
        raise ValueError(
            f"{name} must have at least {min_classes} classes in dim 1 for this target, got shape "
            f"{tuple(x.shape)}."
        )
    return x


def check_logits_2d(
    input: torch.Tensor, name: str = "input", min_classes: int = 2, finite: bool = True
) -> torch.Tensor:
    """Validate classification logits of shape ``(B, K)`` and return them unchanged.

    Raises:
        TypeError: when ``input`` is not a floating point tensor.
        ValueError: wrong ndim, empty batch, fewer than ``min_classes`` classes, NaN/Inf values.
    """
    check_floating(input, name)
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


def check_probabilities(p: torch.Tensor, name: str = "y_pred") -> None:
    """Values must be finite and in [0, 1]: one ``aminmax`` pass (NaN fails both comparisons).

    Raises:
        ValueError: NaN/Inf or values outside [0, 1].
    """
    if p.numel() == 0:
        return
    lo, hi = torch.aminmax(p)
    if not (bool(lo >= 0) and bool(hi <= 1)):
        check_finite(p, name)
        raise ValueError(
            f"{name} must hold probabilities in [0, 1] (pass logits=True for raw network "
            f"outputs), got values in [{float(lo):.6g}, {float(hi):.6g}]."
        )


def _check_not_bool(target: object, name: str) -> None:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}.")
    if target.dtype == torch.bool:
        raise TypeError(f"{name} must hold class indices or one-hot rows, got dtype torch.bool.")


def check_class_indices(idx: torch.Tensor, num_classes: int, name: str = "target") -> torch.Tensor:
    """Return class indices as ``long`` after checking they are whole numbers in ``[0, K)``.

    Float indices (as MONAI transforms often produce) must hold whole numbers.

    Raises:
        ValueError: non-integral float values, or indices outside ``[0, num_classes)``.
    """
    if idx.is_floating_point():
        whole = torch.isfinite(idx) & (idx == idx.round())
        if not bool(whole.all()):
            raise ValueError(
                f"{name} holds float values that are not whole class indices (e.g. "
                f"{idx[~whole][:3].tolist()}); expected integers in [0, {num_classes - 1}]."
            )
    idx = idx.long()
    if idx.numel() > 0:
        lo, hi = torch.aminmax(idx)
        if int(lo) < 0 or int(hi) >= num_classes:
            raise ValueError(
                f"{name} class indices must be in [0, {num_classes - 1}], got values in "
                f"[{int(lo)}, {int(hi)}]."
            )
    return idx


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
    _check_not_bool(target, name)
    if device is not None and target.device != device:
        target = target.to(device)
    if target.ndim == 2 and target.shape[1] == num_classes and num_classes > 1:
        if not check_one_hot(target, dim=1):
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
    return check_class_indices(idx, num_classes, name)


def normalize_dense_class_target(
    target: torch.Tensor, pred_shape: torch.Size | tuple[int, ...], name: str = "y"
) -> torch.Tensor:
    """Class indices ``(B, *spatial)`` (long) from indices or one-hot, for any number of dims.

    ``pred_shape`` is the prediction's ``(B, K, *spatial)``. Accepted layouts: indices
    ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot of ``pred_shape``; for ``(B, K)`` this is
    :func:`normalize_class_target`.

    Raises:
        TypeError: when ``target`` is not a tensor or is a boolean tensor.
        ValueError: wrong shape, non-integral float indices, indices outside ``[0, K)``, one-hot
            voxels that are not exactly one 1.
    """
    _check_not_bool(target, name)
    batch, num_classes, spatial = pred_shape[0], pred_shape[1], tuple(pred_shape[2:])
    if len(pred_shape) == 2:
        if target.ndim == 1 and not target.is_floating_point() and target.shape[0] == batch > 0:
            # fast path for integer indices (B,): one aminmax pass
            lo, hi = torch.aminmax(target)
            if 0 <= int(lo) and int(hi) < num_classes:
                return target.long()
        return normalize_class_target(target, num_classes, batch_size=batch, name=name)
    shape = tuple(target.shape)
    if shape == tuple(pred_shape):
        idx = _checked_one_hot_index(target)
        if idx is None:  # the rule of the (B, K) path (check_one_hot), no tolerance
            raise ValueError(
                f"{name} of shape {shape} is read as one-hot over dim 1 (K={num_classes}) and "
                "every voxel must hold exactly one 1 and zeros elsewhere; soft or multi-hot "
                'targets are not supported here (use target="marginal" for multi-label).'
            )
    elif shape == (batch, 1, *spatial):
        idx = target[:, 0]
    elif shape == (batch, *spatial):
        idx = target
    else:
        raise ValueError(
            f"{name} must be class indices of shape {(batch, *spatial)} or "
            f"{(batch, 1, *spatial)}, or one-hot of shape {tuple(pred_shape)}, got shape {shape}."
        )
    return check_class_indices(idx, num_classes, name)


# values per block of the nonzero count of _checked_one_hot_index (the block stays in cache)
_ONE_HOT_BLOCK = 1 << 19


def _exact_matmul_ok(y: torch.Tensor) -> bool:
    """Whether a product of ``y`` with small whole-number weights is exact (CPU, full-precision
    float32/float64 matmul, class indices exactly representable)."""
    return (
        y.dtype in (torch.float32, torch.float64)
        and y.device.type == "cpu"
        and torch.get_float32_matmul_precision() == "highest"
        and y.shape[1] <= 2**20
    )


def _checked_one_hot_index(y: torch.Tensor) -> torch.Tensor | None:
    """Class index ``(B, *spatial)`` of a dense one-hot ``y`` ``(B, K, *spatial)``, or ``None``
    when some voxel is not exactly one-hot (the rule of :func:`check_one_hot`).

    The checks of :func:`check_one_hot` in one pass over cache-sized blocks (CPU
    float32/float64), with no full-size temporary: per block the smallest entry (NaN fails
    it), ``c = ceil(y)`` into a reused buffer, the per-voxel nonzero count ``sum_k c_k``, the
    voxel sum ``sum_k y_k`` and the index ``sum_k k c_k`` (a matrix-vector product), whose
    ranges are checked at the end (NaN in a block makes its range NaN, which fails). With every
    entry in [0, 1] and exactly one nonzero entry ``v`` per voxel, ``sum == 1`` makes ``v = 1``
    and the index is exactly ``k``. ``aminmax`` replaces the slower comparison kernels for the
    ``== 1`` tests.
    """
    if not _exact_matmul_ok(y) or y.numel() == 0:
        return _one_hot_index(y) if check_one_hot(y, dim=1) else None
    return _blocked_one_hot_index(y)


def _blocked_one_hot_index(y: torch.Tensor) -> torch.Tensor | None:
    """The block loop of :func:`_checked_one_hot_index`.

    The blocks are shared between the caller's intra-op threads, each running its ops on one
    intra-op thread (:func:`~monai_calib._utils.threads.map_chunks`: a loop of small ops)."""
    batch, num_classes = y.shape[0], y.shape[1]
    y3 = y.reshape(batch, num_classes, -1)
    voxels = y3.shape[2]
    step = max(1, _ONE_HOT_BLOCK // num_classes)
    index = torch.empty(batch, voxels, dtype=torch.long)  # the only full-size allocation
    width = min(step, voxels)
    starts = [(b, s0) for b in range(batch) for s0 in range(0, voxels, step)]

    def make_worker() -> Callable[[int], torch.Tensor]:
        buf = torch.empty(num_classes, width, dtype=y.dtype)
        per_voxel = torch.empty(3, width, dtype=y.dtype)  # count, sum, index of a block
        classes = torch.arange(num_classes, dtype=y.dtype)

        def work(i: int) -> torch.Tensor:
            b, s0 = starts[i]
            block = y3[b, :, s0 : s0 + step]
            n = block.shape[1]
            part, count, total, idx = buf[:, :n], *per_voxel[:, :n]
            torch.ceil(block, out=part)
            torch.sum(part, 0, out=count)
            torch.sum(block, 0, out=total)
            torch.mv(part.t(), classes, out=idx)
            index[b, s0 : s0 + step].copy_(idx)
            # amin, not aminmax: aminmax copies a strided block first
            return torch.stack([block.amin(), *torch.aminmax(count), *torch.aminmax(total)])

        return work

    ranges = map_chunks(len(starts), make_worker, outer_intra_op_threads())
    # per block: the smallest entry, the range of the counts and of the sums (all must be 1).
    # With every entry >= 0 and one nonzero entry per voxel summing to 1, none exceeds 1 (an
    # entry > 1, +inf or NaN makes its ceil count >= 2, inf or NaN)
    r = torch.stack(ranges)
    mins, maxs = r.amin(0).tolist(), r.amax(0).tolist()
    ones = (mins[1], maxs[2], mins[3], maxs[4])  # count min/max, sum min/max
    if not (mins[0] >= 0 and ones == (1.0, 1.0, 1.0, 1.0)):
        return None
    return index.reshape(batch, *y.shape[2:])


def _one_hot_index(y: torch.Tensor) -> torch.Tensor:
    """Class index of every voxel of a validated dense one-hot ``y`` ``(B, K, *spatial)``.

    Each voxel holds a single entry equal to 1 and zeros elsewhere (:func:`check_one_hot`). On
    the CPU the index is the product ``[0, 1, ..., K-1] @ y`` (one batched matrix product instead
    of the slow ``max(dim=1)`` with indices), which is exactly ``k``.
    """
    if not _exact_matmul_ok(y):
        return y.argmax(dim=1)
    batch, num_classes = y.shape[0], y.shape[1]
    weights = torch.arange(num_classes, dtype=y.dtype).view(1, num_classes)
    idx = torch.matmul(weights, y.reshape(batch, num_classes, -1))
    return idx.reshape(batch, *y.shape[2:]).long()


def check_multilabel_target(
    target: torch.Tensor,
    input_shape: torch.Size | tuple[int, ...],
    name: str = "target",
    input_name: str = "input",
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Validate a multi-hot target with the same shape as the prediction and values in {0, 1}.

    Returns:
        the target as a floating point tensor (its own float dtype, else ``dtype``), moved to
        ``device`` when given.

    Raises:
        TypeError: ``target`` is not a tensor.
        ValueError: another shape than ``input_shape``, or values other than 0 and 1.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}.")
    if tuple(target.shape) != tuple(input_shape):
        raise ValueError(
            f"{name} must be multi-hot with the same shape as {input_name} "
            f"{tuple(input_shape)}, got shape {tuple(target.shape)}."
        )
    t = target if target.is_floating_point() else target.to(dtype)
    bad = ~((t == 0) | (t == 1))
    if bool(bad.any()):
        raise ValueError(
            f"{name} must be binary (0/1) multi-hot labels, got non-binary values such as "
            f"{t[bad][:3].tolist()}."
        )
    if device is not None and t.device != device:
        t = t.to(device)
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


def look_up_argument(value: Any, options: type[Enum], name: str) -> Any:
    """MONAI's ``look_up_option`` (it suggests the closest valid name), with the argument named.

    Raises:
        ValueError: ``value`` is not one of ``options``; the message starts with ``name``.
    """
    try:
        return look_up_option(value, options)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _bound_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """``">= 0"``, ``"> 0"``, ``"<= 1"``, ``"in [0, 1)"``... for the messages below."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_finite_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return a scalar hyperparameter as a ``float`` after checking it is finite and in range.

    NaN fails every comparison and ±inf is rejected even without an upper bound: an infinite
    weight or temperature turns a loss into ±inf or NaN at the first step.

    Args:
        value: a real number (``int``, ``float``, a NumPy scalar or a 0-d tensor); not a
            ``bool`` or a ``str``.
        name: the argument name, for the message.
        low, high: optional bounds; inclusive unless ``low_open`` / ``high_open``.

    Raises:
        TypeError: ``value`` is a ``bool``, a ``str`` or not convertible to ``float``.
        ValueError: ``value`` is NaN, ±inf or out of range, e.g.
            ``"beta must be a finite number >= 0, got inf."``.
    """
    rule = _bound_text(low, high, low_open, high_open)
    expected = f"a finite number {rule}".rstrip()
    if isinstance(value, (bool, str)):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}.") from None
    ok = math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {number!r}.")
    return number


def check_threshold(value: Any, name: str = "threshold") -> float:
    """A decision threshold on a probability: a finite number in ``[0, 1]``.

    It applies to probabilities even when the metric takes logits (it acts after the
    activation), so the range is the same for every caller.

    Raises:
        TypeError / ValueError: see :func:`check_finite_number`.
    """
    return check_finite_number(value, name, low=0.0, high=1.0)


def check_one_hot(target: torch.Tensor, dim: int = 1) -> bool:
    """Whether every slice of ``target`` along ``dim`` is exactly one-hot: one entry equal to 1,
    zeros elsewhere (no tolerance).

    The rule of both one-hot readers, :func:`normalize_class_target` (``(B, K)``) and
    :func:`normalize_dense_class_target` (``(B, K, *spatial)``). With every entry in [0, 1]
    (one ``aminmax``; NaN fails it), ``ceil`` counts the nonzero entries exactly, and with a
    single nonzero entry the plain sum is that entry, so ``sum == 1`` makes it 1. Soft values
    (``1e-9``, ``1 - 1e-9``) are rejected even where a float row sum would round them away.
    """
    if target.numel() == 0:
        return True
    lo, hi = torch.aminmax(target)
    if not (bool(lo >= 0) and bool(hi <= 1)):
        return False
    nonzero = target.ceil() if target.is_floating_point() else target
    return bool((nonzero.sum(dim=dim) == 1).all()) and bool((target.sum(dim=dim) == 1).all())
