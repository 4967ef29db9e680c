"""Training and eval throughput, jaxdl against PyTorch (eager and torch.compile'd): same models, same weights, same
batches, same machine, at any input size.

    python -m experiments.bench [--models mlp,cnn,lenet5,resnet18,resnet50,vgg16] [--image-size 32]
                                [--batch-size 128] [--rounds 5] [--steps 5] [--seconds 10] [--bf16]
                                [--no-torch-compile] [--space-to-depth-block 2] [--out bench.json]

Each model is built in jaxdl for N x N x 3 inputs (`--image-size N`, default 32; below an architecture's
smallest input, `jaxdl.models.architecture(arch).min_input_size`, e.g. 63 for AlexNet, the bench refuses in one
line), converted to its PyTorch twin (`convert.to_torch`, so both start from identical weights) and timed: a
training step (SGD momentum, weight decay, cross-entropy; jaxdl's own jitted, donated `Trainer` step) and an
eval forward pass. Before anything is timed, the weights the Trainer holds and the PyTorch module to be timed
compute the bench batch's eval logits (float32, on the CPU), and the bench stops if they differ by more than
1e-3 of the largest (`max_abs_logit_diff`, `logit_scale` in the JSON). The frameworks alternate, round by round,
so drifts of a shared machine hit both; each figure is the median over rounds of back-to-back steps (`steps`,
or as many as make the fastest side's round last ROUND_S = 0.25 s: a framework's first steps after the other's
round run slower), after a warm-up (compilation) that is not timed. There are at least `rounds` rounds, and more
(up to 100) until each framework has been timed `seconds` in all: bursts of contention on a shared host last
longer than a round, so a few rounds would sample one burst. All sides take the same number of steps on the
same batch, so their last training losses (`jax_loss`, `torch_loss`, `torch_compile_loss`) agree while they
train the same way. `ratio` is jaxdl / PyTorch throughput (> 1: jaxdl is faster), from the medians; `ratio_best` from each framework's fastest round (the least disturbed).

torch.compile (default; `--no-torch-compile` skips it): a third side, the twin under `torch.compile`, compiled
before anything is timed in both modes (training and inference each compile at their first call; the weights
and optimizer that warm-up step moved are put back), and timed like the others: `torch_compile_img_s`,
`ratio_compile` (jaxdl / torch.compile). If compiling fails (no C++ compiler, an unsupported Python, an
operator Inductor lacks), the bench goes on without it: `torch_compile_error` holds the exception's first line
(null when it compiled or was skipped), the compile figures are null and the table says n/a.

`gemm_frac` (jaxdl), `torch_gemm_frac` and `compile_gemm_frac` are a step's model FLOPs per second over the
GEMM peak (2048^2 float32 on a CPU; `gemm_peak_gflops`) measured between the same rounds, i.e. how close a step
comes to the machine's matmul speed at that time (a shared host's speed drifts by 2x within minutes). Model
FLOPs are counted the field's way, by `torch.utils.flop_counter` on the twin (convolutions and matmuls, every
kernel tap: 217 MFLOP per 32x32 image for a ResNet-18 training step), the same count for all sides: a training
step's forward and backward (`train_flops`, per image), an eval forward pass in inference mode (`eval_flops`).
`xla_train_flops` is XLA's count of the training arithmetic (3x its forward count,
`jaxdl.train.cost.flops_per_image`), which skips taps that fall in the padding.

Peak memory of a training step (train rows; CPU): `jax_peak_mb`, `torch_peak_mb`, `torch_compile_peak_mb`, the MB
(10^6 bytes) by which a few synced training steps, after the warm-up, raise the process's resident memory above
what it held just before (`harness.step_peak_mb`: neither framework keeps allocator statistics on a CPU, so
Linux's VmHWM, reset through /proc/self/clear_refs). `jax_xla_step_mb` is jaxdl's own estimate of the step's
memory, made without compiling (`jaxdl.train.cost.step_memory`: the state three times, the batch and the
activations autodiff saves; an upper bound, counting the weights that the measured figures leave out). Where
the process's peak cannot be read (not Linux, no clear_refs, an accelerator's memory) the measured figures are
null and `peak_mb_error` says why.

`--space-to-depth-block` builds jaxdl's models under `ConvPolicy(space_to_depth_block=N)`. On a GPU all sides
run there; `--bf16` uses bfloat16 compute (jaxdl's mixed precision, torch.autocast) and channels-last tensors for
PyTorch either way. The printed Markdown table (input size and batch in its header) has, per model and mode:
img/s of jaxdl, PyTorch and torch.compile, the ratios, the rounds, % of GEMM peak of the three and, for
training, their peak MB.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
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
from jaxdl.models import DEFAULT, ConvPolicy, architecture, check_name
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import TrainConfig, Trainer, parallel
from jaxdl.train.cost import flops_per_image, step_memory

MODULE = "experiments.bench"
MODELS = ("mlp", "cnn", "lenet5", "resnet18", "resnet50", "vgg16")
SIDES = ("jax", "torch", "torch_compile")
MAX_ROUNDS = 100
PEAK_EVERY_S = 2.0  # re-measure the GEMM peak between rounds at most this often (each takes ~0.5 s on CPU)
WARMUP_STEPS = 2  # compilation, autotuning, allocator growth
# A round lasts at least this long. After the other framework's round, steps start slow and speed up: XLA:CPU's
# over ~20 steps of the MLP's 1.4 ms eval step (~50 ms), PyTorch's within 2. Rounds of a few short steps would
# time that ramp, not the steady state of a training loop; longer steps keep `--steps` per round.
ROUND_S = 0.25
MEMORY_STEPS = 2  # training steps under the peak-memory probe


def train_config(batch_size: int, bf16: bool) -> TrainConfig:
    """All sides' training: SGD with momentum and weight decay at a constant rate, read by every side."""
    return TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                       schedule="constant", mixed_precision=bf16)


