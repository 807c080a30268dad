# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""The skeleton of the handlers that drive a loss: resolve it, check its capability, resume.

A handler that drives a loss must fail, with a message that says what to fix, when it is given a
loss that lacks the capability it drives (a small :class:`typing.Protocol`: "has
``set_temperature``", "has ``update_state``", ...), or when the loss has learnable parameters
(MiT's temperature, CCT-EAL's class temperatures) that the trainer's optimizer does not update:
the latter is a silent failure otherwise (the temperature never moves).

MONAI's ``SupervisedTrainer`` attaches its ``train_handlers`` *before* it sets ``network``,
``optimizer``, ``loss_function`` and ``inferer``, so :class:`LossHandler` checks an explicitly
given loss in ``attach`` and runs the checks that need the engine's attributes at
``Events.STARTED``. :class:`LossInitializer` adds the resume guard of the handlers that set a
loss once when a fresh run starts.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from ._ignite import Engine, Events

__all__ = [
    "ClassPriorLoss",
    "LossHandler",
    "LossInitializer",
    "ProgressLoss",
    "StatefulLoss",
    "TemperatureLoss",
    "check_loss_in_optimizer",
]


@runtime_checkable
class StatefulLoss(Protocol):
    """A loss that stages its running state in ``forward`` and commits it on request
    (``StatefulLossBase``: ``MiTLoss``, ``CCTEALLoss``)."""

    update_state_in_forward: bool
    last_stats: dict[str, torch.Tensor]

    def update_state(self) -> bool: ...

    def discard_pending_state(self) -> None: ...


@runtime_checkable
class ProgressLoss(Protocol):
    """A loss whose weights follow the training progress in ``[0, 1]`` (``CCTEALLoss``)."""

    def set_progress(self, progress: float) -> None: ...


@runtime_checkable
class TemperatureLoss(Protocol):
    """A loss with one settable temperature (``MiTLoss``)."""

    temperature: torch.Tensor

    def set_temperature(self, value: float) -> None: ...


@runtime_checkable
class ClassPriorLoss(Protocol):
    """A loss with a settable per-class prior held in ``class_prior`` (``LSPlusLoss``)."""

    def set_class_prior(self, prior: Any) -> None: ...


def _protocol_members(protocol: type) -> list[str]:
    methods = [f"{k}()" for k, v in vars(protocol).items() if callable(v) and k[0] != "_"]
    return methods + list(getattr(protocol, "__annotations__", {}))


def check_loss_in_optimizer(loss: torch.nn.Module, engine: Any, handler_name: str) -> None:
    """Check that every trainable parameter of ``loss`` is in ``engine.optimizer``.

    A loss with no trainable parameter, or an engine that has no ``optimizer`` (e.g. an
    evaluator), passes. (A parameter listed twice in one group is already a PyTorch warning, and
    across groups a PyTorch error.)

    Raises:
        ValueError: some trainable parameters of ``loss`` are missing from ``engine.optimizer``.
    """
    params = {name: p for name, p in loss.named_parameters() if p.requires_grad}
    optimizer = getattr(engine, "optimizer", None)
    if not params or optimizer is None:
        return
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, p in params.items() if id(p) not in ids]
    if missing:
        raise ValueError(
            f"{handler_name}: the parameters {missing} of {type(loss).__name__} are not in the "
            "trainer's optimizer, so they would never be updated; build the optimizer from "
            "`list(network.parameters()) + list(loss.parameters())` (or pass "
            "`check_optimizer=False` if they are frozen on purpose)."
        )


