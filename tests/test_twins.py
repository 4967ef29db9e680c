"""The small models' PyTorch twins: strict two-way conversion, the same logits and the same gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from convert import ConversionError, from_torch, to_torch
from convert.twins import torch_model
from jaxdl import weights
from jaxdl.models import create

CASES = [
    ("mlp", {"in_channels": 3, "image_size": 12, "hidden": (24, 16, 8), "activation_fn": "gelu"}),
    ("cnn", {"in_channels": 1, "image_size": 28, "units": 32, "activation_fn": "tanh"}),
    ("lenet5", {"image_size": 36}),
]


@pytest.mark.parametrize("arch,options", CASES)
def test_twin_computes_the_same_function_and_gradients(arch: str, options: dict) -> None:
    torch.manual_seed(0)
    twin = torch_model(arch, 10, **options).double()
    model = from_torch(twin.state_dict(), arch, **options)
    size, channels = options["image_size"], options.get("in_channels", 3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, size, size, channels)), rng.integers(0, 10, 6)
    loss = torch.nn.functional.cross_entropy(twin(torch.tensor(x).permute(0, 3, 1, 2)), torch.tensor(y))
    loss.backward()
    with jax.enable_x64(True):
        graph, params = nnx.split(model)
        params = jax.tree.map(lambda v: v.astype(jnp.float64), params)

        def jax_loss(p):
            logits = nnx.merge(graph, p)(jnp.asarray(x))
            return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean()

        value, grads = jax.value_and_grad(jax_loss)(params)
        grad_model = nnx.merge(graph, grads)
        got = to_torch(grad_model)  # the gradients, laid out as the twin's parameters
    np.testing.assert_allclose(float(value), loss.item(), rtol=1e-12)
    for name, p in twin.named_parameters():
        np.testing.assert_allclose(got[name].numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("arch,options", CASES)
def test_twin_round_trip_is_exact_and_strict(arch: str, options: dict) -> None:
    model = create(arch, 10, rngs=nnx.Rngs(1), **options)
    twin = torch_model(arch, 10, **options)
    twin.load_state_dict(to_torch(model), strict=True)
    again = from_torch(twin.state_dict(), arch, **options)
    for path, v in weights.variables(model).items():
        np.testing.assert_array_equal(weights.variables(again)[path].get_value(), v.get_value())
    with pytest.raises(ConversionError, match="shape"):
        from_torch(twin.state_dict(), arch, **(options | {"image_size": options["image_size"] + 8}))
