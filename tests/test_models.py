"""The zoo's registry and specs, and the PyTorch-semantics layers (the models against their PyTorch twins:
tests/test_twins.py and tests/test_equivalence.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxdl import models
from jaxdl.models.layers import BatchNorm2d, adaptive_avg_pool2d
from jaxdl.weights import blank


def n_params(model: nnx.Module) -> int:
    return sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))


def test_registry_names_and_errors() -> None:
    assert set(models.TORCHVISION) < set(models.names())
    assert {"mlp", "cnn", "lenet5", "alexnet", "vgg16_bn", "resnet152"} <= set(models.names())
    with pytest.raises(ValueError, match="unknown architecture 'resnet19': choose one of .*resnet18"):
        models.create("resnet19")
    with pytest.raises(TypeError, match="resnet18 takes no option in_channels"):
        models.create("resnet18", in_channels=1)


@pytest.mark.parametrize("in_size,out_size", [(1, 7), (5, 7), (10, 6), (7, 7), (13, 3), (9, 1)])
def test_adaptive_avg_pool_matches_torch(in_size: int, out_size: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 4, in_size, in_size + 3), dtype=np.float32)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (out_size, out_size)).numpy()
    got = adaptive_avg_pool2d(jnp.asarray(x.transpose(0, 2, 3, 1)), (out_size, out_size))
    np.testing.assert_allclose(np.asarray(got), want.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 3, 3, 8), (2, 1, 1, 8)])
def test_batchnorm_stores_unbiased_variance_like_torch(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32) * 3 + 1
    bn, tbn = BatchNorm2d(8), torch.nn.BatchNorm2d(8)
    y = bn(jnp.asarray(x))
    ty = tbn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(y), ty, atol=2e-6)
    np.testing.assert_allclose(np.asarray(bn.var[...]), tbn.running_var.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.mean[...]), tbn.running_mean.numpy(), atol=1e-7)


def test_batchnorm_refuses_one_value_per_channel() -> None:
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm2d(4)(jnp.ones((1, 1, 1, 4)))


def test_train_eval_switch_batchnorm_and_dropout() -> None:
    model = blank("vgg11_bn", 10)  # structure only: initialising 129M weights is not what is tested
    assert not model.features[1].use_running_average and not model.classifier[2].deterministic
    model.eval()
    assert model.features[1].use_running_average and model.classifier[2].deterministic
    model.train()
    assert not model.features[1].use_running_average


def test_alexnet_names_its_minimum_input_size() -> None:
    with pytest.raises(ValueError, match="at least 63x63 pixels, got 32x32"):
        blank("alexnet", 10)(jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("arch", models.names())
def test_every_model_knows_its_spec_however_built(arch: str) -> None:
    """`create` and the classes record the same spec, options with their defaults, so any model can be saved."""
    record = models.architecture(arch)
    model = blank(arch, 7)
    assert models.spec(model) == models.ModelSpec.of(arch, 7, **({} if record.torchvision else dict(record.options)))
    direct = {"mlp": lambda: models.MLP(7, rngs=nnx.Rngs(0)), "cnn": lambda: models.CNN(7, rngs=nnx.Rngs(0)),
              "lenet5": lambda: models.LeNet5(7, rngs=nnx.Rngs(0))}.get(arch)
    if direct is not None:
        assert models.spec(direct()) == models.spec(model)


def test_registry_records_what_other_modules_ask() -> None:
    assert models.architecture("alexnet").min_input_size == 63
    assert models.head("resnet50") == "fc" and models.head("vgg11") == "classifier.6" and models.head("lenet5") == "fc3"
    assert models.TORCHVISION == tuple(n for n in models.names() if n not in ("mlp", "cnn", "lenet5"))
    assert dict(models.architecture("lenet5").options) == {"in_channels": 3, "image_size": 32}
    with pytest.raises(ValueError, match="not a jaxdl.models architecture"):
        models.spec(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))


def test_mlp_options() -> None:
    model = models.create("mlp", 10, hidden=(64, 32, 16), activation_fn="tanh", image_size=8)
    assert n_params(model) == 64 * 64 + 64 + 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        models.create("mlp", activation_fn="swish")
