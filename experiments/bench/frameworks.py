"""Training and eval throughput, jaxdl against PyTorch: same models, same weights, same batches, same machine.

    python -m experiments.bench [--models mlp,cnn,lenet5,resnet18,resnet50,vgg16] [--batch-size 128]
                                [--rounds 5] [--steps 5] [--seconds 10] [--bf16] [--torch-compile]
                                [--space-to-depth-block 2] [--out bench.json]

Each model is built in jaxdl, converted to its PyTorch twin (`convert.to_torch`, so both start from identical
weights) and timed on 32x32x3 inputs: a training step (SGD momentum, weight decay, cross-entropy; jaxdl's own
jitted, donated `Trainer` step) and an eval forward pass. Before anything is timed, the weights the Trainer
holds and the PyTorch module to be timed compute the bench batch's eval logits (float32, on the CPU), and the
bench stops if they differ by more than 1e-3 of the largest (`max_abs_logit_diff`, `logit_scale` in the JSON). The frameworks alternate, round by round, so
drifts of a shared machine hit both; each figure is the median over rounds of `steps` back-to-back steps, after
a warm-up (compilation) that is not timed. There are at least `rounds` rounds, and more (up to 100) until each
framework's seconds per step, summed over its rounds, reach `seconds`: a small model's round lasts 0.1 s, and
bursts of contention on a shared host last longer, so a few rounds would sample one burst. Both frameworks take
the same number of steps on the same batch, so their last training losses (`jax_loss`, `torch_loss`) agree
while both train the same way. `ratio` is jaxdl / PyTorch throughput (> 1: jaxdl is faster), from the
medians; `ratio_best` from each framework's fastest round (the least disturbed).
`gemm_frac` (jaxdl) and `torch_gemm_frac` are a training step's model FLOPs per second over the GEMM peak
(2048^2 float32 on a CPU) measured between the same rounds, i.e. how close a step comes to the machine's matmul
speed at that time (a shared host's speed drifts by 2x within minutes). Model FLOPs are counted the field's way,
by `torch.utils.flop_counter` on the twin's forward and backward (convolutions and matmuls, every kernel tap:
217 MFLOP per 32x32 image for ResNet-18), the same count for both frameworks; `xla_train_flops` is XLA's
count of the same arithmetic (3x its forward count, `jaxdl.train.cost.flops_per_image`), which skips taps that
fall in the padding. `--space-to-depth-block` builds jaxdl's models under `ConvPolicy(space_to_depth_block=N)`.
On a GPU both frameworks run there; `--bf16` uses bfloat16 compute (jaxdl's mixed precision, torch.autocast)
and channels-last tensors for PyTorch either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Protocol

import jax
import numpy as np
import torch
from flax import nnx
from torch.utils.flop_counter import FlopCounterMode

from experiments.bench import harness, twins
from jaxdl import cli
from jaxdl.models import DEFAULT, ConvPolicy, check_name
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import TrainConfig, Trainer, parallel
from jaxdl.train.cost import flops_per_image

MODULE = "experiments.bench"
MODELS = ("mlp", "cnn", "lenet5", "resnet18", "resnet50", "vgg16")
MAX_ROUNDS = 100
PEAK_EVERY_S = 2.0  # re-measure the GEMM peak between rounds at most this often (each takes ~0.5 s on CPU)
WARMUP_STEPS = 2  # compilation, autotuning, allocator growth


def train_config(batch_size: int, bf16: bool) -> TrainConfig:
    """Both frameworks' training: SGD with momentum and weight decay at a constant rate, read by both sides."""
    return TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                       schedule="constant", mixed_precision=bf16)


class Side(Protocol):
    def train(self) -> None: ...
    def eval(self) -> None: ...
    def sync(self) -> None: ...


class JaxSide:
    """jaxdl's Trainer steps, exactly as `experiments.svhn` runs them, on the batch placed once."""

    def __init__(self, model: nnx.Module, config: TrainConfig, x: np.ndarray, y: np.ndarray):
        self.trainer = Trainer(model, config, steps_per_epoch=1, progress=False)
        sharded = self.trainer.sharded
        self.train_batch = parallel.place({"image": x, "label": y}, sharded)
        self.eval_batch = parallel.place({"image": x, "label": y, "mask": np.ones(len(y), bool)}, sharded)
        self.last = None

    def train(self) -> None:
        t = self.trainer
        t.state, self.last = t.train_step(t.graphs.train, t.state, self.train_batch)

    def eval(self) -> None:
        t = self.trainer
        self.last = t.eval_step(t.graphs.eval, t.state, self.eval_batch)

    def sync(self) -> None:
        jax.block_until_ready((self.trainer.state, self.last))

    def loss(self) -> float:
        """The last training step's loss (before its update)."""
        return float(self.last["loss"])


