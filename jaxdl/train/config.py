"""Training hyper-parameters as plain data, so a run is described (and checkpointed) by one value."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
FREEZE = ("none", "backbone")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the numbers a run produces (and nothing that does not, e.g. paths).

    weight_decay follows each optimizer's PyTorch twin: added to the gradient for SGD and Adam
    (torch.optim.SGD, torch.optim.Adam), decoupled for AdamW (torch.optim.AdamW). mixed_precision computes in
    bfloat16 while the carried parameters, optimizer state and BatchNorm statistics stay float32.

    warmup_epochs: a linear warm-up of the learning rate from 0 to lr over that many epochs, then the schedule
    (constant, or cosine decay to 0); with onecycle it is the one-cycle's own rising phase (pct_start =
    warmup_epochs / epochs, 0.3 when 0), which starts at lr / 25 as torch.optim.lr_scheduler.OneCycleLR's does.

    Fine-tuning (see `jaxdl.train.optim.optimizer`, which needs the model's classifier layer for the first two):
    freeze: "backbone" trains the classifier layer only (`jaxdl.models.head(arch)`); the other parameters get
        exactly zero updates, no weight decay and no optimizer state, as parameters with requires_grad=False
        left out of a torch optimizer.
    head_lr_mult: the classifier layer's learning rate is lr * head_lr_mult (both follow the schedule), as a
        torch param group of its own.
    freeze_bn: BatchNorm normalises with its running statistics in training too and never updates them (torch's
        BatchNorm modules put in eval() while the model trains); its scale and bias are still trained unless frozen.
    clip_grad_norm: when > 0, the gradient of the trained parameters is rescaled to at most this global L2 norm
        before the optimizer (weight decay, momentum) sees it, as torch.nn.utils.clip_grad_norm_ before
        optimizer.step().
    ema: when > 0, the decay of an exponential moving average of the weights (timm's ModelEmaV2: parameters and
        BatchNorm statistics), carried in the state; evaluation and the saved model then use the average.
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
    freeze: str = "none"
    freeze_bn: bool = False
    head_lr_mult: float = 1.0
    clip_grad_norm: float = 0.0
    ema: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr < math.inf:
            raise ValueError(f"epochs, batch_size and lr must be positive, got {self.epochs}, {self.batch_size}, {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if self.freeze not in FREEZE:
            raise ValueError(f"unknown freeze {self.freeze!r}: choose one of {', '.join(FREEZE)}")
        if not isinstance(self.freeze_bn, bool):
            raise ValueError(f"freeze_bn must be True or False, got {self.freeze_bn!r}")
        if not 0 <= self.head_lr_mult < math.inf:
            raise ValueError(f"head_lr_mult must be a finite number >= 0, got {self.head_lr_mult}")
        if not 0 <= self.clip_grad_norm < math.inf:
            raise ValueError(f"clip_grad_norm must be a finite number >= 0 (0: no clipping), got {self.clip_grad_norm}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1) (0: no average), got {self.ema}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
