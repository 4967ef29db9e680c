"""The course's small models: the dense MLP, the small MNIST CNN and LeNet-5 (no torchvision twins).

They take NHWC images like the rest of the zoo and flatten themselves, so one input pipeline serves every
model. Their sizes depend on the input, so they are told `image_size` and `in_channels` up front.
With num_classes=0 their last Linear is left out (an identity), and they return its input: the features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax.numpy as jnp
from flax import nnx

from jaxdl.models.layers import Array, Sequential, conv2d, flatten, linear, max_pool2d
from jaxdl.models.ops import DEFAULT, ConvPolicy
from jaxdl.models.spec import ModelSpec

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nnx.relu,
    "tanh": jnp.tanh,
    "sigmoid": nnx.sigmoid,
    "gelu": nnx.gelu,
    "elu": nnx.elu,
}


def activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nnx.Module):
    """Dense network; softmax lives in the loss (cross-entropy on logits), as in PyTorch."""

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, image_size: int = 28,
                 hidden: Sequence[int] = (256, 128), activation_fn: str = "relu", conv: ConvPolicy = DEFAULT,
                 rngs: nnx.Rngs):
        check_input_size("MLP", image_size, 1)
        self.spec = ModelSpec.of("mlp", num_classes, in_channels=in_channels, image_size=image_size,
                                 hidden=tuple(hidden), activation_fn=activation_fn)
        widths = [image_size * image_size * in_channels, *hidden]
        act = activation(activation_fn)
        layers: list = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [linear(fan_in, fan_out, rngs=rngs), act]
        self.hidden = Sequential(layers)
        self.fc = linear(widths[-1], num_classes, rngs=rngs) if num_classes else nnx.identity

    def __call__(self, x: Array) -> Array:
        return self.fc(self.hidden(flatten(x)))


# The smallest square inputs whose last feature map keeps at least one pixel (the small models size fc1 from it).
CNN_MIN_INPUT_SIZE, LENET5_MIN_INPUT_SIZE = 10, 16


def check_input_size(name: str, image_size: int, minimum: int) -> None:
    if image_size < minimum:
        raise ValueError(f"{name} needs inputs of at least {minimum}x{minimum} pixels, got image_size={image_size}")


def cnn_feature_shape(image_size: int) -> tuple[int, int, int]:
    """(C, H, W) of the CNN's last feature map, the input of fc1 (PyTorch flattens it in this order)."""
    side = ((image_size - 2) // 2 - 2) // 2
    return 64, side, side


def lenet5_feature_shape(image_size: int) -> tuple[int, int, int]:
    side = ((image_size - 4) // 2 - 4) // 2
    return 16, side, side


class CNN(nnx.Module):
    """The seeds' MNIST CNN: conv32-pool-conv64-pool-dense(units)-out, 3x3 valid convs, 2x2 max pools."""

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, image_size: int = 28, units: int = 128,
                 activation_fn: str = "relu", conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs):
        check_input_size("CNN", image_size, CNN_MIN_INPUT_SIZE)
        self.spec = ModelSpec.of("cnn", num_classes, in_channels=in_channels, image_size=image_size, units=units,
                                 activation_fn=activation_fn)
        self.conv1 = conv2d(in_channels, 32, 3, conv=conv, rngs=rngs)
        self.conv2 = conv2d(32, 64, 3, conv=conv, rngs=rngs)
        self.pool = max_pool2d(2)
        self.act = activation(activation_fn)
        self.fc1 = linear(math.prod(cnn_feature_shape(image_size)), units, rngs=rngs)
        self.fc2 = linear(units, num_classes, rngs=rngs) if num_classes else nnx.identity

    def __call__(self, x: Array) -> Array:
        x = self.pool(nnx.relu(self.conv1(x)))
        x = self.pool(nnx.relu(self.conv2(x)))
        return self.fc2(self.act(self.fc1(flatten(x))))


class LeNet5(nnx.Module):
    """LeNet-5 in its modern form (ReLU, max pooling); at 32x32 the last conv map is LeCun's 5x5x16."""

    def __init__(self, num_classes: int = 10, *, in_channels: int = 3, image_size: int = 32,
                 conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs):
        check_input_size("LeNet-5", image_size, LENET5_MIN_INPUT_SIZE)
        self.spec = ModelSpec.of("lenet5", num_classes, in_channels=in_channels, image_size=image_size)
        self.conv1 = conv2d(in_channels, 6, 5, conv=conv, rngs=rngs)
        self.conv2 = conv2d(6, 16, 5, conv=conv, rngs=rngs)
        self.pool = max_pool2d(2)
        self.fc1 = linear(math.prod(lenet5_feature_shape(image_size)), 120, rngs=rngs)
        self.fc2 = linear(120, 84, rngs=rngs)
        self.fc3 = linear(84, num_classes, rngs=rngs) if num_classes else nnx.identity

    def __call__(self, x: Array) -> Array:
        x = self.pool(nnx.relu(self.conv1(x)))
        x = self.pool(nnx.relu(self.conv2(x)))
        x = nnx.relu(self.fc1(flatten(x)))
        return self.fc3(nnx.relu(self.fc2(x)))
