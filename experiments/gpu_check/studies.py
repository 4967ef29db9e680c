"""The project's studies on the device: the SVHN run, the Hessian against PyHessian, the vmapped grid search.

Each reuses the CPU program it measures (`experiments.svhn`'s main, `experiments.bench.hessian`'s and
`experiments.bench.search`'s pieces), so the GPU numbers are those of the code the CPU numbers come from.

- SVHN: `experiments.svhn` in this process, into DIR/svhn (replacing an earlier check's run there); its wall
  time and its own metrics.json (test accuracy, epochs, rates, which data and weights it really used: offline,
  generated digits and random weights, each said with one warning).
- Hessian: the bench's model (`briefly_trained`: 1 epoch of Adam on the digits) and its jaxdl estimates
  (`run_jax`: power iteration and Hutchinson, the probes vmapped all at once, `chunk=probes`) against PyHessian
  on the same device (`run_pyhessian` runs on the twin's); both sides in float32 with TF32 off. Skipped, with
  the reason, when pyhessian is not importable (the GPU machine gets it as a carried wheel, `make gpu-wheels`).
- Grid search: the bench's `run_jaxdl` vmapped and sequential on the seeds' grid (the digits, 3 folds + refit);
  the bench's scikit-learn run is left out (385 s on the project's CPU: it would take the check's whole budget).
"""

from __future__ import annotations

import importlib.util
import json
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.bench import harness, twins
from experiments.gpu_check import device, pairs

SEARCH_BATCH, SEARCH_LR = 32, 3e-3  # `python -m experiments.bench.search`'s defaults
# The vmapped search trains the same members as the sequential one (equal on CPU, tests/test_search.py); on a GPU
# batched kernels may round differently, so they must pick the same configuration with CV scores within this.
SEARCH_CV_TOL = 0.01
EIG_RTOL = 0.02  # `python -m experiments.bench.hessian`'s default --eig-rtol


def svhn(out: Path, argv: list[str]) -> dict[str, Any]:
    """`python -m experiments.svhn ARGV --out OUT` in-process: its wall time and the figures of its metrics.json."""
    from experiments.svhn.__main__ import main

    args = [*argv, "--out", str(out), "--overwrite", "--no-progress"]
    start = time.perf_counter()
    status = main(args)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"python -m experiments.svhn {' '.join(args)} exited with status {status}")
    metrics = json.loads((out / "metrics.json").read_text())
    results = {arch: {"accuracy": r["accuracy"], "epochs": r["epochs_run"],
                      "train_s": sum(h["seconds"] for h in r["history"]),
                      "train_images_per_s": r["train_images_per_s"], "eval_images_per_s": r["eval_images_per_s"],
                      "data": r["data"]["name"], "real_svhn": r["data"]["svhn"], "train_size": r["data"]["train_size"],
                      "test_size": r["data"]["test_size"], "weights": r["weights"]["used"]}
               for arch, r in metrics["results"].items()}
    return {"command": metrics["command"], "wall_s": wall, "run_s": metrics["seconds"], "devices": metrics["devices"],
            "results": results, "metrics_file": str(out / "metrics.json")}


def hessian(arch: str, images: int, epochs: int, power_iters: int, probes: int, seed: int = 0) -> dict[str, Any]:
    """Top eigenvalue and trace of `arch`'s loss Hessian on `images` digits, jaxdl (probes vmapped) against
    PyHessian: values, agreement (the bench's limits), times."""
    if importlib.util.find_spec("pyhessian") is None:
        return {"skipped": "pyhessian is not importable (bring its wheel: make gpu-wheels)"}
    from experiments.bench import hessian as bench
    from jaxdl import data

    ds = data.load("digits", "train", image_size=twins.IMAGE[0], channels=twins.IMAGE[2])
    x = ds.images[:images].astype(np.float32) / 255.0
    y = ds.labels[:images]
    model = bench.briefly_trained(arch, ds, epochs, seed)
    twin = twins.torch_twin(model).to(device.torch_device()).eval()
    with device.float32():
        with torch.no_grad():
            theirs = twin(twins.torch_images(x[:8]).contiguous().to(device.torch_device())).cpu().numpy()
        same = twins.same_logits(arch, pairs.model_logits(model, x[:8]), theirs)
        jx = bench.run_jax(model, x, y, power_iters, probes, probes, seed)  # chunk = probes: one vmap of all
        pt = bench.run_pyhessian(twin, x, y, power_iters, probes, seed)
    eig_rel = abs(jx["top_eigenvalue"] - pt["top_eigenvalue"]) / abs(pt["top_eigenvalue"])
    trace_z = abs(jx["trace"] - pt["trace"]) / float(np.hypot(jx["trace_stderr"], pt["trace_stderr"]))
    return same | {
        "arch": arch, "images": len(x), "power_iters": power_iters, "probes": probes, "probes_vmapped": probes,
        "jax": jx, "pyhessian": pt, "top_eigenvalue_rel_diff": eig_rel, "trace_diff_in_stderr": trace_z,
        "eig_rtol": EIG_RTOL, "trace_tol_stderr": bench.TRACE_TOL_STDERR,
        "ok": bool(eig_rel <= EIG_RTOL and trace_z <= bench.TRACE_TOL_STDERR),
        "speedup": pt["seconds"] / jx["seconds"], "speedup_incl_compile": pt["seconds_first"] / jx["seconds_first"]}


def grid_search(epochs: int, units: list[int], activations: list[str]) -> dict[str, Any]:
    """The grid (hidden layers (2u, u) x activation, 3 folds + refit) vmapped and sequential, each from cleared
    JAX caches (its compilations counted): times, scores, and whether both chose the same model ("ok")."""
    from experiments.bench import search as bench

    grid = {"hidden": [(2 * u, u) for u in units], "activation_fn": activations}
    args = types.SimpleNamespace(epochs=epochs, batch_size=SEARCH_BATCH, lr=SEARCH_LR)
    x, y, xt, yt = bench.digits()
    runs = {}
    for name, vmap in (("vmapped", True), ("sequential", False)):
        r = harness.measure(lambda vmap=vmap: bench.run_jaxdl(vmap, grid, x, y, xt, yt, args))
        best_cv, test, params = r.value
        runs[name] = {"wall_s": r.wall_s, "cpu_s": r.cpu_s, "best_cv": best_cv, "test": test,
                      "best_params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}
    vm, seq = runs["vmapped"], runs["sequential"]
    return {"grid": {k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in grid.items()},
            "configs": len(units) * len(activations), "folds": 3, "epochs": epochs, "batch_size": SEARCH_BATCH,
            "lr": SEARCH_LR, "train_size": len(x), "test_size": len(xt), "runs": runs,
            "speedup": seq["wall_s"] / vm["wall_s"],
            "ok": vm["best_params"] == seq["best_params"] and abs(vm["best_cv"] - seq["best_cv"]) <= SEARCH_CV_TOL}
