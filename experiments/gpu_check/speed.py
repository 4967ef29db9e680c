"""Training throughput on the device: jaxdl against PyTorch eager and `torch.compile`, float32 and bf16, with MFU.

The sides are the CPU bench's own (`experiments.bench.frameworks`: `JaxSide` runs the Trainer's jitted, donated
step, `TorchSide` the twin channels-last, `train_config` is SGD with momentum and weight decay for both, bf16 is
`TrainConfig.mixed_precision` against `torch.autocast`), timed the same way (`frameworks.time_rounds`: the sides
alternate round by round after an untimed warm-up; medians over rounds). Before anything is timed the pair's eval
logits must agree in float32 on the device (`twins.same_logits`). float32 means TF32 off on both sides
(`device.float32`): JAX's default on a GPU is TF32, so jaxdl's default float32 runs faster than these rows.

Model FLOPs per image are PyTorch's count (`TorchSide.train_flops`, `eval_flops`: a training step's forward and
backward, an eval forward pass; every kernel tap), the same for all sides; MFU is a side's model FLOP/s over the
bf16 matmul peak measured at the start of the same run (`device.peaks`), for float32 rows too. `xla_train_flops`
is XLA's count of the training arithmetic.

torch.compile comes from the bench too (`frameworks.compiled_side`: training and inference graphs compiled
before anything is timed, the warm-up step undone; a failure to compile is recorded and the others go on). Its
compilation takes tens of seconds on a GPU: the section has a deadline, and a job compiles only while the time
left covers that plus the plain timings still to do; what is skipped says so in the output.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import optax
import torch

from experiments.bench import frameworks, harness, twins
from experiments.gpu_check import device, pairs
from jaxdl.train import step
from jaxdl.train.cost import flops_per_image

COMPILE_ESTIMATE_S = 60.0  # a first guess of one torch.compile of a training step on a GPU, until one is measured
PLAIN_ESTIMATE_S = 30.0  # and of one case's jaxdl + eager timing, compilation of jaxdl's steps included
DTYPES = ("bfloat16", "float32")  # bf16 first: the rows that matter most get the time


@dataclasses.dataclass(frozen=True)
class Case:
    arch: str
    size: int
    batch: int

    @staticmethod
    def parse(text: str) -> Case:
        """ARCH:SIZE:BATCH, e.g. resnet50:224:128."""
        arch, size, batch = text.split(":")
        return Case(arch, int(size), int(batch))

    def __str__(self) -> str:
        return f"{self.arch}:{self.size}:{self.batch}"


@dataclasses.dataclass(frozen=True)
class Timing:
    """How each (case, dtype) is timed: at least `rounds` rounds of `steps` steps per side, more until each
    side's timed seconds reach `seconds`."""

    rounds: int
    steps: int
    seconds: float
    compile: bool  # also time torch.compile
    eval: bool  # also time eval (a forward pass), every side


class Clock:
    """The section's deadline and what the plain timings and compilations have cost so far, to decide what fits."""

    def __init__(self, seconds: float, jobs: int):
        self.deadline, self.jobs = time.perf_counter() + seconds, jobs
        self.plain: list[float] = []
        self.compiles: list[float] = []
        self.compile_error: str | None = None  # torch.compile failed once: not tried again

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def plain_estimate(self) -> float:
        return statistics.mean(self.plain) if self.plain else PLAIN_ESTIMATE_S

    def compile_estimate(self) -> float:
        return max(self.compiles) if self.compiles else COMPILE_ESTIMATE_S

    def room_for_compile(self, done: int) -> bool:
        """Whether this job's compilation fits, leaving the plain timing of this job and the ones after it."""
        return self.left() >= (self.jobs - done) * self.plain_estimate() + self.compile_estimate()


def same_logits(case: Case, model, twin: torch.nn.Module, x: np.ndarray) -> dict[str, float]:
    """The pair's float32 eval logits on (up to) 8 of the bench images, on the device; raises if they differ by
    more than `twins.LOGIT_RTOL` of the largest (timings of two functions would compare nothing)."""
    x = x[:8]
    net = twin.to(device.torch_device()).eval()
    with device.float32(), torch.no_grad():
        ours = pairs.model_logits(model, x)
        theirs = net(twins.torch_images(x).contiguous().to(device.torch_device())).cpu().numpy()
    return twins.same_logits(case.arch, ours, theirs)


def first_step(side: Any) -> float:
    """Seconds of a side's first training step: tracing and compilation (jaxdl) or kernel selection and
    allocation (eager; torch.compile has compiled before, `torch_compile_compile`)."""
    return harness.measure(lambda: (side.train(), side.sync())).wall_s


