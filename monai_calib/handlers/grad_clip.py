# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Gradient-norm clipping for MONAI's ``SupervisedTrainer``, attachable from a bundle config.

Neither MONAI's handlers nor ignite's handlers ship a clipping handler (ignite only offers
``clip_grad_norm`` inside ``create_supervised_trainer``), and MONAI's trainer has no clipping
option, so this handler hooks ``IterationEvents.BACKWARD_COMPLETED``, which ``SupervisedTrainer``
fires after ``loss.backward()`` and before ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from monai.engines.utils import IterationEvents

from ._ignite import Engine

__all__ = ["GradientClipping"]


class GradientClipping:
    r"""Clip the global gradient norm after every backward pass of a ``SupervisedTrainer``.

    With :math:`g` the concatenation of all parameter gradients and :math:`c` = ``max_norm``,

    .. math::

        g \leftarrow g \cdot \min\Big(1, \frac{c}{\lVert g \rVert_p + 10^{-6}}\Big)

    i.e. :func:`torch.nn.utils.clip_grad_norm_`. It runs at
    ``IterationEvents.BACKWARD_COMPLETED`` (after ``backward()``, before ``optimizer.step()``).
    Under AMP with a ``GradScaler`` the gradients are first unscaled with
    ``scaler.unscale_(optimizer)`` so the threshold applies to the true gradients (the scaler
    then skips its own unscale in ``step``). With gradient accumulation
    (``accumulation_steps > 1``) the clip is applied only on the iterations that step the
    optimizer, to the accumulated gradient.

    The LDACE + CCL reference setup clips at max-norm 0.1.

    Args:
        max_norm: :math:`c > 0`. Defaults to ``0.1``.
        norm_type: the :math:`p` of the norm (``float("inf")`` for the max norm). Defaults to 2.
        parameters: the parameters to clip; ``None`` (default) clips ``engine.network``'s
            parameters plus the trainable parameters the optimizer holds (e.g. a loss's learned
            temperature).

    Attributes:
        last_norm: the total gradient norm before clipping at the last clip (``float``).

    Raises:
        ValueError: ``max_norm <= 0`` or ``norm_type <= 0``.
        RuntimeError: on attach, the engine fires no ``IterationEvents.BACKWARD_COMPLETED`` (not
            a MONAI trainer).

    Example::

        trainer = SupervisedTrainer(..., train_handlers=[GradientClipping(max_norm=0.1)])

    References:
        Pascanu et al., "On the difficulty of training recurrent neural networks", ICML 2013.
        LDACE-CCL reference code (``main.py``): ``clip_grad_norm_(model.parameters(), 0.1)``.
    """

    def __init__(
        self,
        max_norm: float = 0.1,
        norm_type: float = 2.0,
        parameters: Iterable[torch.nn.Parameter] | None = None,
    ) -> None:
        if not float(max_norm) > 0.0:
            raise ValueError(f"max_norm must be > 0, got {max_norm!r}.")
        if not float(norm_type) > 0.0:
            raise ValueError(f"norm_type must be > 0, got {norm_type!r}.")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)
        self.parameters = list(parameters) if parameters is not None else None
        self.last_norm: float | None = None

    def attach(self, engine: Engine) -> None:
        """Register the clip at ``IterationEvents.BACKWARD_COMPLETED`` of ``engine``."""
        if IterationEvents.BACKWARD_COMPLETED not in getattr(engine, "_allowed_events", []):
            raise RuntimeError(
                "GradientClipping needs an engine that fires IterationEvents.BACKWARD_COMPLETED "
                f"(a MONAI SupervisedTrainer), got {type(engine).__name__}."
            )
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def _params(self, engine: Engine) -> list[torch.Tensor]:
        if self.parameters is not None:
            return self.parameters
        params: dict[int, torch.Tensor] = {}
        network = getattr(engine, "network", None)
        if network is not None:
            params.update((id(p), p) for p in network.parameters())
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            for group in optimizer.param_groups:
                params.update((id(p), p) for p in group["params"])
        return list(params.values())

    @staticmethod
    def _steps_now(engine: Engine) -> bool:
        acc = int(getattr(engine, "accumulation_steps", 1) or 1)
        if acc <= 1:
            return True
        epoch_length = engine.state.epoch_length
        if epoch_length is not None:  # same rule as SupervisedTrainer._iteration
            local = (engine.state.iteration - 1) % epoch_length
            return (local + 1) % acc == 0 or (local + 1) == epoch_length
        return engine.state.iteration % acc == 0

    def __call__(self, engine: Engine) -> None:
        """Clip the gradients (called by the engine at ``BACKWARD_COMPLETED``)."""
        if not self._steps_now(engine):
            return
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(
            self._params(engine), max_norm=self.max_norm, norm_type=self.norm_type
        )
        self.last_norm = float(norm)
