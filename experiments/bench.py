"""Training and eval throughput, jaxdl against PyTorch: same models, same weights, same batches, same machine.

    python -m experiments.bench [--models mlp,cnn,lenet5,resnet18,resnet50,vgg16] [--batch-size 128]
                                [--rounds 5] [--steps 5] [--seconds 10] [--bf16] [--torch-compile]
                                [--space-to-depth-block 2] [--out bench.json]

Each model is built in jaxdl, converted to its PyTorch twin (`convert.to_torch`, so both start from identical
weights) and timed on 32x32x3 inputs: a training step (SGD momentum, weight decay, cross-entropy; jaxdl's own
jitted, donated `Trainer` step) and an eval forward pass. The frameworks alternate, round by round, so drifts
of a shared machine hit both; each figure is the median over rounds of `steps` back-to-back steps, after a
warm-up (compilation) that is not timed. There are at least `rounds` rounds, and more (up to 100) until each
framework has been timed for `seconds`: a small model's round lasts 0.1 s, and bursts of contention on a
shared host last longer, so a few rounds would sample one burst. `ratio` is jaxdl / PyTorch throughput (> 1:
jaxdl is faster), from the medians; `ratio_best` from each framework's fastest round (the least disturbed).
`gemm_frac` (jaxdl) and `torch_gemm_frac` are a training step's model FLOPs per second over the GEMM peak
(jnp.dot, 2048^2 float32) measured between the same rounds, i.e. how close a step comes to the machine's matmul
speed at that time (a shared host's speed drifts by 2x within minutes). Model FLOPs are counted the field's way,
by `torch.utils.flop_counter` on the twin's forward and backward (convolutions and matmuls, every kernel tap:
217 MFLOP per 32x32 image for ResNet-18), the same count for both frameworks; `xla_train_flops` is XLA's
count of the same arithmetic (3x its forward count), which skips taps that fall in the padding.
On a GPU both frameworks run there; `--bf16` uses bfloat16 compute (jaxdl's mixed precision, torch.autocast)
and channels-last tensors for PyTorch either way.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from flax import nnx

from convert import to_torch
from convert.twins import torch_model
from jaxdl.models import check_name, create, ops
from jaxdl.train import TrainConfig, Trainer, parallel
from jaxdl.train.cost import flops_per_image

MODELS = ("mlp", "cnn", "lenet5", "resnet18", "resnet50", "vgg16")
SMALL = {"mlp": {"in_channels": 3, "image_size": 32}, "cnn": {"in_channels": 3, "image_size": 32},
         "lenet5": {"in_channels": 3, "image_size": 32}}
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
MAX_ROUNDS = 100
PEAK_EVERY_S = 2.0  # re-measure the GEMM peak between rounds at most this often (each takes ~0.5 s on CPU)


@functools.cache
def _matmul(device: str) -> tuple[Callable[[jax.Array], jax.Array], jax.Array]:
    n = 2048 if device == "cpu" else 8192
    a = jnp.ones((n, n), jnp.float32 if device == "cpu" else jnp.bfloat16)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    return matmul, a


def gemm_peak(device: str, repeats: int = 5) -> float:
    """GFLOP/s of a large float32 (bf16 on GPU) matmul: the ceiling a training step's arithmetic can approach."""
    matmul, a = _matmul(device)
    n = a.shape[0]
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(5):
            out = matmul(a)
        out.block_until_ready()
        best = max(best, 5 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def timed(run: Callable[[], None], sync: Callable[[], None], steps: int) -> float:
    """Seconds per step of `steps` back-to-back calls (the queue is drained before and after)."""
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        run()
    sync()
    return (time.perf_counter() - start) / steps


class JaxSide:
    """jaxdl's Trainer steps, exactly as `experiments.svhn` runs them."""

    def __init__(self, model: nnx.Module, batch_size: int, bf16: bool):
        config = TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=LR, momentum=MOMENTUM,
                             weight_decay=WEIGHT_DECAY, schedule="constant", mixed_precision=bf16)
        self.trainer = Trainer(model, config, steps_per_epoch=1, progress=False)
        self.last = None

    def batches(self, x: np.ndarray, y: np.ndarray) -> None:
        sharded = self.trainer.sharded
        self.train_batch = parallel.place({"image": x, "label": y}, sharded)
        self.eval_batch = parallel.place({"image": x, "label": y, "mask": np.ones(len(y), bool)}, sharded)

    def train(self) -> None:
        t = self.trainer
        t.state, self.last = t.train_step(t.graphs.train, t.state, self.train_batch)

    def eval(self) -> None:
        t = self.trainer
        self.last = t.eval_step(t.graphs.eval, t.state, self.eval_batch)

    def sync(self) -> None:
        jax.block_until_ready((self.trainer.state, self.last))


