"""Opt-in process settings, for programs (the CLIs) rather than libraries: importing jaxdl changes nothing.

`use_fast_cpu_flags()` sets both measured settings: one XLA CPU flag, and an allocator that keeps freed
memory mapped between steps.

XLA reads its flags once, when JAX first touches a backend; so a program opts in before it computes anything,
and a notebook or library that imports jaxdl keeps whatever XLA setup it has.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

# XLA CPU's YNNPACK convolutions make float32 training steps 1.7x slower than its Eigen ones on this zoo
# (`python -m experiments.bench`, BENCHMARKS.md); this flag keeps single convolutions off YNNPACK.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def _backends_initialized() -> bool:
    """Whether JAX has started its backends (and so XLA has read its flags). No public API tells; the private
    function is there in JAX 0.10.2 through 0.12.0.1. Without it, assume not (tests/test_jax_compat.py)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
TOP_PAD = 128 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Keep memory that a step frees mapped for the next step (glibc only); True if set.

    XLA:CPU allocates each execution's temporaries afresh and frees them after; glibc serves allocations over
    its mmap threshold (at most 32 MB) with fresh mmaps and trims freed heap tops, so every step touches its
    working memory anew, one page fault per 4 KiB. On the course CNN (batch 128, 32 px) those faults were half
    of a 41 ms training step: 23 ms with this (ResNet-18 at 224 px: 3-8%; BENCHMARKS.md, CPU speed across
    sizes). So: no mmaps (every block from the heap), no trimming below 2 GiB, 128 MiB of padding when a heap
    grows. Memory a step used stays resident for the next step, as PyTorch's and XLA's GPU allocators keep it;
    `malloc_trim(0)` returns it to the system on demand.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return all([mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 2**31 - 1), mallopt(M_TOP_PAD, TOP_PAD)])


@contextlib.contextmanager
def returning_freed_memory() -> Iterator[None]:
    """glibc's own behaviour (freed memory goes back to the system) for the duration, `keep_freed_memory`'s
    after it if it was set: for measuring a step's peak resident memory, which retained memory would hide."""
    kept = keep_freed_memory.cache_info().currsize > 0 and keep_freed_memory()  # set earlier, and in effect
    if kept:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(M_MMAP_MAX, 65536), mallopt(M_TRIM_THRESHOLD, 128 << 10), mallopt(M_TOP_PAD, 0)
    try:
        yield
    finally:
        if kept:
            keep_freed_memory.cache_clear()
            keep_freed_memory()


def use_fast_cpu_flags() -> bool:
    """Add jaxdl's XLA CPU flag to XLA_FLAGS, and keep freed memory mapped (`keep_freed_memory`); True if the
    flag was added. Nothing changes when the user set JAXDL_CPU_FLAGS=0; the flag is not added when the user
    chose it already or JAX has started (it would not apply, and changing the environment would only mislead
    subprocesses). Call it first thing in a program's main, before any JAX computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXDL_CPU_FLAGS", "1") == "0":
        return False
    keep_freed_memory()
    if "xla_cpu_experimental_ynn_fusion_type" in flags or _backends_initialized():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
    return True
