# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Inference post-transforms whose probabilities match how each calibration loss was trained.

- TET and MiT train on ``softmax(z / T)``: :py:class:`TemperatureScale` divides by the loss's
  fixed (TET) or learned (MiT) temperature, read when the transform runs, so a checkpoint loaded
  after the transform was built is honoured.
- CCT-EAL trains with the temperature of the true class, which is unknown at inference:
  :py:class:`CCTEALProbability` applies a label-free rule (``"predicted"``, ``"expected"``,
  ``"none"``).
- LDACE models a label's probability as :math:`\\sigma(z)^2`: :py:class:`SquaredSigmoid`.

Array transforms act on one channel-first item (MONAI's decollated layout, class channel
``dim=0``, e.g. ``(K,)`` or ``(K, H, W)``); pass ``dim=1`` for a batch ``(B, K, ...)``. Each
has a dictionary version (``...d``) for ``postprocessing`` chains of evaluators and bundles.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_calib._utils.validation import check_finite, check_temperature, look_up_argument
from monai_calib.enums import CCTEALInferenceRule
from monai_calib.losses.cct_eal import cct_eal_inference_temperature

__all__ = [
    "CCTEALProbability",
    "CCTEALProbabilityd",
    "SquaredSigmoid",
    "SquaredSigmoidd",
    "TemperatureScale",
    "TemperatureScaled",
]

NdarrayTensor = np.ndarray | torch.Tensor


def _float_input(img: Any, name: str = "img") -> torch.Tensor:
    x = convert_to_tensor(img, track_meta=False)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating point tensor or array of logits, got "
            f"{getattr(x, 'dtype', type(img).__name__)}."
        )
    check_finite(x, name)
    return x


def _check_dim(x: torch.Tensor, dim: int) -> int:
    if x.ndim == 0 or not -x.ndim <= dim < x.ndim:
        raise ValueError(
            f"dim={dim} is out of range for a logits tensor of shape {tuple(x.shape)}; expected "
            "the class (channel) dimension, 0 for a decollated item, 1 for a batch."
        )
    return dim % x.ndim


