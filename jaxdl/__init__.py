"""jaxdl: torchvision's classic classifiers in Flax NNX, exact and fast.

Importing jaxdl (or any submodule) changes no environment variable and no global library state. Programs that
want jaxdl's measured XLA CPU setting call `jaxdl.runtime.use_fast_cpu_flags()` before computing anything, as
its CLIs do.
"""
