"""jaxdl.hessian vs PyHessian: same weights, same digits batch, same numbers of HVPs.

PyHessian (``pip install pyhessian``) is PyTorch: top eigenvalue by power iteration, trace by
Hutchinson with Rademacher probes, both over one batch whose graph it builds once with
``backward(create_graph=True)``.  jaxdl does the same work with a linearised gradient (the cached
counterpart) inside one jitted program per algorithm.  Both run in float32 on the same machine, on a model
briefly trained with the library's Trainer (Adam on the digits: a trained model has the usual outlier
eigenvalues, so 20 power steps converge for both) and checked to give the same logits in both frameworks.
Tolerances: top eigenvalues within ``--eig-rtol`` of each other, traces within 4 combined standard errors
(different random probes, so the two estimates are independent samples of the same mean).  To say how close
to the machine each side runs, the HVPs' arithmetic (XLA's FLOP count of one cached product) per second is
printed as a fraction of the CPU's GEMM peak measured in the same run.

    python -m experiments.bench.hessian                    # the course CNN, 128 digits, 20 + 20 HVPs
    python -m experiments.bench.hessian --arch mlp         # the course MLP 3072-256-128-10
    python -m experiments.bench.hessian --arch resnet18    # weights moved with convert.to_torch
"""

from __future__ import annotations

import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from pyhessian import hessian as pyhessian

from experiments.bench import harness, twins
from jaxdl import cli
from jaxdl import data
from jaxdl import hessian as hs
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import TrainConfig, Trainer

MODULE = "experiments.bench.hessian"
TRAIN_BATCH, TRAIN_LR = 64, 1e-3
TRACE_TOL_STDERR = 4.0


def briefly_trained(arch: str, ds: data.Dataset, epochs: int, seed: int) -> nnx.Module:
    """`arch` after `epochs` of Adam on [0, 1] pixels (no augmentation): enough to leave the initialisation."""
    channels = ds.images.shape[-1]
    loader = data.Loader(ds, TRAIN_BATCH, train=True, mean=(0.0,) * channels, std=(1.0,) * channels, augment=False,
                         seed=seed)
    config = TrainConfig(optimizer="adam", lr=TRAIN_LR, weight_decay=0.0, schedule="constant", epochs=epochs,
                         batch_size=TRAIN_BATCH, seed=seed)
    trainer = Trainer(twins.create(arch, seed), config, len(loader), progress=False)
    trainer.fit(loader)
    return trainer.model


def run_jax(model: nnx.Module, x: np.ndarray, y: np.ndarray, power_iters: int, probes: int, chunk: int | None,
            seed: int) -> dict:
    batch_loss, theta, _ = hs.model_batch_loss(model, optax.softmax_cross_entropy_with_integer_labels)
    batch = (jnp.asarray(x), jnp.asarray(y), jnp.full(len(x), 1.0 / len(x), jnp.float32))

    def loss_flat(t: jax.Array) -> jax.Array:
        return batch_loss(t, batch)

    op = hs.operator(loss_flat, theta)
    hvp_flops = jax.jit(lambda op, v: op.matvec(v)).lower(op, jnp.ones_like(theta)).compile().cost_analysis()["flops"]

    def estimates(key: jax.Array) -> tuple[float, float, float]:
        op = hs.operator(loss_flat, theta)  # timed too: PyHessian's counterpart builds its graph in the clock
        lam, _ = hs.power_iteration(op, power_iters, key)
        tr, se, _ = hs.hutchinson_trace(op, probes, key, chunk=chunk)
        return float(lam), float(tr), float(se)

    # first: with tracing and XLA compilation; second: the steady state
    first, steady = (harness.measure(lambda: estimates(jax.random.key(seed + rep))) for rep in range(2))
    lam, tr, se = steady.value
    return {"top_eigenvalue": lam, "trace": tr, "trace_stderr": se, "seconds_first": first.wall_s,
            "seconds": steady.wall_s, "num_params": int(theta.size), "hvp_flops": float(hvp_flops)}