class TemperatureScale(Transform):
    """Divide logits by a temperature and (by default) take the softmax over the class channel.

    .. math::
        p = \\mathrm{softmax}(z / T)

    ``temperature`` is a float (e.g. an exported value) or a loss with a ``temperature``
    attribute (``TETLoss``'s fixed :math:`T`, ``MiTLoss``'s learned :math:`T`), read at every
    call. A ``TETLoss`` built with ``apply_temperature_at_inference=False`` gives :math:`T = 1`.

    Inputs:
        - **img**: logits, channel-first, e.g. ``(K,)``, ``(K, H, W)`` (``dim=0``) or a batch
          ``(B, K, ...)`` with ``dim=1``; tensor or array (the output has the input's type).

    Args:
        temperature: :math:`T > 0`, or an object with a ``temperature`` attribute.
        softmax: return probabilities (``True``) or scaled logits. Defaults to ``True``.
        dim: class dimension. Defaults to ``0``.

    Raises:
        TypeError: ``temperature`` is neither a number nor has a ``temperature`` attribute (a
            ``CCTEALLoss`` has per-class ``temperatures``: use :py:class:`CCTEALProbability`);
            non-floating input.
        ValueError: a temperature that is not finite and > 0; NaN/Inf input; bad ``dim``.

    Reference:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017; MiT / TET
        (https://github.com/JEFfersusu/MiT_loss) evaluate with ``softmax(z / T)``.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, temperature: float | Any, softmax: bool = True, dim: int = 0) -> None:
        if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
            check_temperature(temperature, "temperature")
        elif isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
            temperature = check_temperature(float(temperature), "temperature")
        elif not hasattr(temperature, "temperature"):
            _has_temps = hasattr(temperature, "temperatures")
            raise TypeError(
                "temperature must be a positive number or an object with a `temperature` "
                f"attribute (TETLoss, MiTLoss), got {type(temperature).__name__}"
                + (" (use CCTEALProbability for CCTEALLoss)." if _has_temps else ".")
            )
        self.temperature = temperature
        self.softmax = bool(softmax)
        self.dim = int(dim)

    def current_temperature(self) -> float:
        """The temperature the next call will use (reads the loss now)."""
        t = self.temperature
        if isinstance(t, (int, float)):
            return float(t)
        if not getattr(t, "apply_temperature_at_inference", True):
            return 1.0
        value = t.temperature
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"{type(t).__name__}.temperature must be a scalar, got shape "
                    f"{tuple(value.shape)}."
                )
            value = value.item()
        return check_temperature(value, f"{type(t).__name__}.temperature")

    def __call__(self, img: NdarrayTensor) -> NdarrayTensor:
        x = _float_input(img)
        dim = _check_dim(x, self.dim)
        out = x / self.current_temperature()
        if self.softmax:
            out = torch.softmax(out, dim=dim)
        return convert_to_dst_type(out, img)[0]


class CCTEALProbability(Transform):
    """Label-free probabilities for a model trained with ``CCTEALLoss``.

    CCT-EAL scales a training sample's logits by the temperature of its *true* class
    :math:`T_y`; at inference the label is unknown, so a rule picks the temperature:

    .. math::
        p = \\mathrm{softmax}(z / T(z)), \\qquad
        T(z) = \\begin{cases} 1 & \\text{none}\\\\ T_{\\arg\\max_c z_c} & \\text{predicted}\\\\
            \\sum_c \\mathrm{softmax}(z)_c\\, T_c & \\text{expected} \\end{cases}

    Same values as ``CCTEALLoss.scale_logits`` (followed by a softmax), for any channel-first
    layout. The reference's ``"oracle"`` rule (:math:`T_y`) leaks the label into
    probability-based metrics and is not offered here (``CCTEALLoss.scale_logits(logits,
    rule="oracle", target=y)`` reproduces it offline).

    Inputs:
        - **img**: logits, channel-first (``(K,)``, ``(K, H, W)``; ``dim=1`` for a batch).

    Args:
        temperatures: a ``CCTEALLoss`` (its ``temperatures`` are read at every call) or the
            exported per-class temperatures ``(K,)``.
        rule: ``"predicted"``, ``"expected"`` or ``"none"``. Defaults to ``None``: the loss's
            ``inference_rule``, or ``"predicted"`` for exported temperatures.
        softmax: return probabilities (``True``) or scaled logits. Defaults to ``True``.
        dim: class dimension. Defaults to ``0``.

    Raises:
        TypeError: ``temperatures`` is neither a loss with ``temperatures`` nor a sequence.
        ValueError: unknown rule (or ``"oracle"``); temperatures not 1-D, finite and > 0;
            class count mismatch; NaN/Inf input; bad ``dim``.

    Reference:
        Pan et al., CCT-EAL, ICASSP 2026; https://github.com/JEFfersusu/CCT-EAL.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        temperatures: Any,
        rule: CCTEALInferenceRule | str | None = None,
        softmax: bool = True,
        dim: int = 0,
    ) -> None:
        if hasattr(temperatures, "temperatures"):
            default_rule = getattr(temperatures, "inference_rule", "predicted")
        elif isinstance(temperatures, (Sequence, np.ndarray, torch.Tensor)):
            temperatures = self._check_temperatures(torch.as_tensor(temperatures))
            default_rule = "predicted"
        else:
            raise TypeError(
                "temperatures must be a CCTEALLoss (with `temperatures`) or a sequence of K "
                f"per-class temperatures, got {type(temperatures).__name__}."
            )
        rule = look_up_argument(default_rule if rule is None else rule, CCTEALInferenceRule, "rule")
        if rule == CCTEALInferenceRule.ORACLE:
            raise ValueError(
                "rule must be label-free ('none', 'predicted' or 'expected'), got 'oracle', which "
                "uses the label: CCTEALLoss.scale_logits(logits, rule='oracle', target=y)."
            )
        self.temperatures = temperatures
        self.rule = rule
        self.softmax = bool(softmax)
        self.dim = int(dim)

    @staticmethod
    def _check_temperatures(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(torch.float64 if t.dtype == torch.float64 else torch.float32)
        if t.ndim != 1 or t.shape[0] < 2:
            raise ValueError(
                f"temperatures must be 1-D with K >= 2 entries, got shape {tuple(t.shape)}."
            )
        if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
            raise ValueError(f"temperatures must be finite and > 0, got {t.tolist()}.")
        return t

    def current_temperatures(self) -> torch.Tensor:
        """The per-class temperatures ``(K,)`` the next call will use."""
        t = self.temperatures
        if isinstance(t, torch.Tensor):
            return t
        return self._check_temperatures(torch.as_tensor(t.temperatures))

    def __call__(self, img: NdarrayTensor) -> NdarrayTensor:
        x = _float_input(img)
        dim = _check_dim(x, self.dim)
        temps = self.current_temperatures()
        if x.shape[dim] != temps.shape[0]:
            raise ValueError(
                f"img has {x.shape[dim]} classes in dim {dim} (shape {tuple(x.shape)}) but there "
                f"are {temps.shape[0]} temperatures."
            )
        out = x / cct_eal_inference_temperature(x, temps, self.rule, dim=dim)
        if self.softmax:
            out = torch.softmax(out, dim=dim)
        return convert_to_dst_type(out, img)[0]


class SquaredSigmoid(Transform):
    """Per-label probability of a model trained with the multi-label LDACE loss.

    .. math::
        p_k = \\sigma(z_k)^2

    Inputs:
        - **img**: multi-label logits of any shape (e.g. ``(K,)`` or ``(B, K)``).

    Raises:
        TypeError: non-floating input.
        ValueError: NaN/Inf input.

    Reference:
        Pal, Panda, Garain, "LDACE", ICASSP 2025; https://github.com/theimageprocessingguy/LDACE-CCL.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayTensor) -> NdarrayTensor:
        x = _float_input(img)
        return convert_to_dst_type(torch.sigmoid(x).square(), img)[0]


class _ArrayTransformd(MapTransform):
    """Base of the dictionary versions: applies the array transform ``self.transform`` per key."""

    transform: Transform

    def __call__(self, data: Mapping[Hashable, NdarrayTensor]) -> dict[Hashable, NdarrayTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class TemperatureScaled(_ArrayTransformd):
    """Dictionary version of :py:class:`TemperatureScale`.

    Args:
        keys: keys of the logits to transform.
        temperature: see :py:class:`TemperatureScale`.
        softmax: see :py:class:`TemperatureScale`. Defaults to ``True``.
        dim: see :py:class:`TemperatureScale`. Defaults to ``0``.
        allow_missing_keys: don't raise if a key is missing. Defaults to ``False``.
    """

    backend = TemperatureScale.backend

    def __init__(
        self,
        keys: KeysCollection,
        temperature: float | Any,
        softmax: bool = True,
        dim: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = TemperatureScale(temperature, softmax=softmax, dim=dim)


class CCTEALProbabilityd(_ArrayTransformd):
    """Dictionary version of :py:class:`CCTEALProbability`.

    Args:
        keys: keys of the logits to transform.
        temperatures: see :py:class:`CCTEALProbability`.
        rule: see :py:class:`CCTEALProbability`. Defaults to ``None`` (the loss's rule).
        softmax: see :py:class:`CCTEALProbability`. Defaults to ``True``.
        dim: see :py:class:`CCTEALProbability`. Defaults to ``0``.
        allow_missing_keys: don't raise if a key is missing. Defaults to ``False``.
    """

    backend = CCTEALProbability.backend

    def __init__(
        self,
        keys: KeysCollection,
        temperatures: Any,
        rule: CCTEALInferenceRule | str | None = None,
        softmax: bool = True,
        dim: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CCTEALProbability(temperatures, rule=rule, softmax=softmax, dim=dim)


class SquaredSigmoidd(_ArrayTransformd):
    """Dictionary version of :py:class:`SquaredSigmoid`.

    Args:
        keys: keys of the multi-label logits to transform.
        allow_missing_keys: don't raise if a key is missing. Defaults to ``False``.
    """

    backend = SquaredSigmoid.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SquaredSigmoid()
