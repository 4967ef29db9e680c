"""The one-shot device check: correctness against torchvision, throughput against PyTorch, and the studies, on a GPU.

    python -m experiments.gpu_check --out gpu-check              # on the GPU machine (`make gpu-check`)
    python -m experiments.gpu_check --cpu-dry-run --out /tmp/gc  # the same code at toy sizes (tests/test_gpu_check.py)
        [--sections peak,correctness,speed,svhn,hessian,search] [--budget-s 450]
        [--cases resnet18:32:512,resnet50:224:128]

Sections, in order (`experiments.gpu_check.plan` sizes them): the bf16 matmul peak (`device`), eval logits and
one SGD step against torchvision in float32 and bf16 (`correctness`), training throughput against PyTorch eager
and torch.compile with MFU (`speed`), the SVHN default run, the Hessian against PyHessian and the vmapped grid
search (`studies`). Each runs in its own try/except, so a failure is one recorded error line and the others
still run; DIR/gpu-check.json and DIR/gpu-check.md (`report`) are rewritten after each, so a run cut short keeps
what finished. Progress goes to stderr. The budget (450 s by default on a GPU) is spent in that order: the
throughput section takes what the later sections' reserves leave, and a section that no longer fits is recorded
as skipped.

--cpu-dry-run computes where JAX and PyTorch compute by default: the CPU on a machine without a GPU (it is meant
for those), the GPU, at toy sizes, on one that has it. Exit status: 0 when every section ran and every check
held; 1 when one failed or raised (all are recorded); 2 for a mistake in the arguments, or no GPU without
--cpu-dry-run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from experiments.bench import harness
from experiments.gpu_check import correctness, device, report, speed, studies
from experiments.gpu_check.plan import DRY_RUN, GPU, SECTIONS, Plan
from jaxdl import cli
from jaxdl.models import check_name
from jaxdl.runtime import use_fast_cpu_flags

MODULE = "experiments.gpu_check"


def cases(text: str) -> tuple[speed.Case, ...]:
    """An argparse type: comma-separated ARCH:SIZE:BATCH, each architecture known and both numbers positive."""
    found = []
    for part in text.split(","):
        try:
            case = speed.Case.parse(part)
            check_name(case.arch)
        except ValueError as e:
            detail = str(e) if "architecture" in str(e) else "write ARCH:SIZE:BATCH, e.g. resnet50:224:128"
            raise argparse.ArgumentTypeError(f"{part!r}: {detail}") from None
        if case.size < 1 or case.batch < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: size and batch must be positive")
        found.append(case)
    return tuple(found)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--out", default="gpu-check", help="directory for gpu-check.json, gpu-check.md and svhn/")
    p.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on the CPU: the check's own test")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--budget-s", type=cli.positive_float, help=f"seconds for the whole check (default "
                   f"{GPU.budget_s:g} on a GPU, {DRY_RUN.budget_s:g} in the dry run)")
    p.add_argument("--cases", type=cases, help="throughput cases ARCH:SIZE:BATCH,... (default: the plan's)")
    args = p.parse_args(argv)
    chosen = args.sections.split(",")
    if unknown := [s for s in chosen if s not in SECTIONS]:
        p.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def header(argv: list[str] | None, dry_run: bool, plan: Plan) -> dict[str, Any]:
    """The bench header (command, date, machine) plus the GPU's name, flax's version and the plan."""
    import torch

    cuda = torch.cuda.is_available()
    return harness.header(MODULE, argv) | {
        "dry_run": dry_run, "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda if cuda else None, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "flax": importlib.metadata.version("flax"), "plan": dataclasses.asdict(plan),
        "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")}


def runners(plan: Plan, out: Path, record: report.Record, later_reserve: Callable[[str], float],
            deadline: float, progress: Callable[[str], None]) -> dict[str, Callable[[], dict[str, Any]]]:
    """What each section runs, sized by `plan`."""

    def peak() -> float:
        found = record.data["sections"].get("peak", {}).get("result", {}).get("peak_gflops")
        return found or device.peaks(plan.peak_repeats)["peak_gflops"]

    def throughput() -> dict[str, Any]:
        seconds = deadline - time.perf_counter() - later_reserve("speed")
        return speed.run(list(plan.cases), plan.timing, seconds, peak(), progress,
                         on_row=lambda result: record.partial("speed", result))

    return {
        "peak": lambda: device.peaks(plan.peak_repeats),
        "correctness": lambda: correctness.run(list(plan.correctness_archs), plan.correctness_batch, progress),
        "speed": throughput,
        "svhn": lambda: studies.svhn(out / "svhn", list(plan.svhn_argv)),
        "hessian": lambda: studies.hessian(**plan.hessian),
        "search": lambda: studies.grid_search(**plan.search),
    }


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count for the run, restored afterwards (the test runs the check in-process)."""
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    args = parse(argv)
    if not args.cpu_dry_run:
        device.no_gpu_preallocation()
    if not args.cpu_dry_run and not device.accelerator():
        raise cli.UsageError("no GPU: JAX computes on the CPU here; run the check on the GPU machine (make "
                             "gpu-check), or exercise it here with --cpu-dry-run")
    if not args.cpu_dry_run and device.torch_device() != "cuda":
        raise cli.UsageError("JAX has a GPU but PyTorch sees none (torch.cuda.is_available() is False): run the "
                             "check with a CUDA build of PyTorch")
    out = cli.writable_dir(Path(args.out))
    plan = DRY_RUN if args.cpu_dry_run else GPU
    plan = dataclasses.replace(plan, cases=args.cases or plan.cases, budget_s=args.budget_s or plan.budget_s)
    start = time.perf_counter()
    deadline = start + plan.budget_s

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:4.0f} s] gpu_check: {message}", file=sys.stderr, flush=True)

    def later_reserve(name: str) -> float:
        return sum(plan.reserve_s.get(s, 0.0) for s in args.sections[args.sections.index(name) + 1:])

    record = report.Record(out, header(argv, args.cpu_dry_run, plan), progress)
    run = runners(plan, out, record, later_reserve, deadline, progress)
    with torch_threads(plan.torch_threads):
        for name in args.sections:
            left = deadline - time.perf_counter()
            if left < plan.reserve_s.get(name, 0.0) / 2 or left <= 0:
                record.skip(name, f"budget: {max(left, 0):.0f} s left of {plan.budget_s:g}")
                continue
            record.section(name, run[name])
    progress(f"wrote {out / report.JSON} and {out / report.MARKDOWN} in {time.perf_counter() - start:.0f} s")
    failed = [name for name, entry in record.data["sections"].items() if entry["status"] in ("failed", "error")]
    if failed:
        raise cli.RunFailed(f"section(s) {', '.join(failed)} failed or raised: see {out / report.JSON}")


if __name__ == "__main__":
    harness.run(main, MODULE)