class Side(Protocol):
    def train(self) -> None: ...
    def eval(self) -> None: ...
    def sync(self) -> None: ...
    def loss(self) -> float: ...


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
        self.config = config
        self.net = twins.torch_twin(model).to(self.device, memory_format=torch.channels_last)
        self.forward = torch.compile(self.net) if compiled else self.net
        self.sgd = self.optimizer()
        bf16 = config.mixed_precision
        self.autocast = (lambda: torch.autocast(self.device, torch.bfloat16)) if bf16 else contextlib.nullcontext
        self.x = twins.torch_images(x).to(self.device).contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(y).long().to(self.device)
        self.last_loss = None

    def optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(self.net.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

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

    def compile_now(self) -> None:
        """Compile, outside the clock, both graphs torch.compile makes (training and inference mode: each at its
        first call), then put back the weights, statistics and momentum that step moved, so that this side takes
        the same steps as the others. Raises what compiling raises."""
        weights = copy.deepcopy(self.net.state_dict())
        self.train()
        self.eval()
        self.sync()
        self.net.load_state_dict(weights)  # in place: the compiled graphs keep the same tensors
        self.sgd = self.optimizer()

    def train_flops(self) -> float:
        """Model FLOPs of one training step (forward + backward) on the batch, by PyTorch's counter; on a copy, so
        the timed module's weights, statistics and gradients stay as they are."""
        net = copy.deepcopy(self.net).train()
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.cross_entropy(net(self.x), self.y).backward()
        return counter.get_total_flops()

    def eval_flops(self) -> float:
        """Model FLOPs of one eval forward pass (inference mode) on the batch, by PyTorch's counter."""
        net = copy.deepcopy(self.net).eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(self.x)
        return counter.get_total_flops()


def compiled_side(model: nnx.Module, config: TrainConfig, x: np.ndarray, y: np.ndarray) -> TorchSide | str:
    """The torch.compile'd twin, compiled in both modes; or, if compiling fails, the reason (one line)."""
    try:
        side = TorchSide(model, config, x, y, compiled=True)
        side.compile_now()
        return side
    except Exception as e:  # noqa: BLE001 - whatever Dynamo or Inductor raises, the bench goes on without it
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        return f"{type(e).__name__}: {first}" if first else type(e).__name__


def time_rounds(sides: dict[str, Side], mode: str, args: argparse.Namespace) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per step of every round, per side, interleaved; and the GEMM peaks measured between the rounds.
    A round is `args.steps` steps, or as many as make the fastest side's round last ROUND_S seconds."""
    steps = args.steps  # the same for every side: they take the same steps (and so reach the same loss)
    for side in sides.values():
        for _ in range(WARMUP_STEPS):
            getattr(side, mode)()
        side.sync()
        steps = max(steps, math.ceil(ROUND_S / harness.timed(getattr(side, mode), side.sync, args.steps)))
    times: dict[str, list[float]] = {name: [] for name in sides}
    peaks, last_peak = [], -float("inf")
    for round_ in range(MAX_ROUNDS):
        if round_ >= args.rounds and min(sum(t) for t in times.values()) * steps >= args.seconds:
            break
        for name, side in sides.items():
            times[name].append(harness.timed(getattr(side, mode), side.sync, steps))
        if time.perf_counter() - last_peak > PEAK_EVERY_S:
            peaks.append(harness.gemm_peak(repeats=1))
            last_peak = time.perf_counter()
    return times, peaks


def memory_unavailable(torch_side: TorchSide) -> str | None:
    """Why the steps' peak resident memory says nothing here, or None."""
    platform = jax.devices()[0].platform
    if platform != "cpu" or torch_side.device != "cpu":
        return (f"the steps run on an accelerator (jax: {platform}, torch: {torch_side.device}): their memory is "
                "the device's, which the process's resident memory does not show")
    return harness.peak_rss_unavailable()


def bench_model(arch: str, args: argparse.Namespace) -> dict:
    image = (args.image_size, args.image_size, 3)
    model = twins.create(arch, conv=ConvPolicy(space_to_depth_block=args.space_to_depth_block), image=image)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, *image)).astype(np.float32)
    y = rng.integers(0, twins.NUM_CLASSES, args.batch_size).astype(np.int32)
    config = train_config(args.batch_size, args.bf16)
    jax_side, torch_side = JaxSide(model, config, x, y), TorchSide(model, config, x, y, compiled=False)
    sides: dict[str, Side] = {"jax": jax_side, "torch": torch_side}
    result: dict = twins.same_function(jax_side.trainer.model, torch_side.net, x) | {"torch_compile_error": None}
    if args.torch_compile:  # before any step: the Trainer's donated steps free `model`'s buffers
        compiled = compiled_side(model, config, x, y)
        if isinstance(compiled, str):
            result["torch_compile_error"] = compiled
        else:
            sides["torch_compile"] = compiled
    flops = {"train": torch_side.train_flops() / args.batch_size, "eval": torch_side.eval_flops() / args.batch_size}
    xla_flops = 3 * flops_per_image(jax_side.trainer.graphs, jax_side.trainer.state, image)
    for mode in ("train", "eval"):
        times, peaks = time_rounds(sides, mode, args)
        rates = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
        best = {name: args.batch_size / min(t) for name, t in times.items()}
        compile_rate = rates.get("torch_compile")
        peak = statistics.median(peaks)
        frac = {name: None if name not in rates else rates[name] * flops[mode] / 1e9 / peak for name in SIDES}
        row = {"jax_img_s": rates["jax"], "torch_img_s": rates["torch"], "torch_compile_img_s": compile_rate,
               "ratio": rates["jax"] / rates["torch"], "ratio_best": best["jax"] / best["torch"],
               "ratio_compile": None if compile_rate is None else rates["jax"] / compile_rate,
               "rounds": len(times["jax"]), "gemm_peak_gflops": peak, f"{mode}_flops": flops[mode],
               "gemm_frac": frac["jax"], "torch_gemm_frac": frac["torch"], "compile_gemm_frac": frac["torch_compile"]}
        if mode == "train":
            row["xla_train_flops"] = xla_flops
            row |= train_memory(sides, jax_side, torch_side, args.batch_size, image)
            row |= {f"{name}_loss": side.loss() for name, side in sides.items()}
            row.setdefault("torch_compile_loss", None)
        result[mode] = row
    return result


