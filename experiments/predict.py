"""Predict the classes of images with a jaxdl model: a fine-tuned `best.safetensors`, converted ImageNet weights.

    python -m experiments.predict --weights runs/pets/best.safetensors cat.jpg more_photos/
    python -m experiments.predict --weights resnet18.safetensors photos/ --topk 3 --json predictions.json

Prints one line per image, its top K classes with their probabilities (`photos/a.jpg: tabby 0.8123, ...`);
--json also writes [{"file": path, "topk": [{"class": name, "probability": p}, ...]}, ...]. A directory means
every .png .jpg .jpeg .bmp .webp file under it (any case, recursively, sorted; hidden files skipped).

The file's stored class names and preprocessing are used (`jaxdl.weights.save(..., classes=, preprocessing=)`;
`python -m convert` stores ImageNet's): decode with PIL, convert to RGB (grey, for a model whose spec says
in_channels=1), resize with PIL's antialiased bilinear filter (the shorter side to `resize` keeping the aspect
as torchvision's Resize(int), or exactly to [h, w]), centre-crop (torchvision's CenterCrop), scale to [0, 1]
and normalise with the stored mean and std. A file without stored preprocessing needs --mean and --std (and
--image-size, unless its model has a fixed one): its model's training statistics cannot be guessed. Without
stored class names the classes are called 0..K-1.

Exit statuses (`jaxdl.cli`): 0 done; 1 some images could not be read (each named in one line on stderr; the
others are still predicted and written); 2 a mistake in the arguments, the weights file or its metadata, or no
image at all, in one line before any prediction.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl import cli
from jaxdl.runtime import use_fast_cpu_flags

PROG = "python -m experiments.predict"
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")  # jaxdl.data.folder's, torchvision's loaders'
INTERPOLATIONS = ("bilinear", "bicubic")
DEFAULT_TOPK = 5


class ImageUnreadable(Exception):
    """An image that PIL cannot open or decode: the message names the file and why."""


def parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog=PROG, description=__doc__.split("\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR", help="image files, or directories of them")
    p.add_argument("--weights", required=True, metavar="FILE", help="a jaxdl .safetensors file")
    p.add_argument("--topk", type=cli.positive_int, default=None,
                   help=f"classes shown per image (default {DEFAULT_TOPK}, or all when fewer)")
    p.add_argument("--json", metavar="OUT", help="also write the predictions to this JSON file")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--image-size", type=cli.positive_int, default=None,
                   help="for a file without stored preprocessing: resize to N x N (default: the model's image_size)")
    p.add_argument("--mean", type=_floats, default=None, metavar="M[,M,M]",
                   help="for a file without stored preprocessing: the training data's per-channel mean, [0, 1] scale")
    p.add_argument("--std", type=_floats, default=None, metavar="S[,S,S]",
                   help="for a file without stored preprocessing: the training data's per-channel std, [0, 1] scale")
    return p


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} has a value that is not a finite number")
    return values


# ---------------------------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """What turns a file into the model's input: torchvision's Resize, CenterCrop, ToTensor, Normalize."""

    resize: int | tuple[int, int]  # the shorter side (aspect kept), or (h, w) exactly
    crop: tuple[int, int] | None  # (h, w) of the centre crop
    mean: np.ndarray
    std: np.ndarray
    channels: int  # 3: RGB, 1: grey
    interpolation: str = "bilinear"

    def output_size(self) -> tuple[int, int] | None:
        """(h, w) of every input, or None when it follows each image's aspect ratio."""
        if self.crop is not None:
            return self.crop
        return self.resize if isinstance(self.resize, tuple) else None

    def describe(self) -> str:
        size = self.output_size()
        return f"{size[0]}x{size[1]} inputs" if size else f"inputs whose shorter side is {self.resize} (aspect kept)"

    def __call__(self, path: str) -> np.ndarray:
        """The model's input for the image at `path`: float32 (H, W, channels)."""
        pixels = self.decode(path)
        if self.crop is not None:
            pixels = center_crop(pixels, *self.crop)
        x = pixels.astype(np.float32) / np.float32(255.0)
        return (x - self.mean) / self.std

    def decode(self, path: str) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")  # torchvision's loader: alpha dropped
                size = resized_size(im.width, im.height, self.resize)
                if im.size != size:
                    im = im.resize(size, getattr(Image.Resampling, self.interpolation.upper()))
                pixels = np.asarray(im)
        except MemoryError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error... on bad files
            reason = (str(e).splitlines() or [""])[0][:200] or type(e).__name__
            raise ImageUnreadable(f"{path}: not a readable image ({reason})") from None
        return pixels.reshape(*pixels.shape[:2], self.channels)


