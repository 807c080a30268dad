# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Bad-input matrix for every public loss and metric (docs/reliability.md, issue 8).

Each bad input of the reliability table is fed to every entry point; the test asserts either a
``ValueError`` / ``TypeError`` whose message names the argument, what was expected and what was
received, or a finite value equal to an independent reference (the same call on an equivalent
valid layout, or on float32 / float64 copies of half-precision inputs). No call may return NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
from entry_points import METRIC_CLASSES, SEG_LOSS_CLASSES, losses_of_kind

from monai_calib.calibration import TemperatureScaler, fit_temperature
from monai_calib.losses import (
    CAMLLoss,
    CanonicalCalibrationLoss,
    CCTEALLoss,
    DCALoss,
    LDACECCLoss,
    LDACELoss,
    LSPlusLoss,
    MDCALoss,
    MiTLoss,
    MultiplicativeLoss,
    TETLoss,
)
from monai_calib.metrics import (
    PooledCalibrationErrorMetric,
    brier_score,
    brier_statistics,
    calibration_error,
    calibration_statistics,
    hamming_loss,
    multilabel_auc,
    negative_log_likelihood,
    nll_statistics,
    retention_auc,
    retention_curve,
)

K, B = 4, 6
CUDA = torch.cuda.is_available()

# ----------------------------------------------------------------------------- factories

CLASS_LOSSES = losses_of_kind("class")
MULTILABEL_LOSSES = losses_of_kind("multilabel")
SEG_LOSSES = SEG_LOSS_CLASSES


def _logits(b: int = B, k: int = K, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed)) * 2


def _labels(b: int = B, k: int = K, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, (b,), generator=torch.Generator().manual_seed(seed))


def _multihot(b: int = B, k: int = K, seed: int = 2) -> torch.Tensor:
    y = torch.rand(b, k, generator=torch.Generator().manual_seed(seed)) > 0.5
    y[0] = True  # every label present and absent at least once for B >= 2
    if b > 1:
        y[1] = False
    return y.float()