def train_memory(sides: dict[str, Side], jax_side: JaxSide, torch_side: TorchSide, batch_size: int,
                 image: tuple[int, int, int]) -> dict:
    """Each side's measured peak MB of a few training steps (after their warm-up; every side takes the same
    number), and jaxdl's estimate."""
    why = memory_unavailable(torch_side)
    peaks = {name: None if why else harness.step_peak_mb(side.train, side.sync, MEMORY_STEPS)
             for name, side in sides.items()}
    estimate = step_memory(jax_side.trainer.graphs, jax_side.trainer.state, batch_size, image) / 1e6
    return {f"{name}_peak_mb": peaks.get(name) for name in SIDES} | {"jax_xla_step_mb": estimate,
                                                                     "peak_mb_error": why}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--image-size", type=cli.positive_int, default=twins.IMAGE[0], metavar="N",
                   help="time the models on N x N x 3 inputs (at least each architecture's smallest input)")
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    p.add_argument("--rounds", type=cli.positive_int, default=5)
    p.add_argument("--steps", type=cli.positive_int, default=5)
    p.add_argument("--seconds", type=cli.natural_float, default=10.0,
                   help="after --rounds, add rounds until each framework has been timed this many seconds in all "
                        f"(at most {MAX_ROUNDS} rounds)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 compute in all frameworks")
    p.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also time torch.compile'd PyTorch (default; a failure to compile is recorded, not fatal)")
    p.add_argument("--space-to-depth-block", type=cli.natural_int, default=DEFAULT.space_to_depth_block,
                   help="CPU: pixel block of jaxdl's space-to-depth convolutions (LeNet-5's layers); 0: XLA's")
    p.add_argument("--out", type=harness.output_file, default="bench.json")
    args = p.parse_args(argv)
    for arch in args.models.split(","):
        try:
            check_name(arch)
        except ValueError as e:
            p.error(str(e))
        minimum = architecture(arch).min_input_size
        if args.image_size < minimum:
            p.error(f"--image-size {args.image_size} is too small for {arch}: it needs at least {minimum} px")
    return args


