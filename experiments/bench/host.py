"""Host overhead of the training loop: steps/s of a tiny model, where the loop, not the model, sets the pace.

    python -m experiments.bench.host [--arch mlp] [--batch-size 32] [--steps 300] [--epochs 3] [--json FILE]

On an accelerator, a loop that reads a result back every step (`float(loss)`) cannot queue step i+1 while step
i runs; on a CPU the same stall shows as host time per step that a tiny model cannot hide. Three rates, same run:
- `Trainer.fit`: the whole loop (metrics, NaN check, progress, device placement) over prebuilt host batches;
- bare jitted step: the same compiled step in a plain Python loop, the batches already on the device, nothing
  read back until the end: the ceiling the loop can approach;
- bare step, read every step: that loop with `float(loss)` after each step, what a naive loop does.
The loop's cost is the gap between the first and the second.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments.bench import harness, twins
from jaxdl import cli
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import TrainConfig, Trainer, parallel

MODULE = "experiments.bench.host"


class Batches:
    """A loader over prebuilt host batches: the input pipeline costs nothing, only the loop is measured."""

    def __init__(self, steps: int, batch_size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.batch_size, self.steps = batch_size, steps
        self.batches = [{"image": rng.standard_normal((batch_size, *twins.IMAGE), np.float32),
                         "label": rng.integers(0, twins.NUM_CLASSES, batch_size).astype(np.int32),
                         "mask": np.ones(batch_size, bool)} for _ in range(4)]

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int):
        return (self.batches[i % len(self.batches)] for i in range(self.steps))


def bare_rates(trainer: Trainer, loader: Batches) -> tuple[float, float]:
    """Steps/s of the trainer's compiled step in a plain loop: nothing read back; and `float(loss)` every step."""
    placed = [parallel.place(b, trainer.sharded) for b in loader.batches]
    state = trainer.state

    def run(read: bool) -> float:
        nonlocal state
        start = time.perf_counter()
        for i in range(loader.steps):
            state, metrics = trainer.train_step(trainer.graphs.train, state, placed[i % len(placed)])
            if read:
                float(metrics["loss"])
        jax.block_until_ready(state)
        return loader.steps / (time.perf_counter() - start)

    run(False)  # warm
    return run(False), run(True)


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--arch", type=harness.arch, default="mlp")
    p.add_argument("--batch-size", type=cli.positive_int, default=32)
    p.add_argument("--steps", type=cli.positive_int, default=300, help="steps per epoch")
    p.add_argument("--epochs", type=cli.positive_int, default=3)
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    loader = Batches(args.steps, args.batch_size)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=0.01, schedule="constant")
    trainer = Trainer(twins.create(args.arch), config, len(loader), progress=False)
    history = trainer.fit(loader)
    fit = args.steps / float(np.median([h["seconds"] for h in history[1:]] or [history[0]["seconds"]]))
    bare, read_each = bare_rates(trainer, loader)
    header = harness.header(MODULE, argv)
    print(harness.describe(header["machine"]))
    print(f"{args.arch}, batch {args.batch_size}, {args.steps} steps/epoch, SGD; median of epochs 2..{args.epochs}\n")
    harness.print_header("loop", "steps/s", "of bare step")
    for name, rate in (("Trainer.fit", fit), ("bare jitted step", bare), ("bare step + float(loss) each step", read_each)):
        harness.print_row(name, f"{rate:.0f}", f"{rate / bare:.2f}")
    if args.json:
        harness.write_json(args.json, header | {"arch": args.arch, "batch_size": args.batch_size, "steps": args.steps,
                                                "fit_steps_s": fit, "bare_steps_s": bare, "read_each_steps_s": read_each})


if __name__ == "__main__":
    harness.run(main, MODULE)
