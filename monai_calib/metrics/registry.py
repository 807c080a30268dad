# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""One registry of the metric names used in reports, tables and checkpoint selection.

Every key a report writes (``metrics.json``), every column of ``compare``'s table and every
``select_metric`` of a bundle is described here once: its display title, whether a larger value
is better, and whether tables show it in percent. Checkpoint selection reads the direction from
here:

.. code-block:: python

    from monai_calib.metrics.registry import metric_cmp_fn, metric_info

    evaluator = SupervisedEvaluator(..., metric_cmp_fn=metric_cmp_fn("ece"))
    saver = CheckpointSaver(..., key_metric_negative_sign=not metric_info("ece").higher_is_better)

(in a bundle: ``"$monai_calib.metrics.registry.metric_cmp_fn(@select_metric)"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "METRIC_INFO",
    "MetricInfo",
    "higher_is_better_cmp",
    "lower_is_better_cmp",
    "metric_cmp_fn",
    "metric_info",
]


@dataclass(frozen=True)
class MetricInfo:
    """What a table, a plot and a checkpoint rule need to know about one metric.

    Args:
        name: the key in ``metrics.json`` / ``engine.state.metrics`` (without a prefix).
        title: display title, e.g. ``"ECE"``.
        higher_is_better: ``True`` (accuracy, AUC, Dice, R-AUC), ``False`` (errors, scores) or
            ``None`` for a signed quantity without a better direction (the confidence gap).
        percent: tables show the value times 100 (every fraction); ``False`` for unbounded
            values such as the NLL.
    """

    name: str
    title: str
    higher_is_better: bool | None
    percent: bool = True

    @property
    def label(self) -> str:
        """The title with its direction arrow (``"ECE ↓"``, ``"AUC ↑"``; no arrow without one)."""
        if self.higher_is_better is None:
            return self.title
        return f"{self.title} {'↑' if self.higher_is_better else '↓'}"


# One metric a line: name, direction ("+" higher is better, "-" lower, "." neither), title.
_TABLE = """
acc            +  ACC
auc            +  AUC
ece            -  ECE
gap            .  Gap (conf − acc)
ace            -  ACE
sce            -  SCE
mce            -  MCE
nll            -  NLL
brier          -  Brier
r_auc          +  R-AUC
hamming        -  Hamming
auc_macro      +  AUC (macro)
auc_micro      +  AUC (micro)
dice           +  Dice
mean_iou       +  mIoU
ece_micro      -  ECE (micro)
ece_weighted   -  ECE (weighted)
ece_per_image  -  ECE (per image)
"""
_NOT_PERCENT = {"nll"}  # unbounded: tables show it as is, every fraction in %
_DIRECTIONS = {"+": True, "-": False, ".": None}


def _parse(table: str) -> dict[str, MetricInfo]:
    infos = {}
    for line in table.strip().splitlines():
        name, direction, title = line.split(maxsplit=2)
        infos[name] = MetricInfo(name, title, _DIRECTIONS[direction], name not in _NOT_PERCENT)
    return infos


METRIC_INFO: dict[str, MetricInfo] = _parse(_TABLE)


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not registered (the message lists the registered names).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a metric name (str), got {type(name).__name__}.")
    try:
        return METRIC_INFO[name]
    except KeyError:
        raise ValueError(
            f"unknown metric name {name!r}; registered names are {sorted(METRIC_INFO)}."
        ) from None


def higher_is_better_cmp(current: float, prev: float) -> bool:
    """Key-metric comparison when higher is better: ``current > prev`` (MONAI's default)."""
    return bool(current > prev)


def lower_is_better_cmp(current: float, prev: float) -> bool:
    """Key-metric comparison when lower is better (ECE, Brier, NLL): ``current < prev``.

    Pass it as ``metric_cmp_fn`` to :class:`monai.engines.SupervisedEvaluator` (the default
    compares with ``>``), together with ``CheckpointSaver(key_metric_negative_sign=True)``.
    MONAI always accepts the first epoch's value, so no initial ``+inf`` is needed.
    """
    return bool(current < prev)


def metric_cmp_fn(name: str) -> Callable[[float, float], bool]:
    """``metric_cmp_fn`` for MONAI workflows selecting the best model on metric ``name``.

    Args:
        name: a registered metric name (see :data:`METRIC_INFO`), e.g. a bundle's
            ``select_metric``.

    Returns:
        :func:`higher_is_better_cmp` (``cur > prev``) or :func:`lower_is_better_cmp`
        (``cur < prev``).

    Raises:
        ValueError: unknown ``name``, or a metric without a better direction (``"gap"``).
    """
    info = metric_info(name)
    if info.higher_is_better is None:
        raise ValueError(
            f"metric {name!r} has no better direction; choose another metric to select on."
        )
    return higher_is_better_cmp if info.higher_is_better else lower_is_better_cmp
