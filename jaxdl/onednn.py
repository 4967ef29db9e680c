"""oneDNN's convolution kernels for XLA:CPU, as XLA FFI custom calls (`onednn_conv.cc`).

XLA:CPU runs convolutions on Eigen's spatial convolution; PyTorch runs them on oneDNN, 1.1-15x faster per layer
with gradients on the project's CPU (`python -m experiments.bench.conv`, BENCHMARKS.md, CPU speed across sizes). This module builds a small library that calls
oneDNN on jaxdl's own layouts (NHWC activations, HWIO kernels) and registers its three passes (forward, input
gradient, weight gradient) with XLA. `jaxdl.models.conv` lowers its convolution primitives to them on CPU in
float32 when the library is built, and to XLA's own convolutions otherwise: the library is an accelerator,
never a requirement.

Build it once per environment (it links the oneDNN of the system, Debian's `libdnnl-dev`, and compiles
against the installed jaxlib's FFI headers):

    python -m jaxdl.onednn build     # `make` does this when oneDNN is installed
    python -m jaxdl.onednn           # whether it is built and loads

Nothing is built, loaded or registered at import: the library is loaded on the first convolution lowered.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

SOURCE = Path(__file__).with_name("onednn_conv.cc")
LIBRARY = Path(__file__).with_name("_onednn_conv.so")
TARGETS = {"forward": "JaxdlOnednnConvForward", "backward_data": "JaxdlOnednnConvBackwardData",
           "backward_weights": "JaxdlOnednnConvBackwardWeights"}
INSTALL_HINT = "install oneDNN (Debian/Ubuntu: apt-get install libdnnl-dev) and a C++ compiler, then make onednn"


class BuildError(RuntimeError):
    """The library could not be built; the message says what is missing and how to get it."""


def _include_dirs() -> list[str]:
    """Where dnnl.hpp may be: $DNNL_ROOT/include, then the compiler's own search path."""
    root = os.environ.get("DNNL_ROOT")
    return [str(Path(root) / "include")] if root else []


def _find_header() -> Path | None:
    for d in [*_include_dirs(), "/usr/include", "/usr/local/include"]:
        if (Path(d) / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
            return Path(d)
    return None


def build(out: Path = LIBRARY) -> Path:
    """Compiles `onednn_conv.cc` into `out` against the installed jaxlib; raises BuildError if it cannot."""
    wanted = os.environ.get("CXX")
    compiler = shutil.which(wanted) if wanted else shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise BuildError(f"C++ compiler {wanted!r} (CXX) not found: {INSTALL_HINT}" if wanted else
                         f"no C++ compiler found (set CXX): {INSTALL_HINT}")
    if _find_header() is None:
        raise BuildError(f"oneDNN's headers (oneapi/dnnl/dnnl.hpp) were not found (or set DNNL_ROOT): {INSTALL_HINT}")
    root = os.environ.get("DNNL_ROOT")
    link = [f"-L{Path(root) / 'lib'}", f"-Wl,-rpath,{Path(root) / 'lib'}"] if root else []
    tmp = out.with_suffix(".so.tmp")
    cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
           *(f"-I{d}" for d in _include_dirs()), str(SOURCE), "-o", str(tmp), *link, "-ldnnl"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"compiling {SOURCE.name} failed:\n{done.stderr.strip()}")
    tmp.replace(out)  # atomic: a running process never sees half a library
    available.cache_clear()
    return out


@functools.cache
def available() -> bool:
    """Whether the library is built, loads, and its handlers are registered with XLA (done on the first call)."""
    if not LIBRARY.is_file():
        return False
    try:
        library = ctypes.cdll.LoadLibrary(str(LIBRARY))
        for name, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(f"jaxdl_onednn_conv_{name}", jax.ffi.pycapsule(getattr(library, symbol)),
                                        platform="cpu")
    except (OSError, AttributeError) as e:
        print(f"jaxdl: {LIBRARY.name} did not load ({e}); convolutions use XLA's. Rebuild it: "
              "python -m jaxdl.onednn build", file=sys.stderr)
        return False
    return True


def _attributes(strides: Sequence[int], padding: Sequence[Sequence[int]], rhs_dilation: Sequence[int]) -> dict:
    (top, bottom), (left, right) = padding
    return {name: np.int64(v) for name, v in dict(
        stride_h=strides[0], stride_w=strides[1], dilation_h=rhs_dilation[0], dilation_w=rhs_dilation[1],
        pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right).items()}


def call(name: str, a: jax.Array, b: jax.Array, out_shape: Sequence[int], strides: Sequence[int],
         padding: Sequence[Sequence[int]], rhs_dilation: Sequence[int]) -> jax.Array:
    """One pass of a float32 NHWC/HWIO convolution on oneDNN: forward (x, w), backward_data (dy, w),
    backward_weights (x, dy); the geometry is the forward convolution's. Needs `available()`."""
    result = jax.ShapeDtypeStruct(tuple(out_shape), np.float32)
    return jax.ffi.ffi_call(f"jaxdl_onednn_conv_{name}", result)(a, b, **_attributes(strides, padding, rhs_dilation))


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["build"]:
        try:
            print(f"built {build()}")
        except BuildError as e:
            print(f"jaxdl.onednn: {e}", file=sys.stderr)
            return 1
        return 0 if available() else 1
    if argv:
        print("usage: python -m jaxdl.onednn [build]", file=sys.stderr)
        return 2
    print(f"{LIBRARY}: {'built and loads' if available() else 'not built (python -m jaxdl.onednn build)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
