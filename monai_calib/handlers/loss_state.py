# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite handler that owns the running state of a stateful loss (MiT, CCT-EAL) in a trainer."""

from __future__ import annotations

import warnings
from typing import Any

import torch.distributed as dist
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents

from monai_calib._utils.distributed import is_dist_ready

from ._ignite import Engine, Events
from ._loss_handler import LossHandler, StatefulLoss

__all__ = ["LossStateUpdater"]


class LossStateUpdater(LossHandler):
    """Commit a stateful loss's running state once per training iteration.

    MiT keeps label counts :math:`n`, the dual variable :math:`\\lambda_t` and the step
    :math:`t`; CCT-EAL keeps the EMA of the label distribution :math:`f`. Their ``forward``
    computes the state including the current batch and *stages* it. Once this handler is
    attached, the loss stops committing inside ``forward`` (``update_state_in_forward = False``)
    and the handler commits at MONAI's ``IterationEvents.LOSS_COMPLETED``, which
    ``SupervisedTrainer`` fires right after ``loss_function(pred, label)``:

    .. math::
        n \\leftarrow n + \\mathrm{bincount}(y), \\quad
        \\lambda_t = \\mathrm{clip}\\Big(\\frac{(t-1)\\lambda_{t-1} + d_t}{t}, 0,
        \\lambda_{\\max}\\Big) \\;\\text{(MiT)}, \\qquad
        f \\leftarrow m f + (1 - m)\\hat f_{\\text{batch}} \\;\\text{(CCT-EAL)}.

    So there is exactly one update per training iteration (also with gradient accumulation),
    the sequence of states equals the one of a plain PyTorch loop in which the loss updates
    itself, and extra calls of the loss outside the trainer's iteration (e.g. a validation loss)
    never change the state: stale staged state is dropped at ``ITERATION_STARTED``, where the
    loss is also put in training mode (the trainer calls ``network.train()`` but never
    ``loss_function.train()``).

    The state lives in the loss's persistent buffers: put the loss in ``CheckpointSaver``'s
    ``save_dict`` (and ``CheckpointLoader``'s ``load_dict``) to save and resume it.

    **DDP.** The losses all-reduce their batch statistics themselves (``sync_dist=True``), so
    every rank commits the same state, equal to what one process computes on the union of the
    ranks' batches; this handler warns when a loss has ``sync_dist=False`` in a multi-process
    run. ``DistributedDataParallel`` averages the gradients of the *network* only, so the loss's
    learnable temperatures would drift apart across ranks; with ``sync_grads=True`` the handler
    averages the loss's parameter gradients over ranks at ``IterationEvents.BACKWARD_COMPLETED``
    (before ``optimizer.step()``), as DDP does for the network.

    Usage in a bundle's ``train#handlers``::

        {"_target_": "monai_calib.handlers.LossStateUpdater", "loss": "@loss"}

    Reference:
        MONAI handler conventions: ``monai.handlers.LrScheduleHandler``.
    """

    loss_protocol = StatefulLoss
    loss_kind = "StatefulLossBase"

    def __init__(
        self,
        loss: StatefulLoss | None = None,
        check_optimizer: bool = True,
        sync_grads: bool = True,
        metric_prefix: str | None = None,
        name: str | None = None,
    ) -> None:
        """
        Args:
            loss: the stateful loss (``MiTLoss``, ``CCTEALLoss``: any loss with
                ``update_state``, ``discard_pending_state``, ``update_state_in_forward`` and
                ``last_stats``). Defaults to ``None``: use ``engine.loss_function``.
            check_optimizer: at ``attach``, raise if the loss's trainable parameters are not in
                ``engine.optimizer``. Defaults to ``True``.
            sync_grads: under ``torch.distributed`` (more than one rank), average the loss's
                parameter gradients over ranks after each backward pass. Defaults to ``True``.
            metric_prefix: when set, copy ``loss.last_stats`` (as floats) into
                ``engine.state.metrics[metric_prefix + key]`` after each update, so
                ``StatsHandler`` / ``TensorBoardStatsHandler`` log e.g. :math:`\\lambda` and
                :math:`T`. Defaults to ``None`` (no copy, no host synchronisation).
            name: identifier of the ``logging.Logger``; ``None`` uses ``engine.logger``.
        """
        super().__init__(loss, check_optimizer, name)
        self.sync_grads = bool(sync_grads)
        self.metric_prefix = metric_prefix
        self._warned_empty = False

    def attach(self, engine: Engine) -> None:
        """Register the handler; the loss and optimizer checks run at ``Events.STARTED``.

        (``SupervisedTrainer`` attaches its handlers before it sets ``loss_function`` and
        ``optimizer``; an explicitly given loss's kind is checked at once.)

        Args:
            engine: a trainer that fires ``IterationEvents.LOSS_COMPLETED`` (e.g.
                ``SupervisedTrainer``).

        Raises:
            TypeError: the loss is not a stateful loss (at ``attach`` if given, else when the run
                starts); the engine is an evaluator or does not fire
                ``IterationEvents.LOSS_COMPLETED``.
            ValueError: (when the run starts) the loss's trainable parameters are missing from
                ``engine.optimizer``.
        """
        super().attach(engine)

    def _register(self, engine: Engine) -> None:
        if isinstance(engine, Evaluator):
            raise TypeError(
                f"{type(self).__name__} drives the loss of a trainer; it cannot be attached to "
                f"an evaluator ({type(engine).__name__}): put it in the trainer's handlers."
            )
        try:
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)
        except ValueError as e:
            raise TypeError(
                f"{type(self).__name__} must be attached to an engine that fires "
                "monai.engines.utils.IterationEvents.LOSS_COMPLETED (e.g. SupervisedTrainer), "
                f"got {type(engine).__name__}."
            ) from e
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        if self.sync_grads:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._sync_grads)

    def setup(self, engine: Engine) -> None:
        """Resolve and check the loss, and take over its state updates (run at ``STARTED``).

        Raises:
            TypeError: no loss, or not a stateful loss.
            ValueError: the loss's trainable parameters are missing from ``engine.optimizer``.
        """
        super().setup(engine)
        if is_dist_ready() and not getattr(self.loss, "sync_dist", True):
            warnings.warn(
                f"{type(self).__name__}: torch.distributed is initialised but "
                f"{type(self.loss).__name__}(sync_dist=False); each rank will keep its own state.",
                stacklevel=2,
            )
        self.loss.update_state_in_forward = False

    def _iteration_started(self, engine: Engine) -> None:
        assert self.loss is not None
        self.loss.discard_pending_state()
        self.loss.train()

    def _sync_grads(self, engine: Engine) -> None:
        # linear, so repeated averaging under gradient accumulation stays exact
        if self.loss is None or not is_dist_ready():
            return
        world = dist.get_world_size()
        for p in self.loss.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(world)

    def __call__(self, engine: Engine) -> None:
        """Commit the state staged by this iteration's loss call.

        Args:
            engine: the trainer.
        """
        assert self.loss is not None
        committed = self.loss.update_state()
        if not committed and not self._warned_empty:
            self._warned_empty = True
            self.logger.warning(
                f"{type(self).__name__}: {type(self.loss).__name__} staged no state in this "
                "iteration; is it the loss the trainer calls (not wrapped in another loss)?"
            )
        if self.metric_prefix is not None:
            metrics: dict[str, Any] = engine.state.metrics
            for key, value in self.loss.last_stats.items():
                metrics[f"{self.metric_prefix}{key}"] = float(value)
