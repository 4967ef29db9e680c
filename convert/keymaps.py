"""Parameter maps between PyTorch state_dict keys and jaxdl parameter paths, derived from the model itself.

jaxdl's models are laid out as their PyTorch twins (torchvision's for its architectures, `convert.twins` for the
course's small models), so a parameter's path already is its state_dict key: `layer1.0.conv1.kernel` is
`layer1.0.conv1.weight`. The map is derived by walking the model's layers, the layer type choosing the name
and layout of each tensor. Only the true exceptions are written down:

- the first Linear after a flatten: PyTorch flattens (C, H, W), jaxdl (H, W, C), so its rows are permuted
  (`FLATTENED`, per family);
- BatchNorm's `num_batches_tracked`, a PyTorch-only counter with no jaxdl counterpart.

A key that does not belong is an error, never a silent skip: every weight of the model must be mapped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

from jaxdl.models import alexnet, architecture, small, spec, vgg
from jaxdl.models.layers import BatchNorm2d
from jaxdl.weights import variables

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one tensor is laid out in PyTorch versus jaxdl (NCHW/OIHW versus NHWC/HWIO)."""

    name: str
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]
    torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


COPY = Layout("copy", lambda a: a, lambda a: a, lambda s: tuple(s))
CONV = Layout(
    "conv",
    lambda a: a.transpose(2, 3, 1, 0),
    lambda a: a.transpose(3, 2, 0, 1),
    lambda s: (s[3], s[2], s[0], s[1]),
)
LINEAR = Layout("linear", lambda a: a.T, lambda a: a.T, lambda s: (s[1], s[0]))


def linear_from_chw(c: int, h: int, w: int) -> Layout:
    """A Linear after a flatten: PyTorch flattens (C,H,W), jaxdl flattens (H,W,C), so its input rows are permuted."""

    def to_flax(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)

    def to_torch(a: np.ndarray) -> np.ndarray:
        return a.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)

    return Layout(f"linear_from_chw{(c, h, w)}", to_flax, to_torch, lambda s: (s[1], s[0]))


# The first Linear after a flatten, per family, and the (C, H, W) map it reads, from the model's options.
# ResNet's fc reads a 1x1 map, where both orders agree.
FLATTENED: dict[str, Callable[[dict[str, Any]], tuple[str, tuple[int, int, int]]]] = {
    "alexnet": lambda o: ("classifier.1", alexnet.FEATURE_SHAPE),
    "vgg": lambda o: ("classifier.0", vgg.FEATURE_SHAPE),
    "mlp": lambda o: ("hidden.0", (o["in_channels"], o["image_size"], o["image_size"])),
    "cnn": lambda o: ("fc1", small.cnn_feature_shape(o["image_size"])),
    "lenet5": lambda o: ("fc1", small.lenet5_feature_shape(o["image_size"])),
}

# Each layer type's tensors: (jaxdl variable name, PyTorch name, layout); None: PyTorch-only, dropped on purpose.
_CONV = (("kernel", "weight", CONV), ("bias", "bias", COPY))
_LINEAR = (("kernel", "weight", LINEAR), ("bias", "bias", COPY))
_BATCHNORM = (("scale", "weight", COPY), ("bias", "bias", COPY), ("mean", "running_mean", COPY),
              ("var", "running_var", COPY), (None, "num_batches_tracked", COPY))


@dataclasses.dataclass(frozen=True)
class Entry:
    torch_key: str
    path: Path | None  # None: a PyTorch-only buffer (num_batches_tracked), dropped on purpose
    layout: Layout = COPY


@dataclasses.dataclass(frozen=True)
class KeyMap:
    entries: tuple[Entry, ...]
    head: str  # prefix of the classifier layer that `num_classes` replaces

    def mapped(self) -> list[Entry]:
        return [e for e in self.entries if e.path is not None]


def _dotted(path: Path) -> str:
    return ".".join(map(str, path))


def keymap(model: nnx.Module) -> KeyMap:
    """The map of `model` (any zoo model, or its `weights.blank` structure)."""
    s = spec(model)
    arch = architecture(s.arch)
    flattened = FLATTENED.get(arch.family)
    flat_key, chw = flattened(dict(arch.options) | dict(s.options)) if flattened else (None, None)
    present = variables(model)
    entries: list[Entry] = []
    for path, module in nnx.iter_modules(model):
        kind = _CONV if isinstance(module, nnx.Conv) else _LINEAR if isinstance(module, nnx.Linear) else \
            _BATCHNORM if isinstance(module, BatchNorm2d) else ()
        prefix = _dotted(path)
        for name, torch_name, layout in kind:
            if name is None:
                entries.append(Entry(f"{prefix}.{torch_name}", None))
            elif (*path, name) in present:  # a conv without bias has no `bias`
                if prefix == flat_key and name == "kernel":
                    layout = linear_from_chw(*chw)
                entries.append(Entry(f"{prefix}.{torch_name}", (*path, name), layout))
    unmapped = set(present) - {e.path for e in entries}
    if unmapped:  # a layer type this map does not know: a bug in jaxdl, not in the user's file
        raise TypeError(f"{s.arch}: no PyTorch name for {', '.join(sorted(map(_dotted, unmapped)))}")
    return KeyMap(tuple(entries), head=arch.head)
