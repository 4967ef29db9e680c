"""What every benchmark here shares: its command line, its clock, the machine it ran on, the GEMM peak, a step's
peak memory, its output.

A figure from a shared machine means something only next to the machine, the moment and the command that
produced it, so every bench's JSON starts with `header(...)`, and every bench times with the same two clocks:
`timed` (steady seconds per call, the device queue drained around them) and `measure` (one call: its value,
wall and CPU seconds). `step_peak_mb` measures memory the one way that works for both frameworks on a CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import datetime
import functools
import gc
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp

from jaxdl import cli, onednn, runtime
from jaxdl.models import check_name

T = TypeVar("T")


def parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The command line of `python -m module`, described by the first paragraph of the bench's docstring; a
    mistake is one line (`jaxdl.cli.Parser`)."""
    return cli.Parser(prog=f"python -m {module}", description=doc.split("\n\n")[0])


def run(main: Callable[[list[str] | None], object], module: str) -> None:
    """A bench's `__main__`: `main` under `jaxdl.cli.run`, exiting with its status."""
    sys.exit(cli.run(main, f"python -m {module}"))


def arch(text: str) -> str:
    """An argparse type: one jaxdl architecture."""
    try:
        check_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def positive_ints(text: str) -> str:
    """An argparse type: comma-separated positive integers, checked and kept as written."""
    for part in text.split(","):
        try:
            cli.positive_int(part)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers") from None
    return text


# ------------------------------------------------------------------------------------------------ timing


def _nothing() -> None:
    return None


def timed(run: Callable[[], object], sync: Callable[[], object] = _nothing, steps: int = 1) -> float:
    """Seconds per call of `steps` back-to-back calls of `run`.

    JAX and CUDA return before the work is done: `sync` drains the queue before the clock starts and before it
    stops, so the figure is the work, not its dispatch, while the calls in between still overlap as in a real
    loop. Functions that block by themselves need no `sync`.
    """
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        run()
    sync()
    return (time.perf_counter() - start) / steps


@dataclasses.dataclass(frozen=True)
class Measured(Generic[T]):
    value: T
    wall_s: float
    cpu_s: float  # this process's CPU seconds, every thread: steadier than wall time on a shared machine


def measure(run: Callable[[], T]) -> Measured[T]:
    """One call of `run` (a whole search, an estimate that compiles on first use): its value and its cost."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = run()
    return Measured(value, time.perf_counter() - wall, time.process_time() - cpu)


# ---------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's name as Linux reports it (e.g. "Intel(R) Xeon(R) CPU @ 2.50GHz"), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The machine and software a figure was measured on. Touches JAX's backend: call it after
    `jaxdl.runtime.use_fast_cpu_flags()`, whose XLA_FLAGS it reports."""
    device = jax.devices()[0]
    torch = sys.modules.get("torch")  # only a bench that runs PyTorch has a thread count worth reporting
    return {
        "cpu": cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(),
        "device": f"{jax.device_count()} x {device.platform} ({device.device_kind})",
        "jax": jax.__version__, "torch": _version("torch"),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # what jaxdl's CPU convolutions run on: oneDNN's kernels (jaxdl.onednn) when built, else XLA's
        "jaxdl_cpu_convolutions": "oneDNN " + _onednn_version() if onednn.available() else "XLA",
    }


def _onednn_version() -> str:
    """The oneDNN jaxdl's library links (libdnnl's own dnnl_version()), e.g. '2.6.3'."""
    try:
        v = ctypes.CDLL(str(onednn.LIBRARY)).dnnl_version
        v.restype = ctypes.POINTER(ctypes.c_int * 3)
        return ".".join(map(str, v().contents))
    except (OSError, AttributeError):
        return "(version unknown)"


def describe(m: Mapping[str, Any]) -> str:
    """`machine()` on one line, for the text a bench prints above its table."""
    threads = f" ({m['torch_threads']} threads)" if m["torch_threads"] else ""
    return (f"{m['cpu']} ({m['arch']}), {m['cores']} cores, {m['device']}; jax {m['jax']}, torch {m['torch']}"
            f"{threads}; XLA_FLAGS={m['xla_flags'] or '(unset)'}; jaxdl's CPU convolutions: "
            f"{m.get('jaxdl_cpu_convolutions', 'XLA')}")


