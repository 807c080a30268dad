# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Tests for monai_calib.metrics._calibration_kernels: the binning kernels and the chunked CPU
fast path, at one and at two intra-op threads, against plain numpy statistics."""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from monai_calib.metrics import _calibration_kernels as kernels
from monai_calib.metrics import (
    calibration_error,
    calibration_error_from_statistics,
    calibration_statistics,
)

# the submodule (the package attribute of that name is the re-exported function)
_CE_MODULE = importlib.import_module("monai_calib.metrics.calibration_error")


@contextlib.contextmanager
def _num_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (tests/conftest.py pins 1), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        assert torch.get_num_threads() == n
        yield
    finally:
        torch.set_num_threads(old)


def _random_probs(n, k, seed, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), dim=1)
    return p.to(dtype), torch.randint(0, k, (n,), generator=g)


def _assert_same_statistics(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Counts and hits are the same integers; confidence sums agree to float64 rounding."""
    assert got.shape == ref.shape and got.dtype == torch.float64
    assert torch.equal(got[..., 0], ref[..., 0])
    assert torch.equal(got[..., 2], ref[..., 2])
    assert torch.allclose(got[..., 1], ref[..., 1], rtol=1e-12, atol=1e-9)


def _np_width_statistics(p, y, num_bins, target):
    """float64 numpy statistics; bins from ceil(q * M) computed in the input's precision."""
    p = p.numpy()
    y = y.numpy()
    m = p.dtype.type(num_bins)
    if target == "top_label":
        conf = p.max(1)[:, None]
        correct = (p.argmax(1) == y)[:, None]  # numpy argmax: the first maximal class too
    else:
        conf = p
        correct = y[:, None] == np.arange(p.shape[1])[None, :]
    bins = np.clip(np.ceil(conf * m).astype(np.int64) - 1, 0, num_bins - 1)
    out = np.zeros((conf.shape[1], num_bins, 3))
    for c in range(conf.shape[1]):
        out[c, :, 0] = np.bincount(bins[:, c], minlength=num_bins)
        out[c, :, 1] = np.bincount(
            bins[:, c], weights=conf[:, c].astype(np.float64), minlength=num_bins
        )
        out[c, :, 2] = np.bincount(
            bins[:, c], weights=correct[:, c].astype(np.float64), minlength=num_bins
        )
    return torch.from_numpy(out)


def _with_ties_and_edges(p):
    """Rows with tied maxima (first / later class), exact 0 and 1 confidences."""
    k = p.shape[1]
    p[:3] = 0.0
    p[0, 0] = p[1, k - 1] = p[2, 1] = 1.0
    p[3:6] = 1.0 / k  # all classes tied
    p[6] = 0.0
    p[6, 1:3] = 0.5  # tie between classes 1 and 2
    p[7] = 0.0
    p[7, k - 2 :] = 0.5  # tie between the last two classes
    return p


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_classes", [3, 10, 70])
def test_chunked_statistics_match_float64_reference(threads, dtype, num_classes):
    # N spans many chunks (and a partial last one); K = 70 takes the strided-copy transpose
    p, y = _random_probs(30_011, num_classes, seed=21, dtype=dtype)
    p = _with_ties_and_edges(p)
    y[:8] = torch.tensor([0, 0, 1, 0, 1, 2, 1, num_classes - 1]) % num_classes
    with _num_threads(threads):
        for target in ("top_label", "classwise"):
            for num_bins in (1, 15):
                got = calibration_statistics(p, y, num_bins=num_bins, target=target)
                ref = _np_width_statistics(p, y, num_bins, target)
                _assert_same_statistics(got, ref)
                ece = calibration_error_from_statistics(got)
                assert float(ece) == pytest.approx(
                    float(calibration_error_from_statistics(ref)), abs=1e-12
                )


