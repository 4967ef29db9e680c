"""Suite-wide settings.

JAXDL_CPU_FLAGS=0 keeps XLA CPU's default convolution kernels in the tests: jaxdl's speed flag (see
jaxdl/__init__.py) only picks which XLA kernel runs a convolution, and under it the float64 equivalence checks
compile and run ~1.8x slower (vgg11_bn: 146 s against 79 s), which the suite's budget cannot carry. Its speed is
measured by `python -m experiments.bench`; its numbers by the same equivalence tests run with JAXDL_CPU_FLAGS=1.
"""

import os

os.environ.setdefault("JAXDL_CPU_FLAGS", "0")
