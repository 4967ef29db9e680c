"""Fine-tuning controls of the training engine (TrainConfig.freeze, freeze_bn, head_lr_mult, clip_grad_norm,
warmup_epochs, ema), checked against PyTorch in float64 as tests/test_equivalence.py does: the library's own
`step.split`, `optim.optimizer` and `step.train_step` against torch.optim.SGD/AdamW with param groups,
requires_grad=False, BatchNorm modules in eval() and torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torchvision
from flax import nnx

from convert import from_torch, to_torch
from convert.twins import torch_model
from jaxdl.models.layers import BatchNorm2d
from jaxdl.train import TrainConfig, optim, step

TOL64 = 1e-6


def _as64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def jax_steps(model: nnx.Module, config: TrainConfig, x: np.ndarray, y: np.ndarray, steps: int):
    """`steps` of the library's step in float64 (inside jax.enable_x64): (graphs, initial state, final state)."""
    tx = optim.optimizer(config, 1, head=optim.head_of(model))
    graphs, state = step.split(model, tx, config=config)
    params = _as64(state["params"])
    state = {**state, "params": params, "rest": _as64(state["rest"]), "opt": tx.init(params)}
    start = jax.tree.map(np.asarray, state)
    train = jax.jit(step.train_step, static_argnums=0, static_argnames="tx")
    batch = {"image": jnp.asarray(x, jnp.float64), "label": jnp.asarray(y, jnp.int32)}
    for _ in range(steps):
        state, _ = train(graphs.train, state, batch, tx=tx)
    return graphs, start, state


def torch_state(graphs: step.Graphs, state: step.State) -> dict[str, np.ndarray]:
    """The state's weights as the PyTorch twin's state_dict (a pure re-layout: bit-exact)."""
    return {k: np.asarray(v) for k, v in to_torch(step.merge(graphs, state)).items()}


def same_within(got: np.ndarray, want: np.ndarray, what: str, tol: float = TOL64) -> None:
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got - want).max())
    assert err <= tol * scale, f"{what}: max error {err:.3g} exceeds {tol:g} x scale {scale:.3g}"


# ------------------------------------------------------------------- freeze="backbone" + freeze_bn vs torch


def test_frozen_backbone_and_batchnorm_match_torch() -> None:
    """ResNet-18, head only, BatchNorm on its running statistics, the head's gradient clipped: 2 SGD steps
    (momentum, weight decay) against torch with requires_grad=False outside the optimizer and BN in eval()."""
    lr, momentum, wd, clip, steps = 0.05, 0.9, 5e-4, 0.5, 2
    torch.manual_seed(0)
    tmodel = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():  # non-trivial statistics, so BatchNorm in eval mode is not an identity
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    model = from_torch(tmodel.state_dict(), "resnet18")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3, 32, 32)), rng.integers(0, 10, 4)

    tmodel.double().train()
    initial = {k: v.detach().clone().numpy() for k, v in tmodel.state_dict().items()}
    for name, p in tmodel.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    for m in tmodel.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    opt = torch.optim.SGD(tmodel.fc.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        torch.nn.utils.clip_grad_norm_(tmodel.fc.parameters(), clip)
        opt.step()
    want = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}

    config = TrainConfig(epochs=1, batch_size=4, lr=lr, momentum=momentum, weight_decay=wd, schedule="constant",
                         freeze="backbone", freeze_bn=True, clip_grad_norm=clip)
    with jax.enable_x64(True):
        graphs, start, state = jax_steps(model, config, x.transpose(0, 2, 3, 1), y, steps)
        got = torch_state(graphs, state)
        # the frozen parameters have no optimizer state: momentum only for the head's weight and bias
        opt_arrays = [a for a in jax.tree.leaves(state["opt"]) if a.ndim]
        assert sorted(a.shape for a in opt_arrays) == [(10,), (512, 10)]
        assert optim.learning_rate(state["opt"]) == lr

    assert not np.allclose(got["fc.weight"], initial["fc.weight"])  # the head did move
    frozen = 0
    for key, value in got.items():
        if key.startswith("fc."):
            same_within(value, want[key], f"{key} after {steps} steps")
        elif "num_batches_tracked" not in key:  # written back as 0 by to_torch (jaxdl keeps no counter)
            assert np.array_equal(value, initial[key]), f"{key} changed: it is frozen"
            frozen += 1
    assert frozen == len(initial) - 2 - 20  # every backbone parameter and statistic compared (20 counters)


# ------------------------------------------------------------------ head_lr_mult, clip_grad_norm vs torch (MLP)

MLP = {"in_channels": 3, "image_size": 8, "hidden": (32, 16)}  # head "fc"; compiles in ~1 s, LeNet-5 in ~4


