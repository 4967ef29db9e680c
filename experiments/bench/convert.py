"""Conversion time per architecture: torchvision state_dict -> jaxdl model, and back.

    python -m experiments.bench.convert [--arch resnet18,vgg16] [--repeats 3] [--json FILE]

Uses randomly initialised torchvision models (ImageNet-sized heads), since the real weight files cannot be
downloaded everywhere; conversion time depends only on the shapes. Reports the median of `--repeats` runs,
after one untimed conversion (first-call costs: imports, kernel compilations).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torchvision

import convert
from experiments.bench import harness
from jaxdl import cli
from jaxdl.models import TORCHVISION
from jaxdl.runtime import use_fast_cpu_flags

MODULE = "experiments.bench.convert"


def median_s(run: Callable[[], object], repeats: int) -> float:
    return statistics.median(harness.timed(run) for _ in range(repeats))


def bench_arch(arch: str, repeats: int) -> dict:
    sd = torchvision.models.get_model(arch).state_dict()
    model = convert.from_torch(sd, arch)  # the untimed first conversion
    return {
        "arch": arch,
        "params": sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k),
        "from_torch_s": median_s(lambda: convert.from_torch(sd, arch), repeats),
        "to_torch_s": median_s(lambda: convert.to_torch(model), repeats),
        "new_head_s": median_s(lambda: convert.from_torch(sd, arch, num_classes=10), repeats),
    }


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--arch", default=",".join(TORCHVISION))
    p.add_argument("--repeats", type=cli.positive_int, default=3)
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    for arch in args.arch.split(","):
        if arch not in TORCHVISION:
            p.error(f"{arch!r} has no torchvision twin: choose from {', '.join(TORCHVISION)}")
    header = harness.header(MODULE, argv)
    print(harness.describe(header["machine"]) + "\n")
    harness.print_header("arch", "params", "from_torch s", "to_torch s", "from_torch, new head s")
    rows = []
    for arch in args.arch.split(","):
        rows.append(row := bench_arch(arch, args.repeats))
        harness.print_row(arch, f"{row['params']:,}", f"{row['from_torch_s']:.2f}", f"{row['to_torch_s']:.2f}",
                          f"{row['new_head_s']:.2f}")
    if args.json:
        harness.write_json(args.json, header | {"rows": rows})


if __name__ == "__main__":
    harness.run(main, MODULE)
