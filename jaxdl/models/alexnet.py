"""AlexNet, index for index as torchvision's (the one-GPU variant torchvision ships)."""

from __future__ import annotations

from flax import nnx

from jaxdl.models.layers import Array, Sequential, adaptive_avg_pool2d, conv2d, flatten, linear, max_pool2d
from jaxdl.models.ops import DEFAULT, ConvPolicy
from jaxdl.models.spec import ModelSpec

FEATURE_SHAPE = (256, 6, 6)  # (C, H, W) entering the classifier, after the adaptive pool
MIN_INPUT_SIZE = 63  # below this torchvision's feature maps collapse to zero size


class AlexNet(nnx.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, *, conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs):
        self.spec = ModelSpec.of("alexnet", num_classes, **({} if dropout == 0.5 else {"dropout": dropout}))
        self.features = Sequential([
            conv2d(3, 64, 11, 4, 2, conv=conv, rngs=rngs), nnx.relu, max_pool2d(3, 2),
            conv2d(64, 192, 5, 1, 2, conv=conv, rngs=rngs), nnx.relu, max_pool2d(3, 2),
            conv2d(192, 384, 3, 1, 1, conv=conv, rngs=rngs), nnx.relu,
            conv2d(384, 256, 3, 1, 1, conv=conv, rngs=rngs), nnx.relu,
            conv2d(256, 256, 3, 1, 1, conv=conv, rngs=rngs), nnx.relu, max_pool2d(3, 2),
        ])
        c, h, w = FEATURE_SHAPE
        self.classifier = Sequential([
            nnx.Dropout(dropout, rngs=rngs),
            linear(c * h * w, 4096, rngs=rngs),
            nnx.relu,
            nnx.Dropout(dropout, rngs=rngs),
            linear(4096, 4096, rngs=rngs),
            nnx.relu,
            # num_classes=0: the 4096 features, as torchvision's with `classifier[6] = nn.Identity()`
            linear(4096, num_classes, rngs=rngs) if num_classes else nnx.identity,
        ])

    def __call__(self, x: Array) -> Array:
        if min(x.shape[1:3]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"AlexNet needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels, got "
                f"{x.shape[1]}x{x.shape[2]}: resize the images (e.g. --image-size 64)"
            )
        x = adaptive_avg_pool2d(self.features(x), FEATURE_SHAPE[1:])
        return self.classifier(flatten(x))


def alexnet(name: str = "alexnet", num_classes: int = 1000, dropout: float = 0.5, *, conv: ConvPolicy = DEFAULT,
            rngs: nnx.Rngs) -> AlexNet:
    return AlexNet(num_classes, dropout, conv=conv, rngs=rngs)
