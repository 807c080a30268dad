# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite handler that sets LS+'s class prior from a baseline model's validation recall."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers.utils import from_engine

from monai_calib._utils.distributed import gather_cat
from monai_calib.losses.ls_plus import class_prior_from_predictions

from ._ignite import Engine, Events
from ._loss_handler import ClassPriorLoss, LossInitializer

__all__ = ["LSPlusClassPrior"]


def _as_batch(x: Any, name: str) -> torch.Tensor:
    """A batch tensor from a tensor / array, or from a decollated list of per-sample items."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"output_transform returned an empty list for {name}.")
        return torch.stack([torch.as_tensor(v).detach() for v in x])
    return torch.as_tensor(x).detach()


class LSPlusClassPrior(LossInitializer):
    """Set ``LSPlusLoss``'s class prior to a baseline's per-class validation recall.

    LS+ takes its prior :math:`c` from a hard-label baseline of the same architecture on the
    validation set:

    .. math::
        c_k = \\frac{\\sum_i \\mathbf 1[\\hat y_i = k,\\ y_i = k]}{\\sum_i \\mathbf 1[y_i = k]},
        \\qquad c \\leftarrow \\mathrm{clip}(c,\\ 1/K + \\delta,\\ 1 - \\delta)

    (``class_prior_from_predictions``; the clamp, with a warning, is done by
    ``LSPlusLoss.set_class_prior``, :math:`\\delta = 10^{-3}`). At the first ``EPOCH_STARTED`` of
    a fresh run (``engine.state.iteration == 0``) the handler either

    - runs ``evaluator`` (e.g. a ``SupervisedEvaluator`` whose network is the baseline, loaded
      by a ``CheckpointLoader`` in its handlers, over the validation loader), collecting
      ``output_transform(evaluator.state.output)`` = ``(y_pred, y)`` at every
      ``ITERATION_COMPLETED``; ``y_pred`` may be logits, probabilities (``(N, K)``, argmax
      taken) or class indices, ``y`` indices or one-hot; decollated lists of per-sample items
      are stacked; or
    - uses precomputed ``y_true`` / ``y_pred``,

    then calls ``loss.set_class_prior``. Under DDP predictions are gathered from every rank
    first, so every rank sets the same prior. The unclamped recall is kept in
    ``self.recall``. On a resumed run the prior comes from the checkpoint (``class_prior`` is a
    persistent buffer of the loss) and the handler does nothing (``skipped`` is True).

    Use a **dedicated** evaluator (not the trainer's validation evaluator): running it here also
    fires its handlers, e.g. a ``CheckpointSaver`` keyed on a metric.

    Usage in a bundle's ``train#handlers``::

        {"_target_": "monai_calib.handlers.LSPlusClassPrior", "loss": "@loss",
         "evaluator": "@baseline_evaluator"}

    Reference:
        Sambyal et al., "LS+: Informed Label Smoothing for Improving Calibration in Medical
        Image Classification", MICCAI 2024; https://github.com/abhisheksambyal/lsplus
    """

    loss_protocol = ClassPriorLoss
    loss_kind = "LSPlusLoss"
    kept_on_resume = "the checkpointed class prior"

    def __init__(
        self,
        evaluator: Engine | None = None,
        loss: Any | None = None,
        y_true: torch.Tensor | np.ndarray | Sequence[int] | None = None,
        y_pred: torch.Tensor | np.ndarray | Sequence[int] | None = None,
        output_transform: Callable | None = None,
        name: str | None = None,
    ) -> None:
        """
        Args:
            evaluator: an Ignite engine (``SupervisedEvaluator``) that runs the baseline over
                the validation data. Exactly one of ``evaluator`` and ``y_true``/``y_pred``.
            loss: the ``LSPlusLoss`` (any loss with ``set_class_prior`` and a ``class_prior``
                tensor). Defaults to ``None``: use ``engine.loss_function``.
            y_true: precomputed validation labels (indices or one-hot).
            y_pred: precomputed baseline predictions (scores ``(N, K)`` or indices).
            output_transform: maps ``evaluator.state.output`` to ``(y_pred, y)``. Defaults to
                ``None``: ``monai.handlers.from_engine(["pred", "label"])``.
            name: identifier of the ``logging.Logger``; ``None`` uses ``engine.logger``.

        Raises:
            ValueError: neither or both of ``evaluator`` and ``y_true``/``y_pred`` are given,
                or only one of ``y_true`` and ``y_pred``.
            TypeError: ``output_transform`` is not callable.
        """
        has_preds = y_true is not None or y_pred is not None
        both_preds = y_true is not None and y_pred is not None
        if (evaluator is None) == (not has_preds) or (has_preds and not both_preds):
            raise ValueError(
                "LSPlusClassPrior needs exactly one source: `evaluator`, or both `y_true` and "
                f"`y_pred`; got evaluator={type(evaluator).__name__}, "
                f"y_true={'set' if y_true is not None else None}, "
                f"y_pred={'set' if y_pred is not None else None}."
            )
        if output_transform is None:
            output_transform = from_engine(["pred", "label"])
        if not callable(output_transform):
            raise TypeError(
                f"output_transform must be callable, got {type(output_transform).__name__}."
            )
        self.evaluator = evaluator
        self.y_true = y_true
        self.y_pred = y_pred
        self.output_transform = output_transform
        super().__init__(loss, check_optimizer=False, name=name)

    def _reset_record(self) -> None:
        super()._reset_record()
        self.recall: torch.Tensor | None = None

    def _run_evaluator(self) -> tuple[torch.Tensor, torch.Tensor]:
        preds: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []

        def collect(evaluator: Engine) -> None:
            out = self.output_transform(evaluator.state.output)
            if not isinstance(out, (list, tuple)) or len(out) != 2:
                raise ValueError(
                    f"output_transform must return (y_pred, y), got {type(out).__name__}"
                    + (f" of length {len(out)}." if hasattr(out, "__len__") else ".")
                )
            preds.append(_as_batch(out[0], "y_pred").cpu())
            labels.append(_as_batch(out[1], "y").cpu())

        assert self.evaluator is not None
        handle = self.evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
        try:
            self.evaluator.run()
        finally:
            handle.remove()
        if not preds:
            raise ValueError("the evaluator ran no iteration; cannot compute the class prior.")
        return torch.cat(labels), torch.cat(preds)

    def initialize(self, engine: Engine) -> None:
        """Compute the recall and set the prior (the first epoch of a fresh run).

        Args:
            engine: the trainer.
        """
        if self.evaluator is not None:
            y_true, y_pred = self._run_evaluator()
        else:
            y_true, y_pred = torch.as_tensor(self.y_true), torch.as_tensor(self.y_pred)
        y_true, y_pred = gather_cat(y_true, y_pred)
        num_classes = int(self.loss.class_prior.shape[0])
        recall = class_prior_from_predictions(y_true, y_pred, num_classes=num_classes)
        self.recall = recall
        self.loss.set_class_prior(recall)
        self.logger.info(
            f"{type(self).__name__}: recall on {y_true.shape[0]} samples {recall.tolist()}; "
            f"class prior set to {self.loss.class_prior.tolist()}"
        )