@pytest.mark.parametrize("optimizer,head_lr_mult,clip", [("sgd", 1.0, 0.3), ("sgd", 10.0, 0.3), ("adamw", 4.0, 0.3)])
def test_head_lr_and_clipping_match_torch(optimizer: str, head_lr_mult: float, clip: float) -> None:
    """torch: param groups (the head at lr * M) and clip_grad_norm_ over every parameter before step().

    Within 1e-9: the two agree to ~1e-13 in float64, and AdamW shows a clipping formula other than torch's
    (optax.clip_by_global_norm lacks torch's norm + 1e-6: 2e-9 to 3e-9 apart here, 3e-6 with AdamW on LeNet-5)."""
    lr, wd, steps = 0.02, 5e-3, 3
    torch.manual_seed(1)
    tmodel = torch_model("mlp", 10, **MLP).double()
    model = from_torch(tmodel.state_dict(), "mlp", **MLP)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 3, 8, 8)), rng.integers(0, 10, 6)

    head = [p for n, p in tmodel.named_parameters() if n.startswith("fc.")]
    backbone = [p for n, p in tmodel.named_parameters() if not n.startswith("fc.")]
    assert head and backbone
    groups = [{"params": backbone}, {"params": head, "lr": lr * head_lr_mult}]
    opt = (torch.optim.AdamW(groups, lr=lr, weight_decay=wd) if optimizer == "adamw"
           else torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd))
    norms = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(tmodel.parameters(), clip)))
        opt.step()
    assert max(norms) > clip  # the clipping is active
    want = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}

    config = TrainConfig(epochs=1, batch_size=6, optimizer=optimizer, lr=lr, momentum=0.9, weight_decay=wd,
                         schedule="constant", head_lr_mult=head_lr_mult, clip_grad_norm=clip)
    with jax.enable_x64(True):
        graphs, _, state = jax_steps(model, config, x.transpose(0, 2, 3, 1), y, steps)
        got = torch_state(graphs, state)
        assert optim.learning_rate(state["opt"]) == lr  # the base rate, the head's being lr * head_lr_mult
    for key in want:
        same_within(got[key], want[key], f"{key} after {steps} steps", tol=1e-9)


