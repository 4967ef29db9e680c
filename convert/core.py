"""torchvision state_dict <-> jaxdl model, strict and exact.

Conversion is a relayout of tensors (see `keymaps`): the numbers are copied bit for bit, so a converted model
computes what the torchvision model computes up to float reassociation.
"""

from __future__ import annotations

import functools

import numpy as np
from flax import nnx

from convert.keymaps import keymap
from jaxdl.models import architecture, names, spec
from jaxdl.weights import assign, blank, fresh_head, key, variables


class ConversionError(ValueError):
    """A state_dict that does not fit the architecture; lists every problem at once."""


def _numpy(tensor) -> np.ndarray:
    """A private copy: JAX may alias host numpy memory, so a view of a torch tensor would let a later in-place
    torch update (an optimizer step) silently change the converted model."""
    if hasattr(tensor, "detach"):  # a torch.Tensor; torch itself is not needed to convert numpy arrays
        tensor = tensor.detach().cpu()
        if tensor.dtype.is_floating_point:
            tensor = tensor.float()
        tensor = tensor.numpy()
    return np.array(tensor, copy=True)


def from_torch(state_dict: dict, arch: str, num_classes: int | None = None, *, seed: int = 0, **options) -> nnx.Module:
    """Build `arch` carrying the weights of a torchvision state_dict (or of a `convert.twins` small model,
    whose `options` such as `image_size` must be the ones it was built with).

    A `num_classes` other than the checkpoint's keeps the whole backbone and gives the model a freshly
    initialised head (seeded by `seed`), which is what fine-tuning on a new data set wants. `num_classes=0`
    keeps only the backbone, dropping the checkpoint's head; a backbone's state_dict (one without any head key,
    as a twin whose head is `nn.Identity()` saves it) converts with num_classes=0, or any other number for a
    fresh head.
    """
    state = {k: _numpy(v) for k, v in state_dict.items()}
    head_prefix = f"{architecture(arch).head}."
    head_key = f"{head_prefix}weight"
    head = state.get(head_key)
    headless = not any(k.startswith(head_prefix) for k in state)
    if num_classes is None:
        if head is None:
            known = {e.torch_key for e in keymap(blank(arch, 1, **options)).entries}  # keys do not depend on it
            if len(known & state.keys()) < len(known) / 2:
                raise ConversionError(f"cannot convert to {arch}: {_foreign(state, arch, known)}")
            raise ConversionError(f"cannot convert to {arch}: the state_dict has no {head_key} to take num_classes "
                                  "from: give num_classes (0 for the backbone alone)")
        num_classes = head.shape[0]
    replace_head = num_classes == 0 or (head is not None and head.shape[0] != num_classes)
    if replace_head:  # the checkpoint's head (if any) is not this model's: num_classes=0 has none, others a fresh one
        state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    model = blank(arch, num_classes, seed=seed, **options)
    km = keymap(model)
    targets = variables(model)

    known = {e.torch_key for e in km.entries}
    problems = [f"unexpected key {k}" for k in state if k not in known]
    values = {}
    for e in km.mapped():
        if replace_head and e.torch_key.startswith(f"{km.head}."):
            continue
        if e.torch_key not in state:
            problems.append(f"missing key {e.torch_key}")
            continue
        expected = e.layout.torch_shape(targets[e.path].shape)
        got = tuple(state[e.torch_key].shape)
        if got != expected:
            problems.append(f"{e.torch_key}: shape {got} does not fit {arch}'s {expected}")
            continue
        values[key(e.path)] = e.layout.to_flax(state[e.torch_key])
    head_missing = [f"missing key {e.torch_key}" for e in km.mapped() if e.torch_key.startswith(head_prefix)]
    if headless and problems and problems == head_missing:  # a backbone's state_dict, all there: a fresh head
        problems, replace_head = [], True
    if problems:  # a near miss names every problem; a state_dict of another model says what it looks like
        foreign = len(known & state.keys()) < len(known) / 2
        raise ConversionError(f"cannot convert state_dict to {arch} ({len(problems)} problems): "
                              + (_foreign(state, arch, known) if foreign else "; ".join(problems)))
    if replace_head:
        values |= fresh_head(model, seed)
    assign(model, values, what=f"the {arch} state_dict")
    return model


@functools.lru_cache(maxsize=None)
def _torch_keys(arch: str) -> frozenset[str]:
    """The state_dict keys of `arch`'s PyTorch twin at its default options."""
    return frozenset(e.torch_key for e in keymap(blank(arch, 1)).entries)


def _looks_like(state: dict, other_than: str) -> str | None:
    """The architecture `state` is a state_dict of: the one whose keys it has exactly, else the closest (more
    than half the keys shared) among those whose classifier key it holds; None when nothing fits."""
    keys, best, best_overlap = set(state), None, 0.5
    for name in names():
        if name == other_than or f"{architecture(name).head}.weight" not in keys:
            continue
        expected = _torch_keys(name)
        if expected == keys:
            return name
        overlap = len(expected & keys) / len(expected | keys)
        if overlap > best_overlap:
            best, best_overlap = name, overlap
    return best


def _foreign(state: dict, arch: str, known: set[str]) -> str:
    """Why `state` is not a state_dict of `arch`, and what it seems to be instead."""
    missing = len(known - state.keys())
    text = f"the state_dict does not look like a {arch} one: {missing} of {arch}'s {len(known)} keys are missing"
    guess = _looks_like(state, arch)
    return text + (f"; it looks like a {guess} state_dict: convert it as {guess}" if guess
                   else "; check the architecture, or that the file is this model's state_dict")


def to_torch(model: nnx.Module) -> dict:
    """The state_dict of `model`'s PyTorch twin (`convert.twins.torch_model`), loadable with `strict=True`; a model
    built with num_classes=0 has no head keys, as the twin whose head is `nn.Identity()`.

    `num_batches_tracked` is written as 0: jaxdl keeps no counter, and torchvision reads it only when
    BatchNorm's momentum is None, which no torchvision classifier uses.
    """
    import torch

    km = keymap(model)
    source = variables(model)
    out = {}
    for e in km.entries:
        if e.path is None:
            out[e.torch_key] = torch.tensor(0, dtype=torch.long)
        else:
            value = e.layout.to_torch(np.asarray(source[e.path].get_value()))
            out[e.torch_key] = torch.from_numpy(np.array(value, order="C"))  # a writable copy
    return out


__all__ = ["ConversionError", "from_torch", "to_torch"]
