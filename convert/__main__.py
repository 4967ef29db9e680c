"""Command line: torchvision weights to jaxdl safetensors and back.

    python -m convert resnet18 --weights imagenet --num-classes 10 --out resnet18.safetensors
    python -m convert vgg16 --weights my_vgg16.pth --out vgg16.safetensors
    python -m convert --to-torch resnet18.safetensors --out resnet18.pth
    python -m convert --list

A bad argument or file ends the run with one line on stderr and exit status 2 (`jaxdl.cli`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxdl import cli, models
from jaxdl import weights as jaxdl_weights

PROG = "python -m convert"


def parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog=PROG, description=__doc__.split("\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("arch", nargs="?", help="architecture to convert to (see --list)")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet' (torchvision IMAGENET1K_V1), a torchvision weights name, or a .pth file")
    p.add_argument("--num-classes", type=cli.natural_int, default=None,
                   help="replace the head with a fresh one of this size (0: the backbone alone, a feature extractor)")
    p.add_argument("--to-torch", metavar="FILE", help="convert a jaxdl .safetensors file to a torchvision .pth")
    p.add_argument("--out", help="output file")
    p.add_argument("--list", action="store_true", help="list the convertible architectures")
    return p


def output_file(out: str) -> Path:
    """--out as a file this process can write, checked before any conversion."""
    path = Path(out)
    if path.is_dir():
        raise cli.UsageError(f"--out {out} is a directory: name the file to write, e.g. --out {path / 'model.safetensors'}")
    cli.writable_dir(path.parent, "--out's folder")
    return path


def check_request(args: argparse.Namespace) -> None:
    """The architecture and --weights, refused in one line before torch is imported."""
    if args.arch is None:
        raise cli.UsageError("name an architecture (see --list), or use --to-torch FILE")
    try:
        models.architecture(args.arch)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    if args.weights.endswith(".safetensors"):
        raise cli.UsageError(f"--weights {args.weights}: --weights takes imagenet, a torchvision weights name or a "
                             ".pth file; a .safetensors file is already jaxdl's format (jaxdl.weights.load reads it), "
                             "and --to-torch turns it into a .pth")
    if not args.weights.endswith((".pth", ".pt")) and args.arch not in models.TORCHVISION:
        raise cli.UsageError(f"{args.arch} has no torchvision weights: give a .pth file of its PyTorch twin "
                             f"(convert.twins) with --weights, or choose one of {', '.join(models.TORCHVISION)}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print("\n".join(models.TORCHVISION))
        return 0
    if not args.out:
        raise cli.UsageError("--out is required: name the file to write")
    if not args.to_torch:
        check_request(args)
    out = output_file(args.out)
    import torch

    from convert import to_torch
    from convert.hub import WeightsUnavailable, convert_file, torch_file, weights_entry

    start = time.perf_counter()
    try:
        if args.to_torch:
            torch.save(to_torch(jaxdl_weights.load(args.to_torch)), out)
        elif args.weights.endswith((".pth", ".pt")):
            convert_file(args.weights, args.arch, args.num_classes, out=out)
        else:
            source = torch_file(args.arch, args.weights)
            convert_file(source, args.arch, args.num_classes, source=weights_entry(args.arch, args.weights).url, out=out)
    except (ValueError, FileNotFoundError, WeightsUnavailable) as e:  # ConversionError and WeightsError included
        raise cli.UsageError(str(e)) from None
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, PROG))
