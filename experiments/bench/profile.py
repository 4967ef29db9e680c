"""Where a training step's time goes, per operation, in jaxdl and in PyTorch: the same model, weights and batch.

    python -m experiments.bench.profile [--arch resnet18] [--image-size 224] [--batch-size 16] [--mode train]
                                        [--steps 3] [--top 15] [--json FILE]
    python -m experiments.bench.profile --grid "MODELS@SIZE:BATCH ..." [--steps 3] [--json FILE]

jaxdl: `jax.profiler` traces `steps` executions of the Trainer's compiled step (after a warm-up), and the
Perfetto trace's events on XLA:CPU's executor threads (one per thunk: a fusion, a convolution, a dot, a copy)
are summed by HLO name (XLA:CPU runs its convolutions asynchronously on its thread pool, outside those events:
the step's wall time minus the traced thunks is their time, printed as such). PyTorch: `torch.profiler` over
the same number of eager steps of the twin (channels-last), its operators' self CPU time summed by name. Both are
also summed by kind (convolution, matmul, pooling, batchnorm, reduction, layout copies, elementwise and fused,
other), the table that says what to optimise: XLA's ops by what the compiled program says they compute
(`hlo_kinds`), PyTorch's by operator name. `wall_ms` is the measured time of a step outside the profiler, for
scale (the profilers' own overhead is in their totals). `--grid` profiles many cells, both modes, and prints one
line per cell and mode.
"""

from __future__ import annotations

import collections
import functools
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

from experiments.bench import harness, sizes, twins
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


LABELS = tuple(label for label, _ in KINDS) + ("other",)


def kind(name: str) -> str:
    low = name.lower()
    for label, pattern in KINDS:
        if re.search(pattern, low):
            return label
    return "other"


# An XLA instruction's kind, from the operations it holds (a fusion: its fused computation), first match wins.
HLO_KINDS = (("convolution", {"convolution"}), ("matmul", {"dot"}), ("pooling", {"reduce-window", "select-and-scatter"}),
             ("reduction", {"reduce"}), ("other", {"conditional", "while", "call", "custom-call"}))
