# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Intra-op thread control for loops of many small torch ops (private)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["single_intra_op_thread"]


@contextlib.contextmanager
def single_intra_op_thread(enabled: bool = True) -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the previous count.

    For loops over cache-sized chunks (a few dozen ops per chunk, a few hundred per call): with
    several threads every such op opens a parallel region, and on a machine whose cores are
    busy each region waits for a descheduled worker. Measured on a 2-core VM with one other
    busy process, the metric fast path took 1.5 s per call instead of 22 ms (26 ms on one
    thread, at any load). The thread count is process-wide state, so this is not meant for
    concurrent use from several Python threads.

    Args:
        enabled: ``False`` makes this a no-op.
    """
    threads = torch.get_num_threads()
    if not enabled or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
