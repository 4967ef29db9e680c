"""Where the check runs and in which arithmetic: the devices, float32 without TF32, and the bf16 matmul peak.

On Ampere and later GPUs both frameworks may run float32 matmuls and convolutions in TF32 (10-bit mantissa):
JAX by default, PyTorch for cuDNN convolutions by default. A float32 comparison or timing means something only
with TF32 off on both sides, so `float32()` switches it off for its duration (PyTorch's two flags, JAX's
default matmul precision, which also governs convolutions and enters the jit cache key, so programs traced
inside it are compiled at full precision). bfloat16 needs nothing here: each side chooses it itself
(jaxdl's `TrainConfig.mixed_precision`, `torch.autocast`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import jax
import torch

from experiments.bench import harness

PEAK_N = {"gpu": 8192, "cpu": 1024}  # the bf16 matmul's side; on a CPU only a smoke test of the measurement


def accelerator() -> bool:
    """Whether JAX computes on an accelerator (the GPU check proper) rather than the CPU (the dry run)."""
    return jax.default_backend() != "cpu"


def torch_device() -> str:
    """Where PyTorch computes: the GPU when there is one, as `experiments.bench.frameworks.TorchSide` decides."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def no_gpu_preallocation() -> None:
    """Let JAX grow its GPU memory on demand instead of taking 75% of it at start: PyTorch computes in the same
    process and needs its share. Only before JAX starts, and only when the user has not chosen."""
    from jaxdl.runtime import _backends_initialized

    if not _backends_initialized():
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@contextlib.contextmanager
def float32() -> Iterator[None]:
    """True float32 on both sides (TF32 off) while it lasts; PyTorch's flags are restored afterwards."""
    cuda, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = cuda, cudnn


def arithmetic(dtype: str) -> contextlib.AbstractContextManager[None]:
    """`float32()` for "float32"; nothing for "bfloat16", which each side sets up itself."""
    return float32() if dtype == "float32" else contextlib.nullcontext()


def torch_bf16_peak(repeats: int = 3) -> float:
    """GFLOP/s of PyTorch's n^3 bfloat16 matmul (n = 8192 on a GPU), the best of `repeats` bursts of 5: the
    ceiling MFU is measured against, taken in the same run as the steps it divides."""
    device = torch_device()
    n = PEAK_N["gpu" if device == "cuda" else "cpu"]
    a = torch.ones((n, n), dtype=torch.bfloat16, device=device)
    (a @ a)
    torch_sync()
    return max(2 * n**3 / harness.timed(lambda: a @ a, torch_sync, steps=5) / 1e9 for _ in range(repeats))


def peaks(repeats: int = 5) -> dict[str, float | str]:
    """The bf16 matmul peak by each framework (JAX's is `harness.gemm_peak`: bf16 8192^2 on an accelerator,
    float32 2048^2 on a CPU) and the larger, the denominator of every MFU this check reports."""
    torch_peak, jax_peak = torch_bf16_peak(repeats), harness.gemm_peak(repeats=repeats)
    return {"torch_bf16_gflops": torch_peak, "jax_gflops": jax_peak, "peak_gflops": max(torch_peak, jax_peak),
            "jax_dtype": "bfloat16" if accelerator() else "float32"}
