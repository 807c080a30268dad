# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Writes calibrated class probabilities of an inference run to a CSV file."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from monai.handlers.utils import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from monai_calib._utils.distributed import gather_cat, is_main_rank
from monai_calib._utils.validation import check_finite

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ProbabilityWriter"]


class ProbabilityWriter:
    """Write one CSV row per sample: index, predicted class, confidence, one column per class.

    Unlike MONAI's ``ClassificationSaver`` (which saves the raw network output), this writes the
    probabilities after the evaluator's postprocessing, i.e. after the loss's calibrated
    probability transform (temperature, CCT-EAL rule, ...). Like ``ClassificationSaver``, under
    ``torch.distributed`` the rows of all ranks are gathered (rank 0's first) and rank 0 alone
    writes the file; ``index`` counts the gathered rows.

    Args:
        output_file: CSV path (parent folders are created).
        output_transform: maps ``engine.state.output`` to the batch's probabilities; default reads
            the decollated ``pred`` items.
        class_names: column names; default ``p0, p1, ...``.
    """

    def __init__(
        self,
        output_file: str,
        output_transform: Callable | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.output_file = str(output_file)
        self.output_transform = output_transform or from_engine(["pred"])
        self.class_names = list(class_names) if class_names is not None else None
        self._rows: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        self._rows = []

    def update(self, engine: Engine) -> None:
        probs = self.output_transform(engine.state.output)
        probs = torch.stack(list(probs)) if isinstance(probs, Sequence) else probs
        rows = torch.as_tensor(probs).detach().float().cpu().reshape(len(probs), -1)
        check_finite(rows, "pred")  # a NaN row would be written as "nan" and picked as class 0
        self._rows.append(rows)

    def __call__(self, engine: Engine) -> None:
        (probs,) = gather_cat(torch.cat(self._rows) if self._rows else torch.zeros(0, 0))
        k = probs.shape[1]
        names = self.class_names or [f"p{i}" for i in range(k)]
        if len(names) != k:
            raise ValueError(
                f"class_names has {len(names)} names but predictions have {k} classes."
            )
        if is_main_rank():
            self.write(probs, names)

    def write(self, probs: torch.Tensor, names: Sequence[str]) -> None:
        """Write the CSV of the gathered ``(N, K)`` probabilities (rank 0)."""
        k = probs.shape[1]
        os.makedirs(os.path.dirname(os.path.abspath(self.output_file)), exist_ok=True)
        with open(self.output_file, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "predicted_class", "confidence", *names])
            for i, row in enumerate(probs.tolist()):
                j = max(range(k), key=row.__getitem__)
                w.writerow([i, j, f"{row[j]:.6f}", *(f"{v:.6f}" for v in row)])
