# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Attach handlers to another engine from the trainer's handler list.

MONAI's bundle tracking (``--tracking``) appends one handler to one list of handlers per engine,
and that list must be a plain list in the config. Some bundles build their validator's handlers
with an expression (the classification bundles' ``validate#handlers`` depends on the regime), so
``bundles/_shared/mlflow.json`` appends this handler to the trainer's list instead, and
it attaches the validator's ``MLFlowHandler`` to the validator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._ignite import Engine

__all__ = ["AttachToEngine"]


class AttachToEngine:
    """When attached to any engine, attach ``handlers`` to ``engine`` instead.

    Args:
        engine: the engine the handlers belong to (e.g. the validator of a trainer).
        handlers: objects with an ``attach(engine)`` method (MONAI / Ignite handlers); ``None``
            entries (a config item disabled with ``_disabled_``) are skipped.

    Raises:
        TypeError: if ``engine`` is not an Ignite ``Engine`` or a handler has no ``attach``.
    """

    def __init__(self, engine: Engine, handlers: Sequence[Any] | None) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite Engine, got {type(engine).__name__}.")
        self.engine = engine
        self.handlers = [h for h in (handlers or []) if h is not None]
        for h in self.handlers:
            if not callable(getattr(h, "attach", None)):
                raise TypeError(
                    f"handlers must have an attach(engine) method, got {type(h).__name__}."
                )

    def attach(self, engine: Engine) -> None:
        """Attach every handler to ``self.engine`` (``engine``, the caller, is not used)."""
        for h in self.handlers:
            h.attach(self.engine)