LAYOUT_OPS = {"copy", "transpose", "pad", "slice", "concatenate", "reverse", "bitcast", "parameter", "constant",
              "broadcast", "reshape", "tuple", "get-tuple-element"}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^%?([\w.\-]+) .*\{$")


def hlo_kinds(text: str) -> dict[str, str]:
    """The kind of every instruction of a compiled XLA module (`compiled.as_text()`), by name. A fusion is known
    by what it computes, not by its name (XLA names a fusion after one or two of its operations, a library
    fusion such as `ynn_fusion` after its library): a transposed or layout-changing copy is a layout copy, even
    with the elementwise work XLA fused into it, otherwise the first of convolution, matmul, pooling, reduction
    it holds, else elementwise."""
    held: dict[str, set[str]] = collections.defaultdict(set)  # computation -> opcodes in it
    children: dict[str, set[str]] = collections.defaultdict(set)  # computation -> computations it calls
    root: dict[str, str] = {}  # computation -> its root's opcode
    instructions: dict[str, tuple[str, str | None]] = {}  # instruction -> (opcode, the computation it calls)
    computation = ""
    for line in text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{") and (head := _COMPUTATION.match(line)):
            computation = head.group(1)
        elif match := _INSTRUCTION.match(line):
            name, opcode, rest = match.groups()
            if opcode == "custom-call" and 'custom_call_target="jaxdl_onednn_conv' in rest:
                opcode = "convolution"  # oneDNN's kernels (jaxdl.onednn)
            callee = m.group(1) if (m := re.search(r"calls=%([\w.\-]+)", rest)) else None
            held[computation].add(opcode)
            if callee:
                children[computation].add(callee)
            if line.lstrip().startswith("ROOT "):
                root[computation] = opcode
            instructions[name] = (opcode, callee)

    @functools.cache
    def opcodes(comp: str) -> frozenset[str]:
        return frozenset(held[comp]).union(*(opcodes(child) for child in children[comp] if child != comp))

    kinds = {}
    for name, (opcode, callee) in instructions.items():
        ops = opcodes(callee) if callee else {opcode}
        if opcode in ("copy", "transpose") or (callee and root.get(callee) in ("copy", "transpose")):
            kinds[name] = "layout copy"
        else:
            kinds[name] = next((label for label, wanted in HLO_KINDS if ops & wanted),
                               "layout copy" if ops <= LAYOUT_OPS else "elementwise / fused")
    return kinds


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


def by_kind(ops: dict[str, float], kinds: dict[str, str] | None = None) -> dict[str, float]:
    """Milliseconds per kind: by `kinds` (`hlo_kinds`) where it knows the op, else by the op's name."""
    out: collections.Counter = collections.Counter()
    for name, ms in ops.items():
        out[(kinds or {}).get(name.removeprefix("end: ")) or kind(name)] += ms
    return dict(out)


def wall_ms(run, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def profile_cell(arch: str, size: int, batch_size: int, modes: tuple[str, ...], steps: int) -> dict[str, dict]:
    """Per-op milliseconds per step of one (model, input size, batch) in both frameworks, for each mode."""
    image = (size, size, 3)
    model = twins.create(arch, image=image)
    twin = twins.torch_twin(model).to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *image)).astype(np.float32)
    y = rng.integers(0, twins.NUM_CLASSES, batch_size).astype(np.int32)
    config = train_config(batch_size, False)
    trainer = Trainer(model, config, 1, progress=False)
    batch = parallel.place({"image": x, "label": y, "mask": np.ones(len(y), bool)}, trainer.sharded)
    xt = twins.torch_images(x).contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y).long()
    sgd = torch.optim.SGD(twin.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    results = {}
    for mode in modes:
        def jax_step() -> None:
            if mode == "train":
                trainer.state, out = trainer.train_step(trainer.graphs.train, trainer.state, batch)
            else:
                out = trainer.eval_step(trainer.graphs.eval, trainer.state, batch)
            jax.block_until_ready(out)

        def torch_step() -> None:
            if mode == "train":
                twin.train()
                sgd.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(twin(xt), yt).backward()
                sgd.step()
            else:
                twin.eval()
                with torch.inference_mode():
                    twin(xt)

        jax_ops, torch_ops = jax_profile(jax_step, steps), torch_profile_ops(torch_step, steps)
        walls = {"jax": wall_ms(jax_step, steps + 2), "torch": wall_ms(torch_step, steps + 2)}
        lowered = (trainer.train_step.lower(trainer.graphs.train, trainer.state, batch) if mode == "train"
                   else trainer.eval_step.lower(trainer.graphs.eval, trainer.state, batch))
        kinds = hlo_kinds(lowered.compile().as_text())  # the same program, compiled again: the same names
        jax_ops_kinds = {op: kinds.get(op.removeprefix("end: ")) or kind(op) for op in jax_ops}
        results[mode] = {"wall_ms": walls, "jax_ops_ms": jax_ops, "torch_ops_ms": torch_ops, "jax_op_kinds": jax_ops_kinds,
                         "jax_kinds_ms": by_kind(jax_ops, kinds), "torch_kinds_ms": by_kind(torch_ops)}
    return results


def untraced(row: dict, side: str) -> float:
    """A step's wall time less its profiled ops (for jaxdl: mostly XLA:CPU's asynchronous convolutions)."""
    return row["wall_ms"][side] - sum(row[f"{side}_ops_ms"].values())


def print_cell(arch: str, size: int, batch_size: int, mode: str, row: dict, top: int) -> None:
    """One cell in full: the step's wall times, both frameworks by kind, and each one's top operations."""
    walls = row["wall_ms"]
    print(f"{arch} {mode}, {size}x{size}, batch {batch_size}: step wall jaxdl {walls['jax']:.0f} ms, PyTorch "
          f"{walls['torch']:.0f} ms (ratio {walls['torch'] / walls['jax']:.2f})\n")
    harness.print_header("kind", "jaxdl ms/step", "PyTorch ms/step")
    for label in LABELS:
        harness.print_row(label, f"{row['jax_kinds_ms'].get(label, 0):.1f}", f"{row['torch_kinds_ms'].get(label, 0):.1f}")
    harness.print_row("total (profiled)", f"{sum(row['jax_ops_ms'].values()):.1f}",
                      f"{sum(row['torch_ops_ms'].values()):.1f}")
    harness.print_row("wall - profiled (XLA:CPU's asynchronous convolutions are not traced)",
                      f"{untraced(row, 'jax'):.1f}", f"{untraced(row, 'torch'):.1f}")
    for name, ops, kinds in (("jaxdl (XLA thunks)", row["jax_ops_ms"], row["jax_op_kinds"]),
                             ("PyTorch (operators, self CPU)", row["torch_ops_ms"], {})):
        print(f"\n{name}, top {top}:\n")
        harness.print_header("op", "kind", "ms/step")
        for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
            harness.print_row(op[:60], kinds.get(op) or kind(op), f"{ms:.1f}")
    print()


def print_summary(cells: list[dict]) -> None:
    """Every cell on one line: wall times and, per kind, jaxdl / PyTorch milliseconds per step."""
    harness.print_header("model", "size", "batch", "mode", "wall ms, jaxdl / PyTorch", "ratio",
                         *(f"{label}, ms" for label in LABELS), "wall - profiled, ms")
    for cell in cells:
        for mode, row in cell["modes"].items():
            walls = row["wall_ms"]
            harness.print_row(cell["arch"], cell["image_size"], cell["batch_size"], mode,
                              f"{walls['jax']:.1f} / {walls['torch']:.1f}", f"{walls['torch'] / walls['jax']:.2f}",
                              *(f"{row['jax_kinds_ms'].get(k, 0):.1f} / {row['torch_kinds_ms'].get(k, 0):.1f}"
                                for k in LABELS),
                              f"{untraced(row, 'jax'):.1f} / {untraced(row, 'torch'):.1f}")


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--arch", type=harness.arch, default="resnet18")
    p.add_argument("--image-size", type=cli.positive_int, default=224)
    p.add_argument("--batch-size", type=cli.positive_int, default=16)
    p.add_argument("--grid", type=sizes.grid, help="profile these cells instead, both modes, in bench.sizes' syntax "
                   f"(e.g. its default grid: \"{sizes.GRID}\"), and print one summary line per cell and mode")
    p.add_argument("--mode", choices=("train", "eval"), default="train")
    p.add_argument("--steps", type=cli.positive_int, default=3)
    p.add_argument("--top", type=cli.positive_int, default=15)
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    header = harness.header(MODULE, argv)
    print(harness.describe(header["machine"]))
    cells_args = args.grid or [(args.arch, args.image_size, args.batch_size)]
    modes = ("train", "eval") if args.grid else (args.mode,)
    cells = []
    for arch, size, batch_size in cells_args:
        cell = {"arch": arch, "image_size": size, "batch_size": batch_size,
                "modes": profile_cell(arch, size, batch_size, modes, args.steps)}
        cells.append(cell)
        if not args.grid:
            print_cell(arch, size, batch_size, args.mode, cell["modes"][args.mode], args.top)
        if args.json:  # after every cell: a cut-short run keeps them
            harness.write_json(args.json, header | {"cells": cells})
    if args.grid:
        print_summary(cells)


if __name__ == "__main__":
    harness.run(main, MODULE)
