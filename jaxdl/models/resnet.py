"""ResNet-18/34/50/101/152, laid out exactly as torchvision's `models/resnet.py` (v1.5: the Bottleneck strides
on its 3x3 conv), so every parameter has the same name and place as in the torchvision state_dict."""

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


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, *, conv: ConvPolicy, rngs: nnx.Rngs) -> nnx.Conv:
    return conv2d(in_planes, out_planes, 3, stride, 1, bias=False, kernel_init=kaiming_fan_out, conv=conv, rngs=rngs)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, *, conv: ConvPolicy, rngs: nnx.Rngs) -> nnx.Conv:
    return conv2d(in_planes, out_planes, 1, stride, 0, bias=False, kernel_init=kaiming_fan_out, conv=conv, rngs=rngs)


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Sequential | None = None, *,
                 conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs):
        self.conv1 = conv3x3(inplanes, planes, stride, conv=conv, rngs=rngs)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, conv=conv, rngs=rngs)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample

    def __call__(self, x: Array) -> Array:
        identity = x if self.downsample is None else self.downsample(x)
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return nnx.relu(out + identity)


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Sequential | None = None, *,
                 conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs):
        self.conv1 = conv1x1(inplanes, planes, conv=conv, rngs=rngs)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, conv=conv, rngs=rngs)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion, conv=conv, rngs=rngs)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def __call__(self, x: Array) -> Array:
        identity = x if self.downsample is None else self.downsample(x)
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return nnx.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]

# name -> (block, blocks per stage), as in torchvision.
CONFIGS: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def name_of(block: Block, layers: tuple[int, ...]) -> str:
    """The registry name of a (block, layers) configuration; other configurations are not torchvision's."""
    for name, config in CONFIGS.items():
        if config == (block, tuple(layers)):
            return name
    raise ValueError(f"ResNet({block.__name__}, {list(layers)}) is none of torchvision's: {', '.join(CONFIGS)}")


def needs_downsample(block: Block, inplanes: int, planes: int, stride: int) -> bool:
    """torchvision's rule for a projection shortcut; the converter's key map uses it too."""
    return stride != 1 or inplanes != planes * block.expansion


class ResNet(nnx.Module):
    def __init__(self, block: Block, layers: tuple[int, int, int, int], num_classes: int = 1000, *,
                 conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs):
        self.spec = ModelSpec.of(name_of(block, layers), num_classes)
        self.inplanes = 64
        self.conv1 = conv2d(3, 64, 7, 2, 3, bias=False, kernel_init=kaiming_fan_out, conv=conv, rngs=rngs)
        self.bn1 = BatchNorm2d(64)
        self.maxpool = max_pool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, conv, rngs)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, conv, rngs)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, conv, rngs)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, conv, rngs)
        # num_classes=0: the backbone, its output the pooled features (torchvision's `model.fc = nn.Identity()`)
        self.fc = linear(512 * block.expansion, num_classes, rngs=rngs) if num_classes else nnx.identity

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int, conv: ConvPolicy,
                    rngs: nnx.Rngs) -> Sequential:
        downsample = None
        if needs_downsample(block, self.inplanes, planes, stride):
            downsample = Sequential([
                conv1x1(self.inplanes, planes * block.expansion, stride, conv=conv, rngs=rngs),
                BatchNorm2d(planes * block.expansion),
            ])
        layers = [block(self.inplanes, planes, stride, downsample, conv=conv, rngs=rngs)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, conv=conv, rngs=rngs) for _ in range(1, blocks)]
        return Sequential(layers)

    def __call__(self, x: Array) -> Array:
        x = self.maxpool(nnx.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = adaptive_avg_pool2d(x, (1, 1))
        return self.fc(flatten(x))


def resnet(name: str, num_classes: int = 1000, *, conv: ConvPolicy = DEFAULT, rngs: nnx.Rngs) -> ResNet:
    block, layers = CONFIGS[name]
    return ResNet(block, layers, num_classes, conv=conv, rngs=rngs)
