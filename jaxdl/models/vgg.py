"""VGG-11/13/16/19 with and without BatchNorm, index for index as torchvision's `features` and `classifier`."""

from __future__ import annotations

from flax import nnx

from jaxdl.models.layers import (
    Array,
    BatchNorm2d,
    Sequential,
    adaptive_avg_pool2d,
    conv2d,
    flatten,
    kaiming_fan_out,
    linear,
    max_pool2d,
)
from jaxdl.models.ops import DEFAULT, ConvPolicy
from jaxdl.models.spec import ModelSpec

# torchvision's configurations: channel counts, "M" for a 2x2 max pool.
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
DEPTHS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
FEATURE_SHAPE = (512, 7, 7)  # (C, H, W) entering the classifier, after the adaptive pool
MIN_INPUT_SIZE = 32  # five 2x2 max pools: smaller maps collapse to zero size, as in torchvision

linear_init = nnx.initializers.normal(0.01)


def name_of(cfg: list[int | str], batch_norm: bool) -> str:
    """The registry name of a configuration; other configurations are not torchvision's."""
    for depth, key in DEPTHS.items():
        if CFGS[key] == list(cfg):
            return f"{depth}_bn" if batch_norm else depth
    raise ValueError(f"VGG configuration {cfg} is none of torchvision's ({', '.join(DEPTHS)})")


def make_features(cfg: list[int | str], batch_norm: bool, *, conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs) -> Sequential:
    layers = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(max_pool2d(2, 2))
            continue
        layers.append(conv2d(in_channels, v, 3, 1, 1, kernel_init=kaiming_fan_out, conv=conv, rngs=rngs))
        if batch_norm:
            layers.append(BatchNorm2d(v))
        layers.append(nnx.relu)
        in_channels = v
    return Sequential(layers)


class VGG(nnx.Module):
    def __init__(self, cfg: list[int | str], batch_norm: bool, num_classes: int = 1000, dropout: float = 0.5, *,
                 conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs):
        self.spec = ModelSpec.of(name_of(cfg, batch_norm), num_classes, **({} if dropout == 0.5 else {"dropout": dropout}))
        self.features = make_features(cfg, batch_norm, conv=conv, rngs=rngs)
        zeros = nnx.initializers.zeros
        c, h, w = FEATURE_SHAPE
        self.classifier = Sequential([
            linear(c * h * w, 4096, kernel_init=linear_init, bias_init=zeros, rngs=rngs),
            nnx.relu,
            nnx.Dropout(dropout, rngs=rngs),
            linear(4096, 4096, kernel_init=linear_init, bias_init=zeros, rngs=rngs),
            nnx.relu,
            nnx.Dropout(dropout, rngs=rngs),
            # num_classes=0: the 4096 features, as torchvision's with `classifier[6] = nn.Identity()`
            (linear(4096, num_classes, kernel_init=linear_init, bias_init=zeros, rngs=rngs) if num_classes
             else nnx.identity),
        ])

    def __call__(self, x: Array) -> Array:
        if min(x.shape[1:3]) < MIN_INPUT_SIZE:
            raise ValueError(f"VGG needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels, got "
                             f"{x.shape[1]}x{x.shape[2]}: resize the images (e.g. --image-size 32)")
        x = adaptive_avg_pool2d(self.features(x), FEATURE_SHAPE[1:])
        return self.classifier(flatten(x))


def vgg(name: str, num_classes: int = 1000, dropout: float = 0.5, *, conv: ConvPolicy = DEFAULT,
        rngs: nnx.Rngs) -> VGG:
    depth, _, bn = name.partition("_")
    return VGG(CFGS[DEPTHS[depth]], bn == "bn", num_classes, dropout, conv=conv, rngs=rngs)
