"""Explicit parameter maps from PyTorch state_dict keys to jaxdl parameter paths, one per family.

The torchvision architectures map to torchvision's own modules; the course's small models map to their
PyTorch twins in `convert.twins`.

Each map is generated from the same architecture tables the models are built from (block counts, VGG configs),
never from state_dict order or name guessing, so a key that does not belong is an error, not a silent skip.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxdl.models import check_name, head
from jaxdl.models import alexnet as alexnet_lib
from jaxdl.models import resnet as resnet_lib
from jaxdl.models import small as small_lib
from jaxdl.models import vgg as vgg_lib

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


def _path(prefix: str, name: str) -> Path:
    return tuple(int(p) if p.isdigit() else p for p in prefix.split(".")) + (name,)


def conv(prefix: str, bias: bool) -> list[Entry]:
    entries = [Entry(f"{prefix}.weight", _path(prefix, "kernel"), CONV)]
    return entries + ([Entry(f"{prefix}.bias", _path(prefix, "bias"))] if bias else [])


def batchnorm(prefix: str) -> list[Entry]:
    names = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
    return [Entry(f"{prefix}.{t}", _path(prefix, f)) for t, f in names.items()] + [
        Entry(f"{prefix}.num_batches_tracked", None)
    ]


def linear(prefix: str, layout: Layout = LINEAR) -> list[Entry]:
    return [Entry(f"{prefix}.weight", _path(prefix, "kernel"), layout), Entry(f"{prefix}.bias", _path(prefix, "bias"))]


def resnet(name: str) -> KeyMap:
    block, layers = resnet_lib.CONFIGS[name]
    convs = 2 if block is resnet_lib.BasicBlock else 3
    entries = conv("conv1", bias=False) + batchnorm("bn1")
    inplanes = 64
    for stage, (planes, blocks, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 2)), start=1):
        for b in range(blocks):
            prefix = f"layer{stage}.{b}"
            for k in range(1, convs + 1):
                entries += conv(f"{prefix}.conv{k}", bias=False) + batchnorm(f"{prefix}.bn{k}")
            if b == 0 and resnet_lib.needs_downsample(block, inplanes, planes, stride):
                entries += conv(f"{prefix}.downsample.0", bias=False) + batchnorm(f"{prefix}.downsample.1")
            inplanes = planes * block.expansion
    return KeyMap(tuple(entries + linear("fc")), head=head(name))


def vgg(name: str) -> KeyMap:
    depth, _, bn = name.partition("_")
    entries: list[Entry] = []
    index = 0
    for v in vgg_lib.CFGS[vgg_lib.DEPTHS[depth]]:
        if v == "M":
            index += 1
            continue
        entries += conv(f"features.{index}", bias=True)
        if bn:
            entries += batchnorm(f"features.{index + 1}")
        index += 3 if bn else 2  # conv, [bn], relu
    entries += linear("classifier.0", linear_from_chw(*vgg_lib.FEATURE_SHAPE))
    entries += linear("classifier.3") + linear("classifier.6")
    return KeyMap(tuple(entries), head=head(name))


def alexnet(name: str) -> KeyMap:
    entries: list[Entry] = []
    for index in (0, 3, 6, 8, 10):
        entries += conv(f"features.{index}", bias=True)
    entries += linear("classifier.1", linear_from_chw(*alexnet_lib.FEATURE_SHAPE))
    entries += linear("classifier.4") + linear("classifier.6")
    return KeyMap(tuple(entries), head=head(name))


def _options(arch: str, options: dict[str, Any]) -> dict[str, Any]:
    """The small models' constructor options, defaults filled in: their layer sizes depend on them."""
    cls = {"mlp": small_lib.MLP, "cnn": small_lib.CNN, "lenet5": small_lib.LeNet5}[arch]
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not p.empty}
    return defaults | dict(options)


def mlp(name: str, options: dict[str, Any]) -> KeyMap:
    o = _options(name, options)
    entries = linear("hidden.0", linear_from_chw(o["in_channels"], o["image_size"], o["image_size"]))
    for i in range(1, len(o["hidden"])):
        entries += linear(f"hidden.{2 * i}")  # Linear, activation, Linear, ...
    return KeyMap(tuple(entries + linear("fc")), head=head(name))


def cnn(name: str, options: dict[str, Any]) -> KeyMap:
    shape = small_lib.cnn_feature_shape(_options(name, options)["image_size"])
    entries = conv("conv1", bias=True) + conv("conv2", bias=True) + linear("fc1", linear_from_chw(*shape)) + linear("fc2")
    return KeyMap(tuple(entries), head=head(name))


def lenet5(name: str, options: dict[str, Any]) -> KeyMap:
    shape = small_lib.lenet5_feature_shape(_options(name, options)["image_size"])
    entries = conv("conv1", bias=True) + conv("conv2", bias=True) + linear("fc1", linear_from_chw(*shape))
    return KeyMap(tuple(entries + linear("fc2") + linear("fc3")), head=head(name))


def keymap(arch: str, options: dict[str, Any] | None = None) -> KeyMap:
    """The map for `arch`; the small models' maps also depend on their options (`image_size`, `hidden`, ...)."""
    check_name(arch)
    if arch in ("mlp", "cnn", "lenet5"):
        return {"mlp": mlp, "cnn": cnn, "lenet5": lenet5}[arch](arch, options or {})
    family = resnet if arch.startswith("resnet") else vgg if arch.startswith("vgg") else alexnet
    return family(arch)
