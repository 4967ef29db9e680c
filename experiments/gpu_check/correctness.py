"""jaxdl against torchvision on the device: eval logits and one SGD training step, in float32 and bfloat16.

The CPU suite proves the twins equal (tests/test_equivalence.py, float64); on a GPU other kernels (cuDNN's
convolution algorithms, XLA:GPU's fusions) and other arithmetic (bf16) run, so the check is repeated there.
Each architecture comes as a pair with the same weights (`pairs.build`: through `convert.from_torch` and
`convert.to_torch`), BatchNorm scales, shifts and running statistics randomised (so eval mode is not an
identity), dropout off in both (masks cannot agree across frameworks). Then, on one batch of 32x32 images:

- eval logits;
- one training step: SGD with momentum and weight decay, jaxdl's own jitted, donated `Trainer` step against
  `torch.optim.SGD` on the twin (bf16: `TrainConfig.mixed_precision` against `torch.autocast`), compared by the
  loss, every parameter's update (relative L2 error of the update, as tests/test_train_torch.py), the BatchNorm
  running statistics, and the eval logits after the step.

float32 runs with TF32 off on both sides (`device.float32`) and must agree within `FLOAT32`. bf16 cannot agree
that closely: the two frameworks round at different places (jaxdl casts weights and activations to bf16 for the
whole forward pass, autocast per operation), so each is measured against PyTorch's float32 numbers and jaxdl
must be no further from them than `BF16_RATIO` times autocast is, or within `BF16_FLOOR`. The limits are
written into the output next to the numbers.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flax import nnx

from convert import to_torch
from experiments.bench import twins
from experiments.gpu_check import device, pairs
from jaxdl.train import TrainConfig, Trainer

LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Limits on the distances `distances` measures (None: recorded, not judged).

    logits: max |diff| over the largest |logit| of the reference (before the step; logits_after_step: after it,
    in eval mode). loss: |diff| over max(1, loss). update: the worst parameter's ||ours - theirs|| over
    ||theirs - before||, at least 1e-2 of the whole update's norm (a conv bias followed by BatchNorm has a zero
    gradient in exact arithmetic: its rounding noise over noise means nothing); update_total: the same over all
    parameters at once. stats: the worst BatchNorm statistic's max |diff| over its largest |value| (at least 1e-3).
    """

    logits: float
    loss: float
    update: float | None
    update_total: float
    stats: float
    logits_after_step: float


# float32 (TF32 off): jaxdl against PyTorch directly. Eval logits and BatchNorm statistics to 1e-4 of their scale,
# the loss to 1e-4, as the CPU suite (tests/test_equivalence.py, tests/test_train_torch.py); each update to 10%,
# since float32 BatchNorm over few values per channel (ResNet's 1x1 maps at 32x32) amplifies the kernels'
# summation order into the gradients (4% measured on CPU at batch 8, tests/test_train_torch.py; 1e-5 here at
# batch 8 with matching kernels); the logits after the step inherit that, hence 1e-3.
FLOAT32 = Tolerance(logits=1e-4, loss=1e-4, update=0.10, update_total=0.10, stats=1e-4, logits_after_step=1e-3)
# bf16: two bf16 computations of one function differ by their rounding, most where BatchNorm normalises few
# values (measured on CPU at batch 8, ResNet-18, against float32: logits after the step 10% / 20% of their scale
# for jaxdl / autocast, the worst single update 52% / 50%, a zero-gradient conv bias of VGG-11-BN 104% / 36%).
# So each side is measured against PyTorch's float32 numbers, and jaxdl passes when it is no further from them
# than BF16_RATIO times autocast is, or within the floors below (a broken bf16 path, a wrong momentum, decay or
# loss convention is off by ~100%). Single updates are recorded, not judged: their noise is the rounding's.
BF16_RATIO = 3.0
BF16_FLOOR = Tolerance(logits=2e-2, loss=1e-2, update=None, update_total=0.10, stats=2e-2, logits_after_step=2e-2)
METRICS = tuple(f.name for f in dataclasses.fields(Tolerance))


@dataclasses.dataclass
class Outcome:
    """One framework's numbers in one arithmetic: eval logits, the training step's loss, the state after the
    step (PyTorch keys), the eval logits after it."""

    logits: np.ndarray
    loss: float
    state: dict[str, np.ndarray]
    logits_after_step: np.ndarray


def jax_outcome(model: nnx.Module, x: np.ndarray, y: np.ndarray, dtype: str) -> Outcome:
    """jaxdl's numbers: the Trainer's own compiled, donated step (bf16: `TrainConfig.mixed_precision`)."""
    bf16 = dtype == "bfloat16"
    config = TrainConfig(epochs=1, batch_size=len(x), optimizer="sgd", lr=LR, momentum=MOMENTUM,
                         weight_decay=WEIGHT_DECAY, schedule="constant", mixed_precision=bf16)
    trainer = Trainer(model, config, steps_per_epoch=1, progress=False)
    batch = {"image": x, "label": y}
    logits = pairs.eval_logits(trainer.graphs.eval, trainer.state["params"], trainer.state["rest"], x, bf16)
    trainer.state, metrics = trainer.train_step(trainer.graphs.train, trainer.state, batch)
    after = pairs.eval_logits(trainer.graphs.eval, trainer.state["params"], trainer.state["rest"], x, bf16)
    state = {k: v.numpy() for k, v in to_torch(trainer.raw_model).items()}
    return Outcome(logits, float(metrics["loss"]), state, after)