def release(compiled: bool) -> None:
    """Free what a finished job held (PyTorch's cached blocks, compiled graphs) before the next builds its own."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_job(case: Case, dtype: str, model, x: np.ndarray, y: np.ndarray, timing: Timing, clock: Clock,
             done: int, flops: dict[str, float], peak_gflops: float) -> dict[str, Any]:
    """One (case, dtype): every side's first step, then train (and eval) rates, ratios and MFU. torch.compile
    (`frameworks.compiled_side`: both modes compiled, the warm-up step undone) joins when `clock` says it fits;
    if compiling fails, the reason is recorded and the other sides still run."""
    config = frameworks.train_config(case.batch, dtype == "bfloat16")
    rounds = types.SimpleNamespace(rounds=timing.rounds, steps=timing.steps, seconds=timing.seconds)
    notes: dict[str, str] = {}
    first: dict[str, float] = {}
    with device.arithmetic(dtype):
        sides: dict[str, Any] = {"jax": frameworks.JaxSide(model, config, x, y),
                                 "torch": frameworks.TorchSide(model, config, x, y, compiled=False)}
        if timing.compile and clock.compile_error:
            notes["torch_compile_skipped"] = f"it failed earlier: {clock.compile_error}"
        elif timing.compile and not clock.room_for_compile(done):
            notes["torch_compile_skipped"] = f"budget: {clock.left():.0f} s left"
        elif timing.compile:  # before any step, as the bench builds it
            compiled = harness.measure(lambda: frameworks.compiled_side(model, config, x, y))
            if isinstance(compiled.value, str):
                clock.compile_error = notes["torch_compile_error"] = compiled.value
            else:
                sides["torch_compile"], first["torch_compile_compile"] = compiled.value, compiled.wall_s
                clock.compiles.append(compiled.wall_s)
        first |= {name: first_step(side) for name, side in sides.items()}  # every side takes the same steps
        times, _ = frameworks.time_rounds(sides, "train", rounds)
        losses = {name: side.loss() for name, side in sides.items()}
        eval_times = frameworks.time_rounds(sides, "eval", rounds)[0] if timing.eval else {}
    rate = {name: case.batch / statistics.median(t) for name, t in times.items()}
    row: dict[str, Any] = {
        "case": str(case), "arch": case.arch, "size": case.size, "batch": case.batch, "dtype": dtype,
        "img_s": rate, "first_step_s": first, "rounds": len(times["jax"]), "loss": losses,
        "mfu": {name: r * flops["train"] / 1e9 / peak_gflops for name, r in rate.items()},
        "jax_over_eager": rate["jax"] / rate["torch"],
        "jax_over_compile": rate["jax"] / rate["torch_compile"] if "torch_compile" in rate else None, **notes,
    }
    if eval_times:
        eval_rate = {name: case.batch / statistics.median(t) for name, t in eval_times.items()}
        compiled = eval_rate.get("torch_compile")
        row |= {"eval_img_s": eval_rate, "eval_jax_over_eager": eval_rate["jax"] / eval_rate["torch"],
                "eval_jax_over_compile": eval_rate["jax"] / compiled if compiled else None,
                "eval_mfu": {name: r * flops["eval"] / 1e9 / peak_gflops for name, r in eval_rate.items()}}
    return row


def run(cases: list[Case], timing: Timing, seconds: float, peak_gflops: float,
        progress: Callable[[str], None] = print, on_row: Callable[[dict], None] = lambda row: None) -> dict[str, Any]:
    """Every case in both arithmetics within `seconds`; `on_row` sees the result so far after each job (so the
    caller can save it). A job that fails is recorded with its error; one that does not fit is recorded skipped."""
    clock = Clock(seconds, len(cases) * len(DTYPES))
    rows: list[dict[str, Any]] = []
    result = {"rows": rows, "peak_gflops": peak_gflops, "timing": dataclasses.asdict(timing), "budget_s": seconds,
              "arithmetic": {"float32": "TF32 off on both sides", "bfloat16": "jaxdl mixed_precision, torch.autocast"}}
    prepared: dict[Case, tuple] = {}  # each case's model and batch, for both of its jobs
    jobs = [(case, dtype) for dtype in DTYPES for case in cases]
    for done, (case, dtype) in enumerate(jobs):
        label = f"speed {case} {dtype}"
        if clock.left() < clock.plain_estimate():
            reason = f"budget: {clock.left():.0f} s left of {seconds:.0f}"
            rows.append({"case": str(case), "dtype": dtype, "skipped": reason})
            progress(f"{label}: skipped (budget)")
            continue
        start = time.perf_counter()
        try:
            if case not in prepared:
                prepared[case] = prepare(case)
            model, x, y, checked, flops = prepared[case]
            row = time_job(case, dtype, model, x, y, timing, clock, done, flops, peak_gflops)
            row |= checked | {f"{mode}_flops": value for mode, value in flops.items()}
            clock.plain.append(time.perf_counter() - start - row["first_step_s"].get("torch_compile_compile", 0.0))
            rate = row["img_s"]
            progress(f"{label}: jaxdl {rate['jax']:.0f} img/s, eager {rate['torch']:.0f}"
                     + (f", compile {rate['torch_compile']:.0f}" if "torch_compile" in rate else "")
                     + f"; MFU jaxdl {row['mfu']['jax']:.1%}")
        except Exception as e:  # noqa: BLE001 -- one case's failure must not hide the others'
            row = {"case": str(case), "dtype": dtype, "error": f"{type(e).__name__}: {e}"}
            progress(f"{label}: ERROR {type(e).__name__}: {e}")
        finally:
            release(compiled=timing.compile)
        rows.append(row)
        on_row(result)
    prepared.clear()
    result["ok"] = all("error" not in r for r in rows)
    return result


def prepare(case: Case) -> tuple:
    """The case's model, batch, logit check and FLOP counts, shared by its float32 and bf16 jobs."""
    model, twin = pairs.build(case.arch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.batch, case.size, case.size, 3), dtype=np.float32)
    y = rng.integers(0, twins.NUM_CLASSES, case.batch).astype(np.int32)
    checked = same_logits(case, model, twin, x)
    with device.float32():
        counter = frameworks.TorchSide(model, frameworks.train_config(case.batch, False), x, y, compiled=False)
        flops = {"train": counter.train_flops() / case.batch, "eval": counter.eval_flops() / case.batch}
    graphs, state = step.split(model, optax.identity())
    flops["xla_train"] = 3 * flops_per_image(graphs, state, (case.size, case.size, 3))
    return model, x, y, checked, flops
