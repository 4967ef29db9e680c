"""The model zoo: `create(name, num_classes, rngs=...)` builds any of `names()`.

Models take NHWC float images and return logits. `model.train()` / `model.eval()` switch BatchNorm and dropout
as in torchvision. Construction never downloads anything; pretrained weights come through `convert`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

from flax import nnx

from jaxdl.models import alexnet, resnet, small, vgg
from jaxdl.models.alexnet import AlexNet
from jaxdl.models.resnet import ResNet
from jaxdl.models.small import CNN, MLP, LeNet5
from jaxdl.models.vgg import VGG

_BUILDERS: dict[str, Callable[..., nnx.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "lenet5": LeNet5,
    "alexnet": alexnet.alexnet,
    **{name: functools.partial(vgg.vgg, name) for depth in vgg.DEPTHS for name in (depth, f"{depth}_bn")},
    **{name: functools.partial(resnet.resnet, name) for name in resnet.CONFIGS},
}

# Architectures with a torchvision twin (and so ImageNet weights to convert).
TORCHVISION = tuple(name for name in _BUILDERS if name not in ("mlp", "cnn", "lenet5"))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What `create` was called with: enough to rebuild the model when loading saved weights."""

    arch: str
    num_classes: int
    options: tuple[tuple[str, Any], ...] = ()


def head(arch: str) -> str:
    """Dotted path of the classifier layer, the one a new `num_classes` replaces when fine-tuning."""
    check_name(arch)
    return {"mlp": "fc", "cnn": "fc2", "lenet5": "fc3"}.get(arch, "fc" if arch.startswith("resnet") else "classifier.6")


def names() -> list[str]:
    return list(_BUILDERS)


def check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(_BUILDERS)}")


def create(name: str, num_classes: int = 10, *, rngs: nnx.Rngs | None = None, **kwargs) -> nnx.Module:
    """Build `name` with fresh weights (torchvision's initialisation scheme), in training mode."""
    check_name(name)
    builder = _BUILDERS[name]
    accepted = inspect.signature(builder.__init__ if isinstance(builder, type) else builder).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        options = [k for k in accepted if k not in ("self", "name", "num_classes", "rngs")]
        raise TypeError(f"{name} takes no option {', '.join(unknown)} (it takes: {', '.join(options) or 'none'})")
    model = builder(num_classes=num_classes, rngs=rngs if rngs is not None else nnx.Rngs(0), **kwargs)
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    model.spec = ModelSpec(name, num_classes, options)
    return model


__all__ = ["AlexNet", "CNN", "LeNet5", "MLP", "ModelSpec", "ResNet", "TORCHVISION", "VGG", "check_name", "create", "head", "names"]
