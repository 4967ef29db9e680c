"""Per-epoch Orbax checkpoints of the carried train state, for `--resume`.

The state is stored as its flat list of leaves (PRNG keys as raw key data, which Orbax can store) next to a
JSON record of the leaf paths, the epoch and the history so far. Restoring needs a template state of the
same model and optimizer; the paths are compared first, so resuming into a different architecture fails
with a clear message instead of a shape error deep in Orbax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np


class CheckpointMismatch(ValueError):
    """The checkpoint was written for a different model or optimizer than the one resuming."""


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _orbax() -> Any:
    """orbax.checkpoint, imported on first use: it costs 0.7 s that `import jaxdl.train` need not pay."""
    import orbax.checkpoint

    return orbax.checkpoint


def _paths(state: Any) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


class Checkpoints:
    """Epoch-numbered checkpoints under `directory`; the newest `keep` are kept."""

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        self.directory = Path(directory).absolute()
        ocp = _orbax()
        self.manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def latest_epoch(self) -> int | None:
        """The last completed epoch (0-based) that was saved, or None."""
        return self.manager.latest_step()

    def save(self, epoch: int, state: Any, meta: dict) -> None:
        """Save synchronously: when this returns, a kill cannot lose the epoch."""
        leaves = [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(state)]
        meta = {**meta, "paths": _paths(state)}
        ocp = _orbax()
        self.manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()

    def restore(self, template: Any, epoch: int | None = None) -> tuple[Any, dict]:
        """(state, meta) of `epoch` (default: the latest), with `template`'s structure, dtypes and shardings."""
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        ocp = _orbax()
        meta = self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta["paths"] != _paths(template):
            raise CheckpointMismatch(f"checkpoint {self.directory}/{epoch} holds a different model or optimizer state "
                                     f"({len(meta['paths'])} arrays vs {len(_paths(template))}): use another --out or drop --resume")
        leaves, treedef = jax.tree.flatten(template)
        targets = [jax.ShapeDtypeStruct(np.shape(jax.random.key_data(x)) if _is_key(x) else x.shape,
                                        jax.random.key_data(x).dtype if _is_key(x) else x.dtype,
                                        sharding=x.sharding) for x in leaves]
        stored = self.manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(targets)))["state"]
        restored = [jax.random.wrap_key_data(s, impl=jax.random.key_impl(t)) if _is_key(t) else s
                    for s, t in zip(stored, leaves)]
        return jax.tree.unflatten(treedef, restored), meta

    def close(self) -> None:
        self.manager.close()
