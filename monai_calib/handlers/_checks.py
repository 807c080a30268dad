# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Checks shared by the loss-state handlers: the loss's kind and the trainer's optimizer.

A handler that drives a loss must fail, with a message that says what to fix, when it is given a
loss of the wrong kind, or when the loss has learnable parameters (MiT's temperature, CCT-EAL's
class temperatures) that the trainer's optimizer does not update: the latter is a silent failure
otherwise (the temperature never moves).

MONAI's ``SupervisedTrainer`` attaches its ``train_handlers`` *before* it sets ``network``,
``optimizer``, ``loss_function`` and ``inferer``, so the handlers check an explicitly given loss's
kind in ``attach`` and run the checks that need the engine's attributes at ``Events.STARTED``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_loss_in_optimizer", "check_loss_kind", "resolve_loss"]


def resolve_loss(loss: Any, engine: Any, handler_name: str) -> Any:
    """Return ``loss``, or ``engine.loss_function`` when ``loss`` is None.

    Raises:
        TypeError: ``loss`` is None and the engine has no ``loss_function`` attribute.
    """
    if loss is not None:
        return loss
    engine_loss = getattr(engine, "loss_function", None)
    if engine_loss is None:
        raise TypeError(
            f"{handler_name}: no loss was given and the engine ({type(engine).__name__}) has no "
            "`loss_function` attribute; pass the loss explicitly (e.g. `loss=@loss` in a bundle)."
        )
    return engine_loss


def check_loss_kind(loss: Any, expected: type | tuple[type, ...], handler_name: str) -> None:
    """Raise ``TypeError`` unless ``loss`` is an instance of ``expected``.

    Raises:
        TypeError: ``loss`` is not an instance of ``expected``.
    """
    if not isinstance(loss, expected):
        kinds = expected if isinstance(expected, tuple) else (expected,)
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(
            f"{handler_name} drives a loss of kind {names}, got {type(loss).__name__}. If the "
            "trainer's loss_function wraps the loss, pass the loss itself as `loss=`."
        )


def _param_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


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
    ids = _param_ids(optimizer)
    missing = [name for name, p in params.items() if id(p) not in ids]
    if missing:
        raise ValueError(
            f"{handler_name}: the parameters {missing} of {type(loss).__name__} are not in the "
            "trainer's optimizer, so they would never be updated; build the optimizer from "
            "`list(network.parameters()) + list(loss.parameters())` (or pass "
            "`check_optimizer=False` if they are frozen on purpose)."
        )
