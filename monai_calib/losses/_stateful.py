# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Shared state protocol of the losses that keep running statistics (MiT, CCT-EAL).

``forward`` reads the committed state (buffers), computes the state *including the current batch*
(the reference code updates before it reads), uses it for this batch's loss, and stages it.
The staged state is committed

- at once, inside ``forward``, when ``update_state_in_forward`` is True (plain PyTorch loops), or
- by :py:meth:`update_state`, which a handler calls at ``IterationEvents.LOSS_COMPLETED`` after
  setting ``update_state_in_forward = False``.

Both paths give the same sequence of states. State changes only in training mode (unless a
loss's ``reference_mode`` restores the published behaviour), so evaluation never leaks labels
into it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_calib._utils.validation import accumulation_dtype, check_finite, check_logits_2d

from ._fused import class_indices

__all__ = ["StatefulLossBase"]


class StatefulLossBase(_Loss):
    """Base class: ``num_classes`` and input checks, staging / committing of buffer state, and
    ``last_stats`` for logging.

    Subclasses register their state as persistent buffers (so it follows ``.to(device)`` and is
    saved by ``state_dict``) and call :py:meth:`_stage` with the new buffer values.
    """

    def __init__(
        self, num_classes: int, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool):
            raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.num_classes = num_classes
        self.update_state_in_forward: bool = True
        self._pending: dict[str, torch.Tensor] | None = None
        self._last_stats: dict[str, torch.Tensor] = {}
        self._stats_fn: Callable[[], dict[str, torch.Tensor]] | None = None

    @property
    def last_stats(self) -> dict[str, torch.Tensor]:
        """Detached statistics of the last ``forward`` (see the subclass).

        Computed when first read after the call, so training loops that never read them do not
        pay for their small kernels on every step; the values are those of that call.
        """
        if self._stats_fn is not None:
            with torch.no_grad():
                self._last_stats = self._stats_fn()
            self._stats_fn = None
        return self._last_stats

    @last_stats.setter
    def last_stats(self, value: dict[str, torch.Tensor]) -> None:
        self._last_stats = value
        self._stats_fn = None

    def _defer_stats(self, fn: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Set ``last_stats`` to ``fn()``, evaluated when first read."""
        self._stats_fn = fn

    def _check_logits(self, logits: torch.Tensor, name: str) -> None:
        """``logits`` must be finite floating ``(B, num_classes)``."""
        check_logits_2d(logits, name)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{name} must have num_classes={self.num_classes} columns, got shape "
                f"{tuple(logits.shape)}."
            )

    def _prepare(
        self, input: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated logits in the accumulation dtype and class indices ``(B,)``.

        Inputs:
            input: logits of shape ``(B, K)``; fp16/bf16 are computed in float32.
            target: class indices ``(B,)`` / ``(B, 1)`` or one-hot ``(B, K)``.

        Raises:
            TypeError: non-tensor or non-floating ``input``; bad ``target`` dtype.
            ValueError: wrong shapes, ``K != num_classes``, batch mismatch, NaN/Inf logits,
                class index outside ``[0, K)``.
        """
        # the checks of _check_logits, with the one-sum finiteness test of the fused losses
        check_logits_2d(input, "input", finite=False)
        check_finite(input, "input")
        if input.shape[1] != self.num_classes:
            raise ValueError(
                f"input must have num_classes={self.num_classes} columns, got shape "
                f"{tuple(input.shape)}."
            )
        dtype = accumulation_dtype(input)
        return input if input.dtype == dtype else input.to(dtype), class_indices(target, input)

    def _stage(self, new_state: dict[str, torch.Tensor]) -> None:
        # tensors computed without a graph need no detach (one op fewer per tensor and call)
        self._pending = {k: v.detach() if v.requires_grad else v for k, v in new_state.items()}
        if self.update_state_in_forward:
            self.update_state()

    @property
    def has_pending_state(self) -> bool:
        """True when a training ``forward`` staged state that has not been committed yet."""
        return self._pending is not None

    @torch.no_grad()
    def update_state(self) -> bool:
        """Commit the state staged by the last training ``forward``.

        Returns:
            True if something was committed, False if nothing was staged (e.g. eval mode).
        """
        if self._pending is None:
            return False
        for name, value in self._pending.items():
            getattr(self, name).copy_(value)
        self._pending = None
        return True

    def discard_pending_state(self) -> None:
        """Drop staged state without committing it."""
        self._pending = None
