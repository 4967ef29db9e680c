"""Data parallelism with `jax.sharding`: the batch is split over a 1-D 'data' mesh, the state replicated.

The same code serves one CPU, N local accelerators and several hosts: XLA inserts the gradient all-reduce
because the loss is a mean over a sharded batch axis. Multi-host runs start when the environment names a
coordinator (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), as `jax.distributed` expects.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def initialize_distributed() -> bool:
    """Join a multi-host run when the environment describes one; True if it did."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    jax.distributed.initialize(coordinator_address=address, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
    return True


def mesh(devices: list | None = None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def replicated(m: Mesh) -> NamedSharding:
    return NamedSharding(m, PartitionSpec())


def batch_sharded(m: Mesh) -> NamedSharding:
    return NamedSharding(m, PartitionSpec(AXIS))


def check_batch_size(batch_size: int, m: Mesh) -> None:
    if batch_size % m.size:
        raise ValueError(f"batch size {batch_size} does not split evenly over {m.size} devices")


def place(tree: Any, sharding: NamedSharding, *, copy: bool = False) -> Any:
    """Put host arrays (identical on every process) onto `sharding`'s devices.

    One process: a plain device_put, which may hand back the very buffers it was given unless `copy` (a state
    the train step will donate must not be the caller's model's buffers). Several: each process fills only the
    shards its own devices hold, always in new buffers.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding, may_alias=not copy)
    return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]), tree)
