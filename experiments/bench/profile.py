"""Where a training step's time goes, per operation, in jaxdl and in PyTorch: the same model, weights and batch.

    python -m experiments.bench.profile [--arch resnet18] [--image-size 224] [--batch-size 16] [--mode train]
                                        [--steps 3] [--top 15] [--json FILE]

jaxdl: `jax.profiler` traces `steps` executions of the Trainer's compiled step (after a warm-up), and the
Perfetto trace's events on XLA:CPU's executor threads (one per thunk: a fusion, a convolution, a dot, a copy)
are summed by HLO name (XLA:CPU runs its convolutions asynchronously on its thread pool, outside those events:
the step's wall time minus the traced thunks is their time, printed as such). PyTorch: `torch.profiler` over
the same number of eager steps of the twin (channels-last), its operators' self CPU time summed by name. Both are also summed by kind (convolution, matmul, reduction,
pooling, elementwise and fused, layout copies, other), the table that says what to optimise; `wall_ms` is the
measured time of a step outside the profiler, for scale (the profilers' own overhead is in their totals).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable

import jax
import numpy as np
import torch
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from experiments.bench import harness, twins
from jaxdl import cli
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import Trainer, parallel

from experiments.bench.frameworks import train_config

MODULE = "experiments.bench.profile"
KINDS = (  # (kind, pattern on a lower-cased XLA thunk or PyTorch operator name), first match wins
    ("convolution", r"conv|mkldnn_convolution|thnn_conv"),
    ("matmul", r"\bdot|matmul|addmm|\bmm\b|gemm|linear"),
    ("pooling", r"pool|select_and_scatter|reduce.window|reduce_window|max_pool"),
    ("batchnorm", r"batch_norm|native_batch_norm"),
    ("reduction", r"reduce|sum|mean|var"),
    ("layout copy", r"copy|transpose|contiguous|clone|pad|concatenate|slice"),
    ("elementwise / fused", r"fusion|add|mul|relu|threshold|sub|div|sqrt|where|select|loop|exp|log|max|min|neg"),
)


def kind(name: str) -> str:
    low = name.lower()
    for label, pattern in KINDS:
        if re.search(pattern, low):
            return label
    return "other"


def jax_profile(run: Callable[[], None], steps: int) -> dict[str, float]:
    """Milliseconds per step by XLA thunk name, from a Perfetto trace of `steps` calls of `run` (synced)."""
    run()
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            for _ in range(steps):
                run()
        traces = glob.glob(f"{logdir}/**/*.trace.json.gz", recursive=True)
        if not traces:
            raise RuntimeError("jax.profiler wrote no Perfetto trace")
        with gzip.open(traces[0], "rt") as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    threads = {(e.get("pid"), e.get("tid")): e.get("args", {}).get("name", "") for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    totals: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        name = e.get("name", "")
        # the work of a step: XLA:CPU thunks (executor or intra-op threads), not the Python/dispatch spans
        if (re.search(r"python|pjit|PjitFunction|ExecuteSharded|PjRt|Thunk::Execute$|^ThunkExecutor|ThreadPool", name)
                or "python" in thread.lower()):
            continue
        totals[name] += e["dur"] / 1000 / steps
    return dict(totals)


def torch_profile_ops(run: Callable[[], None], steps: int) -> dict[str, float]:
    """Milliseconds per step of self CPU time by PyTorch operator, over `steps` calls of `run`."""
    run()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    return {e.key: e.self_cpu_time_total / 1000 / steps for e in prof.key_averages()}


def by_kind(ops: dict[str, float]) -> dict[str, float]:
    out: collections.Counter = collections.Counter()
    for name, ms in ops.items():
        out[kind(name)] += ms
    return dict(out)


def wall_ms(run, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--arch", type=harness.arch, default="resnet18")
    p.add_argument("--image-size", type=cli.positive_int, default=224)
    p.add_argument("--batch-size", type=cli.positive_int, default=16)
    p.add_argument("--mode", choices=("train", "eval"), default="train")
    p.add_argument("--steps", type=cli.positive_int, default=3)
    p.add_argument("--top", type=cli.positive_int, default=15)
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    image = (args.image_size, args.image_size, 3)
    model = twins.create(args.arch, image=image)
    twin = twins.torch_twin(model).to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, *image)).astype(np.float32)
    y = rng.integers(0, twins.NUM_CLASSES, args.batch_size).astype(np.int32)
    config = train_config(args.batch_size, False)
    trainer = Trainer(model, config, 1, progress=False)
    batch = parallel.place({"image": x, "label": y, "mask": np.ones(len(y), bool)}, trainer.sharded)
    xt = twins.torch_images(x).contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y).long()
    sgd = torch.optim.SGD(twin.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)

    def jax_step() -> None:
        if args.mode == "train":
            trainer.state, out = trainer.train_step(trainer.graphs.train, trainer.state, batch)
        else:
            out = trainer.eval_step(trainer.graphs.eval, trainer.state, batch)
        jax.block_until_ready(out)

    def torch_step() -> None:
        if args.mode == "train":
            twin.train()
            sgd.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(twin(xt), yt).backward()
            sgd.step()
        else:
            twin.eval()
            with torch.inference_mode():
                twin(xt)

    jax_ops, torch_ops = jax_profile(jax_step, args.steps), torch_profile_ops(torch_step, args.steps)
    walls = {"jax": wall_ms(jax_step, args.steps + 2), "torch": wall_ms(torch_step, args.steps + 2)}
    header = harness.header(MODULE, argv)
    print(harness.describe(header["machine"]))
    print(f"{args.arch} {args.mode}, {args.image_size}x{args.image_size}, batch {args.batch_size}: step wall "
          f"jaxdl {walls['jax']:.0f} ms, PyTorch {walls['torch']:.0f} ms (ratio {walls['torch'] / walls['jax']:.2f})\n")
    kinds_j, kinds_t = by_kind(jax_ops), by_kind(torch_ops)
    harness.print_header("kind", "jaxdl ms/step", "PyTorch ms/step")
    for label in [k for k, _ in KINDS] + ["other"]:
        harness.print_row(label, f"{kinds_j.get(label, 0):.1f}", f"{kinds_t.get(label, 0):.1f}")
    harness.print_row("total (profiled)", f"{sum(jax_ops.values()):.1f}", f"{sum(torch_ops.values()):.1f}")
    harness.print_row("wall - profiled (XLA:CPU's asynchronous convolutions are not traced)",
                      f"{walls['jax'] - sum(jax_ops.values()):.1f}", f"{walls['torch'] - sum(torch_ops.values()):.1f}")
    for name, ops in (("jaxdl (XLA thunks)", jax_ops), ("PyTorch (operators, self CPU)", torch_ops)):
        print(f"\n{name}, top {args.top}:\n")
        harness.print_header("op", "kind", "ms/step")
        for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]:
            harness.print_row(op[:60], kind(op), f"{ms:.1f}")
    if args.json:
        harness.write_json(args.json, header | {"arch": args.arch, "image_size": args.image_size,
                                                "batch_size": args.batch_size, "mode": args.mode, "wall_ms": walls,
                                                "jax_ops_ms": jax_ops, "torch_ops_ms": torch_ops,
                                                "jax_kinds_ms": kinds_j, "torch_kinds_ms": kinds_t})


if __name__ == "__main__":
    harness.run(main, MODULE)
