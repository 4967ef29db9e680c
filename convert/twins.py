"""PyTorch twins of every jaxdl model: torchvision's own for its architectures, and the course's small models
written as a PyTorch course writes them (NCHW, flattened in (C, H, W) order), so that `to_torch(model)` loads
into `torch_model(...)` with `strict=True` and both compute the same function. With num_classes=0 the head is
`nn.Identity()`, as jaxdl's backbone leaves it out.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from jaxdl.models import architecture, small

# jax.nn.gelu's default is the tanh approximation; PyTorch's is exact.
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": lambda: nn.GELU("tanh"), "elu": nn.ELU}


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, image_size: int = 28,
                 hidden: Sequence[int] = (256, 128), activation_fn: str = "relu"):
        super().__init__()
        widths = [image_size * image_size * in_channels, *hidden]
        self.hidden = nn.Sequential(*[m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), ACTIVATIONS[activation_fn]())])
        self.fc = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(x.flatten(1)))


class CNN(nn.Module):
    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, image_size: int = 28, units: int = 128,
                 activation_fn: str = "relu"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.act = ACTIVATIONS[activation_fn]()
        self.fc1 = nn.Linear(math.prod(small.cnn_feature_shape(image_size)), units)
        self.fc2 = nn.Linear(units, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(self.act(self.fc1(x.flatten(1))))


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, *, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(math.prod(small.lenet5_feature_shape(image_size)), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


def torch_model(arch: str, num_classes: int = 10, **options) -> nn.Module:
    """A freshly initialised PyTorch twin of `jaxdl.models.create(arch, num_classes, **options)`, the one its
    registry record names. num_classes=0: the backbone, its head replaced by `nn.Identity()` as torchvision users
    do (`model.fc = nn.Identity()`, `model.classifier[6] = nn.Identity()`)."""
    record = architecture(arch)
    module, _, name = record.twin.partition(":")
    model = getattr(importlib.import_module(module), name)(num_classes=num_classes or 1, **options)
    if num_classes == 0:
        model.set_submodule(record.head, nn.Identity())
    return model
