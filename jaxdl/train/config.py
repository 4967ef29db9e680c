"""Training hyper-parameters as plain data, so a run is described (and checkpointed) by one value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the numbers a run produces (and nothing that does not, e.g. paths).

    weight_decay follows each optimizer's PyTorch twin: added to the gradient for SGD and Adam
    (torch.optim.SGD, torch.optim.Adam), decoupled for AdamW (torch.optim.AdamW). mixed_precision computes in bfloat16 while the carried
    parameters, optimizer state and BatchNorm statistics stay float32.
    """

    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    mixed_precision: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr < float("inf"):
            raise ValueError(f"epochs, batch_size and lr must be positive, got {self.epochs}, {self.batch_size}, {self.lr}")
        if not 0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
