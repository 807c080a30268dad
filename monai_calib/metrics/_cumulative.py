# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Storage strategies for MONAI ``CumulativeIterationMetric`` subclasses (private).

MONAI's :class:`~monai.metrics.Cumulative` keeps one tensor per *sample* in Python lists and
all-gathers their stack across ranks. That is right for per-image scores, wasteful for sufficient
statistics and very slow for millions of buffered rows. This module keeps MONAI's public
behaviour (``__call__`` / ``extend`` / ``append`` / ``get_buffer`` / ``reset`` / ``aggregate``)
and swaps the storage:

- ``"sum"``: every buffer is a single running sum of shape ``(1, ...)``; ``get_buffer()`` returns
  the sum over all calls and all ranks (one all-gather of a fixed-size tensor per rank). Memory
  does not grow with samples, voxels or iterations.
- ``"concat"``: every call's batch is kept as one chunk (no per-row split); ``get_buffer()``
  concatenates the chunks and all-gathers them across ranks (uneven lengths are padded and
  trimmed by :func:`monai.utils.evenly_divisible_all_gather`).
- ``"items"``: MONAI's own per-sample storage (used for per-image scores).

Under ``torch.distributed`` every rank joins every gather, also a rank that has seen no data (it
contributes nothing; MONAI's own ``Cumulative`` skips the gather there and blocks the other
ranks): the result on every rank is the single-process result on the union of the data, and
without data on any rank ``get_buffer()`` returns None, as in a single process.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_calib._utils.distributed import gather_rows, is_dist_ready

__all__ = ["StorageCumulativeMetric"]

_STORAGES = ("sum", "concat", "items")


class StorageCumulativeMetric(CumulativeIterationMetric):
    """A :class:`~monai.metrics.CumulativeIterationMetric` with a selectable storage strategy.

    Subclasses set ``self._storage`` (``"sum"``, ``"concat"`` or ``"items"``) in ``__init__``
    before any call, then implement ``_compute_tensor`` and ``aggregate`` as usual.
    """

    _storage: str = "items"

    def _compute_list(  # type: ignore[override]
        self, y_pred: Any, y: Any = None, **kwargs: Any
    ) -> Any:
        """A decollated list (what MONAI's metric handlers pass) as one batch when it can be.

        With ``"sum"`` or ``"concat"`` storage the accumulated result does not depend on how
        the samples are grouped into calls, so items of one shape, dtype and device are stacked
        and computed in one call (per-sample calls cost ~100x more on small images); the return
        value is then that batch's result. Anything else is computed item by item, as MONAI does.
        """
        if self._storage != "items" and _stackable(y_pred) and _stackable(y):
            if len(y_pred) == len(y):
                return self._compute_tensor(
                    torch.stack([t.detach() for t in y_pred]),
                    torch.stack([t.detach() for t in y]),
                    **kwargs,
                )
        return super()._compute_list(y_pred, y, **kwargs)

    def extend(self, *data: Any) -> None:
        """Add a batch (dim 0) of results to the buffers, according to the storage strategy."""
        if self._storage == "items":
            super().extend(*data)
            return
        if self._buffers is None:
            self._buffers = [[] for _ in data]
        if len(data) != len(self._buffers):
            raise ValueError(
                f"the metric returned {len(data)} buffers but {len(self._buffers)} were "
                "accumulated so far; call reset() between incompatible inputs."
            )
        for b, d in zip(self._buffers, data, strict=True):
            d_t = torch.as_tensor(d)
            if d_t.ndim == 0:
                raise TypeError("buffers must be batch-first tensors, got a 0-d tensor.")
            if self._storage == "sum":
                s = d_t.sum(dim=0, keepdim=True)
                if b:
                    if b[0].shape != s.shape:
                        raise ValueError(
                            f"cannot add statistics of shape {tuple(s.shape[1:])} to accumulated "
                            f"statistics of shape {tuple(b[0].shape[1:])} (did the number of "
                            "classes change between batches?); call reset() first."
                        )
                    b[0] = b[0] + s
                else:
                    b.append(s)
            else:
                if b and b[0].shape[1:] != d_t.shape[1:]:
                    raise ValueError(
                        f"cannot buffer a batch of per-row shape {tuple(d_t.shape[1:])} after "
                        f"batches of per-row shape {tuple(b[0].shape[1:])} (did the number of "
                        "classes change between batches?); call reset() first."
                    )
                b.append(d_t)
        self._synced = False

    def append(self, *data: Any) -> None:
        """Add a single item (no batch dimension) to the buffers."""
        if self._storage == "items":
            super().append(*data)
            return
        self.extend(*(torch.as_tensor(d).unsqueeze(0) for d in data))

    def _local_tensors(self) -> list[torch.Tensor] | None:
        """This rank's buffers as one batch-first tensor each (None before any data)."""
        if self._buffers is None:
            return None
        if self._storage == "sum":
            return [b[0] for b in self._buffers]
        if self._storage == "concat":
            return [torch.cat(b, dim=0) for b in self._buffers]
        try:  # "items", as MONAI's Cumulative (a 0-row batch leaves an empty list)
            return [torch.stack(b, dim=0) if b else torch.zeros(0) for b in self._buffers]
        except (RuntimeError, TypeError, ValueError) as e:
            raise TypeError(f"{e}. unable to sync buffer contents: {self._buffers}.") from e

    def _sync(self) -> None:
        if is_dist_ready():
            # Every rank joins every time, with or without data and whether or not its own
            # buffers changed since the last sync: skipping is a rank-local decision that would
            # leave the other ranks blocked in the gather.
            gathered = gather_rows(self._local_tensors())
        else:
            if self._synced or self._buffers is None:
                return
            if self._storage == "items":
                super()._sync()
                return
            gathered = self._local_tensors()
        if gathered is not None and self._storage == "sum":
            # (world, ...) -> (1, ...): the per-rank sums added up.
            gathered = [t.sum(dim=0, keepdim=True) for t in gathered]
        # None when no rank has data: get_buffer() returns None, as in a single process
        self._synced_tensors = gathered
        self._synced = True

    def _require_buffer(self) -> Any:
        """``get_buffer()``, raising a clear error when the metric has seen no data."""
        data = self.get_buffer()
        if data is None:
            raise RuntimeError(
                f"{type(self).__name__} has no data: call it on at least one batch before "
                "aggregate()."
            )
        return data


def _stackable(items: Any) -> bool:
    """A non-empty list or tuple of tensors of one shape, dtype and device."""
    if not isinstance(items, (list, tuple)) or not items:
        return False
    first = items[0]
    return all(
        isinstance(t, torch.Tensor)
        and t.shape == first.shape
        and t.dtype == first.dtype
        and t.device == first.device
        for t in items
    )
