# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite handler that drives CCT-EAL's warm-up of the entropy-alignment weight."""

from __future__ import annotations

from typing import Any

from monai.handlers import ParamSchedulerHandler

from ._ignite import Engine, Events
from ._loss_handler import LossHandler, ProgressLoss

__all__ = ["CCTEALWarmup"]


def training_progress(current_step: int, engine: Any, epoch_level: bool = False) -> float:
    """Fraction of training completed before step ``current_step`` (1-based), in ``[0, 1)``.

    .. math::
        \\text{progress} = \\frac{\\text{iteration} - 1}{\\text{max\\_epochs} \\cdot
        \\text{epoch\\_length}} \\quad\\text{or}\\quad
        \\frac{\\text{epoch} - 1}{\\text{max\\_epochs}}\\ (\\text{epoch\\_level}).

    A ``value_calculator`` of ``monai.handlers.ParamSchedulerHandler``, which passes
    ``current_step`` (``engine.state.iteration``, or ``engine.state.epoch`` when
    ``epoch_level``); the total is read from ``engine.state`` at each call.

    Args:
        current_step: the iteration (or epoch) about to run, counted from 1.
        engine: the trainer.
        epoch_level: ``current_step`` counts epochs. Defaults to ``False``.

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
        return (current_step - 1) / state.max_epochs
    return (current_step - 1) / (state.max_epochs * state.epoch_length)


class CCTEALWarmup(LossHandler, ParamSchedulerHandler):
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
    The schedule is MONAI's ``ParamSchedulerHandler`` with :func:`training_progress` as its
    ``value_calculator`` and ``loss.set_progress`` as its ``parameter_setter``.

    The progress comes from ``engine.state.iteration``, which ``CheckpointLoader`` restores when
    the trainer is in its ``load_dict``, so the schedule continues after a resume (resume with
    the same ``max_epochs`` as the interrupted run: the schedule is relative to it). The loss's
    ``alpha`` and ``progress`` buffers are saved with the loss.

    Usage in a bundle's ``train#handlers``::

        {"_target_": "monai_calib.handlers.CCTEALWarmup", "loss": "@loss"}

    Reference:
        Pan et al., CCT-EAL, ICASSP 2026; https://github.com/JEFfersusu/CCT-EAL (``set_progress``).
    """

    loss_protocol = ProgressLoss
    loss_kind = "CCTEALLoss"

    def __init__(
        self,
        loss: Any | None = None,
        epoch_level: bool = False,
        check_optimizer: bool = True,
        name: str | None = None,
    ) -> None:
        """
        Args:
            loss: the ``CCTEALLoss`` (any loss with ``set_progress``). Defaults to ``None``:
                use ``engine.loss_function``.
            epoch_level: update once per epoch instead of once per iteration. Defaults to
                ``False``.
            check_optimizer: at ``attach``, raise if the loss's class temperatures are not in
                ``engine.optimizer``. Defaults to ``True``.
            name: identifier of the ``logging.Logger``; ``None`` uses ``engine.logger``.
        """
        LossHandler.__init__(self, loss, check_optimizer, name)
        ParamSchedulerHandler.__init__(
            self,
            parameter_setter=self._set_progress,
            value_calculator=training_progress,
            vc_kwargs={"epoch_level": bool(epoch_level)},
            epoch_level=bool(epoch_level),
            name=name,
            event=Events.EPOCH_STARTED if epoch_level else Events.ITERATION_STARTED,
        )

    def attach(self, engine: Engine) -> None:
        """Register the handler; the loss and optimizer checks run at ``Events.STARTED``.

        Args:
            engine: the trainer.

        Raises:
            TypeError: the loss has no ``set_progress`` (at ``attach`` if given, else when the
                run starts).
            ValueError: (when the run starts) the loss's temperatures are missing from
                ``engine.optimizer``.
        """
        LossHandler.attach(self, engine)

    def _register(self, engine: Engine) -> None:
        self._vc_kwargs["engine"] = engine
        ParamSchedulerHandler.attach(self, engine)

    def _set_progress(self, progress: float) -> None:
        self.loss.set_progress(progress)