def run_pyhessian(twin: torch.nn.Module, x: np.ndarray, y: np.ndarray, power_iters: int, probes: int,
                  seed: int) -> dict:
    """PyHessian's top eigenvalue and Hutchinson trace on the twin's device (the CPU here, a GPU in
    `experiments.gpu_check`), timed twice (a first and a steady run, each building its graph in the clock)."""
    torch.manual_seed(seed)
    inputs = twins.torch_images(x).contiguous()
    targets = torch.from_numpy(y.astype(np.int64))
    cuda = next(twin.parameters()).is_cuda

    def estimates() -> tuple[float, list[float]]:
        with warnings.catch_warnings():  # PyHessian's backward(create_graph=True): zero_grad below breaks the cycle
            warnings.filterwarnings("ignore", r"Using backward\(\) with create_graph=True", UserWarning)
            h = pyhessian(twin, torch.nn.CrossEntropyLoss(), data=(inputs, targets), cuda=cuda)
            eig, _ = h.eigenvalues(maxIter=power_iters, tol=0.0)  # tol=0: exactly maxIter HVPs
            samples = h.trace(maxIter=probes, tol=0.0)
        twin.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return float(eig[0]), samples

    first, steady = (harness.measure(estimates) for _ in range(2))
    eig, samples = steady.value
    return {"top_eigenvalue": eig, "trace": float(np.mean(samples)),
            "trace_stderr": float(np.std(samples, ddof=1) / np.sqrt(len(samples))), "num_probes": len(samples),
            "seconds_first": first.wall_s, "seconds": steady.wall_s}


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--arch", type=harness.arch, default="cnn", help="any jaxdl architecture, e.g. cnn, mlp, resnet18")
    p.add_argument("--images", type=cli.positive_int, default=128)
    p.add_argument("--epochs", type=cli.natural_int, default=1, help="Adam epochs on the digits before measuring")
    p.add_argument("--power-iters", type=cli.positive_int, default=20)
    p.add_argument("--probes", type=cli.positive_int, default=20)
    p.add_argument("--chunk", type=cli.positive_int, help="Hutchinson probes vmapped at once (JAX; default: 1 on CPU, all on GPU)")
    p.add_argument("--eig-rtol", type=cli.positive_float, default=0.02)
    p.add_argument("--seed", type=cli.natural_int, default=0)
    p.add_argument("--threads", type=cli.positive_int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    if args.chunk is not None and args.probes % args.chunk:
        p.error(f"--chunk {args.chunk} does not divide --probes {args.probes}: choose a divisor, e.g. 1")

    torch.set_num_threads(args.threads)
    ds = data.load("digits", "train", image_size=twins.IMAGE[0], channels=twins.IMAGE[2])
    x = ds.images[: args.images].astype(np.float32) / 255.0
    y = ds.labels[: args.images]
    model = briefly_trained(args.arch, ds, args.epochs, args.seed)
    twin = twins.torch_twin(model).eval()
    same = twins.same_function(model, twin, x)

    jx = run_jax(model, x, y, args.power_iters, args.probes, args.chunk, args.seed)
    pt = run_pyhessian(twin, x, y, args.power_iters, args.probes, args.seed)
    peak = harness.gemm_peak(jax.devices("cpu")[0])  # PyHessian runs on the CPU
    hvp_gflops = (args.power_iters + args.probes) * jx["hvp_flops"] / 1e9
    for side in (jx, pt):
        side["gemm_frac"] = hvp_gflops / side["seconds"] / peak
    eig_rel = abs(jx["top_eigenvalue"] - pt["top_eigenvalue"]) / abs(pt["top_eigenvalue"])
    trace_z = abs(jx["trace"] - pt["trace"]) / np.hypot(jx["trace_stderr"], pt["trace_stderr"])
    res = harness.header(MODULE, argv) | same | {
        "arch": args.arch, "images": len(x), "power_iters": args.power_iters, "probes": args.probes,
        "jax": jx, "pyhessian": pt, "top_eigenvalue_rel_diff": eig_rel, "trace_diff_in_stderr": float(trace_z),
        "agree": bool(eig_rel <= args.eig_rtol and trace_z <= TRACE_TOL_STDERR), "gemm_peak_gflops": peak,
        "speedup": pt["seconds"] / jx["seconds"], "speedup_incl_compile": pt["seconds_first"] / jx["seconds_first"],
    }
    print(json.dumps(res, indent=2))
    print(f"\n{args.arch}: {jx['num_params']:,} params, {len(x)} images, {args.power_iters} power + {args.probes} "
          f"Hutchinson HVPs\n  top eigenvalue jax {jx['top_eigenvalue']:.6g} vs PyHessian {pt['top_eigenvalue']:.6g} "
          f"(rel diff {eig_rel:.1e}, tol {args.eig_rtol})\n  trace jax {jx['trace']:.5g} +- {jx['trace_stderr']:.2g} vs "
          f"PyHessian {pt['trace']:.5g} +- {pt['trace_stderr']:.2g} ({trace_z:.1f} combined stderr, tol "
          f"{TRACE_TOL_STDERR:g})\n  time jax {jx['seconds']:.2f} s (first call incl. compile {jx['seconds_first']:.2f} s)"
          f" vs PyHessian {pt['seconds']:.2f} s (first {pt['seconds_first']:.2f} s): {res['speedup']:.2f}x steady, "
          f"{res['speedup_incl_compile']:.2f}x incl. compile; agree: {res['agree']}\n"
          f"  HVP arithmetic {jx['hvp_flops'] / 1e9:.2f} GFLOP each: jax at {jx['gemm_frac']:.0%}, PyHessian at "
          f"{pt['gemm_frac']:.0%} of this run's GEMM peak ({peak:.0f} GFLOP/s)")
    if args.json:
        harness.write_json(args.json, res)


if __name__ == "__main__":
    harness.run(main, MODULE)