def _num(value: float | None, spec: str, missing: str) -> str:
    return missing if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    args = parse(argv)
    size = f"{args.image_size}x{args.image_size}"
    header = harness.header(MODULE, argv) | {
        "batch_size": args.batch_size, "image": f"{size}x3", "image_size": args.image_size,
        "dtype": "bfloat16" if args.bf16 else "float32", "min_rounds": args.rounds, "steps": args.steps,
        "min_seconds": args.seconds, "space_to_depth_block": args.space_to_depth_block,
        "torch_compile": args.torch_compile, "gemm_peak_gflops": harness.gemm_peak(),
    }
    print(json.dumps(header))
    print()
    harness.print_header(f"model ({size}, batch {args.batch_size})", "mode", "jaxdl img/s", "PyTorch img/s", "ratio",
                         "ratio, best rounds", "rounds", "torch.compile img/s", "ratio vs compile",
                         "% of GEMM peak, jaxdl / PyTorch / compile", "peak MB, jaxdl / PyTorch / compile")
    results = {}
    for arch in args.models.split(","):
        results[arch] = bench_model(arch, args)
        missing = "n/a" if args.torch_compile else "off"
        for mode in ("train", "eval"):
            row = results[arch][mode]
            fracs = [_num(row[k], ".0%", missing) for k in ("gemm_frac", "torch_gemm_frac", "compile_gemm_frac")]
            memory = [] if mode == "eval" else [
                _num(row[f"{k}_peak_mb"], ".0f", missing if k == "torch_compile" else "n/a") for k in SIDES]
            harness.print_row(arch, mode, f"{row['jax_img_s']:.0f}", f"{row['torch_img_s']:.0f}", f"{row['ratio']:.2f}",
                              f"{row['ratio_best']:.2f}", row["rounds"],
                              _num(row["torch_compile_img_s"], ".0f", missing),
                              _num(row["ratio_compile"], ".2f", missing), " / ".join(fracs), " / ".join(memory))
    harness.write_json(args.out, header | {"results": results})
    print()
    for arch, result in results.items():
        if result["torch_compile_error"]:
            print(f"torch.compile failed for {arch} (n/a above): {result['torch_compile_error']}")
        if result["train"]["peak_mb_error"]:
            print(f"peak MB n/a for {arch}: {result['train']['peak_mb_error']}")
    print(f"wrote {args.out}")
