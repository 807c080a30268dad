# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Ignite handler that initialises MiT's temperature from the logits when training starts."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from monai_calib._utils import normalize_class_target
from monai_calib._utils.distributed import gather_cat, is_dist_ready
from monai_calib.calibration.temperature import fit_temperature

from ._ignite import Engine
from ._logits import collect_logits, engine_device
from ._loss_handler import LossInitializer, TemperatureLoss

__all__ = ["MiTTemperatureInit"]


def label_prior_entropy(labels: torch.Tensor, num_classes: int) -> float:
    """Entropy in nats of the empirical label distribution, :math:`-\\sum_k p_k \\log p_k`
    (:math:`0 \\log 0 = 0`): the NLL of always predicting the label frequencies.

    Args:
        labels: class indices ``(N,)`` in ``[0, num_classes)``.
        num_classes: number of classes ``K``.
    """
    counts = torch.bincount(labels.reshape(-1).cpu(), minlength=num_classes).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def _check_min_nll_gain(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"min_nll_gain must be a finite number >= 0 (nats), got {value!r} "
            f"({type(value).__name__})."
        )
    if not (0.0 <= float(value) < math.inf):
        raise ValueError(f"min_nll_gain must be a finite number >= 0 (nats), got {value}.")
    return float(value)


def _check_temperature_range(value: Any) -> tuple[float, float]:
    expected = "a pair (low, high) with 0 < low < high < inf"
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"temperature_range must be {expected}, got {value!r}.") from None
    if not (0.0 < low < high < math.inf):
        raise ValueError(f"temperature_range must be {expected}, got {tuple(value)!r}.")
    return low, high