class TorchSide:
    """The PyTorch twin with the same weights, eager or `torch.compile`d."""

    def __init__(self, model: nnx.Module, config: TrainConfig, x: np.ndarray, y: np.ndarray, compiled: bool):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net = twins.torch_twin(model).to(self.device, memory_format=torch.channels_last)
        self.forward = torch.compile(self.net) if compiled else self.net
        self.sgd = torch.optim.SGD(self.net.parameters(), lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
        bf16 = config.mixed_precision
        self.autocast = (lambda: torch.autocast(self.device, torch.bfloat16)) if bf16 else contextlib.nullcontext
        self.x = twins.torch_images(x).to(self.device).contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(y).long().to(self.device)
        self.last_loss = None

    def train(self) -> None:
        self.net.train()
        self.sgd.zero_grad(set_to_none=True)
        with self.autocast():
            self.last_loss = torch.nn.functional.cross_entropy(self.forward(self.x), self.y)
        self.last_loss.backward()
        self.sgd.step()

    def eval(self) -> None:
        self.net.eval()
        with torch.inference_mode(), self.autocast():
            self.forward(self.x)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def loss(self) -> float:
        return self.last_loss.item()

    def train_flops(self) -> float:
        """Model FLOPs of one training step (forward + backward) on the batch, by PyTorch's counter."""
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.cross_entropy(self.net(self.x), self.y).backward()
        self.net.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def time_rounds(sides: dict[str, Side], mode: str, args: argparse.Namespace) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per step of every round, per side, interleaved; and, when training, the GEMM peaks measured
    between the rounds."""
    for side in sides.values():
        for _ in range(WARMUP_STEPS):
            getattr(side, mode)()
        side.sync()
    times: dict[str, list[float]] = {name: [] for name in sides}
    peaks, last_peak = [], -float("inf")
    for round_ in range(MAX_ROUNDS):
        if round_ >= args.rounds and min(sum(t) for t in times.values()) >= args.seconds:
            break
        for name, side in sides.items():
            times[name].append(harness.timed(getattr(side, mode), side.sync, args.steps))
        if mode == "train" and time.perf_counter() - last_peak > PEAK_EVERY_S:
            peaks.append(harness.gemm_peak(repeats=1))
            last_peak = time.perf_counter()
    return times, peaks


def bench_model(arch: str, args: argparse.Namespace) -> dict:
    model = twins.create(arch, conv=ConvPolicy(space_to_depth_block=args.space_to_depth_block))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, *twins.IMAGE)).astype(np.float32)
    y = rng.integers(0, twins.NUM_CLASSES, args.batch_size).astype(np.int32)
    config = train_config(args.batch_size, args.bf16)
    jax_side, torch_side = JaxSide(model, config, x, y), TorchSide(model, config, x, y, compiled=False)
    sides: dict[str, Side] = {"jax": jax_side, "torch": torch_side}
    if args.torch_compile:
        sides["torch_compile"] = TorchSide(model, config, x, y, compiled=True)
    result: dict = twins.same_function(jax_side.trainer.model, torch_side.net, x)
    flops = torch_side.train_flops() / args.batch_size
    xla_flops = 3 * flops_per_image(jax_side.trainer.graphs, jax_side.trainer.state, twins.IMAGE)
    for mode in ("train", "eval"):
        times, peaks = time_rounds(sides, mode, args)
        rates = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
        best = {name: args.batch_size / min(t) for name, t in times.items()}
        row = {"jax_img_s": rates["jax"], "torch_img_s": rates["torch"], "ratio": rates["jax"] / rates["torch"],
               "ratio_best": best["jax"] / best["torch"], "rounds": len(times["jax"])}
        if "torch_compile" in rates:
            row["torch_compile_img_s"] = rates["torch_compile"]
        if mode == "train":
            peak = row["gemm_peak_gflops"] = statistics.median(peaks)
            row |= {"train_flops": flops, "xla_train_flops": xla_flops, "gemm_frac": rates["jax"] * flops / 1e9 / peak,
                    "torch_gemm_frac": rates["torch"] * flops / 1e9 / peak,
                    "jax_loss": jax_side.loss(), "torch_loss": torch_side.loss()}
        result[mode] = row
    return result


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    p.add_argument("--rounds", type=cli.positive_int, default=5)
    p.add_argument("--steps", type=cli.positive_int, default=5)
    p.add_argument("--seconds", type=cli.natural_float, default=10.0,
                   help="after --rounds, add rounds until each framework's seconds per step, summed over its "
                        f"rounds, reach this (at most {MAX_ROUNDS} rounds)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 compute in both frameworks")
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile'd PyTorch")
    p.add_argument("--space-to-depth-block", type=cli.natural_int, default=DEFAULT.space_to_depth_block,
                   help="CPU: pixel block of jaxdl's space-to-depth convolutions (LeNet-5's layers); 0: XLA's")
    p.add_argument("--out", default="bench.json")
    args = p.parse_args(argv)
    for arch in args.models.split(","):
        try:
            check_name(arch)
        except ValueError as e:
            p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    args = parse(argv)
    header = harness.header(MODULE, argv) | {
        "batch_size": args.batch_size, "image": "x".join(map(str, twins.IMAGE)),
        "dtype": "bfloat16" if args.bf16 else "float32", "min_rounds": args.rounds, "steps": args.steps,
        "min_seconds": args.seconds, "space_to_depth_block": args.space_to_depth_block,
        "gemm_peak_gflops": harness.gemm_peak(),
    }
    print(json.dumps(header))
    print()
    compiled = ["torch.compile img/s"] if args.torch_compile else []
    harness.print_header("model", "mode", "jaxdl img/s", "PyTorch img/s", "ratio", "ratio, best rounds", "rounds",
                         *compiled, "% of GEMM peak, jaxdl / PyTorch")
    results = {}
    for arch in args.models.split(","):
        results[arch] = bench_model(arch, args)
        for mode in ("train", "eval"):
            row = results[arch][mode]
            compiled = [f"{row['torch_compile_img_s']:.0f}"] if args.torch_compile else []
            frac = f"{row['gemm_frac']:.0%} / {row['torch_gemm_frac']:.0%}" if mode == "train" else ""
            harness.print_row(arch, mode, f"{row['jax_img_s']:.0f}", f"{row['torch_img_s']:.0f}", f"{row['ratio']:.2f}",
                              f"{row['ratio_best']:.2f}", row["rounds"], *compiled, frac)
    harness.write_json(args.out, header | {"results": results})
    print(f"\nwrote {args.out}")
