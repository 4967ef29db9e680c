"""jaxdl: torchvision's classic classifiers in Flax NNX, exact and fast."""

import os

# XLA CPU's YNNPACK convolutions make float32 training steps 1.7x slower than its Eigen ones on this zoo
# (`python -m experiments.bench`, BENCHMARKS.md), so jaxdl turns them off unless the user chose the flag or set
# JAXDL_CPU_FLAGS=0. XLA reads its flags when JAX first touches a backend: import jaxdl before computing.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
if os.environ.get("JAXDL_CPU_FLAGS", "1") != "0" and "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}".strip()
