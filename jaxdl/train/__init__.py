"""Training: one pure jitted step, the epoch loop, checkpoints and data parallelism.

    trainer = Trainer(model, TrainConfig(epochs=3), steps_per_epoch=len(train_loader))
    history = trainer.fit(train_loader, Checkpoints("runs/x/ckpt"), resume=True)
    result = trainer.evaluate(test_loader)

Fine-tuning (TrainConfig.freeze, head_lr_mult) needs the model's classifier layer: `compile_steps(config,
steps_per_epoch, sharding, head=head_of(model))`, and `split(model, tx, config=config)` for freeze_bn and ema.
"""

from jaxdl.train.checkpoint import (CheckpointCorrupt, CheckpointMismatch, Checkpoints, CheckpointWarning,
                                    CheckpointWriteError)
from jaxdl.train.config import FREEZE, OPTIMIZERS, SCHEDULES, TrainConfig
from jaxdl.train.loop import Evaluation, NonFiniteLoss, Trainer
from jaxdl.train.optim import head_of, learning_rate
from jaxdl.train.parallel import initialize_distributed, mesh
from jaxdl.train.step import (Graphs, compile_steps, eval_step, eval_weights, freeze_batchnorm, merge, split,
                              train_step)

__all__ = ["CheckpointCorrupt", "CheckpointMismatch", "CheckpointWarning", "CheckpointWriteError", "Checkpoints",
           "Evaluation", "FREEZE", "Graphs", "NonFiniteLoss", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "Trainer",
           "compile_steps", "eval_step", "eval_weights", "freeze_batchnorm", "head_of", "initialize_distributed",
           "learning_rate", "merge", "mesh", "split", "train_step"]
