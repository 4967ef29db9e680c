"""Data parallelism with `jax.sharding`: the batch is split over a 1-D 'data' mesh, the state replicated.

The same code serves one CPU, N local accelerators and many processes: XLA inserts the gradient all-reduce
because the loss is a mean over a sharded batch axis. In a multi-process run every process builds only its own
rows of each global batch (`local_rows`; the loaders take them as `rows=`) and `to_device` assembles the global
array from the processes' parts; results that span processes come back with `to_host`.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"
_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class DistributedConfigError(ValueError):
    """The flags or environment that describe a multi-process run are incomplete or inconsistent."""


def detected_cluster() -> str | None:
    """The cluster environment JAX's own auto-detection recognises (SLURM, Open MPI, Cloud TPU pods,
    Kubernetes...), when it launched more than one process; None otherwise.

    JAX has no public API for the question; without its (private) cluster registry this says None and a
    run stays single-process unless told otherwise."""
    try:
        from jax._src.clusters import ClusterEnv
    except ImportError:
        return None
    for env in getattr(ClusterEnv, "_cluster_types", []):
        try:
            if getattr(env, "opt_in_only_method", False) or not env.is_env_present():
                continue
            if env.get_process_count() > 1:
                return env.__name__
        except Exception:  # a half-present environment: not one to join
            continue
    return None


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> str | None:
    """Join a multi-process run, the JAX way (`jax.distributed.initialize`); say how, or None for one process.

    In order: the arguments (the CLIs' --coordinator HOST:PORT --num-processes N --process-id I, all three),
    the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, all three), then JAX's cluster
    auto-detection (SLURM, TPU pods, ...). Raises DistributedConfigError for a partial or inconsistent set.
    """
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    env = {k: os.environ.get(k) for k in _ENV}
    if any(v is not None for v in given.values()):
        source, values = "flags", given
    elif any(env.values()):
        source, values = "environment", env
    else:
        cluster = detected_cluster()
        if cluster is None or jax.distributed.is_initialized():
            return None
        _join()
        return cluster
    missing = [k for k, v in values.items() if v in (None, "")]
    if missing:
        raise DistributedConfigError(f"a multi-process run needs all of {', '.join(values)}; missing {', '.join(missing)}")
    address, count, index = values.values()
    try:
        count, index = int(count), int(index)
    except ValueError:
        raise DistributedConfigError(f"the number of processes and the process id must be integers, got "
                                     f"{count!r} and {index!r}") from None
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise DistributedConfigError(f"the coordinator must be HOST:PORT (process 0's address), got {address!r}")
    if count < 1 or not 0 <= index < count:
        raise DistributedConfigError(f"process id {index} is not one of 0..{count - 1} ({count} processes)")
    if not jax.distributed.is_initialized():  # a second call in one process is a no-op
        _join(coordinator_address=str(address), num_processes=count, process_id=index)
    return source


class DistributedJoinError(RuntimeError):
    """`jax.distributed.initialize` failed: JAX had started already, or the coordinator was not reachable."""


def _join(**kwargs: Any) -> None:
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:  # one line: JAX's messages run over several, with the C++ status in them
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedJoinError(f"could not join the multi-process run ({first})") from None


def mesh(devices: list | None = None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def replicated(m: Mesh) -> NamedSharding:
    return NamedSharding(m, PartitionSpec())


def batch_sharded(m: Mesh) -> NamedSharding:
    return NamedSharding(m, PartitionSpec(AXIS))


def check_batch_size(batch_size: int, m: Mesh) -> None:
    if batch_size % m.size:
        raise ValueError(f"batch size {batch_size} does not split evenly over {m.size} devices")


def local_rows(sharding: NamedSharding, batch_size: int) -> tuple[int, int]:
    """(start, stop): the rows of every global batch of `batch_size` that this process's devices hold, the
    only ones it needs to build. All of them in a single-process run."""
    if jax.process_count() == 1:
        return 0, batch_size
    spans = sorted({(s[0].start or 0, batch_size if s[0].stop is None else s[0].stop)
                    for s in sharding.addressable_devices_indices_map((batch_size,)).values()})
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        raise ValueError(f"this process's devices hold rows {spans} of the batch, not one block")
    return spans[0][0], spans[-1][1]


def place(tree: Any, sharding: NamedSharding, *, copy: bool = False) -> Any:
    """Put host arrays (identical on every process: a state, a model) onto `sharding`'s devices.

    One process: a plain device_put, which may hand back the very buffers it was given unless `copy` (a state
    the train step will donate must not be the caller's model's buffers). Several: each process fills only the
    shards its own devices hold, always in new buffers.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding, may_alias=not copy)
    return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]), tree)


def to_device(batch: dict[str, np.ndarray], sharding: NamedSharding, batch_size: int) -> dict[str, jax.Array]:
    """A global batch of `batch_size` rows, split over `sharding`, from this process's part of it.

    The part is either this process's rows (`local_rows`: what the loaders build with `rows=`) or, from a
    loader that builds whole batches, the whole batch, of which only this process's rows are used."""
    rows = len(next(iter(batch.values())))
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    start, stop = local_rows(sharding, batch_size)
    if rows == batch_size:
        batch = {k: v[start:stop] for k, v in batch.items()}
    elif rows != stop - start:
        raise ValueError(f"a batch part of {rows} rows: this process holds rows {start}..{stop - 1} of {batch_size}")
    return {k: jax.make_array_from_process_local_data(sharding, v, (batch_size, *np.shape(v)[1:]))
            for k, v in batch.items()}


def to_host(tree: Any) -> Any:
    """Numpy copies of device arrays, whole also when they span other processes' devices (a collective then:
    every process must call it)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return jax.tree.map(_gathered, tree)


def _gathered(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def barrier(name: str) -> None:
    """Wait until every process reaches this point (e.g. until process 0 has written a file the others read)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def prefetch(batches: Iterable[Any], put: Callable[[Any], Any], size: int = 2) -> Iterator[Any]:
    """`put(batch)` (a device transfer, asynchronous) issued `size` batches ahead of the consumer: the next
    batch travels while the current step runs. Closing this generator closes `batches`."""
    ahead: collections.deque = collections.deque()
    iterator = iter(batches)
    try:
        for batch in iterator:
            ahead.append(put(batch))
            if len(ahead) >= size:
                yield ahead.popleft()
        while ahead:
            yield ahead.popleft()
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
