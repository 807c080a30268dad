# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Paired bootstrap intervals for the difference of a metric between two models on one test set.

"Is LS+ really better calibrated than CE here?" is a question about two models' predictions on the
same test images, so the images are resampled *jointly* (paired): each replicate draws one set of
test indices per seed and evaluates both models on it. Differences are averaged over seeds within
a replicate, so the interval is that of the seed-mean difference under test-set resampling (the
trained models held fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch

from monai_calib._utils.validation import (
    check_finite,
    check_num_bins,
    look_up_argument,
    normalize_class_target,
)

from ._calibration_kernels import binned_statistics
from .calibration_error import calibration_error_from_statistics

_BLOCK = 1 << 20

__all__ = ["BootstrapStatistic", "PairedBootstrapResult", "paired_bootstrap", "top_label_arrays"]


class BootstrapStatistic(str, Enum):
    """Statistics :func:`paired_bootstrap` can resample (all plain fractions, NLL in nats).

    ``ece``: top-label equal-width ECE, bins right-closed with 0 in the first and 1 in the last
    bin, as :func:`~monai_calib.metrics.calibration_error`; ``acc``: accuracy; ``nll``: mean
    :math:`-\\log \\max(p_{iy_i}, \\epsilon)` as
    :func:`~monai_calib.metrics.negative_log_likelihood`; ``gap``: mean top-label confidence minus
    accuracy (positive: over-confident).
    """

    ECE = "ece"
    ACC = "acc"
    NLL = "nll"
    GAP = "gap"


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Paired difference ``a - b`` of one statistic with its percentile interval.

    Attributes:
        difference: the point estimate, the mean over seeds of ``stat(a) - stat(b)`` on the full
            test set.
        low, high: the ``confidence`` percentile interval of the replicate differences.
        confidence: the interval's coverage, e.g. ``0.95``.
        replicates: the ``(num_samples,)`` replicate differences.
    """

    difference: float
    low: float
    high: float
    confidence: float
    replicates: np.ndarray

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return bool(self.low > 0.0 or self.high < 0.0)


def top_label_arrays(probs: Any, labels: Any, eps: float = 1e-7) -> dict[str, np.ndarray]:
    """Per-sample top-label confidence, correctness and clipped true-class NLL, float64.

    Args:
        probs: ``(N, K)`` probabilities (array or tensor).
        labels: ``(N,)`` class indices.
        eps: the probability floor of the NLL (as ``negative_log_likelihood``).

    Raises:
        ValueError: ``probs`` is not ``(N, K)`` with ``N >= 1``, holds NaN/Inf or values outside
            [0, 1]; ``labels`` are not class indices ``(N,)`` / ``(N, 1)`` (or one-hot
            ``(N, K)``) in ``[0, K)``.
        TypeError: boolean ``labels``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (N, K) with N >= 1, got {p.shape}.")
    check_finite(torch.tensor(p), "probs")  # copies: a read-only array cannot be shared
    if p.min() < 0 or p.max() > 1:  # the ECE bins cover [0, 1]
        raise ValueError(
            f"probs must hold probabilities in [0, 1], got values in [{p.min()}, {p.max()}]."
        )
    y = normalize_class_target(
        torch.tensor(np.asarray(labels)), p.shape[1], batch_size=p.shape[0], name="labels"
    ).numpy()
    return {
        "conf": p.max(axis=1),
        "correct": (p.argmax(axis=1) == y).astype(np.float64),
        "nll": -np.log(np.maximum(p[np.arange(p.shape[0]), y], eps)),
    }


def _resampled(
    arrays: dict[str, np.ndarray], idx: np.ndarray, statistic: BootstrapStatistic, num_bins: int
) -> np.ndarray:
    """The statistic on each row of resample indices ``idx`` ``(R, N)``, as ``(R,)``."""
    if statistic is BootstrapStatistic.ACC:
        return arrays["correct"][idx].mean(axis=1)
    if statistic is BootstrapStatistic.NLL:
        return arrays["nll"][idx].mean(axis=1)
    conf, correct = arrays["conf"][idx], arrays["correct"][idx]
    if statistic is BootstrapStatistic.GAP:
        return conf.mean(axis=1) - correct.mean(axis=1)
    # one group of bins per replicate: the binning of calibration_error, all rows at once
    stats = binned_statistics(
        torch.from_numpy(conf), torch.from_numpy(correct > 0), num_bins, group_dim=0
    )
    return calibration_error_from_statistics(stats, average=False).numpy()


def paired_bootstrap(
    probs_a: Sequence[Any],
    probs_b: Sequence[Any],
    labels: Sequence[Any],
    statistic: BootstrapStatistic | str = BootstrapStatistic.ECE,
    num_samples: int = 2000,
    confidence: float = 0.95,
    num_bins: int = 15,
    seed: int = 0,
) -> PairedBootstrapResult:
    r"""Percentile interval of the seed-mean paired difference ``stat(a) - stat(b)``.

    For seeds :math:`s = 1..S` with test sets of size :math:`N_s`, replicate :math:`r` draws
    indices :math:`I_{s,r}` (:math:`N_s` with replacement, independently per seed) and computes

    .. math::

        \Delta_r = \frac1S \sum_s \mathrm{stat}(a_s[I_{s,r}]) - \mathrm{stat}(b_s[I_{s,r}]),

    the interval being the :math:`(1 \pm \mathrm{confidence})/2` percentiles of
    :math:`\{\Delta_r\}`. Indices come from ``numpy.random.default_rng(seed)``, one
    ``integers(0, N_s, size=(num_samples, N_s))`` call per seed in order.

    Inputs:
        - **probs_a**, **probs_b**: one ``(N_s, K)`` probability array per seed, same test images
          in the same order for ``a`` and ``b``.
        - **labels**: one ``(N_s,)`` class-index array per seed.

    Args:
        statistic: a :class:`BootstrapStatistic` (``"ece"``, ``"acc"``, ``"nll"``, ``"gap"``).
        num_samples: bootstrap replicates. Defaults to 2000.
        confidence: interval coverage in (0, 1). Defaults to 0.95.
        num_bins: equal-width bins of the ECE. Defaults to 15.
        seed: seed of the resampling. Defaults to 0.

    Raises:
        ValueError: empty or mismatched sequences, bad shapes, or out-of-range arguments.
    """
    stat = BootstrapStatistic(look_up_argument(statistic, BootstrapStatistic, "statistic"))
    if not (len(probs_a) == len(probs_b) == len(labels)) or len(labels) == 0:
        raise ValueError(
            "probs_a, probs_b and labels must be non-empty sequences of equal length (one entry "
            f"per seed), got lengths {len(probs_a)}, {len(probs_b)}, {len(labels)}."
        )
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    num_bins = check_num_bins(num_bins)
    rng = np.random.default_rng(seed)
    point = 0.0
    reps = np.zeros(int(num_samples))
    for pa, pb, y in zip(probs_a, probs_b, labels, strict=True):
        arr_a, arr_b = top_label_arrays(pa, y), top_label_arrays(pb, y)
        if arr_a["conf"].shape != arr_b["conf"].shape:
            raise ValueError(
                f"probs_a and probs_b must hold the same test images, got {arr_a['conf'].shape[0]}"
                f" and {arr_b['conf'].shape[0]} samples."
            )
        n = arr_a["conf"].shape[0]
        full = np.arange(n)[None, :]
        point += float(
            _resampled(arr_a, full, stat, num_bins)[0] - _resampled(arr_b, full, stat, num_bins)[0]
        )
        idx = rng.integers(0, n, size=(int(num_samples), n))
        step = max(1, _BLOCK // n)  # bounds the temporaries of one block of replicates
        for r in range(0, idx.shape[0], step):
            block = idx[r : r + step]
            reps[r : r + step] += _resampled(arr_a, block, stat, num_bins) - _resampled(
                arr_b, block, stat, num_bins
            )
    reps /= len(labels)
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return PairedBootstrapResult(
        difference=point / len(labels),
        low=float(low),
        high=float(high),
        confidence=float(confidence),
        replicates=reps,
    )