class TorchSide:
    """The PyTorch twin with the same weights, eager or `torch.compile`d."""

    def __init__(self, model: nnx.Module, options: dict, bf16: bool, compiled: bool):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        twin = torch_model(model.spec.arch, model.spec.num_classes, **options)
        twin.load_state_dict(to_torch(model))
        self.net = twin.to(self.device, memory_format=torch.channels_last)
        self.forward = torch.compile(self.net) if compiled else self.net
        self.sgd = torch.optim.SGD(self.net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.autocast = (lambda: torch.autocast(self.device, torch.bfloat16)) if bf16 else contextlib.nullcontext

    def batches(self, x: np.ndarray, y: np.ndarray) -> None:
        images = torch.from_numpy(x).permute(0, 3, 1, 2)  # an NCHW view of NHWC memory: channels-last already
        self.x = images.to(self.device).contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(y).long().to(self.device)

    def train(self) -> None:
        self.net.train()
        self.sgd.zero_grad(set_to_none=True)
        with self.autocast():
            loss = torch.nn.functional.cross_entropy(self.forward(self.x), self.y)
        loss.backward()
        self.sgd.step()

    def eval(self) -> None:
        self.net.eval()
        with torch.inference_mode(), self.autocast():
            self.forward(self.x)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def train_flops(self) -> float:
        """Model FLOPs of one training step (forward + backward) on the current batch, by PyTorch's counter."""
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.cross_entropy(self.net(self.x), self.y).backward()
        self.net.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def bench_model(arch: str, args: argparse.Namespace) -> dict:
    options = SMALL.get(arch, {})
    model = create(arch, 10, rngs=nnx.Rngs(0), **options)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size).astype(np.int32)
    sides = {"jax": JaxSide(model, args.batch_size, args.bf16), "torch": TorchSide(model, options, args.bf16, False)}
    if args.torch_compile:
        sides["torch_compile"] = TorchSide(model, options, args.bf16, True)
    for side in sides.values():
        side.batches(x, y)
    flops = sides["torch"].train_flops() / args.batch_size
    xla_flops = 3 * flops_per_image(sides["jax"].trainer.graphs, sides["jax"].trainer.state, (32, 32, 3))
    result = {}
    for mode in ("train", "eval"):
        times: dict[str, list[float]] = {name: [] for name in sides}
        for side in sides.values():
            for _ in range(2):  # warm-up: compilation, autotuning, allocator growth
                getattr(side, mode)()
            side.sync()
        peaks, last_peak = [], -float("inf")
        for round_ in range(MAX_ROUNDS):
            if round_ >= args.rounds and min(sum(t) for t in times.values()) >= args.seconds:
                break
            for name, side in sides.items():
                times[name].append(timed(getattr(side, mode), side.sync, args.steps))
            if mode == "train" and time.perf_counter() - last_peak > PEAK_EVERY_S:
                peaks.append(gemm_peak(jax.devices()[0].platform, repeats=1))
                last_peak = time.perf_counter()
        rates = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
        best = {name: args.batch_size / min(t) for name, t in times.items()}
        row = {"jax_img_s": rates["jax"], "torch_img_s": rates["torch"], "ratio": rates["jax"] / rates["torch"],
               "ratio_best": best["jax"] / best["torch"], "rounds": len(times["jax"])}
        if "torch_compile" in rates:
            row["torch_compile_img_s"] = rates["torch_compile"]
        if mode == "train":
            peak = row["gemm_peak_gflops"] = statistics.median(peaks)
            row |= {"train_flops": flops, "xla_train_flops": xla_flops, "gemm_frac": rates["jax"] * flops / 1e9 / peak,
                    "torch_gemm_frac": rates["torch"] * flops / 1e9 / peak}
        result[mode] = row
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seconds", type=float, default=10.0,
                   help=f"after --rounds, add rounds until each framework was timed this long (at most {MAX_ROUNDS})")
    p.add_argument("--bf16", action="store_true", help="bfloat16 compute in both frameworks")
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile'd PyTorch")
    p.add_argument("--space-to-depth-block", type=int, default=ops.SPACE_TO_DEPTH_BLOCK,
                   help="CPU: pixel block of jaxdl's space-to-depth convolutions (LeNet-5's layers); 0: XLA's")
    p.add_argument("--out", default="bench.json")
    args = p.parse_args(argv)
    for arch in args.models.split(","):
        try:
            check_name(arch)
        except ValueError as e:
            p.error(str(e))
    ops.SPACE_TO_DEPTH_BLOCK = args.space_to_depth_block
    device = jax.devices()[0]
    peak = gemm_peak(device.platform)
    header = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {device.device_kind}",
        "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "batch_size": args.batch_size, "image": "32x32x3",
        "dtype": "bfloat16" if args.bf16 else "float32", "min_rounds": args.rounds, "steps": args.steps,
        "min_seconds": args.seconds, "space_to_depth_block": args.space_to_depth_block,
        "gemm_peak_gflops": peak,
    }
    print(json.dumps(header))
    print("\n| model | mode | jaxdl img/s | PyTorch img/s | ratio | ratio, best rounds | rounds |"
          + (" torch.compile img/s |" if args.torch_compile else "") + " % of GEMM peak, jaxdl / PyTorch |")
    print("|---|---|---|---|---|---|---|" + ("---|" if args.torch_compile else "") + "---|")
    results = {}
    for arch in args.models.split(","):
        results[arch] = bench_model(arch, args)
        for mode, row in results[arch].items():
            compiled = f" {row['torch_compile_img_s']:.0f} |" if args.torch_compile else ""
            frac = f"{row['gemm_frac']:.0%} / {row['torch_gemm_frac']:.0%}" if "gemm_frac" in row else ""
            print(f"| {arch} | {mode} | {row['jax_img_s']:.0f} | {row['torch_img_s']:.0f} | {row['ratio']:.2f} | "
                  f"{row['ratio_best']:.2f} | {row['rounds']} |{compiled} {frac} |", flush=True)
    with open(args.out, "w") as f:
        json.dump(header | {"results": results}, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