def header(module: str, argv: list[str] | None) -> dict[str, Any]:
    """What every bench's JSON starts with: the command that reproduces it, when, and on what."""
    args = sys.argv[1:] if argv is None else argv
    return {"command": shlex.join(["python", "-m", module, *args]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "machine": machine()}


# ------------------------------------------------------------------------------------------- GEMM peak


@functools.cache
def _matmul(device: jax.Device) -> tuple[Callable[[jax.Array], jax.Array], jax.Array]:
    n, dtype = (2048, jnp.float32) if device.platform == "cpu" else (8192, jnp.bfloat16)
    a = jnp.ones((n, n), dtype, device=device)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()  # compile outside the clock
    return matmul, a


def gemm_peak(device: jax.Device | None = None, repeats: int = 5) -> float:
    """GFLOP/s of a large matmul (float32 2048^2 on a CPU, bfloat16 8192^2 on an accelerator) on `device`
    (default: JAX's first), the best of `repeats` bursts of 5: the ceiling a step's arithmetic can approach.

    A shared host's speed drifts 2x within minutes, so a bench measures it in the same run as what it divides.
    """
    matmul, a = _matmul(device or jax.devices()[0])
    n = a.shape[0]
    return max(2 * n**3 / timed(lambda: matmul(a).block_until_ready(), steps=5) / 1e9 for _ in range(repeats))


# ------------------------------------------------------------------------------------------- peak memory

CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


def _status_kib() -> dict[str, int]:
    """VmHWM (the resident set's high-water mark) and VmRSS of this process, in KiB."""
    fields = {}
    for line in STATUS.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def _reset_peak() -> None:
    CLEAR_REFS.write_text("5")  # Linux >= 4.0: VmHWM := VmRSS


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None (another C library)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


@functools.cache
def peak_rss_unavailable() -> str | None:
    """Why `step_peak_mb` cannot measure on this machine (one line), or None when it can."""
    if sys.platform != "linux":
        return f"no /proc/self/clear_refs on {sys.platform}: the peak resident memory cannot be reset"
    try:
        _reset_peak()
        fields = _status_kib()
    except OSError as e:
        return f"cannot reset the peak resident memory ({CLEAR_REFS}: {e.strerror or e})"
    if set(fields) != {"VmHWM", "VmRSS"}:
        return f"{STATUS} has no VmHWM/VmRSS"
    return None


def step_peak_mb(run: Callable[[], object], sync: Callable[[], object] = _nothing, steps: int = 2) -> float:
    """MB (10^6 bytes) by which `steps` synced calls of `run` raise this process's resident memory at their peak
    above what it held just before: a step's working memory (activations, gradients, workspaces), beyond what
    stays resident (weights, optimizer state, the batch, anything else the process holds). Call it after the
    warm-up, and only where `peak_rss_unavailable()` is None.

    Why the OS's count: PyTorch on a CPU keeps no allocator statistics (`torch.cuda.max_memory_allocated` is
    CUDA's only) and XLA:CPU neither (`jax.Device.memory_stats()` is None), so the one measure that sees both
    frameworks alike is the resident set's high-water mark, VmHWM in /proc/self/status, which Linux resets to
    the current resident size when "5" is written to /proc/self/clear_refs. Both frameworks' CPU buffers come
    from malloc; glibc keeps freed memory for reuse, so `malloc_trim(0)` returns it to the OS first: otherwise a
    step reusing the previous step's freed buffers would read as needing nothing. Threads' stacks, the
    allocator's rounding and other threads of the process count too: the figure is a resident-memory cost, to
    within a few MB. Where `jaxdl.runtime.keep_freed_memory` is set (the benches' `use_fast_cpu_flags()`), glibc's
    own settings hold during the measurement and one step before it: memory kept mapped would read as free.
    """
    with runtime.returning_freed_memory():
        run()  # one step under glibc's own settings, whose frees return its memory (the arenas' tops included)
        sync()
        gc.collect()
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        before = _status_kib()["VmRSS"]
        _reset_peak()
        for _ in range(steps):
            run()
            sync()
        return (_status_kib()["VmHWM"] - before) * 1024 / 1e6


# ----------------------------------------------------------------------------------------------- output


def output_file(text: str) -> str:
    """An argparse type: a file the results can be written to, checked before minutes of measuring (its
    directory must exist and be writable; the file itself is replaced)."""
    parent = Path(text).absolute().parent
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: name a file")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is not a writable directory")
    return text


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def print_header(*columns: str) -> None:
    """A Markdown table's header, as BENCHMARKS.md quotes it; `print_row` adds the rows as they are measured."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def print_row(*cells: object) -> None:
    print("| " + " | ".join(map(str, cells)) + " |", flush=True)
