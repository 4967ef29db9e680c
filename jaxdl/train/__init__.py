"""Training: one pure jitted step, the epoch loop, checkpoints and data parallelism.

    trainer = Trainer(model, TrainConfig(epochs=3), steps_per_epoch=len(train_loader))
    history = trainer.fit(train_loader, Checkpoints("runs/x/ckpt"), resume=True)
    result = trainer.evaluate(test_loader)
"""

from jaxdl.train.checkpoint import (CheckpointCorrupt, CheckpointMismatch, Checkpoints, CheckpointWarning,
                                    CheckpointWriteError)
from jaxdl.train.config import OPTIMIZERS, SCHEDULES, TrainConfig
from jaxdl.train.loop import Evaluation, NonFiniteLoss, Trainer
from jaxdl.train.parallel import initialize_distributed, mesh
from jaxdl.train.step import Graphs, eval_step, merge, split, train_step

__all__ = ["CheckpointCorrupt", "CheckpointMismatch", "CheckpointWarning", "CheckpointWriteError", "Checkpoints",
           "Evaluation", "Graphs", "NonFiniteLoss", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "Trainer", "eval_step",
           "initialize_distributed", "merge", "mesh", "split", "train_step"]
