"""The model zoo: `create(name, num_classes, rngs=...)` builds any of `names()`.

Models take NHWC float images and return logits. `model.train()` / `model.eval()` switch BatchNorm and dropout
as in torchvision. Construction never downloads anything; pretrained weights come through `convert`.

`REGISTRY` holds one record per architecture: its builder, family, classifier layer, input constraints,
PyTorch twin and default options. Everything else that needs to know an architecture asks it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from flax import nnx

from jaxdl.models import alexnet, resnet, small, vgg
from jaxdl.models.alexnet import AlexNet
from jaxdl.models.ops import DEFAULT, XLA, ConvPolicy
from jaxdl.models.resnet import ResNet
from jaxdl.models.small import CNN, MLP, LeNet5
from jaxdl.models.spec import ModelSpec
from jaxdl.models.vgg import VGG


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything jaxdl knows about one architecture, in one place.

    twin: where its PyTorch twin lives, "module:attribute" (torchvision's own model, or the course's small
        models written the PyTorch way in `convert.twins`); imported only by the converter and the tests.
    min_input_size: the smallest square input its layers accept (torchvision's AlexNet fails below 63x63, VGG
        below 32x32; the small models size their classifier from it).
    options: the keyword options `create` accepts beyond num_classes, with their defaults.
    """

    name: str
    family: str
    build: Callable[..., nnx.Module]
    head: str  # dotted path of the classifier layer, the one a new `num_classes` replaces when fine-tuning
    twin: str
    min_input_size: int = 1
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def torchvision(self) -> bool:
        return self.twin.startswith("torchvision.")


def _options(builder: Callable[..., Any]) -> Mapping[str, Any]:
    params = inspect.signature(builder.__init__ if isinstance(builder, type) else builder).parameters
    return MappingProxyType({k: p.default for k, p in params.items()
                             if k not in ("self", "name", "num_classes", "rngs", "conv") and p.default is not p.empty})


def _record(name: str, family: str, build: Callable[..., nnx.Module], head: str, twin: str,
            min_input_size: int = 1) -> Architecture:
    return Architecture(name, family, build, head, twin, min_input_size, _options(build))


REGISTRY: Mapping[str, Architecture] = MappingProxyType({a.name: a for a in [
    _record("mlp", "mlp", MLP, "fc", "convert.twins:MLP"),
    _record("cnn", "cnn", CNN, "fc2", "convert.twins:CNN", small.CNN_MIN_INPUT_SIZE),
    _record("lenet5", "lenet5", LeNet5, "fc3", "convert.twins:LeNet5", small.LENET5_MIN_INPUT_SIZE),
    _record("alexnet", "alexnet", alexnet.alexnet, "classifier.6", "torchvision.models:alexnet",
            alexnet.MIN_INPUT_SIZE),
    *(_record(name, "vgg", functools.partial(vgg.vgg, name), "classifier.6", f"torchvision.models:{name}",
              vgg.MIN_INPUT_SIZE) for depth in vgg.DEPTHS for name in (depth, f"{depth}_bn")),
    *(_record(name, "resnet", functools.partial(resnet.resnet, name), "fc", f"torchvision.models:{name}")
      for name in resnet.CONFIGS),
]})

# Architectures with a torchvision twin (and so ImageNet weights to convert).
TORCHVISION = tuple(name for name, a in REGISTRY.items() if a.torchvision)


def names() -> list[str]:
    return list(REGISTRY)


def architecture(name: str) -> Architecture:
    """The registry record of `name`, or one line naming the choices."""
    if name not in REGISTRY:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def check_name(name: str) -> None:
    architecture(name)


def check_num_classes(num_classes: int) -> None:
    """One line unless `num_classes` is a whole number >= 0 (0: the backbone, see `create`)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
        raise ValueError(f"num_classes must be a whole number >= 0, got {num_classes!r} (0 builds the backbone "
                         "without its classifier)")


def head(arch: str) -> str:
    """Dotted path of the classifier layer, the one a new `num_classes` replaces when fine-tuning."""
    return architecture(arch).head


def create(name: str, num_classes: int = 10, *, conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs | None = None,
           **options) -> nnx.Module:
    """Build `name` with fresh weights (torchvision's initialisation scheme), in training mode.

    `num_classes=0` builds the backbone without its classifier layer (`REGISTRY[name].head` is left out, as
    timm's `num_classes=0` and torchvision's `model.fc = nn.Identity()` do): the model returns the pooled
    penultimate features, the input of that layer (512 or 2048 for ResNets, 4096 for VGG and AlexNet, the last
    hidden layer for the small models), and every other parameter keeps its path and initial value.
    `conv` chooses how convolutions run (see `ConvPolicy`), never what they compute; `options` are the
    architecture's own (`REGISTRY[name].options`, e.g. image_size for the small models).
    """
    arch = architecture(name)
    check_num_classes(num_classes)
    unknown = [k for k in options if k not in arch.options]
    if unknown:
        raise TypeError(f"{name} takes no option {', '.join(unknown)} (it takes: {', '.join(arch.options) or 'none'})")
    return arch.build(num_classes=int(num_classes), conv=conv, rngs=rngs if rngs is not None else nnx.Rngs(0),
                      **options)


def spec(model: nnx.Module) -> ModelSpec:
    """The model's `ModelSpec`, or one line saying it is not one of the zoo's models."""
    found = getattr(model, "spec", None)
    if not isinstance(found, ModelSpec):
        raise ValueError(f"a {type(model).__name__} is not a jaxdl.models architecture: it has no spec to save or "
                         "convert it by")
    return found


def with_conv(model: nnx.Module, conv: ConvPolicy) -> nnx.Module:
    """A copy of `model` (same weights, same mode) whose convolutions run under `conv`."""
    model = nnx.clone(model)
    for _, module in nnx.iter_graph(model):
        if isinstance(module, nnx.Conv):
            module.conv_general_dilated = conv
    return model


__all__ = ["AlexNet", "Architecture", "CNN", "ConvPolicy", "DEFAULT", "LeNet5", "MLP", "ModelSpec", "REGISTRY",
           "ResNet", "TORCHVISION", "VGG", "XLA", "architecture", "check_name", "check_num_classes", "create", "head",
           "names", "spec", "with_conv"]
