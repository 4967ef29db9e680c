"""The framework comparison across input sizes, in one run and one table: `experiments.bench` for a grid of
(models, image size, batch size).

    python -m experiments.bench.sizes [--grid "mlp,cnn,lenet5,resnet18,resnet50,vgg16@32:128 resnet18,resnet50@64:64
                                               resnet18,resnet50@128:32 resnet18,resnet50@224:16"]
                                      [--rounds 3] [--steps 3] [--seconds 4] [--no-torch-compile] [--out FILE]

Every cell is `experiments.bench.frameworks.bench_model` (same weights, same batch, logits checked before
timing, frameworks alternating round by round, torch.compile beside PyTorch eager, % of GEMM peak, peak memory):
see that module for what each figure means. The default grid is the CPU-speed goal's: every model at 32 px, the
ResNets at 64, 128 and 224 px.
"""

from __future__ import annotations

import argparse
import json

from experiments.bench import frameworks, harness
from jaxdl.models import architecture, check_name
from jaxdl.runtime import use_fast_cpu_flags

MODULE = "experiments.bench.sizes"
GRID = ("mlp,cnn,lenet5,resnet18,resnet50,vgg16@32:128 resnet18,resnet50@64:64 resnet18,resnet50@128:32 "
        "resnet18,resnet50@224:16")


def grid(text: str) -> list[tuple[str, int, int]]:
    """An argparse type: space-separated MODELS@SIZE:BATCH groups -> [(arch, size, batch)]."""
    cells = []
    for group in text.split():
        try:
            models, shape = group.split("@")
            size, batch = (int(v) for v in shape.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{group!r}: write MODELS@SIZE:BATCH, e.g. resnet18,resnet50@224:16") from None
        for arch in models.split(","):
            try:
                check_name(arch)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
            if size < architecture(arch).min_input_size or batch < 1:
                raise argparse.ArgumentTypeError(f"{arch}@{size}:{batch}: {arch} needs at least "
                                                 f"{architecture(arch).min_input_size} px and a positive batch")
            cells.append((arch, size, batch))
    return cells


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--grid", type=grid, default=grid(GRID))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--no-torch-compile", dest="torch_compile", action="store_false")
    p.add_argument("--out", type=harness.output_file, default="bench-sizes.json")
    args = p.parse_args(argv)
    header = harness.header(MODULE, argv) | {"gemm_peak_gflops": harness.gemm_peak()}
    print(json.dumps(header))
    print()
    harness.print_header("model", "size", "batch", "mode", "jaxdl img/s", "PyTorch img/s", "ratio", "torch.compile img/s",
                         "ratio vs compile", "% of GEMM peak, jaxdl / PyTorch / compile",
                         "peak MB, jaxdl / PyTorch / compile")
    results = []
    for arch, size, batch in args.grid:
        cell = frameworks.parse(["--models", arch, "--image-size", str(size), "--batch-size", str(batch),
                                 "--rounds", str(args.rounds), "--steps", str(args.steps), "--seconds", str(args.seconds),
                                 *([] if args.torch_compile else ["--no-torch-compile"])])
        result = frameworks.bench_model(arch, cell)
        results.append({"arch": arch, "image_size": size, "batch_size": batch, **result})
        for mode in ("train", "eval"):
            row = result[mode]
            fracs = " / ".join(f"{row[k]:.0%}" if row[k] is not None else "n/a"
                               for k in ("gemm_frac", "torch_gemm_frac", "compile_gemm_frac"))
            memory = "" if mode == "eval" else " / ".join(
                f"{row[f'{k}_peak_mb']:.0f}" if row[f"{k}_peak_mb"] is not None else "n/a" for k in frameworks.SIDES)
            compiled = (f"{row['torch_compile_img_s']:.0f}", f"{row['ratio_compile']:.2f}") \
                if row["torch_compile_img_s"] is not None else ("n/a", "n/a")
            harness.print_row(arch, size, batch, mode, f"{row['jax_img_s']:.0f}", f"{row['torch_img_s']:.0f}",
                              f"{row['ratio']:.2f}", *compiled, fracs, memory)
        harness.write_json(args.out, header | {"results": results})  # after every cell: a cut-short run keeps them
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    harness.run(main, MODULE)
