"""jaxdl.hessian vs PyHessian: same weights, same digits batch, same numbers of HVPs.

PyHessian (``pip install pyhessian``) is PyTorch: top eigenvalue by power iteration, trace by
Hutchinson with Rademacher probes, both over one batch whose graph it builds once with
``backward(create_graph=True)``.  jaxdl does the same work with a linearised gradient (the cached
counterpart) inside one jitted program per algorithm.  Both run in float32 on the same machine; tolerances:
top eigenvalues within ``--eig-rtol`` of each other, traces within 4 combined standard errors (different
random probes, so the two estimates are independent samples of the same mean).  To say how close to the
machine each side runs, the HVPs' arithmetic (XLA's FLOP count of one cached product) per second is
printed as a fraction of the GEMM peak measured in the same run.

    python -m experiments.bench_hessian                    # the course CNN, 128 digits, 20 + 20 HVPs
    python -m experiments.bench_hessian --arch mlp         # the course MLP 3072-256-128-10
    python -m experiments.bench_hessian --arch resnet18    # weights moved with convert.to_torch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.bench import gemm_peak
from experiments.convexity import train_briefly
from jaxdl import hessian as hs


def torch_inputs(x: np.ndarray):
    """NHWC digits as the PyTorch twin takes them: NCHW."""
    import torch

    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def torch_twin(model: nnx.Module):
    """The PyTorch module computing exactly what ``model`` computes, with its weights (convert.twins)."""
    from convert import to_torch
    from convert.twins import torch_model

    twin = torch_model(model.spec.arch, model.spec.num_classes, **dict(model.spec.options))
    twin.load_state_dict(to_torch(model))
    return twin


def run_jax(model: nnx.Module, x: np.ndarray, y: np.ndarray, power_iters: int, probes: int, chunk: int | None, seed: int) -> dict:
    ce = lambda logits, lab: -jnp.take_along_axis(jax.nn.log_softmax(logits), lab[:, None], 1)[:, 0]
    batch_loss, theta, _ = hs.model_batch_loss(model, ce)
    data = (jnp.asarray(x), jnp.asarray(y), jnp.full(len(x), 1.0 / len(x), jnp.float32))
    loss_flat = lambda t: batch_loss(t, data)
    timings = []
    op = hs.operator(loss_flat, theta)
    v = jnp.ones_like(theta)
    hvp_flops = jax.jit(lambda op, v: op.matvec(v)).lower(op, v).compile().cost_analysis()["flops"]
    for rep in range(2):  # first: includes tracing + XLA compilation; second: the steady state
        key = jax.random.key(seed + rep)
        t0 = time.perf_counter()
        op = hs.operator(loss_flat, theta)
        lam, _ = hs.power_iteration(op, power_iters, key)
        tr, se, _ = hs.hutchinson_trace(op, probes, key, chunk=chunk)
        lam, tr, se = float(lam), float(tr), float(se)
        timings.append(time.perf_counter() - t0)
    return {"top_eigenvalue": lam, "trace": tr, "trace_stderr": se, "seconds_first": timings[0],
            "seconds": timings[1], "num_params": int(theta.size), "hvp_flops": float(hvp_flops)}


def run_pyhessian(twin, x: np.ndarray, y: np.ndarray, power_iters: int, probes: int, seed: int) -> dict:
    import torch
    from pyhessian import hessian

    torch.manual_seed(seed)
    inputs = torch_inputs(x)
    targets = torch.from_numpy(y.astype(np.int64))
    timings = []
    for _ in range(2):
        t0 = time.perf_counter()
        h = hessian(twin, torch.nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False)
        eig, _ = h.eigenvalues(maxIter=power_iters, tol=0.0)  # tol=0: exactly maxIter HVPs
        samples = h.trace(maxIter=probes, tol=0.0)
        timings.append(time.perf_counter() - t0)
        twin.zero_grad(set_to_none=True)
    return {"top_eigenvalue": float(eig[0]), "trace": float(np.mean(samples)),
            "trace_stderr": float(np.std(samples, ddof=1) / np.sqrt(len(samples))), "num_probes": len(samples),
            "seconds_first": timings[0], "seconds": timings[1]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="cnn", help="any jaxdl architecture, e.g. cnn, mlp, resnet18")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1, help="Adam epochs on the digits before measuring")
    p.add_argument("--power-iters", type=int, default=20)
    p.add_argument("--probes", type=int, default=20)
    p.add_argument("--chunk", type=int, help="Hutchinson probes vmapped at once (JAX; default: 1 on CPU, all on GPU)")
    p.add_argument("--eig-rtol", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from jaxdl import data, models

    torch.set_num_threads(args.threads)
    ds = data.load("digits", "train", image_size=32, channels=3)
    x = (ds.images[: args.images].astype(np.float32) / 255.0)
    y = ds.labels[: args.images]
    rngs = nnx.Rngs(args.seed)
    small = {"in_channels": 3, "image_size": 32} if args.arch in ("cnn", "mlp", "lenet5") else {}
    model = models.create(args.arch, 10, rngs=rngs, **small)
    # A briefly trained model has the usual outlier eigenvalues, so 20 power steps converge for both.
    train_briefly(model, ds.images.astype(np.float32) / 255.0, ds.labels, args.epochs, 64, args.seed)
    twin = torch_twin(model).eval()
    with torch.no_grad():
        out_t = twin(torch_inputs(x)).numpy()
    logit_diff = float(np.abs(np.asarray(model(jnp.asarray(x))) - out_t).max())

    jx = run_jax(model, x, y, args.power_iters, args.probes, args.chunk, args.seed)
    pt = run_pyhessian(twin, x, y, args.power_iters, args.probes, args.seed)
    peak = gemm_peak("cpu")
    hvp_gflops = (args.power_iters + args.probes) * jx["hvp_flops"] / 1e9
    for side in (jx, pt):
        side["gemm_frac"] = hvp_gflops / side["seconds"] / peak
    eig_rel = abs(jx["top_eigenvalue"] - pt["top_eigenvalue"]) / abs(pt["top_eigenvalue"])
    trace_z = abs(jx["trace"] - pt["trace"]) / np.hypot(jx["trace_stderr"], pt["trace_stderr"])
    res = {
        "command": "python -m experiments.bench_hessian " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip(),
        "versions": {"jax": jax.__version__, "torch": torch.__version__}, "arch": args.arch,
        "images": len(x), "power_iters": args.power_iters, "probes": args.probes, "max_abs_logit_diff": logit_diff,
        "jax": jx, "pyhessian": pt, "top_eigenvalue_rel_diff": eig_rel, "trace_diff_in_stderr": float(trace_z),
        "agree": bool(eig_rel <= args.eig_rtol and trace_z <= 4.0), "gemm_peak_gflops": peak,
        "speedup": pt["seconds"] / jx["seconds"], "speedup_incl_compile": pt["seconds_first"] / jx["seconds_first"],
    }
    print(json.dumps(res, indent=1))
    print(f"\n{args.arch}: {jx['num_params']:,} params, {len(x)} images, {args.power_iters} power + {args.probes} "
          f"Hutchinson HVPs\n  top eigenvalue jax {jx['top_eigenvalue']:.6g} vs PyHessian {pt['top_eigenvalue']:.6g} "
          f"(rel diff {eig_rel:.1e}, tol {args.eig_rtol})\n  trace jax {jx['trace']:.5g} +- {jx['trace_stderr']:.2g} vs "
          f"PyHessian {pt['trace']:.5g} +- {pt['trace_stderr']:.2g} ({trace_z:.1f} combined stderr, tol 4)\n"
          f"  time jax {jx['seconds']:.2f} s (first call incl. compile {jx['seconds_first']:.2f} s) vs PyHessian "
          f"{pt['seconds']:.2f} s (first {pt['seconds_first']:.2f} s): {res['speedup']:.2f}x steady, "
          f"{res['speedup_incl_compile']:.2f}x incl. compile; agree: {res['agree']}\n"
          f"  HVP arithmetic {jx['hvp_flops'] / 1e9:.2f} GFLOP each: jax at {jx['gemm_frac']:.0%}, PyHessian at "
          f"{pt['gemm_frac']:.0%} of this run's GEMM peak ({peak:.0f} GFLOP/s)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