def test_head_moves_m_times_as_far_in_plain_sgd() -> None:
    params = {"classifier": {3: {"kernel": jnp.ones((2, 2))}, 6: {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}},
              "features": {0: {"kernel": jnp.ones((3, 3))}}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    moved = {}
    for mult in (1.0, 8.0):
        tx = optim.optimizer(TrainConfig(lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant",
                                         head_lr_mult=mult), 1, head="classifier.6")
        moved[mult], _ = tx.update(grads, tx.init(params), params)
    for path, one in jax.tree_util.tree_leaves_with_path(moved[1.0]):
        eight = moved[8.0]
        for k in path:
            eight = eight[k.key]
        factor = 8.0 if path[0].key == "classifier" and path[1].key == 6 else 1.0
        np.testing.assert_allclose(eight, factor * one, rtol=1e-6, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_allclose(moved[1.0]["features"][0]["kernel"], -0.05)


def test_labels_follow_the_head_path_and_refuse_a_wrong_one() -> None:
    params = {"classifier": {3: {"kernel": 0}, 6: {"kernel": 0, "bias": 0}}, "features": {0: {"kernel": 0}}}
    labels = optim.param_labels("classifier.6", "backbone")(params)
    assert labels == {"classifier": {3: {"kernel": "frozen"}, 6: {"kernel": "head", "bias": "head"}},
                      "features": {0: {"kernel": "frozen"}}}
    assert optim.param_labels("classifier.6")(params)["features"][0]["kernel"] == "backbone"
    tx = optim.optimizer(TrainConfig(freeze="backbone"), 1, head="fc")
    with pytest.raises(ValueError, match="'fc' names no parameter"):
        tx.init(params)
    with pytest.raises(ValueError, match="pass head="):
        optim.optimizer(TrainConfig(head_lr_mult=2.0), 1)
    optim.optimizer(TrainConfig(clip_grad_norm=1.0), 1)  # no parameter groups: no head needed


# ---------------------------------------------------------------------------------- freeze_bn graph, EMA


class Tiny(nnx.Module):
    """BatchNorm -> dropout -> global average -> linear: enough to see statistics, dropout and a head."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.bn = BatchNorm2d(3)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.fc = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc(self.drop(self.bn(x)).mean((1, 2)))


def test_freeze_bn_keeps_dropout_training() -> None:
    model = Tiny(nnx.Rngs(0))
    model.eval()
    graphs, _ = step.split(model, optax.sgd(0.1), config=TrainConfig(freeze_bn=True))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    train = nnx.merge(graphs.train, params, rest)
    assert train.bn.use_running_average and not train.drop.deterministic
    graphs, _ = step.split(model, optax.sgd(0.1))
    assert not nnx.merge(graphs.train, params, rest).bn.use_running_average
    assert model.drop.deterministic  # the model passed in is left as it was


def test_ema_is_the_moving_average_of_weights_and_statistics() -> None:
    decay, steps = 0.75, 3
    model = Tiny(nnx.Rngs(0))
    model.drop.rate = 0.0
    rng = np.random.default_rng(2)
    batch = {"image": jnp.asarray(rng.standard_normal((8, 5, 5, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
    config = TrainConfig(lr=0.5, schedule="constant", ema=decay)
    tx, train, evaluate = step.compile_steps(config, 1, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    graphs, state = step.split(model, tx, config=config)

    def weights(params, rest):
        return [np.asarray(a, np.float64) for a in jax.tree.leaves((params, nnx.filter_state(rest, nnx.BatchStat)))]

    expected = weights(state["params"], state["rest"])  # the average starts as a copy of the model
    for _ in range(steps):
        state, _ = train(graphs.train, state, batch)
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights(state["params"], state["rest"]))]
    averaged = weights(*step.eval_weights(state))
    raw = weights(*step.eval_weights(state, ema=False))
    assert len(averaged) == 6  # fc kernel and bias, bn scale and bias, running mean and variance
    for got, want, last in zip(averaged, expected, raw):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert not np.allclose(got, last)

    # evaluation and the model to save use the average; ema=False gives the raw weights
    ema_model, raw_model = step.merge(graphs, state), step.merge(graphs, state, ema=False)
    np.testing.assert_array_equal(np.asarray(ema_model.fc.kernel[...]), np.asarray(state["ema"]["params"]["fc"]["kernel"][...]))
    np.testing.assert_array_equal(np.asarray(raw_model.fc.kernel[...]), np.asarray(state["params"]["fc"]["kernel"][...]))
    np.testing.assert_array_equal(np.asarray(ema_model.bn.mean[...]), np.asarray(state["ema"]["stats"]["bn"]["mean"][...]))
    out = evaluate(graphs.eval, state, batch | {"mask": jnp.ones(8, bool)})
    want_loss = optax.softmax_cross_entropy_with_integer_labels(ema_model(batch["image"]), batch["label"]).sum()
    np.testing.assert_allclose(float(out["loss_sum"]), float(want_loss), rtol=1e-5)
    with pytest.raises(ValueError, match="carries no average"):
        step.train_step(graphs.train, {k: v for k, v in state.items() if k != "ema"}, batch, tx=tx, ema_decay=decay)


# -------------------------------------------------------------------------------------------- warm-up


@pytest.mark.parametrize("schedule,values", [
    # 5 epochs of 10 steps, 2 of warm-up: 0 -> lr linearly over steps 0..20, then the schedule
    ("constant", {0: 0.0, 5: 0.25, 10: 0.5, 20: 1.0, 35: 1.0, 49: 1.0}),
    ("cosine", {0: 0.0, 10: 0.5, 20: 1.0, 35: 0.5, 50: 0.0}),
    ("onecycle", {0: 1 / 25, 20: 1.0, 50: 1 / 25 / 1e4}),  # pct_start = 2/5, from lr/25, OneCycleLR's
])
def test_warmup_reaches_lr_then_follows_the_schedule(schedule: str, values: dict[int, float]) -> None:
    config = TrainConfig(epochs=5, lr=1.0, schedule=schedule, warmup_epochs=2.0)
    lr = optim.schedule(config, 10)
    for k, want in values.items():
        assert float(lr(k)) == pytest.approx(want, rel=1e-5, abs=1e-7), f"{schedule} at step {k}"
    # the state holds the rate of the step just taken, for the backbone and, with groups, the head alike
    for mult in (1.0, 3.0):
        tx = optim.optimizer(TrainConfig(epochs=5, lr=1.0, schedule=schedule, warmup_epochs=2.0, head_lr_mult=mult),
                             10, head="fc")
        params = {"fc": {"kernel": jnp.ones(2)}, "conv": {"kernel": jnp.ones(2)}}
        opt = tx.init(params)
        for _ in range(11):
            _, opt = tx.update(params, opt, params)
        assert optim.learning_rate(opt) == pytest.approx(float(lr(10)), rel=1e-6)


def test_no_warmup_constant_stays_a_value_in_the_state() -> None:
    """The grid search sets a constant rate per member in the state: that layout is kept."""
    tx = optim.optimizer(TrainConfig(schedule="constant", lr=0.3), 1)
    opt = tx.init({"w": jnp.ones(2)})
    assert float(opt.hyperparams["learning_rate"]) == pytest.approx(0.3)
    assert optim.learning_rate(opt) == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize("field,value,message", [
    ("freeze", "head", "unknown freeze 'head'"),
    ("freeze_bn", "yes", "freeze_bn must be True or False"),
    ("head_lr_mult", -1.0, "head_lr_mult must be"),
    ("head_lr_mult", float("nan"), "head_lr_mult must be"),
    ("head_lr_mult", float("inf"), "head_lr_mult must be"),
    ("clip_grad_norm", -0.5, "clip_grad_norm must be"),
    ("clip_grad_norm", float("nan"), "clip_grad_norm must be"),
    ("ema", 1.0, r"ema must lie in \[0, 1\)"),
    ("ema", -0.1, r"ema must lie in \[0, 1\)"),
    ("ema", float("nan"), r"ema must lie in \[0, 1\)"),
    ("warmup_epochs", -1.0, "warmup_epochs must lie in"),
    ("warmup_epochs", 5.0, "warmup_epochs must lie in"),
    ("warmup_epochs", float("nan"), "warmup_epochs must lie in"),
])
def test_config_refuses_bad_fine_tuning_values_in_one_line(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        TrainConfig(epochs=5, **{field: value})
    assert "\n" not in str(err.value)