@pytest.mark.parametrize("target", ["top_label", "classwise"])
def test_chunked_dense_matches_float64_reference(target):
    g = torch.Generator().manual_seed(5)
    p = torch.softmax(3 * torch.randn(2, 4, 70, 60, 9, generator=g), dim=1)
    y = torch.randint(0, 4, (2, 70, 60, 9), generator=g)
    p[0, :, 0, 0, :4] = 0.25  # tied voxels
    p[1, :, 3, 3, 0] = torch.tensor([0.0, 0.5, 0.5, 0.0])
    flat_p = p.movedim(1, -1).reshape(-1, 4)
    got = calibration_statistics(p, y.unsqueeze(1), target=target)
    _assert_same_statistics(got, _np_width_statistics(flat_p, y.reshape(-1), 15, target))


def test_chunked_identity_transpose_is_exact_and_precision_guarded():
    # the (N, K) chunks are transposed by eye @ chunk.T; it must reproduce every value bit for
    # bit (subnormal, tiny and exact 0/1 entries included), and reduced-precision matmul
    # settings must switch it off without changing the result
    p, y = _random_probs(20_000, 6, seed=3, dtype=torch.float32)
    p[:50, 0] = torch.finfo(torch.float32).tiny / 8  # subnormal
    p[50:100, 1] = 1e-30
    p = p / p.sum(1, keepdim=True)
    ref = _np_width_statistics(p, y, 15, "classwise")
    got = calibration_statistics(p, y, target="classwise")
    assert torch.equal(got[..., 0], ref[..., 0])
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert torch.equal(calibration_statistics(p, y, target="classwise"), got)
    finally:
        torch.set_float32_matmul_precision(old)


