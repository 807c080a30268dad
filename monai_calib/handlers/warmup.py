# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite handler that drives CCT-EAL's warm-up of the entropy-alignment weight."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from ._checks import check_loss_in_optimizer, check_loss_kind, resolve_loss

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["CCTEALWarmup"]


def training_progress(engine: Any, epoch_level: bool = False) -> float:
    """Fraction of training completed before the current iteration (or epoch), in ``[0, 1)``.

    .. math::
        \\text{progress} = \\frac{\\text{iteration} - 1}{\\text{max\\_epochs} \\cdot
        \\text{epoch\\_length}} \\quad\\text{or}\\quad
        \\frac{\\text{epoch} - 1}{\\text{max\\_epochs}}\\ (\\text{epoch\\_level}).

    Raises:
        ValueError: ``engine.state.max_epochs`` or ``engine.state.epoch_length`` is unknown.
    """
    state = engine.state
    if state.max_epochs is None or (not epoch_level and state.epoch_length is None):
        raise ValueError(
            "training progress needs engine.state.max_epochs and engine.state.epoch_length, got "
            f"max_epochs={state.max_epochs}, epoch_length={state.epoch_length}; pass "
            "`epoch_length` to the trainer when the data loader has no length."
        )
    if epoch_level:
        return (state.epoch - 1) / state.max_epochs
    return (state.iteration - 1) / (state.max_epochs * state.epoch_length)


class CCTEALWarmup:
    """Set CCT-EAL's alignment weight :math:`\\alpha_t` from the training progress.

    At every ``ITERATION_STARTED`` (before the forward pass of that iteration) it calls
    ``loss.set_progress(progress)`` with the fraction of iterations already completed, so the
    loss computes

    .. math::
        \\text{progress} = \\frac{\\text{iteration} - 1}{\\text{max\\_epochs} \\cdot
            \\text{epoch\\_length}}, \\qquad
        \\alpha_t = \\alpha_{\\max} \\cdot \\min\\Big(1,
            \\frac{\\text{progress}}{\\max(w, 10^{-6})}\\Big)

    with warm-up ratio :math:`w` (``warmup_ratio`` of the loss). The first iteration uses
    :math:`\\alpha_t = 0`. The reference code leaves :math:`\\alpha_t = \\alpha_{\\max}` when the
    training loop never calls ``set_progress`` (no warm-up at all); this handler is the call.
    With ``epoch_level=True`` progress is ``(epoch - 1) / max_epochs`` at ``EPOCH_STARTED``.

    The progress comes from ``engine.state.iteration``, which ``CheckpointLoader`` restores when
    the trainer is in its ``load_dict``, so the schedule continues after a resume (resume with
    the same ``max_epochs`` as the interrupted run: the schedule is relative to it). The loss's
    ``alpha`` and ``progress`` buffers are saved with the loss.

    Usage in a bundle's ``train#handlers``::

        {"_target_": "monai_calib.handlers.CCTEALWarmup", "loss": "@loss"}

    Reference:
        Pan et al., CCT-EAL, ICASSP 2026; https://github.com/JEFfersusu/CCT-EAL (``set_progress``).
    """

    def __init__(
        self,
        loss: Any | None = None,
        epoch_level: bool = False,
        check_optimizer: bool = True,
        name: str | None = None,
    ) -> None:
        """
        Args:
            loss: the ``CCTEALLoss``. Defaults to ``None``: use ``engine.loss_function``.
            epoch_level: update once per epoch instead of once per iteration. Defaults to
                ``False``.
            check_optimizer: at ``attach``, raise if the loss's class temperatures are not in
                ``engine.optimizer``. Defaults to ``True``.
            name: identifier of the ``logging.Logger``; ``None`` uses ``engine.logger``.
        """
        self.loss = loss
        self.epoch_level = bool(epoch_level)
        self.check_optimizer = bool(check_optimizer)
        self.logger = logging.getLogger(name)
        self._name = name

    def attach(self, engine: Engine) -> None:
        """Register the handler; the loss and optimizer checks run at ``Events.STARTED``.

        Args:
            engine: the trainer.

        Raises:
            TypeError: the loss is not a ``CCTEALLoss`` (at ``attach`` if given, else when the
                run starts).
            ValueError: (when the run starts) the loss's temperatures are missing from
                ``engine.optimizer``.
        """
        from monai_calib.losses.cct_eal import CCTEALLoss

        if self._name is None:
            self.logger = engine.logger
        if self.loss is not None:
            check_loss_kind(self.loss, CCTEALLoss, type(self).__name__)
        engine.add_event_handler(Events.STARTED, self.setup)
        event = Events.EPOCH_STARTED if self.epoch_level else Events.ITERATION_STARTED
        engine.add_event_handler(event, self)

    def setup(self, engine: Engine) -> None:
        """Resolve and check the loss (run at ``STARTED``).

        Raises:
            TypeError: no loss, or not a ``CCTEALLoss``.
            ValueError: the loss's temperatures are missing from ``engine.optimizer``.
        """
        from monai_calib.losses.cct_eal import CCTEALLoss

        loss = resolve_loss(self.loss, engine, type(self).__name__)
        check_loss_kind(loss, CCTEALLoss, type(self).__name__)
        if self.check_optimizer:
            check_loss_in_optimizer(loss, engine, type(self).__name__)
        self.loss = loss

    def __call__(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer.

        Raises:
            ValueError: the engine does not know ``max_epochs`` / ``epoch_length``.
        """
        self.loss.set_progress(training_progress(engine, self.epoch_level))