def torch_outcome(twin: torch.nn.Module, x: np.ndarray, y: np.ndarray, dtype: str) -> Outcome:
    """PyTorch's numbers, on a copy of the twin: eval logits, one `torch.optim.SGD` step in train mode (bf16:
    `torch.autocast`), eval logits after it."""
    where = device.torch_device()
    net = copy.deepcopy(twin).to(where)
    xt, yt = twins.torch_images(x).contiguous().to(where), torch.from_numpy(y).long().to(where)
    autocast = lambda: torch.autocast(where, torch.bfloat16, enabled=dtype == "bfloat16")  # noqa: E731

    def logits() -> np.ndarray:
        net.eval()
        with torch.no_grad(), autocast():
            return net(xt).float().cpu().numpy()

    before = logits()
    net.train()
    sgd = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    with autocast():
        loss = torch.nn.functional.cross_entropy(net(xt).float(), yt)
    loss.backward()
    sgd.step()
    state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    return Outcome(before, loss.item(), state, logits())


def relative(diff: np.ndarray, reference: np.ndarray, floor: float = 1e-6) -> float:
    """max |diff| over max(max |reference|, floor); NaN stays NaN, so it fails every limit."""
    return float(np.abs(diff).max() / max(float(np.abs(reference).max()), floor))


def distances(ours: Outcome, ref: Outcome, before: dict[str, np.ndarray], params: set[str]) -> dict[str, Any]:
    """How far `ours` is from `ref` in each of `METRICS` (see `Tolerance`), with the worst tensor's key."""
    moves = {k: float(np.linalg.norm(ref.state[k] - before[k])) for k in params}
    misses = {k: float(np.linalg.norm(ours.state[k] - ref.state[k])) for k in params}
    total = max(float(np.sqrt(sum(m**2 for m in moves.values()))), 1e-30)
    update = {k: misses[k] / max(moves[k], 1e-2 * total) for k in params}
    stats = {k: relative(ours.state[k] - v, v, 1e-3) for k, v in ref.state.items()
             if k.endswith(("running_mean", "running_var"))}
    out: dict[str, Any] = {
        "logits": relative(ours.logits - ref.logits, ref.logits),
        "loss": abs(ours.loss - ref.loss) / max(1.0, abs(ref.loss)),
        "update_total": float(np.sqrt(sum(m**2 for m in misses.values()))) / total,
        "logits_after_step": relative(ours.logits_after_step - ref.logits_after_step, ref.logits_after_step)}
    for name, errors in (("update", update), ("stats", stats)):
        if errors:
            worst = max(errors, key=lambda k: (np.isnan(errors[k]), errors[k]))  # a NaN is the worst
            out |= {name: errors[worst], f"{name}_key": worst}
    return out


def check(arch: str, batch: int, seed: int = 0) -> list[dict[str, Any]]:
    """`arch` in float32 (jaxdl against PyTorch, `FLOAT32`) and bf16 (each against PyTorch's float32, `BF16_RATIO`,
    `BF16_FLOOR`) on one batch: one row per arithmetic, "ok" when every limit holds."""
    model, twin = pairs.build(arch, seed, random_bn=True, dropout=False)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *twins.IMAGE), dtype=np.float32)
    y = rng.integers(0, twins.NUM_CLASSES, batch).astype(np.int32)
    before = {k: v.numpy() for k, v in to_torch(model).items()}
    params = {k for k, _ in twin.named_parameters()}
    with device.float32():
        reference, ours32 = torch_outcome(twin, x, y, "float32"), jax_outcome(model, x, y, "float32")
    ours16, theirs16 = jax_outcome(model, x, y, "bfloat16"), torch_outcome(twin, x, y, "bfloat16")
    scale = {"logit_scale": float(np.abs(reference.logits).max()), "torch_float32_loss": reference.loss}

    d32 = distances(ours32, reference, before, params)
    limits32 = {m: getattr(FLOAT32, m) for m in METRICS if m in d32 and getattr(FLOAT32, m) is not None}
    rows = [{"arch": arch, "dtype": "float32", "batch": batch, **scale, "jax_loss": ours32.loss, "err": d32,
             "limit": limits32, "failed": [m for m, lim in limits32.items() if not d32[m] <= lim]}]

    jax16, torch16 = distances(ours16, reference, before, params), distances(theirs16, reference, before, params)
    limits16 = {m: max(BF16_RATIO * torch16[m], getattr(BF16_FLOOR, m)) for m in METRICS
                if m in jax16 and getattr(BF16_FLOOR, m) is not None}
    rows.append({"arch": arch, "dtype": "bfloat16", "batch": batch, **scale, "jax_loss": ours16.loss,
                 "torch_loss": theirs16.loss, "err": jax16, "torch_err": torch16,
                 "jax_vs_torch": distances(ours16, theirs16, before, params), "limit": limits16,
                 "failed": [m for m, lim in limits16.items() if not jax16[m] <= lim]})
    return [row | {"ok": not row["failed"]} for row in rows]


def run(archs: list[str], batch: int, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """`check` for every architecture; "ok" when all passed. A crash is recorded, not raised, so the other
    architectures still run."""
    rows: list[dict[str, Any]] = []
    for arch in archs:
        try:
            found = check(arch, batch)
        except Exception as e:  # noqa: BLE001 -- one architecture's crash must not hide the others' results
            found = [{"arch": arch, "dtype": "float32, bfloat16", "ok": False, "error": f"{type(e).__name__}: {e}"}]
        rows += found
        for row in found:
            verdict = "ok" if row["ok"] else "FAILED " + (row.get("error") or ", ".join(row["failed"]))
            progress(f"correctness {arch} {row['dtype']}: {verdict}")
    return {"ok": all(r["ok"] for r in rows), "device": device.torch_device(), "rows": rows,
            "float32_limits": dataclasses.asdict(FLOAT32), "bf16_ratio": BF16_RATIO,
            "bf16_floors": dataclasses.asdict(BF16_FLOOR)}