def test_chunked_checks_find_bad_values_in_any_chunk_with_the_same_messages():
    p, y = _random_probs(50_000, 4, seed=2, dtype=torch.float32)
    late_sum = p.clone()
    late_sum[30_000] *= 0.9  # only a later chunk is off
    for target in ("top_label", "classwise"):
        with pytest.raises(ValueError, match=r"largest \|sum - 1\| is 0\.1, above the tolerance"):
            calibration_error(late_sum, y, target=target)
    # a range error anywhere takes precedence over a sum error in an earlier chunk
    both = p.clone()
    both[10] *= 0.9
    both[45_000, 0] = -0.25
    both[45_000, 1] += 0.25
    for target in ("top_label", "classwise"):
        with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*got values in \[-0\.25"):
            calibration_error(both, y, target=target)
    nan = p.clone()
    nan[49_999, 2] = float("nan")
    with pytest.raises(ValueError, match="must be finite, got 1 NaN and 0 Inf"):
        calibration_error(nan, y)
    inf = p.clone()
    inf[40_000, 3] = float("inf")
    with pytest.raises(ValueError, match="must be finite, got 0 NaN and 1 Inf"):
        calibration_error(inf, y, target="classwise")
    with pytest.raises(ValueError, match="must be finite, got 0 NaN and 1 Inf"):
        calibration_error(inf, y)
    dense = torch.softmax(torch.randn(2, 3, 40, 40, 40), dim=1)
    dense[1, :, 39, 39, 39] = torch.tensor([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"largest \|sum - 1\| is 0\.5"):
        calibration_error(dense, torch.zeros(2, 40, 40, 40, dtype=torch.long))


def _with_grid_rows(p: torch.Tensor) -> torch.Tensor:
    """Rows whose probabilities are multiples of 1/20 (q * M lands on whole numbers for M = 1, 4,
    5, 10, 20, or just beside them after rounding): the threaded ``trunc + (trunc < qM)`` and the
    serial ``ceil`` must agree on every one of them."""
    g = torch.Generator().manual_seed(7)
    k = p.shape[1]
    rows = torch.zeros(200, k, dtype=torch.float64)
    first = torch.randint(0, 21, (200,), generator=g).double() / 20
    rows[:, 0] = first
    rows[:, k - 1] = 1.0 - first
    perm = torch.argsort(torch.rand(200, k, generator=g), dim=1)  # spread over the classes
    p[8:208] = rows.gather(1, perm).to(p.dtype)
    return p


_THREADED_CASES = {
    # (N, K) with a small K: identity-product transpose at one thread, strided copy at two
    "rows_k3": ((40_003, 3), torch.float32),
    "rows_k5_f64": ((25_001, 5), torch.float64),
    # (N, K) with K above the identity-product limit: strided copy at both thread counts
    "rows_k70": ((3_001, 70), torch.float32),
    # dense (B, K, *spatial): chunks of each image's voxels
    "dense": ((2, 4, 40, 30, 9), torch.float32),
}


def _threaded_case(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p, y, flat_p, flat_y)``; the flat pair lists the same voxels as ``(N, K)`` rows."""
    shape, dtype = _THREADED_CASES[name]
    g = torch.Generator().manual_seed(sum(shape))
    z = 3 * torch.randn(*shape, generator=g, dtype=torch.float64)
    p = torch.softmax(z, dim=1)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    if p.ndim == 2:
        p = _with_grid_rows(_with_ties_and_edges(p))
        y[:8] = torch.tensor([0, 0, 1, 0, 1, 2, 1, shape[1] - 1]) % shape[1]
    else:
        p[0, :, 0, 0, :4] = 1.0 / shape[1]  # tied voxels
        p[1, :, 3, 3, 0] = torch.tensor([0.0, 0.5, 0.5, 0.0])
        p[1, :, 5, 5, :3] = torch.tensor([0.25, 0.75, 0.0, 0.0]).unsqueeze(1)
    p = p.to(dtype)
    return p, y, p.movedim(1, -1).reshape(-1, shape[1]), y.reshape(-1)


@pytest.mark.parametrize("name", sorted(_THREADED_CASES))
def test_chunked_kernel_at_two_threads_equals_one_thread_and_plain_statistics(name):
    # tests/conftest.py pins one thread, so the threaded branch (smaller chunks, no identity
    # transpose, ceil as trunc + (trunc < qM)) only runs where a test switches to two threads
    p, y, flat_p, flat_y = _threaded_case(name)
    for target in ("top_label", "classwise"):
        for num_bins in (1, 4, 15, 20):
            ref = _np_width_statistics(flat_p, flat_y, num_bins, target)
            results = {}
            for threads in (1, 2):
                with _num_threads(threads):
                    for check in (True, False):
                        got = kernels.chunked_equal_width_statistics(
                            p, p, y, target, num_bins, check=check
                        )
                        _assert_same_statistics(got, ref)
                        results[threads, check] = got
                    # the whole-tensor kernel gives the same statistics
                    if target == "top_label":
                        conf, pred = p.max(dim=1)
                        whole = kernels.binned_statistics(conf, pred == y, num_bins)
                    else:
                        onehot = torch.nn.functional.one_hot(y, p.shape[1]).movedim(-1, 1)
                        whole = kernels.binned_statistics(p, onehot.bool(), num_bins, group_dim=1)
                    _assert_same_statistics(whole, ref)
            # one and two threads: the same chunks, added in chunk order: the same bits
            assert torch.equal(results[2, True], results[1, True])
            assert torch.equal(results[1, True], results[1, False])
            assert torch.equal(results[2, True], results[2, False])
            # and the public function takes that path at two threads
            with _num_threads(2):
                public = calibration_statistics(p, y, num_bins=num_bins, target=target)
            assert torch.equal(public, results[2, True])


def test_chunks_do_not_depend_on_the_thread_count(monkeypatch):
    # cache-sized chunks of the same width at any thread count; every chunk op runs on one
    # intra-op thread, the chunks are shared between as many Python threads as the caller had
    # intra-op threads, and the count is restored afterwards, also on error
    threads_mod = importlib.import_module("monai_calib._utils.threads")
    p, y = _random_probs(400_000, 3, seed=1, dtype=torch.float32)
    widths, workers, inside = {}, {}, {}
    for threads in (1, 2):
        with _num_threads(threads):
            seen, start = [], 0
            # one buffer is reused between chunks: check each one before the next is made
            for x, sums, lab in kernels._chunks(p, y, row_sums=True):
                n = x.shape[1]
                assert torch.equal(x, p[start : start + n].t())
                assert torch.equal(lab, y[start : start + n])
                torch.testing.assert_close(sums, p[start : start + n].sum(1))
                seen.append(n)
                start += n
            assert sum(seen) == 400_000
            widths[threads] = seen
            real_map = threads_mod.map_chunks

            def spy(num, make_worker, n_workers, _threads=threads, _real=real_map):
                workers[_threads] = n_workers

                def make():
                    work = make_worker()

                    def run(i):
                        inside.setdefault(_threads, set()).add(torch.get_num_threads())
                        return work(i)

                    return run

                return _real(num, make, n_workers)

            monkeypatch.setattr(kernels, "map_chunks", spy)
            kernels.chunked_equal_width_statistics(p, p, y, "top_label", 15, check=True)
            calibration_statistics(p, y, target="classwise")
            monkeypatch.setattr(kernels, "map_chunks", real_map)
            assert torch.get_num_threads() == threads
            bad = p.clone()
            bad[123_456, 0] = -0.5
            with pytest.raises(ValueError, match=r"\[0, 1\]"):
                calibration_statistics(bad, y)
            assert torch.get_num_threads() == threads
    assert widths[1][0] == kernels._CHUNK_VALUES // 3
    assert widths[2] == widths[1]
    assert workers == {1: 1, 2: 2}
    assert inside == {1: {1}, 2: {1}}


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_map_chunks_order_errors_and_threads(workers):
    # results in chunk order, each chunk's ops on one intra-op thread, one worker function per
    # thread, the exception of the lowest failing chunk, the thread count restored
    threads_mod = importlib.import_module("monai_calib._utils.threads")
    made, seen = [], []

    def make_worker():
        made.append(1)

        def work(i):
            seen.append(torch.get_num_threads())
            return torch.full((3,), float(i)).sum().item()

        return work

    with _num_threads(2):
        got = threads_mod.map_chunks(11, make_worker, workers)
        assert torch.get_num_threads() == 2
    assert got == [3.0 * i for i in range(11)]
    assert set(seen) == {1} and len(seen) == 11
    assert 1 <= len(made) <= workers

    def failing_worker():
        def work(i):
            if i in (4, 7, 9):
                raise ValueError(f"chunk {i}")
            return i

        return work

    for _ in range(5):
        with _num_threads(2):
            with pytest.raises(ValueError, match="chunk 4"):
                threads_mod.map_chunks(12, failing_worker, workers)
            assert torch.get_num_threads() == 2
    assert threads_mod.map_chunks(0, make_worker, workers) == []


def test_outer_intra_op_threads_survives_nested_single_thread_blocks():
    # the count a single_intra_op_thread block replaced is what map_chunks may use inside it,
    # through nested blocks, and it is forgotten (restored) on exit, also on error
    threads_mod = importlib.import_module("monai_calib._utils.threads")
    with _num_threads(2):
        assert threads_mod.outer_intra_op_threads() == 2
        with threads_mod.single_intra_op_thread():
            assert torch.get_num_threads() == 1
            assert threads_mod.outer_intra_op_threads() == 2
            with threads_mod.single_intra_op_thread():
                assert threads_mod.outer_intra_op_threads() == 2
            torch.set_num_threads(3)  # a caller that changes the count inside the block
            with threads_mod.single_intra_op_thread():
                assert threads_mod.outer_intra_op_threads() == 3
            assert threads_mod.outer_intra_op_threads() == 2
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads_mod.single_intra_op_thread():
            raise RuntimeError
        assert threads_mod.outer_intra_op_threads() == 2 == torch.get_num_threads()
        with threads_mod.single_intra_op_thread(enabled=False):
            assert threads_mod.outer_intra_op_threads() == 2 == torch.get_num_threads()
    with _num_threads(1), threads_mod.single_intra_op_thread():
        assert threads_mod.outer_intra_op_threads() == 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(3_001, 5), (3_001, 70), (2, 4, 13, 11, 7)])
def test_chunked_statistics_over_many_small_chunks(monkeypatch, threads, shape):
    # tiny chunks: many chunks, a partial last one, chunks with tied rows (exact argmax) next to
    # chunks without; the statistics are those of the plain reference at 1 and 2 threads (the
    # chunks shared between two Python threads), and the same bits at both
    monkeypatch.setattr(kernels, "_CHUNK_VALUES", 700)
    g = torch.Generator().manual_seed(11)
    p = torch.softmax(3 * torch.randn(*shape, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    if p.ndim == 2:
        p[::397] = 1.0 / shape[1]  # a tied row every few chunks
        p[5::131] = 0.0
        p[5::131, 1:3] = 0.5  # a tie of classes 1 and 2
        y[5::131] = 2
    else:
        p[0, :, 0, 0, :3] = 0.25
    p = p.float()
    flat_p, flat_y = p.movedim(1, -1).reshape(-1, shape[1]), y.reshape(-1)
    for target in ("top_label", "classwise"):
        for check in (True, False):
            with _num_threads(threads):
                got = kernels.chunked_equal_width_statistics(p, p, y, target, 15, check=check)
            _assert_same_statistics(got, _np_width_statistics(flat_p, flat_y, 15, target))
            with _num_threads(3 - threads):
                other = kernels.chunked_equal_width_statistics(p, p, y, target, 15, check=check)
            assert torch.equal(got, other)


def test_kernel_edge_codes_and_groups():
    # plain expectations for the shared binning kernels: right-closed bins, 0 in the first bin,
    # 1 in the last, one block of M + 1 slots per group along group_dim
    q = torch.tensor([[0.0, 0.1, 0.1000001, 0.5], [0.95, 1.0, 0.3, 0.7]], dtype=torch.float64)
    codes = kernels.equal_width_codes(q, 10, group_dim=0)
    assert codes.dtype == torch.int32
    assert codes.tolist() == [[0, 1, 2, 5], [11 + 10, 11 + 10, 11 + 3, 11 + 7]]
    correct = torch.tensor([[True, False, True, True], [False, True, True, False]])
    stats = kernels.binned_statistics(q, correct, 10, group_dim=0)
    assert stats.shape == (2, 10, 3)
    assert stats[0, :, 0].tolist() == [2, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert stats[0, 0].tolist() == [2.0, 0.1, 1.0]
    assert stats[1, 9].tolist() == [2.0, 1.95, 1.0]
    # a grouped call equals one call per group
    for r in range(2):
        assert torch.equal(stats[r : r + 1], kernels.binned_statistics(q[r], correct[r], 10))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5_003, 4), (2, 3, 20, 17)])
def test_whole_tensor_path_equals_chunked_path(monkeypatch, dtype, shape):
    # GPUs take the whole-tensor kernels (equal_width_codes + gather / binned_statistics); on the
    # CPU they are reached by switching the chunked path off
    g = torch.Generator().manual_seed(3)
    z = 3 * torch.randn(*shape, generator=g)
    p = torch.softmax(z, dim=1).to(dtype)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    flat_p = p.float().movedim(1, -1).reshape(-1, shape[1])
    for target in ("top_label", "classwise"):
        for num_bins in (1, 15):
            kw = {"num_bins": num_bins, "target": target}
            chunked = calibration_statistics(p, y, **kw)
            chunked_logits = calibration_statistics(z, y, logits=True, **kw)
            with monkeypatch.context() as m:
                m.setattr(_CE_MODULE, "fast_path_ok", lambda _: False)
                whole = calibration_statistics(p, y, **kw)
                whole_logits = calibration_statistics(z, y, logits=True, **kw)
            _assert_same_statistics(whole, chunked)
            _assert_same_statistics(whole_logits, chunked_logits)
            ref = _np_width_statistics(flat_p, y.reshape(-1), num_bins, target)
            _assert_same_statistics(whole, ref)


def _grad_inputs(kind: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities that require grad: a leaf, or the softmax of a parameter (non-leaf)."""
    g = torch.Generator().manual_seed(13)
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    if kind == "leaf":
        return torch.softmax(z, 1).requires_grad_(True), y
    return torch.softmax(torch.nn.Parameter(z), 1), y


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["leaf", "non_leaf"])
@pytest.mark.parametrize("shape", [(300, 4), (2, 3, 5, 6)])
def test_grad_inputs_are_detached_at_any_thread_count(threads, kind, shape):
    """Metrics are not differentiable: inputs with requires_grad=True give the same values as
    detached ones (the 1-thread fast path's ``mm(out=)`` used to raise a RuntimeError) and no
    result holds an autograd graph."""
    from monai_calib.metrics import (
        BrierScoreMetric,
        NLLMetric,
        PooledCalibrationErrorMetric,
        brier_score,
        negative_log_likelihood,
    )

    p, y = _grad_inputs(kind, shape)
    ref = p.detach().clone()
    with _num_threads(threads):
        for target in ("top_label", "classwise"):
            got = calibration_statistics(p, y, target=target)
            assert not got.requires_grad
            _assert_same_statistics(got, calibration_statistics(ref, y, target=target))
            for binning in ("equal_width", "equal_mass"):
                ece = calibration_error(p, y, target=target, binning=binning)
                assert not ece.requires_grad
                assert torch.equal(ece, calibration_error(ref, y, target=target, binning=binning))
        marginal = calibration_error(
            p, torch.nn.functional.one_hot(y, p.shape[1]).movedim(-1, 1), target="marginal"
        )
        assert not marginal.requires_grad
        for fn in (brier_score, negative_log_likelihood):
            out = fn(p, y)
            assert not out.requires_grad
            assert torch.equal(out, fn(ref, y))
        for cls in (PooledCalibrationErrorMetric, BrierScoreMetric, NLLMetric):
            metric = cls()
            metric(p, y)
            value = metric.aggregate()
            assert not value.requires_grad
            expected = cls()
            expected(ref, y)
            assert torch.equal(value, expected.aggregate())


@pytest.mark.parametrize("kind", ["leaf", "non_leaf"])
def test_classification_report_of_grad_inputs_equals_detached(kind):
    from monai_calib.metrics import classification_report

    p, y = _grad_inputs(kind, (60, 3))
    assert classification_report(p, y) == classification_report(p.detach().clone(), y)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_one_hot_reader_over_blocks_is_as_strict_as_check_one_hot(
    monkeypatch, request, dtype, threads
):
    # the blocked one-pass reader of dense one-hot labels: the index of argmax for valid input,
    # None for every kind of invalid voxel, in any block (check_one_hot is the rule), with the
    # blocks shared between one or two threads
    validation = importlib.import_module("monai_calib._utils.validation")
    monkeypatch.setattr(validation, "_ONE_HOT_BLOCK", 64)  # 16 voxels per block for K = 4
    request.addfinalizer(functools.partial(torch.set_num_threads, torch.get_num_threads()))
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 4, (2, 1, 7, 9, 5), generator=g)
    y = torch.zeros(2, 4, 7, 9, 5, dtype=dtype).scatter_(1, idx, 1.0)
    got = validation._checked_one_hot_index(y)
    assert torch.equal(got, y.argmax(1)) and got.dtype == torch.long
    assert torch.equal(validation.normalize_dense_class_target(y, y.shape), idx[:, 0])
    bad_voxels = {
        "soft": [1.0, 1e-9, 0.0, 0.0],
        "below one": [0.75, 0.0, 0.0, 0.0],
        "two ones": [1.0, 1.0, 0.0, 0.0],
        "empty": [0.0, 0.0, 0.0, 0.0],
        "above one": [2.0, 0.0, 0.0, 0.0],
        "negative compensated": [-1.0, 1.0, 1.0, 0.0],
        "nan": [float("nan"), 1.0, 0.0, 0.0],
        "inf": [float("inf"), 0.0, 0.0, 0.0],
    }
    for name, voxel in bad_voxels.items():
        for where in (
            (0, slice(None), 0, 0, 0),
            (1, slice(None), 6, 8, 4),
            (1, slice(None), 3, 2, 1),
        ):
            bad = y.clone()
            bad[where] = torch.tensor(voxel, dtype=dtype)
            assert not validation.check_one_hot(bad, dim=1), name
            assert validation._checked_one_hot_index(bad) is None, (name, where)
            with pytest.raises(ValueError, match="one-hot"):
                calibration_statistics(torch.full(y.shape, 0.25, dtype=dtype), bad)
