# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Post-hoc temperature scaling (Guo et al., ICML 2017): fit one scalar T on held-out logits."""

from __future__ import annotations

import math

import torch
from torch import nn

from monai_calib._utils.validation import (
    check_logits_2d,
    check_temperature,
    normalize_class_target,
)

__all__ = ["TemperatureScaler", "fit_temperature"]


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 50, lr: float = 0.1
) -> float:
    r"""Fit the temperature that minimises the mean NLL of ``softmax(logits / T)``.

    .. math::

        T^* = \exp(u^*), \qquad u^* = \arg\min_u \frac1N \sum_i
        -\log \mathrm{softmax}(z_i e^{-u})_{y_i}

    L-BFGS on :math:`u = \log T` from :math:`u_0 = 0` (``T = 1``), strong-Wolfe line search, one
    ``.step()`` with ``max_iter`` iterations, as in the MiT reference code (spec §2.1). The log
    parameterisation keeps :math:`T > 0`. The logits are detached and the fit runs in float64
    (the problem is 1-D, so this is cheap and removes float32 round-off from the line search).

    Inputs:
        - **logits**: ``(N, K)`` float logits (any float dtype, any device).
        - **labels**: class indices ``(N,)`` / ``(N, 1)`` or one-hot ``(N, K)``.

    Args:
        logits: logits of held-out (validation) data, preferably (on its own training data
            a network looks better calibrated than it is). For ``MiTLoss``'s initialisation see
            ``monai_calib.handlers.MiTTemperatureInit``.
        labels: their class labels.
        max_iter: L-BFGS iterations. Defaults to ``50``.
        lr: L-BFGS learning rate. Defaults to ``0.1``.

    Returns:
        The fitted temperature :math:`T^*` as a Python float.

    Raises:
        TypeError, ValueError: bad logits or labels (shape, dtype, range, NaN/Inf); ``max_iter``
            < 1 or ``lr`` <= 0; a non-finite fit.

    References:
        Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
    """
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
    if not float(lr) > 0.0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    check_logits_2d(logits, name="logits")
    y = normalize_class_target(
        labels, logits.shape[1], batch_size=logits.shape[0], name="labels", device=logits.device
    )
    z = logits.detach().to(torch.float64)
    u = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u], lr=float(lr), max_iter=int(max_iter), line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z * torch.exp(-u), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = math.exp(float(u.detach()))
    if not math.isfinite(t) or t <= 0.0:
        raise ValueError(f"temperature fit diverged (T = {t}); check the logits and labels.")
    return t


class TemperatureScaler(nn.Module):
    r"""Post-hoc temperature scaling: ``forward(z) = z / T`` with ``T`` fitted by
    :func:`fit_temperature`.

    .. math::

        \hat p = \mathrm{softmax}(z / T)

    ``log T`` is stored as a persistent float64 **buffer** ``log_temperature`` (initially 0, i.e.
    ``T = 1``): it is saved in ``state_dict`` and follows ``.to(device)``, but it is not a
    parameter, so the scaler never shows up in a training optimizer; only :meth:`fit` changes it.

    Inputs:
        - **logits**: ``(B, K, ...)`` logits; any shape works since ``T`` is a scalar.

    Args:
        temperature: initial temperature ``> 0``. Defaults to ``1.0``.

    Raises:
        ValueError: non-positive ``temperature``; see :func:`fit_temperature` for :meth:`fit`.

    Example::

        scaler = TemperatureScaler().fit(val_logits, val_labels)
        probs = torch.softmax(scaler(test_logits), dim=1)
    """

    log_temperature: torch.Tensor

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "log_temperature",
            torch.tensor(math.log(check_temperature(temperature)), dtype=torch.float64),
            persistent=True,
        )

    @property
    def temperature(self) -> torch.Tensor:
        """The current temperature ``T = exp(log_temperature)``, a detached 0-d float64 tensor.

        The same meaning as ``MiTLoss.temperature`` and ``TETLoss.temperature``, so any of them
        can be given to :class:`~monai_calib.transforms.TemperatureScale`.
        """
        return self.log_temperature.new_tensor(math.exp(float(self.log_temperature)))

    def fit(
        self, logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 50, lr: float = 0.1
    ) -> TemperatureScaler:
        """Fit ``T`` on held-out ``logits`` ``(N, K)`` and ``labels``; returns ``self``."""
        t = fit_temperature(logits, labels, max_iter=max_iter, lr=lr)
        self.log_temperature.fill_(math.log(t))
        return self

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Return ``logits / T`` (same shape and dtype)."""
        return logits / self.log_temperature.exp().to(logits.dtype)

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.6g}"