class MiTTemperatureInit(LossInitializer):
    """Initialise ``MiTLoss``'s temperature by temperature scaling when training starts, if the
    fit is informative.

    **When to use it.** Only on a pretrained or fine-tuned network (the MiT authors fit :math:`T`
    on an ImageNet-pretrained backbone with a new head, :math:`T \\approx 2.5`). From scratch,
    start at :math:`T = 1` without this handler: the logits of a randomly initialised network
    carry little or no information about the labels, and the fit only reproduces the label prior
    (:math:`T` collapses towards 0 or diverges). The skip rule below catches the fit that is no
    better than the prior; the bounds catch a collapse. Logits of held-out (validation) data are
    preferred when available (pass them as ``data_loader``); by default the handler uses the
    trainer's loader, i.e. the training data, as the authors' code does.

    **What it does.** At the first ``EPOCH_STARTED`` of a fresh run (``engine.state.iteration ==
    0``) it puts the network in eval mode, collects logits :math:`z_i` and labels :math:`y_i`
    over the loader under ``torch.no_grad()`` and fits

    .. math::
        T^* = \\arg\\min_{T > 0} \\; \\mathrm{NLL}(T), \\qquad
        \\mathrm{NLL}(T) = -\\frac1N \\sum_i \\log \\mathrm{softmax}(z_i / T)_{y_i}

    with ``monai_calib.calibration.fit_temperature`` (L-BFGS on :math:`\\log T`). It compares
    the fitted NLL with the entropy of the empirical label prior of the same labels,
    :math:`H(\\pi) = -\\sum_k \\pi_k \\log \\pi_k` (:math:`\\pi_k` the label frequencies; the NLL
    of always predicting :math:`\\pi`):

    - if :math:`H(\\pi) - \\mathrm{NLL}(T^*) <` ``min_nll_gain`` (nats), the logits are no better
      than the class frequencies: the fit is skipped, the loss keeps its temperature, and a
      warning with both numbers is logged;
    - otherwise ``loss.set_temperature(clip(T*, *temperature_range))`` is called and the fitted
      and bounded values are logged.

    The network's mode is restored afterwards. What happened is kept in the attributes
    ``fitted_temperature`` (:math:`T^*`, ``None`` when skipped), ``applied_temperature`` (the
    bounded value given to the loss, ``None`` when skipped), ``skipped``, ``skip_reason``,
    ``nll`` (:math:`\\mathrm{NLL}(T^*)`), ``prior_entropy`` (:math:`H(\\pi)`) and ``num_samples``.

    **Resume.** A run resumed by ``CheckpointLoader`` (which fires at ``STARTED``) has
    ``iteration > 0`` at ``EPOCH_STARTED``, so the handler does nothing (``skipped`` is True) and
    the checkpointed temperature is kept; listing the handlers in any order is fine. It fires at
    ``EPOCH_STARTED`` rather than ``STARTED`` for that reason; the training data iterator of the
    first epoch is created only after ``EPOCH_STARTED``, so a plain loop that fits :math:`T` and
    then iterates the loader consumes the random number generator in the same order.

    **DDP.** Logits and labels are gathered from every rank, so all ranks fit the same
    temperature on the union of their shards and take the same skip decision.

    Usage in a bundle's ``train#handlers``::

        {"_target_": "monai_calib.handlers.MiTTemperatureInit", "loss": "@loss"}

    Reference:
        Pan & Wang, MiT, Meas. Sci. Technol. 36(10) 105404, 2025 (temperature initialisation of
        https://github.com/JEFfersusu/MiT_loss); Guo et al., "On Calibration of Modern Neural
        Networks", ICML 2017 (temperature scaling).
    """

    loss_protocol = TemperatureLoss
    loss_kind = "MiTLoss"
    kept_on_resume = "the checkpointed temperature"

    def __init__(
        self,
        loss: Any | None = None,
        network: torch.nn.Module | None = None,
        data_loader: Iterable | None = None,
        prepare_batch: Callable | None = None,
        inferer: Callable | None = None,
        max_iter: int = 50,
        lr: float = 0.1,
        min_nll_gain: float = 0.05,
        temperature_range: Sequence[float] = (0.1, 10.0),
        check_optimizer: bool = True,
        name: str | None = None,
    ) -> None:
        """
        Args:
            loss: the ``MiTLoss`` (any loss with ``set_temperature`` and ``temperature``).
                Defaults to ``None``: use ``engine.loss_function``.
            network: the model. Defaults to ``None``: ``engine.network``.
            data_loader: loader of the labelled data to fit on; held-out (validation) data are
                preferred when available. Defaults to ``None``: ``engine.data_loader`` (the
                training data, as in the reference).
            prepare_batch: ``(batchdata, device, non_blocking) -> (inputs, targets[, args,
                kwargs])``. Defaults to ``None``: ``engine.prepare_batch``.
            inferer: ``(inputs, network, *args, **kwargs) -> logits``. Defaults to ``None``:
                ``engine.inferer`` if the engine has one, else ``network(inputs)``.
            max_iter: L-BFGS iterations of ``fit_temperature``. Defaults to ``50``.
            lr: L-BFGS learning rate of ``fit_temperature``. Defaults to ``0.1``.
            min_nll_gain: the fit is used only if its NLL is at least this many nats below the
                entropy of the label prior; otherwise it is skipped. Defaults to ``0.05``.
            temperature_range: ``(low, high)`` bounds of the temperature given to the loss.
                Defaults to ``(0.1, 10.0)``.
            check_optimizer: at ``attach``, raise if ``loss.raw_temperature`` is not in
                ``engine.optimizer``. Defaults to ``True``.
            name: identifier of the ``logging.Logger``; ``None`` uses ``engine.logger``.

        Raises:
            ValueError: ``max_iter < 1``; ``lr <= 0``; ``min_nll_gain`` not finite and >= 0;
                ``temperature_range`` not a pair ``0 < low < high < inf``.
        """
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        self.max_iter = int(max_iter)
        self.lr = float(lr)
        self.min_nll_gain = _check_min_nll_gain(min_nll_gain)
        self.temperature_range = _check_temperature_range(temperature_range)
        self.network = network
        self.data_loader = data_loader
        self.prepare_batch = prepare_batch
        self.inferer = inferer
        super().__init__(loss, check_optimizer, name)

    def _reset_record(self) -> None:
        super()._reset_record()
        self.fitted_temperature: float | None = None
        self.applied_temperature: float | None = None
        self.nll: float | None = None
        self.prior_entropy: float | None = None
        self.num_samples: int | None = None

    def setup(self, engine: Engine) -> None:
        """Resolve and check the loss and the data sources (run at ``STARTED``).

        Raises:
            TypeError: no loss, or one without ``set_temperature``; a missing network / loader /
                prepare_batch.
            ValueError: ``loss.raw_temperature`` is missing from ``engine.optimizer``.
        """
        super().setup(engine)
        for attr in ("network", "data_loader", "prepare_batch"):
            if getattr(self, attr) is None and getattr(engine, attr, None) is None:
                raise TypeError(
                    f"{type(self).__name__}: `{attr}` was not given and the engine "
                    f"({type(engine).__name__}) has no `{attr}` attribute."
                )

    def initialize(self, engine: Engine) -> None:
        """Fit, check and set the temperature (the first epoch of a fresh run).

        Args:
            engine: the trainer.
        """
        name = type(self).__name__
        network = self.network if self.network is not None else engine.network
        loader = self.data_loader if self.data_loader is not None else engine.data_loader
        prepare = self.prepare_batch if self.prepare_batch is not None else engine.prepare_batch
        inferer = self.inferer if self.inferer is not None else getattr(engine, "inferer", None)
        logits, targets = collect_logits(
            network,
            loader,
            prepare,
            engine_device(engine, network),
            inferer,
            bool(getattr(engine, "non_blocking", False)),
        )
        num_classes = int(logits.shape[1])
        labels = normalize_class_target(
            targets, num_classes, batch_size=int(logits.shape[0]), name="labels"
        )
        logits, labels = gather_cat(logits, labels)
        fitted = float(fit_temperature(logits, labels, max_iter=self.max_iter, lr=self.lr))
        nll = float(F.cross_entropy(logits.detach().double() / fitted, labels))
        prior_entropy = label_prior_entropy(labels, num_classes)
        if is_dist_ready():  # identical data on every rank; make the decision certain
            shared = torch.tensor(
                [fitted, nll, prior_entropy], dtype=torch.float64, device=logits.device
            )
            dist.broadcast(shared, src=0)
            fitted, nll, prior_entropy = (float(v) for v in shared.tolist())
        self.num_samples = int(logits.shape[0])
        self.nll, self.prior_entropy = nll, prior_entropy
        gain = prior_entropy - nll
        numbers_msg = (
            f"fitted T = {fitted:.6g} on {self.num_samples} samples, NLL = {nll:.4f} nats, "
            f"label-prior entropy = {prior_entropy:.4f} nats (gain {gain:.4f})"
        )
        if not gain >= self.min_nll_gain:  # also catches a NaN
            self.skipped = True
            self.skip_reason = (
                f"uninformative fit: {numbers_msg} < min_nll_gain = {self.min_nll_gain:g}; the "
                "logits predict the labels no better than the class frequencies (e.g. an "
                "untrained network)"
            )
            current = float(self.loss.temperature)
            self.logger.warning(f"{name}: skipped, T kept at {current:.6g}: {self.skip_reason}.")
            return
        low, high = self.temperature_range
        bounded = min(max(fitted, low), high)
        self.loss.set_temperature(bounded)
        self.fitted_temperature, self.applied_temperature = fitted, bounded
        if bounded != fitted:
            self.logger.warning(
                f"{name}: {numbers_msg}; T outside temperature_range [{low:g}, {high:g}], "
                f"set T = {bounded:.6g}."
            )
        else:
            self.logger.info(f"{name}: {numbers_msg}; set T = {bounded:.6g}.")
