"""Opt-in process settings, for programs (the CLIs) rather than libraries: importing jaxdl changes nothing.

XLA reads its flags once, when JAX first touches a backend; so a program opts in before it computes anything,
and a notebook or library that imports jaxdl keeps whatever XLA setup it has.
"""

from __future__ import annotations

import os

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


def use_fast_cpu_flags() -> bool:
    """Add jaxdl's XLA CPU flag to XLA_FLAGS; True if it did. Nothing changes when the user chose that flag
    already, set JAXDL_CPU_FLAGS=0, or JAX has started (the flag would not apply, and changing the environment
    would only mislead subprocesses). Call it first thing in a program's main, before any JAX computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    if ("xla_cpu_experimental_ynn_fusion_type" in flags or os.environ.get("JAXDL_CPU_FLAGS", "1") == "0"
            or _backends_initialized()):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
    return True