def _with(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = value
    return x


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def _finite(out: torch.Tensor) -> None:
    assert bool(torch.isfinite(out).all()), f"non-finite result {out}"


def _class_target_bad(t: str) -> dict[str, tuple[Callable, type[Exception], str]]:
    """Bad class targets, named ``t`` by the entry point: the one rule of
    ``validation.normalize_class_target``, shared by the losses (``target``) and metrics (``y``)."""
    return {
        "batch_mismatch": (
            lambda x, y: (x, y[:5]),
            ValueError,
            rf"{t} has batch size 5 but input has batch size 6",
        ),
        "label_out_of_range": (
            lambda x, y: (x, torch.full_like(y, K)),
            ValueError,
            rf"{t} class indices must be in \[0, 3\], got values in \[4, 4\]",
        ),
        "label_negative": (
            lambda x, y: (x, _with(y, -1)),
            ValueError,
            rf"{t} class indices must be in \[0, 3\], got values in \[-1, ",
        ),
        "float_fractional_labels": (
            lambda x, y: (x, y.float() + 0.5),
            ValueError,
            rf"{t} holds float values that are not whole class indices",
        ),
        "soft_onehot_target": (
            lambda x, y: (x, torch.full((B, K), 1.0 / K)),
            ValueError,
            rf"{t} of shape \(6, 4\) is read as one-hot .* exactly one 1",
        ),
        "bool_target": (
            lambda x, y: (x, y > 1),
            TypeError,
            rf"{t} must hold class indices .*torch\.bool",
        ),
    }


def _multihot_bad(t: str, ref: str) -> dict[str, tuple[Callable, type[Exception], str]]:
    """Bad multi-hot targets named ``t`` (prediction named ``ref``): the one rule of
    ``validation.check_multilabel_target``, shared by the losses and metrics."""
    return {
        "batch_mismatch": (
            lambda x, y: (x, y[:5]),
            ValueError,
            rf"{t} must be multi-hot with the same shape as {ref} \(6, 4\), got shape \(5, 4\)",
        ),
        "index_target": (
            lambda x, y: (x, _labels()),
            ValueError,
            rf"{t} must be multi-hot with the same shape as {ref} \(6, 4\), got shape \(6,\)",
        ),
        "non_binary_target": (
            lambda x, y: (x, y * 2),
            ValueError,
            rf"{t} must be binary \(0/1\) multi-hot labels, got non-binary values such as \[2\.0",
        ),
        "negative_target": (lambda x, y: (x, -y), ValueError, rf"{t} must be binary .*\[-1\.0"),
        "soft_target": (lambda x, y: (x, y * 0.5), ValueError, rf"{t} must be binary .*\[0\.5"),
    }


def _non_finite_bad(name: str) -> dict[str, tuple[Callable, type[Exception], str]]:
    """NaN / Inf predictions (``validation.check_finite``)."""
    return {
        "nan_logits": (
            lambda x, y: (_with(x, math.nan), y),
            ValueError,
            rf"{name} must be finite, got 1 NaN and 0 Inf",
        ),
        "inf_logits": (
            lambda x, y: (_with(x, math.inf), y),
            ValueError,
            rf"{name} must be finite, got 0 NaN and 1 Inf",
        ),
    }


# ------------------------------------------------------- loss constructor hyperparameters

#: loss class -> (required constructor arguments, {float hyperparameter: its range in words})
LOSS_FLOAT_ARGS: dict[str, tuple[Callable[..., torch.nn.Module], dict, dict[str, str]]] = {
    "DCALoss": (DCALoss, {}, {"beta": ">= 0"}),
    "MDCALoss": (MDCALoss, {}, {"beta": ">= 0", "gamma": ">= 0", "smoothing": r"in \[0, 1\)"}),
    "TETLoss": (TETLoss, {}, {"temperature": "> 0", "entropy_weight": ">= 0", "eps": ">= 0"}),
    "MiTLoss": (
        MiTLoss,
        {"num_classes": K},
        {
            "init_temperature": "> 0",
            "lambda_max": ">= 0",
            "temperature_min": "> 0",
            "temperature_max": "> 0",
        },
    ),
    "CCTEALLoss": (
        CCTEALLoss,
        {"num_classes": K},
        {
            "alpha_max": ">= 0",
            "warmup_ratio": r"in \[0, 1\]",
            "momentum": r"in \[0, 1\]",
            "temperature_min": "> 0",
            "temperature_max": "> 0",
            "eps": r"in \(0, 1\)",
        },
    ),
    "LSPlusLoss": (LSPlusLoss, {"class_prior": [0.6] * K}, {"mix": r"in \[0, 1\]"}),
    "LDACELoss": (LDACELoss, {}, {"clip_eps": r"in \[0, 0.5\)"}),
    "CanonicalCalibrationLoss": (
        CanonicalCalibrationLoss,
        {},
        {"clip_eps": r"in \[0, 0.5\)"},
    ),
    "LDACECCLoss": (LDACECCLoss, {}, {"ccl_weight": ">= 0", "clip_eps": r"in \[0, 0.5\)"}),
    "MultiplicativeLoss": (MultiplicativeLoss, {}, {"smooth_nr": ">= 0", "smooth_dr": ">= 0"}),
    "CAMLLoss": (CAMLLoss, {}, {"smooth_nr": ">= 0", "smooth_dr": ">= 0"}),
}
LOSS_FLOAT_CASES = [(name, arg) for name, (_, _, args) in LOSS_FLOAT_ARGS.items() for arg in args]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name,arg", LOSS_FLOAT_CASES)
def test_loss_float_hyperparameter_rejects_non_finite(name: str, arg: str, bad: float) -> None:
    """Every float hyperparameter of every loss is a finite number in its range: NaN and ±inf
    are rejected at construction (an infinite weight gave a ±inf or NaN loss at step 1)."""
    cls, required, rules = LOSS_FLOAT_ARGS[name]
    pattern = rf"{arg} must be a finite number {rules[arg]}, got {bad!r}\."
    with pytest.raises(ValueError, match=pattern):
        cls(**required, **{arg: bad})


@pytest.mark.parametrize("name,arg", LOSS_FLOAT_CASES)
def test_loss_float_hyperparameter_type(name: str, arg: str) -> None:
    cls, required, _ = LOSS_FLOAT_ARGS[name]
    with pytest.raises(TypeError, match=rf"{arg} must be a finite number"):
        cls(**required, **{arg: "0.5"})


def test_loss_float_hyperparameter_table_covers_every_loss() -> None:
    from entry_points import LOSSES

    names = {name.split("-")[0] for name in LOSSES}
    assert names == set(LOSS_FLOAT_ARGS)


# ------------------------------------------------------------ classification losses: bad

CLASS_BAD = {
    **_class_target_bad("target"),
    **_non_finite_bad("input"),
    "ndim3": (
        lambda x, y: (x.unsqueeze(-1).expand(-1, -1, 2), y),
        ValueError,
        r"input must have shape \(B, K\).*got 3-d shape \(6, 4, 2\)",
    ),
    "ndim1": (lambda x, y: (x[:, 0], y), ValueError, r"input must have shape \(B, K\).*1-d"),
    "multi_hot_target": (
        lambda x, y: (x, _multihot()),
        ValueError,
        r"target of shape \(6, 4\) is read as one-hot",
    ),
    "int_logits": (
        lambda x, y: (x.long(), y),
        TypeError,
        r"input must be a floating point tensor of logits, got dtype torch\.int64",
    ),
    "neg_inf_logits": (
        lambda x, y: (_with(x, -math.inf), y),
        ValueError,
        r"input must be finite, got 0 NaN and 1 Inf",
    ),
    "empty_batch": (
        lambda x, y: (x[:0], y[:0]),
        ValueError,
        r"input is an empty batch \(shape \(0, 4\)\)",
    ),
    "K1": (
        lambda x, y: (x[:, :1], torch.zeros_like(y)),
        ValueError,
        r"input must have (at least 2 classes|shape \(B, 4\) to match class_prior)",
    ),
    "input_not_tensor": (
        lambda x, y: (x.tolist(), y),
        TypeError,
        r"input must be a torch\.Tensor, got list",
    ),
    "target_not_tensor": (
        lambda x, y: (x, y.tolist()),
        TypeError,
        r"target must be a torch\.Tensor, got list",
    ),
}


@pytest.mark.parametrize("case", list(CLASS_BAD))
@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_classification_loss_bad_input(name: str, case: str) -> None:
    make, exc, pattern = CLASS_BAD[case]
    loss = CLASS_LOSSES[name](K).train()
    before = _state(loss)
    x, y = make(_logits(), _labels())
    with pytest.raises(exc, match=pattern):
        loss(x, y)
    _assert_state_equal(before, _state(loss))  # a rejected batch never touches running state


# ---------------------------------------------------------- classification losses: valid


def _class_loss(name: str, k: int, x: torch.Tensor, y, reduction: str = "mean") -> torch.Tensor:
    loss = CLASS_LOSSES[name](k).train()
    loss.reduction = reduction
    return loss(x, y)


@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_classification_loss_equivalent_layouts(name: str) -> None:
    """Float whole-number labels, (B, 1) labels and one-hot rows give the index result."""
    x, y = _logits(), _labels()
    ref = _class_loss(name, K, x, y)
    _finite(ref)
    onehot = torch.nn.functional.one_hot(y, K)
    for other in (y.float(), y.unsqueeze(1), y.int(), onehot, onehot.float()):
        torch.testing.assert_close(_class_loss(name, K, x, other), ref, rtol=0, atol=0)


@pytest.mark.parametrize("k", [2, K])
@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_classification_loss_small_batch_and_classes(name: str, b: int, k: int) -> None:
    """B = 1 and K = 2 are valid: finite, and "none" is a (B,) vector whose mean is "mean"."""
    x, y = _logits(b, k), _labels(b, k)
    per = _class_loss(name, k, x, y, "none")
    assert per.shape == (b,)
    _finite(per)
    torch.testing.assert_close(_class_loss(name, k, x, y), per.mean(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_classification_loss_half_inputs(name: str, dtype: torch.dtype) -> None:
    """Half-precision logits are promoted: the result is the float32 loss of the same values;
    the gradient has the input's dtype and is the float32 one up to half rounding (the gradients
    of the loss's own parameters, e.g. temperatures, are the float32 ones)."""
    g = torch.Generator().manual_seed(4)
    k = 10
    x = (torch.randn(64, k, generator=g) * 8).to(dtype).requires_grad_(True)
    y = torch.randint(0, k, (64,), generator=g)
    x32 = x.detach().float().requires_grad_(True)
    half, full = CLASS_LOSSES[name](k).train(), CLASS_LOSSES[name](k).train()
    out, ref = half(x, y), full(x32, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    out.backward()
    ref.backward()
    assert x.grad.dtype == dtype and bool(torch.isfinite(x.grad).all())
    torch.testing.assert_close(x.grad.float(), x32.grad, rtol=2e-2, atol=1e-3)
    for p_half, p_full in zip(half.parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(p_half.grad, p_full.grad)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_classification_loss_target_on_other_device(name: str) -> None:
    """A CPU target with CUDA logits is moved to the logits' device; same value as on CPU."""
    x, y = _logits(), _labels()
    ref = _class_loss(name, K, x, y)
    loss = CLASS_LOSSES[name](K).train().cuda()
    torch.testing.assert_close(loss(x.cuda(), y).cpu(), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- multi-label losses


ML_BAD = {
    **_multihot_bad("target", "input"),
    **_non_finite_bad("input"),
    "ndim3": (
        lambda x, y: (x.unsqueeze(-1), y.unsqueeze(-1)),
        ValueError,
        r"input must have shape \(B, K\).*3-d",
    ),
    "ndim1": (lambda x, y: (x[:, 0], y[:, 0]), ValueError, r"input must have shape \(B, K\)"),
    "nan_target": (
        lambda x, y: (x, _with(y, math.nan)),
        ValueError,
        r"target must be binary .* such as \[nan",
    ),
    "int_logits": (lambda x, y: (x.long(), y), TypeError, r"input must be a floating point"),
    "empty_batch": (lambda x, y: (x[:0], y[:0]), ValueError, r"input is an empty batch"),
    "input_not_tensor": (lambda x, y: (x.tolist(), y), TypeError, r"input must be a torch\.Tensor"),
    "target_not_tensor": (
        lambda x, y: (x, y.tolist()),
        TypeError,
        r"target must be a torch\.Tensor",
    ),
}


@pytest.mark.parametrize("case", list(ML_BAD))
@pytest.mark.parametrize("name", list(MULTILABEL_LOSSES))
def test_multilabel_loss_bad_input(name: str, case: str) -> None:
    make, exc, pattern = ML_BAD[case]
    x, y = make(_logits(), _multihot())
    with pytest.raises(exc, match=pattern):
        MULTILABEL_LOSSES[name](K)(x, y)


@pytest.mark.parametrize("shape", [(1, K), (B, 1), (B, 2), (1, 1)])
@pytest.mark.parametrize("name", list(MULTILABEL_LOSSES))
def test_multilabel_loss_small_shapes_and_layouts(name: str, shape: tuple[int, int]) -> None:
    """B = 1, K = 1, K = 2 are valid; bool / int / float multi-hot targets agree."""
    b, k = shape
    x, y = _logits(b, k), _multihot(b, k)
    loss = MULTILABEL_LOSSES[name](K)
    ref = loss(x, y)
    _finite(ref)
    assert float(ref) >= 0.0
    for other in (y.bool(), y.long()):
        torch.testing.assert_close(loss(x, other), ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(MULTILABEL_LOSSES))
def test_multilabel_loss_half_inputs(name: str, dtype: torch.dtype) -> None:
    """The float32 loss of the same values; a finite gradient of the input's dtype."""
    x, y = _logits(16, 10).to(dtype).requires_grad_(True), _multihot(16, 10)
    loss = MULTILABEL_LOSSES[name](K)
    out = loss(x, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(x.detach().float(), y), rtol=1e-6, atol=1e-6)
    out.backward()
    assert x.grad.dtype == dtype and bool(torch.isfinite(x.grad).all())


# --------------------------------------------------------------- segmentation losses

XS_SHAPE = (2, 3, 5, 5)


def _seg() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(*XS_SHAPE, generator=g), torch.randint(0, 3, (2, 1, 5, 5), generator=g)


SEG_BAD = {
    "ndim_mismatch": (
        lambda x, y: (x, y[:, 0]),
        ValueError,
        r"the number of dimensions for input and target should be the same",
    ),
    "ndim2": (
        lambda x, y: (x[:, :, 0, 0], y[:, :, 0, 0]),
        ValueError,
        r"input must have shape BNH\[W\[D\]\] \(at least 3 dims\), got shape \(2, 3\)",
    ),
    "batch_mismatch": (
        lambda x, y: (x, y[:1]),
        ValueError,
        r"target must have the batch and spatial sizes of input \(2, 5, 5\).*\(1, 1, 5, 5\)",
    ),
    "spatial_mismatch": (
        lambda x, y: (x, y[..., :4]),
        ValueError,
        r"target must have the batch and spatial sizes of input .*\(2, 1, 5, 4\)",
    ),
    "channel_mismatch": (
        lambda x, y: (x, torch.zeros(2, 2, 5, 5)),
        ValueError,
        r"number of channels for target is neither 1",
    ),
    "label_out_of_range": (
        lambda x, y: (x, y + 3),
        ValueError,
        r"target class indices must be in \[0, 2\], got values in \[3",
    ),
    "label_negative": (
        lambda x, y: (x, y - 1),
        ValueError,
        r"target class indices must be in \[0, 2\], got values in \[-1",
    ),
    "float_fractional_labels": (
        lambda x, y: (x, y.float() + 0.5),
        ValueError,
        r"target holds float values that are not whole class indices",
    ),
    "bool_target": (lambda x, y: (x, y > 0), TypeError, r"target must hold class indices"),
    "int_logits": (lambda x, y: (y.expand(-1, 3, -1, -1), y), TypeError, r"input must be a "),
    "nan_logits": (lambda x, y: (_with(x, math.nan), y), ValueError, r"input must be finite"),
    "inf_logits": (lambda x, y: (_with(x, math.inf), y), ValueError, r"input must be finite"),
    "empty_batch": (
        lambda x, y: (x[:0], y[:0]),
        ValueError,
        r"input is empty \(shape \(0, 3, 5, 5\)\)",
    ),
    "onehot_target_with_to_onehot_y": (
        lambda x, y: (x, torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 3, 1, 2)),
        ValueError,
        r"to_onehot_y=True expects class indices of shape B1H\[W\[D\]\] as target",
    ),
    "input_not_tensor": (lambda x, y: (x.tolist(), y), TypeError, r"input must be a torch\.Tensor"),
    "target_not_tensor": (
        lambda x, y: (x, y.tolist()),
        TypeError,
        r"target must be a torch\.Tensor",
    ),
}


@pytest.mark.parametrize("case", list(SEG_BAD))
@pytest.mark.parametrize("name", list(SEG_LOSSES))
def test_segmentation_loss_bad_input(name: str, case: str) -> None:
    make, exc, pattern = SEG_BAD[case]
    x, y = make(*_seg())
    with pytest.raises(exc, match=pattern):
        SEG_LOSSES[name](to_onehot_y=True, softmax=True)(x, y)


@pytest.mark.parametrize("name", list(SEG_LOSSES))
def test_segmentation_loss_index_target_needs_to_onehot_y(name: str) -> None:
    x, y = _seg()
    with pytest.raises(ValueError, match=r"holds class indices .* but to_onehot_y=False"):
        SEG_LOSSES[name](softmax=True)(x, y)


@pytest.mark.parametrize("name", list(SEG_LOSSES))
def test_segmentation_loss_valid_layouts(name: str) -> None:
    """Float whole labels = long labels; one-hot target = indices with ``to_onehot_y``; B = 1;
    K = 2; K = 1 (sigmoid); half inputs equal the float32 loss of the same values."""
    x, y = _seg()
    loss = SEG_LOSSES[name](to_onehot_y=True, softmax=True)
    ref = loss(x, y)
    _finite(ref)
    torch.testing.assert_close(loss(x, y.float()), ref, rtol=0, atol=0)
    onehot = torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(SEG_LOSSES[name](softmax=True)(x, onehot), ref, rtol=1e-6, atol=0)
    _finite(loss(x[:1], y[:1]))
    _finite(loss(x[:, :2], y.clamp(max=1)))
    _finite(SEG_LOSSES[name](sigmoid=True)(x[:, :1], (y > 0).float()))
    for dtype in (torch.float16, torch.bfloat16):
        out = loss(x.to(dtype), y)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, loss(x.to(dtype).float(), y), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------- multiclass metrics (functional)


def _run_metric(cls: type, kwargs: dict) -> Callable:
    def run(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        metric = cls(**kwargs)
        metric(p, y)
        return metric.aggregate()

    return run


MC_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "calibration_error[top_label]": lambda p, y: calibration_error(p, y),
    "calibration_error[classwise]": lambda p, y: calibration_error(p, y, target="classwise"),
    "calibration_error[equal_mass]": lambda p, y: calibration_error(p, y, binning="equal_mass"),
    "calibration_statistics": lambda p, y: calibration_statistics(p, y),
    "brier_score": brier_score,
    "brier_statistics": brier_statistics,
    "negative_log_likelihood": negative_log_likelihood,
    "nll_statistics": nll_statistics,
    "retention_auc": retention_auc,
    "retention_curve": lambda p, y: retention_curve(p, y)[1],
    **{name: _run_metric(cls, {}) for name, (cls, _) in METRIC_CLASSES.items()},
}


def _probs(b: int = B, k: int = K, seed: int = 4) -> torch.Tensor:
    return torch.softmax(_logits(b, k, seed), dim=1)


MC_BAD = {
    **_class_target_bad("y"),
    **_non_finite_bad("y_pred"),
    "ndim1": (
        lambda p, y: (p[:, 0], y),
        ValueError,
        r"y_pred must have shape \(B, K\) or \(B, K, \*spatial\).*got shape \(6,\)",
    ),
    "int_y_pred": (
        lambda p, y: (p.long(), y),
        TypeError,
        r"y_pred must be a floating point tensor .*got dtype torch\.int64",
    ),
    "probs_not_summing_to_1": (
        lambda p, y: (p * 0.5, y),
        ValueError,
        r"y_pred holds probabilities that do not sum to 1 over dim 1 .* is 0\.5",
    ),
    "negative_probs": (
        lambda p, y: (p - 0.5, y),
        ValueError,
        r"y_pred must hold probabilities in \[0, 1\] \(pass logits=True",
    ),
    "logits_as_probs": (
        lambda p, y: (_logits(), y),
        ValueError,
        r"y_pred must hold probabilities in \[0, 1\]",
    ),
    "K1": (
        lambda p, y: (torch.ones(B, 1), torch.zeros_like(y)),
        ValueError,
        r"y_pred must have at least 2 classes in dim 1 .*got shape \(6, 1\)",
    ),
}


@pytest.mark.parametrize("case", list(MC_BAD))
@pytest.mark.parametrize("name", list(MC_METRICS))
def test_multiclass_metric_bad_input(name: str, case: str) -> None:
    make, exc, pattern = MC_BAD[case]
    p, y = make(_probs(), _labels())
    with pytest.raises(exc, match=pattern):
        MC_METRICS[name](p, y)


@pytest.mark.parametrize(
    "name", [n for n in MC_METRICS if not n.endswith("Metric")]
)  # metric classes take MONAI's list-of-tensors form for a list input
def test_multiclass_metric_not_a_tensor(name: str) -> None:
    with pytest.raises(TypeError, match=r"y_pred must be a torch\.Tensor, got list"):
        MC_METRICS[name](_probs().tolist(), _labels())
    with pytest.raises(TypeError, match=r"y must be a torch\.Tensor, got list"):
        MC_METRICS[name](_probs(), _labels().tolist())


@pytest.mark.parametrize("name", list(MC_METRICS))
def test_multiclass_metric_equivalent_layouts_and_small_shapes(name: str) -> None:
    """Float whole labels, (B, 1), one-hot and logits=True layouts give the index result;
    B = 1 and K = 2 give finite values."""
    fn = MC_METRICS[name]
    p, y = _probs(), _labels()
    ref = fn(p, y)
    _finite(ref)
    onehot = torch.nn.functional.one_hot(y, K)
    for other in (y.float(), y.unsqueeze(1), onehot, onehot.float()):
        torch.testing.assert_close(fn(p, other), ref, rtol=0, atol=0)
    _finite(fn(p[:1], y[:1]))
    _finite(fn(_probs(B, 2), _labels(B, 2)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(MC_METRICS))
def test_multiclass_metric_half_probabilities(name: str, dtype: torch.dtype) -> None:
    """Half-precision softmax outputs are accepted (row-sum tolerance of the input dtype, not
    float32's: bf16 softmax rows are off by up to ~K * 2^-8); probabilities that are exact in
    half precision (multiples of 1/32) give the float64 result."""
    fn = MC_METRICS[name]
    _finite(fn(_probs().to(dtype), _labels()))
    g = torch.Generator().manual_seed(6)
    counts = torch.multinomial(torch.ones(K), 32 * B, replacement=True, generator=g)
    p = torch.nn.functional.one_hot(counts.view(B, 32), K).sum(1).double() / 32
    y = _labels()
    torch.testing.assert_close(fn(p.to(dtype), y).double(), fn(p, y).double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["calibration_error[top_label]", "brier_score", "negative_log_likelihood"]
)
def test_multiclass_metric_empty_batch_is_documented_nan(name: str) -> None:
    """Documented behaviour: a mean over zero samples is NaN (0 / 0); the statistics functions
    return zero counts, so streaming an empty batch changes nothing (next test)."""
    out = MC_METRICS[name](torch.zeros(0, K), torch.zeros(0, dtype=torch.long))
    assert bool(torch.isnan(out))


@pytest.mark.parametrize("name", list(METRIC_CLASSES))
def test_metric_class_empty_batch_in_stream_changes_nothing(name: str) -> None:
    cls = METRIC_CLASSES[name][0]
    p, y = _probs(), _labels()
    a, b = cls(), cls()
    a(p, y)
    b(p[:3], y[:3])
    b(torch.zeros(0, K), torch.zeros(0, dtype=torch.long))
    b(p[3:], y[3:])
    torch.testing.assert_close(b.aggregate(), a.aggregate(), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(MC_METRICS))
def test_multiclass_metric_labels_on_other_device(name: str) -> None:
    p, y = _probs(), _labels()
    torch.testing.assert_close(
        MC_METRICS[name](p.cuda(), y).cpu().double(), MC_METRICS[name](p, y).double()
    )


# ---------------------------------------------------------------- multi-label metrics

ML_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hamming_loss": hamming_loss,
    "multilabel_auc": multilabel_auc,
    "calibration_error[marginal]": lambda p, y: calibration_error(p, y, target="marginal"),
    "brier_score[multilabel]": lambda p, y: brier_score(p, y, multilabel=True),
    "negative_log_likelihood[multilabel]": lambda p, y: negative_log_likelihood(
        p, y, multilabel=True
    ),
    "PooledCalibrationErrorMetric[marginal]": _run_metric(
        PooledCalibrationErrorMetric, {"target": "marginal"}
    ),
    **{
        f"{name}[multilabel]": _run_metric(METRIC_CLASSES[name][0], {"multilabel": True})
        for name in ("BrierScoreMetric", "NLLMetric")
    },
}

ML_METRIC_BAD = {
    **_multihot_bad("y", "y_pred"),
    **_non_finite_bad("y_pred"),
    "ndim1": (lambda p, y: (p[:, 0], y[:, 0]), ValueError, r"y_pred must have shape"),
    "int_y_pred": (lambda p, y: (p.long(), y), TypeError, r"y_pred must be a floating point"),
    "probs_above_1": (
        lambda p, y: (p + 1.0, y),
        ValueError,
        r"y_pred must hold probabilities in \[0, 1\]",
    ),
}


def _ml_probs(b: int = B, k: int = K) -> torch.Tensor:
    return torch.sigmoid(_logits(b, k, seed=5))


@pytest.mark.parametrize("case", list(ML_METRIC_BAD))
@pytest.mark.parametrize("name", list(ML_METRICS))
def test_multilabel_metric_bad_input(name: str, case: str) -> None:
    make, exc, pattern = ML_METRIC_BAD[case]
    p, y = make(_ml_probs(), _multihot())
    with pytest.raises(exc, match=pattern):
        ML_METRICS[name](p, y)


@pytest.mark.parametrize("name", list(ML_METRICS))
def test_multilabel_metric_layouts_small_shapes_half(name: str) -> None:
    """bool / int multi-hot agree with float; K = 1 and K = 2 finite; half inputs give the
    metric of the same values in float32."""
    fn = ML_METRICS[name]
    p, y = _ml_probs(), _multihot()
    ref = fn(p, y)
    _finite(ref)
    for other in (y.bool(), y.long()):
        torch.testing.assert_close(fn(p, other), ref, rtol=0, atol=0)
    _finite(fn(p[:, :1], y[:, :1]))
    _finite(fn(p[:, :2], y[:, :2]))
    for dtype in (torch.float16, torch.bfloat16):
        torch.testing.assert_close(fn(p.to(dtype), y).double(), fn(p.to(dtype).float(), y).double())


def test_multilabel_auc_single_class_batch_warns() -> None:
    """B = 1: every label has one class, AUC is undefined; NaN comes with a UserWarning."""
    with pytest.warns(UserWarning, match="single class"):
        out = multilabel_auc(_ml_probs(1), _multihot(1))
    assert bool(torch.isnan(out))


@pytest.mark.parametrize("name", ["hamming_loss", "multilabel_auc"])
def test_multilabel_metric_empty_batch_raises(name: str) -> None:
    with pytest.raises(ValueError, match=r"y_pred must have shape \(N, K\) with N, K >= 1"):
        ML_METRICS[name](torch.zeros(0, K), torch.zeros(0, K))


# ------------------------------------------------------------------- post-hoc calibration


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_temperature_scaler_rejects_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0, got"):
        TemperatureScaler(temperature)


FIT_BAD = {
    "nan_logits": (
        lambda x, y: (_with(x, math.nan), y),
        r"logits must be finite, got 1 NaN",
    ),
    "label_out_of_range": (
        lambda x, y: (x, torch.full_like(y, K)),
        r"labels class indices must be in \[0, 3\]",
    ),
    "empty_batch": (lambda x, y: (x[:0], y[:0]), r"logits is an empty batch"),
    "ndim1": (lambda x, y: (x[:, 0], y), r"logits must have shape \(B, K\)"),
    "batch_mismatch": (lambda x, y: (x, y[:5]), r"labels has batch size 5"),
}


@pytest.mark.parametrize("case", list(FIT_BAD))
def test_fit_temperature_bad_input(case: str) -> None:
    make, pattern = FIT_BAD[case]
    with pytest.raises(ValueError, match=pattern):
        fit_temperature(*make(_logits(), _labels()))


def test_fit_temperature_half_logits_match_float32() -> None:
    x, y = _logits(40), _labels(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_half = fit_temperature(x.bfloat16(), y)
        t_ref = fit_temperature(x.bfloat16().float(), y)
    assert math.isfinite(t_half) and t_half > 0
    assert t_half == pytest.approx(t_ref, rel=1e-6)


# ------------------------------------------------------------------- report functions

REPORT_BAD = {
    "nan_probs": (lambda p, y: (_with(p, math.nan), y), r"y_pred must be finite"),
    "label_out_of_range": (lambda p, y: (p, y + K), r"y class indices must be in \[0, 3\]"),
    "batch_mismatch": (lambda p, y: (p, y[:5]), r"y has batch size 5"),
    "probs_not_summing_to_1": (lambda p, y: (p * 0.5, y), r"do not sum to 1"),
    "empty_batch": (lambda p, y: (p[:0], y[:0]), r"needs at least one sample"),
}


@pytest.mark.parametrize("case", list(REPORT_BAD))
def test_classification_report_bad_input(case: str) -> None:
    from monai_calib.handlers import classification_report

    make, pattern = REPORT_BAD[case]
    with pytest.raises(ValueError, match=pattern):
        classification_report(*make(_probs(), _labels()))


def test_classification_report_values_match_the_functional_metrics() -> None:
    from monai_calib.handlers import classification_report

    p, y = _probs(40), _labels(40)
    rep = classification_report(p, y)
    assert rep["ece"] == pytest.approx(float(calibration_error(p, y)), abs=1e-9)
    assert rep["nll"] == pytest.approx(float(negative_log_likelihood(p, y)), abs=1e-9)
    assert rep["brier"] == pytest.approx(float(brier_score(p, y)), abs=1e-9)
    assert rep["r_auc"] == pytest.approx(float(retention_auc(p, y)), abs=1e-9)
    assert all(math.isfinite(v) for v in rep.values())


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda p, y: (p, y * 2), r"y must be binary"),
        (lambda p, y: (_with(p, math.nan), y), r"y_pred must be finite"),
        (lambda p, y: (p, y[:5]), r"same shape"),
    ],
)
def test_multilabel_report_bad_input(make, pattern) -> None:
    from monai_calib.handlers import multilabel_report

    with pytest.raises(ValueError, match=pattern):
        multilabel_report(*make(_ml_probs(), _multihot()))


# ------------------------------------------------------------------------- transforms


def _transforms() -> dict[str, Callable]:
    from monai_calib.transforms import CCTEALProbability, SquaredSigmoid, TemperatureScale

    return {
        "TemperatureScale": lambda: TemperatureScale(2.0),
        "SquaredSigmoid": SquaredSigmoid,
        "CCTEALProbability": lambda: CCTEALProbability(torch.tensor([1.0, 2.0, 0.5])),
    }


@pytest.mark.parametrize("name", ["TemperatureScale", "SquaredSigmoid", "CCTEALProbability"])
def test_transform_bad_and_half_inputs(name: str) -> None:
    make = _transforms()[name]
    x = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(9))
    with pytest.raises(ValueError, match=r"img must be finite, got 1 NaN"):
        make()(_with(x, math.nan))
    with pytest.raises(TypeError, match=r"img must be a floating point tensor or array"):
        make()(x.long())
    ref = make()(x)
    _finite(ref)
    for dtype in (torch.float16, torch.bfloat16):
        out = make()(x.to(dtype))
        _finite(out)
        torch.testing.assert_close(
            out.float(), make()(x.to(dtype).float()), rtol=0, atol=4 * torch.finfo(dtype).eps
        )


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_temperature_transforms_reject_bad_temperatures(bad: float) -> None:
    from monai_calib.transforms import CCTEALProbability, TemperatureScale

    with pytest.raises(ValueError, match=r"temperature must be finite and > 0"):
        TemperatureScale(bad)
    with pytest.raises(ValueError, match=r"temperatures must be finite and > 0"):
        CCTEALProbability(torch.tensor([1.0, bad]))
