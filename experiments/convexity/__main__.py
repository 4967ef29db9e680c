"""Run the CE vs MSE convexity study (Q1, Q2, Hessian spectra) and write results.json, report.md and PNGs.

    python -m experiments.convexity --out runs/convexity            # a few minutes on a 2-core CPU
    python -m experiments.convexity --out DIR --resnet-images 256 --lanczos-iters 60 --probes 40

A bad argument ends the run before any work with one line on stderr and exit status 2 (`jaxdl.cli`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from experiments.convexity import plots, q1, q2, report, spectra
from jaxdl import cli, data
from jaxdl.runtime import use_fast_cpu_flags

PROG = "python -m experiments.convexity"


def at_least(low: int, why: str) -> Callable[[str], int]:
    """An argparse type: an integer >= `low`, refused with the reason `why`."""
    def parse(text: str) -> int:
        value = int(cli.natural_int(text))
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is too small: {why}")
        return value
    return parse


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The study's flags: sizes of each part (the defaults are a few minutes on a 2-core CPU) and where to write,
    each checked (alone, then against each other) before any work is done."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=cli.natural_int, default=0)
    p.add_argument("--datasets", type=cli.positive_int, default=10, help="random data sets for the Q1 CE checks")
    p.add_argument("--points", type=cli.positive_int, default=10, help="random points per data set")
    p.add_argument("--gd-steps", type=cli.positive_int, default=300)
    p.add_argument("--gd-lr", type=cli.positive_float, default=1.0)
    p.add_argument("--no-spectrum", action="store_true", help="skip the trained-model spectra")
    p.add_argument("--epochs", type=cli.positive_int, default=3, help="training epochs for the MLP and CNN")
    p.add_argument("--resnet-epochs", type=cli.positive_int, default=3)
    enough = f"the Hessian needs at least {data.NUM_CLASSES} digits, one per class on average"
    p.add_argument("--hessian-images", type=at_least(data.NUM_CLASSES, enough), default=256,
                   help=f"digits the Hessian is taken over (at least {data.NUM_CLASSES})")
    p.add_argument("--resnet-images", type=cli.natural_int, default=128,
                   help="digits for the ResNet-18 spectrum, the first of the Hessian's (0 skips it)")
    p.add_argument("--lanczos-iters", type=at_least(2, "Lanczos needs 2 or more steps to estimate both extremes"),
                   default=20)
    p.add_argument("--probes", type=at_least(2, "Hutchinson's trace needs 2 or more probes for a standard error"),
                   default=20, help="Hutchinson probes")
    p.add_argument("--slq-probes", type=cli.positive_int, default=1)
    p.add_argument("--chunk", type=cli.positive_int,
                   help="Hutchinson probes vmapped at once, a divisor of --probes (default: 1 on CPU, all on GPU)")
    args = p.parse_args(argv)
    if not args.no_spectrum:
        pool = len(data.load("digits", "train", image_size=8, channels=1))  # what spectra.run draws from
        if args.hessian_images > pool:
            p.error(f"--hessian-images {args.hessian_images} exceeds the {pool} training digits: use at most {pool}")
        if args.resnet_images > args.hessian_images:
            p.error(f"--resnet-images {args.resnet_images} exceeds --hessian-images {args.hessian_images}: the ResNet's "
                    "digits are the first of the Hessian's, so use at most as many")
        if args.chunk is not None and args.probes % args.chunk:
            p.error(f"--chunk {args.chunk} does not divide --probes {args.probes}: choose a divisor, e.g. 1")
    cli.writable_dir(args.out)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the study as the command line `argv` says; returns the results it wrote to results.json."""
    use_fast_cpu_flags()  # XLA reads it when JAX first computes, which nothing before this line does
    args = parse(argv)
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
    sys.exit(cli.run(main, PROG))
