"""Importing jaxdl changes nothing global, stays light, and the CLIs' CPU flag is an explicit opt-in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["jaxdl", "jaxdl.models", "jaxdl.train", "jaxdl.data", "jaxdl.report", "jaxdl.hessian", "jaxdl.search",
           "jaxdl.metrics", "jaxdl.weights", "jaxdl.runtime", "convert"]


def python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_importing_everything_changes_no_environment_and_no_matplotlib_backend():
    out = python(f"""
import importlib, os, matplotlib
import jax, sklearn  # these set variables of their own (TF_CPP_MIN_LOG_LEVEL, KMP_*): jaxdl's are what is tested
env, backend = dict(os.environ), matplotlib.rcParams["backend"]
for name in {MODULES!r}:
    importlib.import_module(name)
changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
print(changed, backend, matplotlib.rcParams["backend"])
""", MPLBACKEND="svg", XLA_FLAGS="")
    assert out.split() == ["[]", "svg", "svg"], out


def test_import_jaxdl_train_pulls_in_no_plotting_or_scientific_stack():
    out = python("""
import sys

import pytest
import jaxdl.train
print(sorted(m for m in ("sklearn", "scipy", "matplotlib", "PIL", "orbax.checkpoint", "torch") if m in sys.modules))
""")
    assert out.strip() == "[]", out


def test_fast_cpu_flags_are_an_explicit_opt_in_before_jax_starts():
    out = python("""
import os, jax, jax.numpy as jnp
from jaxdl import runtime
print(runtime.use_fast_cpu_flags(), runtime.YNN_FLAG in os.environ["XLA_FLAGS"])
jnp.ones(2).block_until_ready()
os.environ["XLA_FLAGS"] = ""
print(runtime.use_fast_cpu_flags(), repr(os.environ["XLA_FLAGS"]))  # too late: JAX has read its flags
""", XLA_FLAGS="")
    assert out.split() == ["True", "True", "False", "''"], out
    assert python("from jaxdl import runtime; print(runtime.use_fast_cpu_flags())", JAXDL_CPU_FLAGS="0").strip() == "False"


FREED = """
import numpy as np
from jaxdl import runtime
def rss_mb():
    return int(next(line for line in open('/proc/self/status') if line.startswith('VmRSS')).split()[1]) // 1024
{setup}
before = rss_mb()
block = np.ones(200 << 20, np.uint8)  # a step's temporaries: 200 MB, touched, freed
del block
print(rss_mb() - before)
"""


def test_fast_cpu_settings_keep_a_steps_freed_memory_resident():
    """glibc returns a freed 200 MB block to the system at once (the next step faults it all in again);
    after `use_fast_cpu_flags()` it stays mapped for reuse, and JAXDL_CPU_FLAGS=0 leaves malloc alone."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc")
    kept = int(python(FREED.format(setup="runtime.use_fast_cpu_flags()")).split()[-1])
    returned = int(python(FREED.format(setup="")).split()[-1])
    opted_out = int(python(FREED.format(setup="runtime.use_fast_cpu_flags()"), JAXDL_CPU_FLAGS="0").split()[-1])
    assert kept >= 180 and returned < 20 and opted_out < 20, (kept, returned, opted_out)
