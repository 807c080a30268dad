# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Intra-op thread control for loops of many small torch ops (private)."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

__all__ = ["map_chunks", "outer_intra_op_threads", "single_intra_op_thread"]

T = TypeVar("T")

# the intra-op thread count that the outermost active single_intra_op_thread replaced by 1
# (per Python thread)
_outer = threading.local()


def outer_intra_op_threads() -> int:
    """The caller's intra-op thread count: ``torch.get_num_threads()``, or inside
    :func:`single_intra_op_thread` the count it replaced (the threads :func:`map_chunks` may
    use)."""
    return getattr(_outer, "threads", None) or torch.get_num_threads()


@contextlib.contextmanager
def single_intra_op_thread(enabled: bool = True) -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the previous count.

    For loops over cache-sized chunks (a few dozen ops per chunk, a few hundred per call): with
    several threads every such op opens a parallel region, and on a machine whose cores are
    busy each region waits for a descheduled worker. Measured on a 2-core VM with one other
    busy process, the metric fast path took 1.5 s per call instead of 22 ms (26 ms on one
    thread, at any load). The thread count is process-wide state, so this is not meant for
    concurrent use from several Python threads. Inside the block
    :func:`outer_intra_op_threads` still gives the replaced count, so that the loop can share its
    chunks between that many Python threads (:func:`map_chunks`).

    Args:
        enabled: ``False`` makes this a no-op.
    """
    threads = torch.get_num_threads()
    if not enabled or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    previous, _outer.threads = getattr(_outer, "threads", None), threads
    try:
        yield
    finally:
        _outer.threads = previous
        torch.set_num_threads(threads)


def map_chunks(
    num_chunks: int, make_worker: Callable[[], Callable[[int], T]], workers: int
) -> list[T]:
    """``[work(0), ..., work(num_chunks - 1)]`` computed by ``workers`` threads in parallel.

    Each thread (the calling one and ``workers - 1`` Python threads) gets its own
    ``work = make_worker()`` (per-thread buffers) and claims the next unclaimed chunk until none
    is left, running every torch op on one intra-op thread. The ops release the GIL, so the
    threads overlap; there is no synchronisation between chunks (one join at the end), so a core
    that another process keeps busy costs at most its share of the work, instead of a wait in
    each of the ~100 ATen parallel regions that splitting every chunk op would open (measured
    30-70x slower under load, see :func:`single_intra_op_thread`). Chunks are claimed in order
    and results are returned in chunk order, so callers that add them in that order get the
    same bits at any ``workers``.

    If ``work`` raises, no further chunk is claimed and the exception of the lowest failing
    chunk is raised (the one a sequential loop would raise first: every lower chunk was claimed
    before it and runs to completion). The intra-op thread count is restored afterwards.

    Args:
        num_chunks: number of chunks.
        make_worker: called once per thread, returns the function that processes one chunk.
        workers: number of threads (``<= 1``: a plain loop on the calling thread).
    """
    results: list = [None] * num_chunks
    workers = max(1, min(workers, num_chunks))
    with single_intra_op_thread():
        if workers == 1:
            work = make_worker()
            return [work(i) for i in range(num_chunks)]
        claim = itertools.count()  # next() on it is atomic under the GIL
        stop = threading.Event()
        failures: list[tuple[int, BaseException]] = []

        def loop() -> None:
            torch.set_num_threads(1)  # this thread's OpenMP / MKL setting (thread-local)
            try:
                work = make_worker()
            except BaseException as exc:  # re-raised by the caller below
                failures.append((-1, exc))
                stop.set()
                return
            while not stop.is_set():
                i = next(claim)
                if i >= num_chunks:
                    return
                try:
                    results[i] = work(i)
                except BaseException as exc:  # re-raised by the caller below
                    failures.append((i, exc))
                    stop.set()
                    return

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(workers - 1)]
        for t in threads:
            t.start()
        try:
            loop()
        finally:
            for t in threads:
                t.join()
        if failures:
            raise min(failures, key=lambda f: f[0])[1]
    return results
