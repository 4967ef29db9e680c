"""Feature extraction: `create(arch, num_classes=0)` is the backbone, whose output is the pooled penultimate
feature vector, as timm's `num_classes=0` and torchvision's `model.fc = nn.Identity()` /
`model.classifier[6] = nn.Identity()`. Same weights, same features; strict conversions both ways; files."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

import convert
from convert.keymaps import keymap
from convert.twins import torch_model
from jaxdl import models, weights

# One model per family: (input side, channels, number of features).
FAMILIES = {
    "resnet18": (32, 3, 512),
    "vgg11_bn": (32, 3, 4096),
    "alexnet": (64, 3, 4096),
    "lenet5": (32, 3, 84),
    "mlp": (28, 1, 128),
    "cnn": (28, 1, 128),
}


def flat(model: nnx.Module) -> dict[str, np.ndarray]:
    return {weights.key(p): np.asarray(v.get_value()) for p, v in weights.variables(model).items()}


def randomise_batchnorm(module: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affines, so eval mode tests more than an identity."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("arch", list(FAMILIES))
@torch.no_grad()
def test_features_equal_the_twin_with_identity_head(arch: str) -> None:
    side, channels, features = FAMILIES[arch]
    torch.manual_seed(0)
    twin = torch_model(arch, 10)
    randomise_batchnorm(twin)
    state = twin.state_dict()  # with its 10-way head: num_classes=0 drops it and keeps the backbone
    model = convert.from_torch(state, arch, num_classes=0)
    head = models.head(arch)
    assert models.spec(model).num_classes == 0
    assert not any(k.startswith(f"{head}.") for k in map(weights.key, weights.variables(model)))

    twin.set_submodule(head, nn.Identity())
    twin.eval()
    model.eval()
    x = np.random.default_rng(0).normal(size=(2, side, side, channels)).astype(np.float32)
    expected = twin(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x)))  # one compile, not one per layer
    assert expected.shape == got.shape == (2, features)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)

    # Strict round trip: into the twin whose head is nn.Identity(), giving back the backbone bit for bit (so
    # converting it again gives `model` again: from_torch is a function of the tensors it is given). VGG's costs
    # two more 25088x4096 relayouts (seconds): its keys are checked below and its layouts in test_convert.
    if arch == "vgg11_bn":
        return
    back = convert.to_torch(model)
    assert back.keys() == {k for k in state if not k.startswith(f"{head}.")}
    for k, v in back.items():  # before loading: `state` holds the twin's own tensors
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k
    twin.load_state_dict(back, strict=True)


@pytest.mark.parametrize("arch", [*FAMILIES, "vgg11", "resnet50"])  # the deeper members repeat these layers
def test_backbone_keys_are_the_identity_twins(arch: str) -> None:
    """The backbone's state_dict keys and shapes are those of its twin with an Identity head."""
    with torch.device("meta"):
        twin = torch_model(arch, 0)
    assert isinstance(twin.get_submodule(models.head(arch)), nn.Identity)
    blank = weights.blank(arch, 0)
    targets = weights.variables(blank)
    ours = {e.torch_key: e.layout.torch_shape(targets[e.path].shape) if e.path else () for e in keymap(blank).entries}
    assert ours == {k: tuple(v.shape) for k, v in twin.state_dict().items()}


def test_headless_state_dict_needs_num_classes_and_can_take_a_fresh_head() -> None:
    torch.manual_seed(0)
    state = torch_model("lenet5", 0).state_dict()
    with pytest.raises(convert.ConversionError, match=r"no fc3.weight .*give num_classes \(0 for the backbone"):
        convert.from_torch(state, "lenet5")
    model = convert.from_torch(state, "lenet5", num_classes=7)
    assert model.fc3.kernel.shape == (84, 7)
    np.testing.assert_array_equal(np.asarray(model.fc2.kernel[...]), state["fc2.weight"].numpy().T)


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_save_and_load_a_backbone(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = convert.from_torch(torch_model("lenet5", 0).state_dict(), "lenet5", num_classes=0)
    original = flat(model)
    file = tmp_path / "backbone.safetensors"
    weights.save(model, file)
    assert weights.metadata(file)["num_classes"] == "0"
    loaded = weights.load(file)
    assert models.spec(loaded) == models.spec(model) and models.spec(loaded).num_classes == 0
    assert_same(flat(loaded), original)
    x = jnp.ones((2, 32, 32, 3))
    loaded.eval()
    model.eval()
    forward = nnx.jit(lambda m, x: m(x))
    assert forward(loaded, x).shape == (2, 84)
    np.testing.assert_array_equal(np.asarray(forward(loaded, x)), np.asarray(forward(model, x)))

    headed = weights.load(file, num_classes=5)  # a fresh head on the saved backbone
    assert headed.fc3.kernel.shape == (84, 5)
    assert_same({k: v for k, v in flat(headed).items() if not k.startswith("fc3.")}, original)

    full = tmp_path / "full.safetensors"
    weights.save(headed, full)
    assert_same(flat(weights.load(full, num_classes=0)), original)  # and the head dropped again
    with pytest.raises(ValueError, match=r"^num_classes must be a whole number >= 0, got -1 \(0 builds the backbone "
                       r"without its classifier\)$"):  # one line: checked before eval_shape, whose traces add lines
        weights.load(full, num_classes=-1)


@pytest.mark.parametrize("bad", [-1, -10, 2.5, True])
def test_bad_num_classes_is_one_line(bad) -> None:
    with pytest.raises(ValueError, match=r"^num_classes must be a whole number >= 0, got ") as err:
        models.create("mlp", bad)
    assert "\n" not in str(err.value)
