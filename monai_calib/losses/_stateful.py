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

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["StatefulLossBase"]


class StatefulLossBase(_Loss):
    """Base class: staging / committing of buffer state, and ``last_stats`` for logging.

    Subclasses register their state as persistent buffers (so it follows ``.to(device)`` and is
    saved by ``state_dict``) and call :py:meth:`_stage` with the new buffer values.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.update_state_in_forward: bool = True
        self._pending: dict[str, torch.Tensor] | None = None
        self.last_stats: dict[str, torch.Tensor] = {}

    def _stage(self, new_state: dict[str, torch.Tensor]) -> None:
        self._pending = {k: v.detach() for k, v in new_state.items()}
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
