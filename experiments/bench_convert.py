"""Conversion time per architecture: torchvision state_dict -> jaxdl model, and back.

    python -m experiments.bench_convert [--arch resnet18,vgg16] [--repeats 3] [--json FILE]

Uses randomly initialised torchvision models (ImageNet-sized heads), since the real weight files cannot be
downloaded everywhere; conversion time depends only on the shapes. Reports the median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torchvision

import convert
from jaxdl.models import TORCHVISION


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default=",".join(TORCHVISION))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    rows = []
    print(f"{'arch':<10} {'params':>12} {'from_torch s':>13} {'to_torch s':>11} {'new head s':>11}")
    for arch in args.arch.split(","):
        sd = torchvision.models.get_model(arch).state_dict()
        model = convert.from_torch(sd, arch)  # warm-up: first-call costs (imports, kernel compiles)
        row = {
            "arch": arch,
            "params": sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k),
            "from_torch_s": timed(lambda: convert.from_torch(sd, arch), args.repeats),
            "to_torch_s": timed(lambda: convert.to_torch(model), args.repeats),
            "new_head_s": timed(lambda: convert.from_torch(sd, arch, num_classes=10), args.repeats),
        }
        rows.append(row)
        print(f"{arch:<10} {row['params']:>12,} {row['from_torch_s']:>13.2f} {row['to_torch_s']:>11.2f} {row['new_head_s']:>11.2f}")
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}"
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
