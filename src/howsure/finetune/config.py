"""The one flat configuration of a LoRA fine-tune, and the metadata file saved next to the adapter
(config, task, base model id and checksum, data fingerprints, split manifest)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from howsure.errors import DataError



@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides what a fine-tune computes. Saved with the adapter; a resumed run
    must have the same one."""

    # LoRA rank: the width of each low-rank update. 8 is peft's usual starting point.
    rank: int = 8
    # LoRA scaling numerator: the update is multiplied by alpha / rank (2x here).
    alpha: float = 16.0
    # Dropout on the LoRA input during training only.
    dropout: float = 0.05
    # Leaf names of the linear layers that get an adapter; None: every linear projection of
    # the attention and MLP blocks (q/k/v/o, gate/up/down on Llama-style models).
    target_modules: tuple[str, ...] | None = None
    # AdamW step size, decayed linearly to zero over the run.
    learning_rate: float = 2e-4
    # AdamW weight decay on the adapter weights.
    weight_decay: float = 0.0
    # Passes over the training split; max_steps, when set, caps the run instead.
    epochs: int = 1
    max_steps: int | None = None
    # Training texts per optimizer step (the shared prompt prefix runs once per step).
    batch_size: int = 16
    # Longest prompt in tokens; a longer training text is an error naming its row.
    max_length: int = 256
    # Seeds the LoRA initialisation, dropout and the data order.
    seed: int = 0
    # Share of distinct texts (by content hash) held out for early stopping and the choice of
    # the final checkpoint; never a calibration or test item.
    validation_fraction: float = 0.1
    # Validation loss is computed every eval_interval steps (and after the last step).
    eval_interval: int = 50
    # A resumable checkpoint is written every checkpoint_interval steps.
    checkpoint_interval: int = 50
    # Stop after this many evaluations without a lower validation loss; 0 never stops early.
    patience: int = 5
    # Gradients are clipped to this global norm before each step.
    max_grad_norm: float = 1.0
    # Weight of -log(the labels' total mass at the answer position) in the loss. 0: only the
    # labels' normalised probabilities (what calibration reads) are trained, and the mass left to
    # other words may grow until the model no longer answers with a label; 1: the loss is the
    # gold label's own probability over the whole vocabulary, the usual next-token cross-entropy.
    label_mass_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(str(m) for m in self.target_modules))
        self.validate()

    def validate(self) -> None:
        """Raise `DataError` naming the first bad value."""
        whole = {"rank": 1, "epochs": 1, "batch_size": 1, "max_length": 8, "eval_interval": 1,
                 "checkpoint_interval": 1, "patience": 0}
        for name, smallest in whole.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
                raise DataError(f"{name} must be a whole number >= {smallest}, got {value!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise DataError(f"max_steps must be a whole number >= 1 or None, got {self.max_steps!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"seed must be a whole number >= 0, got {self.seed!r}")
        positive = ("alpha", "learning_rate", "max_grad_norm")
        for name in positive:
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise DataError(f"{name} must be a number > 0, got {value!r}")
        if not _is_number(self.label_mass_weight) or self.label_mass_weight < 0:
            raise DataError(f"label_mass_weight must be a number >= 0, got {self.label_mass_weight!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise DataError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise DataError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not _is_number(self.validation_fraction) or not 0 < self.validation_fraction < 1:
            raise DataError(f"validation_fraction must be a number in (0, 1), got {self.validation_fraction!r}")
        if self.target_modules is not None and not self.target_modules:
            raise DataError("target_modules is empty; name at least one linear layer or leave it unset")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = None if self.target_modules is None else list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"unknown fine-tune setting {unknown[0]!r}; settings are: {', '.join(sorted(known))}")
        return cls(**data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
