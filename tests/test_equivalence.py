"""Numerical equivalence with torchvision: every convertible architecture, two input sizes.

For each architecture a randomly initialised torchvision model (with randomised BatchNorm statistics, so eval
mode is not an identity) is converted, then both frameworks run the same inputs and the same optimizer:
eval logits, train-mode logits, BatchNorm running statistics, the gradient of a cross-entropy loss with
respect to every parameter, and every parameter and statistic after SGD with momentum and weight decay
(torch.optim.SGD against jaxdl's own training step and optimizer factory, the code every jaxdl training runs).
Dropout is disabled in both (its random masks cannot agree across frameworks). Eval logits are checked under the
default convolution policy (the CPU forms) and under XLA's convolutions only (the accelerator path).

Precision. Eval logits are compared in float32, within 1e-4 of the reference's scale (max |value|). The
training checks run both frameworks in float64 (the models are cast; inputs identical), and everything must
agree within 1e-6: logits and BatchNorm statistics relative to their scale, each gradient tensor in relative
L2 error (against the larger of its norm and 1e-2 of the whole gradient's, so gradients that are zero in exact
arithmetic, a conv bias before BatchNorm, are not judged as noise over noise). Float32 cannot carry this
check: in train mode at 32x32 BatchNorm normalises over as few as 8 values per channel (ResNet's 1x1 maps,
batch 8), and deep stacks of it amplify the two libraries' different summation orders to ~1e-3 in ResNet-152's
logits and ~4e-3 in VGG-16-BN's first-layer gradient -- the conditioning of the problem, not a difference
between the models, which in float64 agree to 2e-8 or better (ResNet-152's parameters after 3 steps).

Budget. Every architecture runs the eval checks at 32x32. The float64 training checks (one optimizer step)
run on one model per family of identical layers (AlexNet, VGG-11-BN, ResNet-18 for basic blocks, ResNet-50 for
bottlenecks); the other members (VGG-11 without its BatchNorms, VGG-13/16/19, ResNet-34/101/152) repeat exactly
those layers, pools and paddings, so their training checks would add no coverage. The family heads also run 3 steps
(momentum accumulating) and a second, non-square odd size, where padding and pooling mistakes show (eval logits,
train-mode logits and BatchNorm statistics; the gradient of a function that agrees is autodiff's business,
checked at the first size).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

from convert import from_torch
from convert.keymaps import keymap
from jaxdl.models import TORCHVISION, XLA, architecture, with_conv
from jaxdl.train import TrainConfig, step
from jaxdl.train.optim import optimizer

LR, MOMENTUM, WEIGHT_DECAY, STEPS, BATCH = 0.01, 0.9, 5e-4, 3, 8
TOL64 = 1e-6  # float64 agreement; float32's would measure rounding amplification, not the models (see above)
# torch.optim.SGD(lr, momentum, weight_decay), as the library's optimizer factory builds it
CONFIG = TrainConfig(epochs=1, batch_size=BATCH, optimizer="sgd", lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                     schedule="constant")

# One per family of identical layers. VGG-11 is VGG-11-BN without its BatchNorms: the BN model's training check
# covers its convolutions, pools, paddings and classifier, and AlexNet's training without BatchNorm.
FAMILY_HEADS = {"alexnet", "vgg11_bn", "resnet18", "resnet50"}
# Deeper members repeat their family's smallest member's layers, pools and paddings: float32 eval checks only.
EVAL_ONLY = set(TORCHVISION) - FAMILY_HEADS


def sizes(arch: str) -> list[tuple[int, int]]:
    """32x32 (the course's SVHN size) and a non-square odd size; AlexNet needs at least 63x63."""
    both = [(64, 64), (67, 79)] if arch == "alexnet" else [(32, 32), (35, 47)]
    return both if arch in FAMILY_HEADS else both[:1]


def torch_twin(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return model


def close(got: np.ndarray, want: np.ndarray, tol: float, what: str) -> None:
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(np.asarray(got) - want).max())
    assert err <= tol * scale, f"{what}: max error {err:.3g} exceeds {tol:g} x scale {scale:.3g}"


def rel_l2(got: np.ndarray, want: np.ndarray, floor: float, tol: float, what: str) -> None:
    """Relative L2 error; `floor` keeps gradients that are zero in exact arithmetic (a conv bias followed by
    BatchNorm) from dividing rounding noise by rounding noise."""
    err = float(np.linalg.norm(np.asarray(got) - want) / max(np.linalg.norm(want), floor))
    assert err <= tol, f"{what}: relative L2 error {err:.3g} exceeds {tol:g}"


def _as(dtype, tree):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def jax_sgd_steps(model: nnx.Module, x: np.ndarray, y: np.ndarray, steps: int, dtype=jnp.float32):
    """`steps` of the library's own training step (`jaxdl.train.train_step`, its optimizer factory, the Trainer's
    split) in `dtype`. Returns the first step's logits, gradient and BatchNorm statistics (from the library's
    `step.loss`, the function `train_step` differentiates) and the model after all steps."""
    tx = optimizer(CONFIG, 1)
    graphs, state = step.split(model, tx)
    params, rest = _as(dtype, (state["params"], state["rest"]))
    state = {"params": params, "rest": rest, "opt": tx.init(params)}
    batch = {"image": jnp.asarray(x, dtype), "label": jnp.asarray(y)}
    loss_and_grad = jax.jit(jax.value_and_grad(step.loss, has_aux=True), static_argnums=1)
    (_, (logits, _)), grads = loss_and_grad(state["params"], graphs.train, state["rest"], batch)
    train_step = jax.jit(step.train_step, static_argnums=0, static_argnames="tx")
    stats = None
    for _ in range(steps):
        state, _ = train_step(graphs.train, state, batch, tx=tx)
        if stats is None:
            stats = nnx.filter_state(state["rest"], nnx.BatchStat)
    return (logits, grads, stats), step.merge(graphs, state)


def torch_sgd_steps(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    xt, yt = torch.from_numpy(x).to(next(model.parameters()).dtype), torch.from_numpy(y)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        logits = model(xt)
        torch.nn.functional.cross_entropy(logits, yt).backward()
        if first is None:
            grads = {k: p.grad.detach().clone().numpy() for k, p in model.named_parameters()}
            stats = {k: v.detach().clone().numpy() for k, v in model.state_dict().items() if "running" in k}
            first = (logits.detach().numpy(), grads, stats)
        opt.step()
    return first, {k: v.detach().numpy() for k, v in model.state_dict().items()}


def flat(state: nnx.State) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def train_forward(model: nnx.Module, x: jax.Array) -> tuple[jax.Array, dict]:
    """One train-mode forward: logits and the BatchNorm statistics it leaves behind."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        m = nnx.merge(graphdef, state, copy=True)
        return m(x), nnx.state(m, nnx.BatchStat)

    logits, stats = forward(jax.tree.map(lambda a: a.astype(x.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state), x)
    return logits, flat(stats)


@pytest.mark.parametrize("arch", TORCHVISION)
def test_matches_torchvision(arch: str) -> None:
    tmodel = torch_twin(arch)
    initial = copy.deepcopy(tmodel.state_dict())
    no_dropout = {"dropout": 0.0} if "dropout" in architecture(arch).options else {}  # torch's p = 0 above
    model = from_torch(initial, arch, **no_dropout)  # never mutated below: every step works on a split copy
    entries = keymap(model).mapped()
    steps = STEPS if arch in FAMILY_HEADS else 1
    for index, size in enumerate(sizes(arch)):
        rng = np.random.default_rng(hash(size) % 2**32)
        x_nchw = rng.standard_normal((BATCH, 3, *size), dtype=np.float32)
        x = jnp.asarray(x_nchw.transpose(0, 2, 3, 1))
        y = rng.integers(0, 10, BATCH)
        where = f"{arch} at {size[0]}x{size[1]}"

        tmodel.load_state_dict(initial)
        tmodel.float().eval()
        model.eval()
        with torch.no_grad():
            want = tmodel(torch.from_numpy(x_nchw)).numpy()
        close(jax.jit(lambda m, x: m(x))(model, x), want, 1e-4, f"{where}: float32 eval logits")
        # the accelerator path (XLA's convolutions only), on this CPU
        close(jax.jit(lambda m, x: m(x))(with_conv(model, XLA), x), want, 1e-4, f"{where}: float32 eval logits, XLA convs")
        if arch in EVAL_ONLY:
            continue

        tmodel.double().train()
        model.train()
        with jax.enable_x64(True):
            if index == 0:
                (logits, grads, stats), trained = jax_sgd_steps(model, x, y.astype(np.int32), steps, jnp.float64)
                grads, stats = flat(grads), flat(stats)
                trained = flat(nnx.state(trained, nnx.Any(nnx.Param, nnx.BatchStat)))
            else:
                logits, stats = train_forward(model, jnp.asarray(x, jnp.float64))
        (t_logits, t_grads, t_stats), t_state = torch_sgd_steps(tmodel, x_nchw, y, steps if index == 0 else 1)

        close(logits, t_logits, TOL64, f"{where}: train-mode logits")
        for e in entries:
            if e.torch_key in t_stats:
                close(stats[e.path], e.layout.to_flax(t_stats[e.torch_key]), TOL64, f"{where}: {e.torch_key} after 1 step")
        if index > 0:
            continue  # the same function's gradient: autodiff is checked at the first size
        grad_norm = float(np.sqrt(sum(np.sum(g**2) for g in t_grads.values())))
        for e in entries:
            if e.torch_key in t_grads:
                rel_l2(grads[e.path], e.layout.to_flax(t_grads[e.torch_key]), 1e-2 * grad_norm, TOL64,
                       f"{where}: grad {e.torch_key}")
            close(trained[e.path], e.layout.to_flax(t_state[e.torch_key]), TOL64, f"{where}: {e.torch_key} after {steps} steps")
