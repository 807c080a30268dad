# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""``check_finite``: the one-``sum`` shortcut agrees with the element-wise test."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_calib._utils.validation import check_finite

VALUES = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([3e38, -3e38, float("nan"), float("inf"), -float("inf"), 0.0]),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(VALUES, min_size=0, max_size=12), half=st.booleans())
def test_raises_exactly_when_an_element_is_not_finite(values: list[float], half: bool) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    if half:
        x = x.to(torch.float16)  # 3e38 becomes inf here: the test below sees the same tensor
    n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    if n_nan + n_inf == 0:
        check_finite(x, "x")
    else:
        with pytest.raises(ValueError, match=rf"x must be finite, got {n_nan} NaN and {n_inf} Inf"):
            check_finite(x, "x")


def test_a_sum_that_overflows_is_not_an_error() -> None:
    x = torch.full((4,), 3e38, requires_grad=True)
    assert torch.isinf(x.detach().sum())  # the shortcut fails here; the exact test decides
    check_finite(x, "x")
    assert x.grad is None and x.grad_fn is None


def test_integer_tensors_are_not_checked() -> None:
    check_finite(torch.tensor([1, 2, 3]), "x")
