# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Attach handlers and Ignite metrics from an engine's handler list.

MONAI's bundle tracking (``--tracking``) can only append one handler object to a plain list of
handlers per engine. ``bundles/_shared/mlflow.json`` uses this class for what that cannot express:
the classification bundles build their validator's handlers with an expression (it depends on the
regime), so the validator's ``MLFlowHandler`` is appended to the trainer's list and attached to the
validator from there; and the per-epoch training loss is an Ignite ``Average`` metric, which is
attached under a name (``Metric.attach(engine, name)``), not as a handler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._ignite import Engine

__all__ = ["AttachToEngine"]


class AttachToEngine:
    """When attached to an engine, attach ``handlers`` and ``metrics`` to ``engine`` (or to the
    engine it is attached to, when ``engine`` is ``None``).

    Args:
        engine: the engine the handlers and metrics belong to (e.g. a trainer's validator);
            ``None``: the engine this object is attached to.
        handlers: objects with an ``attach(engine)`` method (MONAI / Ignite handlers); ``None``
            entries (a config item disabled with ``_disabled_``) are skipped. Attached in order.
        metrics: Ignite metrics by name, attached after the handlers with
            ``metric.attach(engine, name)`` (their values land in ``engine.state.metrics[name]``).

    Raises:
        TypeError: if ``engine`` is not an Ignite ``Engine`` or ``None``, a handler has no
            ``attach`` method, or ``metrics`` is not a mapping of names to objects with ``attach``.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        handlers: Sequence[Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        if engine is not None and not isinstance(engine, Engine):
            raise TypeError(
                f"engine must be an ignite Engine or None, got {type(engine).__name__}."
            )
        self.engine = engine
        self.handlers = [h for h in (handlers or []) if h is not None]
        for h in self.handlers:
            if not callable(getattr(h, "attach", None)):
                raise TypeError(
                    f"handlers must have an attach(engine) method, got {type(h).__name__}."
                )
        if metrics is not None and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping of names to metrics, got {metrics!r}.")
        self.metrics = dict(metrics or {})
        for name, m in self.metrics.items():
            if not isinstance(name, str) or not callable(getattr(m, "attach", None)):
                raise TypeError(
                    "metrics must map names (str) to ignite metrics, got "
                    f"{name!r}: {type(m).__name__}."
                )

    def attach(self, engine: Engine) -> None:
        """Attach the handlers, then the metrics, to ``self.engine`` or else to ``engine``."""
        target = engine if self.engine is None else self.engine
        for h in self.handlers:
            h.attach(target)
        for name, m in self.metrics.items():
            m.attach(target, name)
