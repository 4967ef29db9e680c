"""Command line: torchvision weights to jaxdl safetensors and back.

    python -m convert resnet18 --weights imagenet --num-classes 10 --out resnet18.safetensors
    python -m convert vgg16 --weights my_vgg16.pth --out vgg16.safetensors
    python -m convert --to-torch resnet18.safetensors --out resnet18.pth
    python -m convert --list
"""

from __future__ import annotations

import argparse
import sys
import time

from jaxdl import models
from jaxdl import weights as jaxdl_weights


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convert", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("arch", nargs="?", help="architecture to convert to (see --list)")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet' (torchvision IMAGENET1K_V1), a torchvision weights name, or a .pth file")
    p.add_argument("--num-classes", type=int, default=None, help="replace the head with a fresh one of this size")
    p.add_argument("--to-torch", metavar="FILE", help="convert a jaxdl .safetensors file to a torchvision .pth")
    p.add_argument("--out", help="output file")
    p.add_argument("--list", action="store_true", help="list the convertible architectures")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print("\n".join(models.TORCHVISION))
        return 0
    if not args.out:
        parser().error("--out is required")
    import torch

    from convert import to_torch
    from convert.hub import convert_file, torch_file, weights_entry

    start = time.perf_counter()
    if args.to_torch:
        torch.save(to_torch(jaxdl_weights.load(args.to_torch)), args.out)
    elif args.arch is None:
        parser().error("name an architecture, or use --to-torch or --list")
    elif args.weights.endswith((".pth", ".pt")):
        convert_file(args.weights, args.arch, args.num_classes, out=args.out)
    else:
        source = torch_file(args.arch, args.weights)
        convert_file(source, args.arch, args.num_classes, source=weights_entry(args.arch, args.weights).url, out=args.out)
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
