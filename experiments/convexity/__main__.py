"""Run the CE vs MSE convexity study (Q1, Q2, Hessian spectra) and write results.json, report.md and PNGs.

    python -m experiments.convexity --out runs/convexity            # a few minutes on a 2-core CPU
    python -m experiments.convexity --out DIR --resnet-images 256 --lanczos-iters 60 --probes 40
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from experiments.convexity import plots, q1, q2, report, spectra
from jaxdl.runtime import use_fast_cpu_flags


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The study's flags: sizes of each part (the defaults are a few minutes on a 2-core CPU) and where to write."""
    p = argparse.ArgumentParser(prog="python -m experiments.convexity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", type=int, default=10, help="random data sets for the Q1 CE checks")
    p.add_argument("--points", type=int, default=10, help="random points per data set")
    p.add_argument("--gd-steps", type=int, default=300)
    p.add_argument("--gd-lr", type=float, default=1.0)
    p.add_argument("--no-spectrum", action="store_true", help="skip the trained-model spectra")
    p.add_argument("--epochs", type=int, default=3, help="training epochs for the MLP and CNN")
    p.add_argument("--resnet-epochs", type=int, default=3)
    p.add_argument("--hessian-images", type=int, default=256, help="digits the Hessian is taken over")
    p.add_argument("--resnet-images", type=int, default=128, help="digits for the ResNet-18 spectrum (0 skips it)")
    p.add_argument("--lanczos-iters", type=int, default=20)
    p.add_argument("--probes", type=int, default=20, help="Hutchinson probes")
    p.add_argument("--slq-probes", type=int, default=1)
    p.add_argument("--chunk", type=int, help="Hutchinson probes vmapped at once (default: 1 on CPU, all on GPU)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the study as the command line `argv` says; returns the results it wrote to results.json."""
    use_fast_cpu_flags()  # XLA reads it when JAX first computes, which nothing before this line does
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    results: dict = {"q1": q1.run(rng, args.datasets, args.points, args.gd_steps, args.gd_lr), "q2": q2.run(rng, args.points)}
    if not args.no_spectrum:
        results["spectrum"] = spectra.run(
            seed=args.seed, epochs=args.epochs, resnet_epochs=args.resnet_epochs, hessian_images=args.hessian_images,
            resnet_images=args.resnet_images, lanczos_iters=args.lanczos_iters, probes=args.probes,
            slq_probes=args.slq_probes, chunk=args.chunk)
    results["meta"] = {"command": "python -m experiments.convexity " + " ".join(argv if argv is not None else sys.argv[1:]),
                       "seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {jax.devices()[0].device_kind}",
                       "jax": jax.__version__}
    results["meta"]["plots"] = plots.save_all(results, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = report.render(results)
    (args.out / "report.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