class LossHandler:
    """Base of the handlers that drive a loss in a trainer.

    ``attach`` takes the logger (``engine.logger`` when ``name`` is None), checks an explicitly
    given loss against :attr:`loss_protocol`, registers :meth:`setup` at ``Events.STARTED`` and
    then the subclass's own events (:meth:`_register`). :meth:`setup` takes the loss from
    ``engine.loss_function`` when none was given, checks it, and checks that its trainable
    parameters are in ``engine.optimizer`` (``check_optimizer``).

    Subclasses set :attr:`loss_protocol` (the capability they drive) and :attr:`loss_kind` (the
    loss they were written for, named in the error messages).
    """

    loss_protocol: ClassVar[type]
    loss_kind: ClassVar[str]

    def __init__(self, loss: Any | None, check_optimizer: bool, name: str | None) -> None:
        """
        Args:
            loss: the loss to drive; ``None`` uses ``engine.loss_function``.
            check_optimizer: when the run starts, raise if the loss's trainable parameters are
                not in ``engine.optimizer``.
            name: identifier of the ``logging.Logger``; ``None`` uses ``engine.logger``.
        """
        self.loss = loss
        self.check_optimizer = bool(check_optimizer)
        self.logger = logging.getLogger(name)
        self._name = name

    def _check_kind(self, loss: Any) -> None:
        if not isinstance(loss, self.loss_protocol):
            members = ", ".join(f"`{m}`" for m in _protocol_members(self.loss_protocol))
            raise TypeError(
                f"{type(self).__name__} drives a loss of kind {self.loss_kind} (any loss with "
                f"{members}), got {type(loss).__name__}. If the trainer's loss_function wraps "
                "the loss, pass the loss itself as `loss=`."
            )

    def attach(self, engine: Engine) -> None:
        """Register the handler; the checks that need the engine run at ``Events.STARTED``.

        Args:
            engine: the trainer.

        Raises:
            TypeError: an explicitly given loss lacks the capability the handler drives.
        """
        if self._name is None:
            self.logger = engine.logger
        if self.loss is not None:
            self._check_kind(self.loss)
        self._register(engine)
        engine.add_event_handler(Events.STARTED, self.setup)

    def _register(self, engine: Engine) -> None:
        """Register the subclass's own events on ``engine``."""
        raise NotImplementedError

    def setup(self, engine: Engine) -> None:
        """Resolve and check the loss (run at ``STARTED``).

        Raises:
            TypeError: no loss was given and the engine has no ``loss_function``; the loss lacks
                the capability the handler drives.
            ValueError: ``check_optimizer`` and the loss's trainable parameters are missing from
                ``engine.optimizer``.
        """
        name = type(self).__name__
        loss = self.loss if self.loss is not None else getattr(engine, "loss_function", None)
        if loss is None:
            raise TypeError(
                f"{name}: no loss was given and the engine ({type(engine).__name__}) has no "
                "`loss_function` attribute; pass the loss explicitly (e.g. `loss=@loss` in a "
                "bundle)."
            )
        self._check_kind(loss)
        if self.check_optimizer:
            check_loss_in_optimizer(loss, engine, name)
        self.loss = loss


class LossInitializer(LossHandler):
    """Base of the handlers that set a loss once, when a fresh run starts.

    At the first ``EPOCH_STARTED`` of a run, :meth:`initialize` runs if the run is fresh
    (``engine.state.iteration == 0``). A run resumed by ``CheckpointLoader`` (which fires at
    ``STARTED``) has ``iteration > 0`` there: the handler then does nothing but record it
    (``skipped``, ``skip_reason``) and log it, so the checkpointed value (:attr:`kept_on_resume`,
    a persistent buffer or parameter of the loss) is kept, whatever the order of the handlers.
    It fires at ``EPOCH_STARTED`` rather than ``STARTED`` for that reason.

    Attributes:
        skipped: whether the last run did not set the loss.
        skip_reason: why, or ``None``.
    """

    kept_on_resume: ClassVar[str]

    def __init__(self, loss: Any | None, check_optimizer: bool, name: str | None) -> None:
        super().__init__(loss, check_optimizer, name)
        self._decided = False
        self._reset_record()

    def _reset_record(self) -> None:
        """Forget what the previous run recorded (subclasses extend it)."""
        self.skipped = False
        self.skip_reason: str | None = None

    def _register(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def setup(self, engine: Engine) -> None:
        """Resolve and check the loss, and start a new record (run at ``STARTED``)."""
        super().setup(engine)
        self._decided = False  # a new run: decide again at its first EPOCH_STARTED
        self._reset_record()

    def initialize(self, engine: Engine) -> None:
        """Set the loss (a fresh run's first ``EPOCH_STARTED``)."""
        raise NotImplementedError

    def __call__(self, engine: Engine) -> None:
        """Run :meth:`initialize` at the first epoch of a fresh run; skip a resumed run.

        Args:
            engine: the trainer.
        """
        if self._decided:  # later epochs of the same run
            return
        self._decided = True
        if engine.state.iteration != 0:
            self.skipped = True
            self.skip_reason = f"resumed run (iteration > 0): {self.kept_on_resume} is kept"
            self.logger.info(f"{type(self).__name__}: {self.skip_reason}.")
            return
        self.initialize(engine)