def resized_size(width: int, height: int, resize: int | tuple[int, int]) -> tuple[int, int]:
    """PIL's (w, h) after torchvision's Resize(resize): an int is the shorter side, the longer one scaled and
    truncated as torchvision does; (h, w) is exact."""
    if isinstance(resize, tuple):
        return resize[1], resize[0]
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's CenterCrop: zero-padded first where the image is smaller, offsets rounded as it does."""
    h, w = pixels.shape[:2]
    if height > h or width > w:
        dh, dw = max(height - h, 0), max(width - w, 0)
        pixels = np.pad(pixels, ((dh // 2, (dh + 1) // 2), (dw // 2, (dw + 1) // 2), (0, 0)))
        h, w = pixels.shape[:2]
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return pixels[top:top + height, left:left + width]


def _size(value: Any, what: str) -> int | tuple[int, int]:
    """An int > 0, or [h, w] of them (a list of one is the int, as torchvision's size=[n])."""
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if ok(value):
        return value
    if isinstance(value, list) and len(value) == 2 and all(map(ok, value)):
        return value[0], value[1]
    raise ValueError(f"{what} {value!r} is neither a positive int nor [h, w]")


def _stats(value: Any, what: str, channels: int, positive: bool) -> np.ndarray:
    if (not isinstance(value, list) or len(value) not in {1, channels}
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ValueError(f"{what} {value!r} is not a list of {channels} numbers" + (" (or 1)" if channels > 1 else ""))
    if positive and min(value) <= 0:
        raise ValueError(f"{what} {value!r} has a value <= 0")
    return np.asarray(value, np.float32)


def stored(raw: Any, channels: int) -> Preprocessing:
    """The preprocessing dict `jaxdl.weights.save` stores, checked; ValueError saying what is wrong."""
    if not isinstance(raw, dict) or not {"resize", "mean", "std"} <= raw.keys():
        raise ValueError(f"{raw!r} is not a dict with resize, crop, mean and std")
    crop = raw.get("crop")
    crop = None if crop is None else _size(crop, "crop")
    interpolation = raw.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    return Preprocessing(_size(raw["resize"], "resize"), (crop, crop) if isinstance(crop, int) else crop,
                         _stats(raw["mean"], "mean", channels, False), _stats(raw["std"], "std", channels, True),
                         channels, interpolation)


# ------------------------------------------------------------------------------------------------ the request


@dataclass(frozen=True)
class Request:
    arch: str
    num_classes: int
    classes: list[str]
    preprocessing: Preprocessing
    files: list[str]
    topk: int


def model_description(file: str) -> tuple[str, int, dict[str, Any], list[str] | None, Any]:
    """(arch, num_classes, options with defaults, class names, raw preprocessing) from the file's metadata."""
    from jaxdl import models
    from jaxdl import weights as jaxdl_weights

    try:
        meta = jaxdl_weights.metadata(file)
        names = jaxdl_weights.classes(file)
        raw = jaxdl_weights.preprocessing(file)
    except ValueError as e:  # WeightsError, and json's on damaged metadata
        raise cli.UsageError(f"--weights {e}" if str(e).startswith(str(file)) else f"--weights {file}: {e}") from None
    arch = meta["arch"]
    options = {**models.architecture(arch).options, **json.loads(meta["options"])}
    return arch, int(meta["num_classes"]), options, names, raw


def preprocessing_for(args: argparse.Namespace, arch: str, options: dict[str, Any], raw: Any) -> Preprocessing:
    """The stored preprocessing, or the one --image-size/--mean/--std describe for a file without; checked
    against what the model accepts."""
    from jaxdl import models

    channels = int(options.get("in_channels", 3))
    flags = [f for f, v in (("--image-size", args.image_size), ("--mean", args.mean), ("--std", args.std)) if v]
    if raw is not None:
        if flags:
            raise cli.UsageError(f"{args.weights} stores its preprocessing ({json.dumps(raw)}); {', '.join(flags)} "
                                 "are only for files without: drop them")
        try:
            pre = stored(raw, channels)
        except ValueError as e:
            raise cli.UsageError(f"{args.weights} stores preprocessing that cannot be applied: {e}: re-save it with "
                                 "jaxdl.weights.save(..., preprocessing={...})") from None
    else:
        size = args.image_size or options.get("image_size")
        if args.mean is None or args.std is None or size is None:
            need = " ".join(f for f, v in (("--image-size N", size), ("--mean M", args.mean), ("--std S", args.std))
                            if v is None)
            raise cli.UsageError(f"{args.weights} stores no preprocessing, and its model's training statistics cannot "
                                 "be guessed: re-save it with jaxdl.weights.save(..., preprocessing={'resize': ..., "
                                 f"'crop': ..., 'mean': [...], 'std': [...]}}), or give {need}")
        try:
            pre = Preprocessing((size, size), None, _stats(args.mean, "--mean", channels, False),
                                _stats(args.std, "--std", channels, True), channels)
        except ValueError as e:
            raise cli.UsageError(str(e)) from None
    out = pre.output_size()
    fixed = options.get("image_size")
    if fixed is not None and out != (fixed, fixed):
        raise cli.UsageError(f"{args.weights}: its {arch} takes {fixed}x{fixed} inputs, but the preprocessing gives "
                             f"{pre.describe()}: re-save it with preprocessing that ends at {fixed}x{fixed}")
    smallest = models.architecture(arch).min_input_size
    if min(out or (pre.resize,)) < smallest:
        raise cli.UsageError(f"{args.weights}: its {arch} needs inputs of at least {smallest}x{smallest}, but the "
                             f"preprocessing gives {pre.describe()}")
    return pre


def image_files(arguments: Sequence[str]) -> list[str]:
    """Each argument as given if a file (its extension not checked: PIL decides), or every image under it if a
    directory; UsageError for a path that does not exist and when there is no image at all."""
    if not arguments:
        raise cli.UsageError("no images: name image files or directories after --weights FILE")
    found: list[str] = []
    for arg in arguments:
        path = Path(arg)
        if path.is_dir():
            found.extend(_images_under(path))
        elif path.exists():
            found.append(arg)
        else:
            raise cli.UsageError(f"{arg}: no such file or directory")
    if not found:
        raise cli.UsageError(f"no images in {', '.join(arguments)} (looked for {', '.join(IMAGE_EXTENSIONS)}, any case)")
    return found


def _images_under(folder: Path) -> list[str]:
    def fail(error: OSError) -> None:
        raise cli.UsageError(f"cannot list {error.filename}: {error.strerror or error}")

    found = []
    for top, dirs, names in os.walk(folder, followlinks=True, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(top, n) for n in sorted(names)
                     if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS))
    return found


def json_file(out: str) -> Path:
    path = Path(out)
    if path.is_dir():
        raise cli.UsageError(f"--json {out} is a directory: name the file to write, e.g. {path / 'predictions.json'}")
    cli.writable_dir(path.parent, "--json's folder")
    return path


def request(args: argparse.Namespace) -> Request:
    """Everything checked before any work: the weights' metadata, the preprocessing, --topk, the images."""
    arch, num_classes, options, names, raw = model_description(args.weights)
    if num_classes == 0:
        raise cli.UsageError(f"{args.weights} holds a {arch} without a classifier (num_classes=0), a feature "
                             "extractor: there are no classes to predict")
    topk = min(DEFAULT_TOPK, num_classes) if args.topk is None else args.topk
    if topk > num_classes:
        raise cli.UsageError(f"--topk {topk} is more than the model's {num_classes} classes")
    pre = preprocessing_for(args, arch, options, raw)
    files = image_files(args.images)
    return Request(arch, num_classes, names or [str(i) for i in range(num_classes)], pre, files, topk)


# -------------------------------------------------------------------------------------------------- predicting


def forward(file: str):
    """The model in `file`, in eval mode, as a jitted images -> class probabilities."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxdl import weights as jaxdl_weights

    try:
        model = jaxdl_weights.load(file)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def probabilities(state, images):
        logits = nnx.merge(graphdef, state)(images)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return lambda images: np.asarray(probabilities(state, images))


def predict(req: Request, weights: str, batch_size: int, emit) -> list[str]:
    """Call `emit(path, probabilities)` for every readable image, in order; return the messages of the others.

    A static batch: min(batch_size, number of images) images per forward pass, the last padded with zeros;
    inputs of different sizes (a resize that keeps the aspect, no crop) go through separately."""
    run = forward(weights)
    batch = min(batch_size, len(req.files))
    unreadable = []
    for start in range(0, len(req.files), batch):
        inputs: dict[int, np.ndarray] = {}
        for i, path in enumerate(req.files[start:start + batch]):
            try:
                inputs[i] = req.preprocessing(path)
            except ImageUnreadable as e:
                print(f"{PROG}: {e}", file=sys.stderr, flush=True)
                unreadable.append(str(e))
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in inputs.items():
            by_shape.setdefault(x.shape, []).append(i)
        probabilities: dict[int, np.ndarray] = {}
        for shape, members in by_shape.items():
            images = np.zeros((batch, *shape), np.float32)
            for row, i in enumerate(members):
                images[row] = inputs[i]
            out = run(images)
            probabilities.update({i: out[row] for row, i in enumerate(members)})
        for i in sorted(probabilities):
            emit(req.files[start + i], probabilities[i])
    return unreadable


def top(probabilities: np.ndarray, k: int, names: Sequence[str]) -> list[dict[str, Any]]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": names[c], "probability": float(probabilities[c])} for c in order]


def main(argv: list[str] | None = None) -> int:
    use_fast_cpu_flags()
    args = parser().parse_args(argv)
    req = request(args)
    out = json_file(args.json) if args.json else None
    results: list[dict[str, Any]] = []

    def emit(path: str, probabilities: np.ndarray) -> None:
        best = top(probabilities, req.topk, req.classes)
        results.append({"file": path, "topk": best})
        print(f"{path}: " + ", ".join(f"{b['class']} {b['probability']:.4f}" for b in best), flush=True)

    unreadable = predict(req, args.weights, args.batch_size, emit)
    if out is not None:
        part = out.with_name(out.name + ".part")
        part.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(part, out)
    if unreadable:
        written = f" and written to {out}" if out is not None else ""
        raise cli.RunFailed(f"{len(unreadable)} of {len(req.files)} images could not be read (each named above); "
                            f"the other {len(results)} were predicted{written}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, PROG))
