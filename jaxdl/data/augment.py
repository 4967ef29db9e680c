"""AutoAugment (Cubuk et al. 2019) as torchvision implements it, for uint8 NHWC batches on the host.

    aa = AutoAugment("svhn")                   # == transforms.AutoAugment(AutoAugmentPolicy.SVHN)
    images = aa(images, rng)                   # uint8 (N, H, W, 1 or 3) -> same shape, new array

Why host-side (numpy + PIL) and not a jitted JAX function:
- The reference is torchvision's PIL path, whose ops are PIL calls. The geometric and ImageEnhance ops here
  are those very calls (`Image.transform` with torchvision's affine coefficients, `Image.rotate`, nearest
  interpolation), the only way to give its pixels exactly, rounding and border conventions included. The
  per-pixel ops (Invert, Solarize, Posterize, Equalize, AutoContrast) are PIL's `ImageOps` lookup tables
  built in numpy (ImageOps builds them in Python loops, up to 0.15 ms an image): the same tables, the
  same pixels. tests/test_augment.py checks every op, and the whole transform, against torchvision exactly.
- Every image gets its own sub-policy, coin flips and signs, i.e. its own chain of data-dependent ops
  (histogram equalisation, autocontrast, ...). Under `jax.jit` that means computing every branch for every
  image and selecting; on the host it is zero to two small ops per image: about 9 ms of one core per batch of
  256 32x32 RGB images (torchvision's own transform on PIL images: about 60 ms), done in the pipeline's
  prefetch thread while the accelerator trains.
- It is deterministic given the numpy Generator: all random choices for a batch are drawn up front, in a
  fixed order (sub-policy ids, then probabilities, then signs), so a pipeline that seeds one Generator per
  (seed, epoch, batch) gives a resumed run exactly the augmentations of the uninterrupted one.
  That draw order is part of the contract: changing it changes every augmented batch.

The random choices follow torchvision's `AutoAugment.forward` (sub-policy uniform over the 25; op i applied
when u_i <= p_i with u_i uniform in [0, 1); a signed magnitude is negated when its sign bit is 0), drawn from
numpy instead of torch's global generator, so the distribution is torchvision's, not its exact stream.
Magnitudes are torchvision's bins, bit for bit (`magnitude_bins`). Interpolation is NEAREST,
torchvision's default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Union

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

Fill = Union[None, float, Sequence[float]]
SubPolicy = tuple[tuple[str, float, Union[int, None]], tuple[str, float, Union[int, None]]]
NUM_BINS = 10  # torchvision's AutoAugment always uses 10 magnitude bins

# torchvision.transforms.AutoAugmentPolicy.SVHN: 25 sub-policies of two (op, probability, magnitude bin).
POLICIES: dict[str, tuple[SubPolicy, ...]] = {
    "svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
}
# The names the training CLIs accept for `--augment`, and the policy each one means.
NAMES = {"autoaugment-svhn": "svhn"}


def _linspace(start: float, end: float, steps: int = NUM_BINS) -> np.ndarray:
    """torch.linspace in float32, bit for bit: step in float32, the first half counted up from `start`, the
    second down from `end`, each as one fused multiply-add (how PyTorch's x86 CPU kernel rounds: emulated
    in float64, exact for these products). Matters only at the last bit, e.g. whether a translation of
    150/331 * W pixels truncates to k or k - 1."""
    s, e = np.float32(start), np.float32(end)
    step = np.float64(np.float32((e - s) / np.float32(steps - 1)))
    i = np.arange(steps)
    up, down = np.float64(s) + step * i, np.float64(e) - step * (steps - 1 - i)
    return np.where(i < steps // 2, up, down).astype(np.float32)


@lru_cache(maxsize=32)
def magnitude_bins(height: int, width: int) -> dict[str, tuple[np.ndarray | None, bool]]:
    """torchvision's `AutoAugment._augmentation_space(10, (height, width))`: op -> (float32 bins or None for
    ops without a magnitude, signed). Translations scale with the image: up to 150/331 of its size.
    Cached per size (building it costs more than augmenting a few images): treat it as read-only."""
    posterize = (8 - np.round(np.arange(NUM_BINS, dtype=np.float32) / np.float32((NUM_BINS - 1) / 4))).astype(np.int32)
    bins = {
        "ShearX": (_linspace(0.0, 0.3), True),
        "ShearY": (_linspace(0.0, 0.3), True),
        "TranslateX": (_linspace(0.0, 150.0 / 331.0 * width), True),
        "TranslateY": (_linspace(0.0, 150.0 / 331.0 * height), True),
        "Rotate": (_linspace(0.0, 30.0), True),
        "Brightness": (_linspace(0.0, 0.9), True),
        "Color": (_linspace(0.0, 0.9), True),
        "Contrast": (_linspace(0.0, 0.9), True),
        "Sharpness": (_linspace(0.0, 0.9), True),
        "Posterize": (posterize, False),
        "Solarize": (_linspace(255.0, 0.0), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
        "Invert": (None, False),
    }
    for values, _ in bins.values():
        if values is not None:
            values.flags.writeable = False
    return bins


def _fill_color(fill: Fill, channels: int) -> int | tuple[int, ...]:
    """PIL `fillcolor` as torchvision's `_parse_fill` builds it: None is black, one value serves every band."""
    values = [0.0] if fill is None else [float(fill)] if isinstance(fill, (int, float)) else [float(f) for f in fill]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"fill has {len(values)} values for a {channels}-channel image")
    return int(values[0]) if channels == 1 else tuple(int(v) for v in values)


def _affine(img: Image.Image, translate: tuple[float, float], shear: tuple[float, float],
            center: tuple[float, float] | None, fill: Fill) -> Image.Image:
    """torchvision `F.affine(img, angle=0, translate, scale=1, shear (degrees), NEAREST, fill, center)` on a
    PIL image: its `_get_inverse_affine_matrix` (the same float operations, so the same coefficients), then
    `Image.transform`. center None is the image centre (w/2, h/2), no half-pixel offset, as torchvision's."""
    cx, cy = center if center is not None else (img.width * 0.5, img.height * 0.5)
    tx, ty = translate
    rot, sx, sy = 0.0, math.radians(shear[0]), math.radians(shear[1])
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]  # inverse of the rotation-shear block (its determinant is 1)
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return img.transform(img.size, Image.AFFINE, m, Image.NEAREST,
                         fillcolor=_fill_color(fill, len(img.getbands())))


_ENHANCERS = {"Brightness": ImageEnhance.Brightness, "Color": ImageEnhance.Color,
              "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}
_PIL_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", *_ENHANCERS})
_LUT_OPS = frozenset({"Posterize", "Solarize", "AutoContrast", "Equalize", "Invert", "Identity"})


def _pil_op(img: Image.Image, op: str, magnitude: float, fill: Fill) -> Image.Image:
    """The geometric and ImageEnhance ops: torchvision's own PIL calls."""
    if op == "ShearX":
        return _affine(img, (0, 0), (math.degrees(math.atan(magnitude)), 0.0), (0, 0), fill)
    if op == "ShearY":
        return _affine(img, (0, 0), (0.0, math.degrees(math.atan(magnitude))), (0, 0), fill)
    if op == "TranslateX":
        return _affine(img, (int(magnitude), 0), (0.0, 0.0), None, fill)
    if op == "TranslateY":
        return _affine(img, (0, int(magnitude)), (0.0, 0.0), None, fill)
    if op == "Rotate":
        return img.rotate(magnitude, Image.NEAREST, False, None, fillcolor=_fill_color(fill, len(img.getbands())))
    return _ENHANCERS[op](img).enhance(1.0 + magnitude)


def _equalize_luts(h: np.ndarray) -> np.ndarray:
    """PIL's `ImageOps.equalize` tables for (C, 256) histograms, its integer arithmetic vectorised: per
    channel, step = (pixels - pixels at the top used level) // 255, and level i maps to
    (step // 2 + pixels below i) // step; identity when fewer than two levels are used or step is 0."""
    top = 255 - np.argmax(h[:, ::-1] > 0, axis=1)
    below = np.cumsum(h, axis=1) - h
    step = (below[:, -1] + h[:, -1] - h[np.arange(len(h)), top]) // 255
    step = np.where(np.count_nonzero(h, axis=1) > 1, step, 0)[:, None]
    return np.where(step > 0, (step // 2 + below) // np.maximum(step, 1), np.arange(256))


def _autocontrast_luts(h: np.ndarray) -> np.ndarray:
    """PIL's `ImageOps.autocontrast` tables (no cutoff) for (C, 256) histograms: the used levels [lo, hi]
    stretched to [0, 255] in the same float64 operations, truncated as Python's int() does; identity for a
    channel with one level."""
    lo = np.argmax(h > 0, axis=1)[:, None]
    hi = 255 - np.argmax(h[:, ::-1] > 0, axis=1)[:, None]
    scale = 255.0 / np.maximum(hi - lo, 1)
    return np.where(hi > lo, np.trunc(np.arange(256.0) * scale + (-lo * scale)), np.arange(256))


def _lut_op(x: np.ndarray, op: str, magnitude: float) -> np.ndarray:
    """The per-pixel ops on an HWC uint8 array: PIL's `ImageOps` tables, built in numpy. ImageOps builds them
    in Python loops (AutoContrast ~0.4 ms an image); these are the same tables, so the same pixels, ~10x
    faster. Tables are clipped to [0, 255] as `Image.point` clips them."""
    if op == "Identity":
        return x.copy()
    if op == "Invert":
        return 255 - x
    if op == "Posterize":
        bits = int(magnitude)
        if not 1 <= bits <= 8:
            raise ValueError(f"Posterize keeps 1 to 8 bits, got {bits}")
        return x & np.uint8(0xFF & ~(2 ** (8 - bits) - 1))
    values = np.arange(256)
    if op == "Solarize":
        return np.where(values < magnitude, values, 255 - values).astype(np.uint8)[x]
    c = x.shape[-1]
    index = (x + np.arange(0, 256 * c, 256)).ravel()  # pixel value + 256 * channel: one table per channel
    histograms = np.bincount(index, minlength=256 * c).reshape(c, 256)  # PIL's `Image.histogram`
    luts = (_equalize_luts if op == "Equalize" else _autocontrast_luts)(histograms)
    return np.clip(luts, 0, 255).astype(np.uint8).ravel()[index].reshape(x.shape)


def apply_op(image: Image.Image | np.ndarray, op: str, magnitude: float, fill: Fill = None
             ) -> Image.Image | np.ndarray:
    """One AutoAugment op at a signed `magnitude`, as torchvision's `autoaugment._apply_op(img, op, magnitude,
    interpolation=NEAREST, fill)` does it to a PIL image. Takes and returns a PIL image ("L" or "RGB") or a
    uint8 HWC array (C = 1 or 3). Shears are tan(angle) with the top-left corner fixed; translations are
    truncated to whole pixels; Solarize inverts pixels >= magnitude; Posterize keeps int(magnitude) bits.
    Geometric and ImageEnhance ops run in PIL, the per-pixel table ops in numpy."""
    if op not in _PIL_OPS and op not in _LUT_OPS:
        raise ValueError(f"unknown AutoAugment op {op!r}")
    if isinstance(image, Image.Image):
        if op in _PIL_OPS:
            return _pil_op(image, op, magnitude, fill)
        return _to_pil(_lut_op(_to_array(image), op, magnitude))
    _check_image(image)
    if op in _LUT_OPS:
        return _lut_op(image, op, magnitude)
    return _to_array(_pil_op(_to_pil(image), op, magnitude, fill))


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"expected a uint8 HWC image with 1 or 3 channels, got {image.dtype} {image.shape}")


def _to_pil(x: np.ndarray) -> Image.Image:
    """HWC uint8 -> PIL "L"/"RGB" (frombytes: a third of `Image.fromarray`'s cost at 32x32)."""
    return Image.frombytes("L" if x.shape[-1] == 1 else "RGB", (x.shape[1], x.shape[0]), x.tobytes())


def _to_array(img: Image.Image) -> np.ndarray:
    if img.mode not in ("L", "RGB"):
        raise ValueError(f"expected an L or RGB image, got mode {img.mode}")
    channels = 1 if img.mode == "L" else 3
    return np.frombuffer(bytearray(img.tobytes()), np.uint8).reshape(img.height, img.width, channels)


class AutoAugment:
    """torchvision's `AutoAugment(policy, interpolation=NEAREST, fill)` for uint8 NHWC batches (C = 1 or 3),
    each image with its own sub-policy, coin flips and signs, all drawn from the Generator given per call."""

    def __init__(self, policy: str = "svhn", fill: Fill = None) -> None:
        policy = NAMES.get(policy, policy)
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; known: {sorted(POLICIES)} or {sorted(NAMES)}")
        self.policy, self.fill, self.policies = policy, fill, POLICIES[policy]

    def __repr__(self) -> str:
        return f"AutoAugment(policy={self.policy!r}, fill={self.fill!r})"

    def __call__(self, images: np.ndarray, rng: np.random.Generator, of: int | None = None,
                 start: int = 0) -> np.ndarray:
        """Augmented copy of `images` (uint8, N x H x W x C): the same shape and dtype. The images may be rows
        start.. of a batch of `of`: the draws are those of the whole batch, so each row gets what it would
        get there."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"expected uint8 NHWC images with 1 or 3 channels, got {images.dtype} {images.shape}")
        n, height, width, channels = images.shape
        # Everything random is drawn here, in this order, whatever ops end up applied: reproducibility.
        total, part = (n if of is None else of), slice(start, start + n)
        ids = rng.integers(len(self.policies), size=total)[part]
        probs = rng.random((total, 2))[part]
        signs = rng.integers(2, size=(total, 2))[part]
        bins = magnitude_bins(height, width)
        out = np.empty_like(images)
        for k in range(n):
            img: np.ndarray | Image.Image = images[k]  # PIL between consecutive PIL ops, else numpy
            for i, (op, p, bin_id) in enumerate(self.policies[ids[k]]):
                if probs[k, i] <= p:  # torchvision's test: an op with p = 0 runs only when u is exactly 0
                    values, signed = bins[op]
                    magnitude = float(values[bin_id]) if bin_id is not None else 0.0
                    if signed and signs[k, i] == 0:
                        magnitude = -magnitude
                    if op in _PIL_OPS:
                        img = _pil_op(_to_pil(img) if isinstance(img, np.ndarray) else img, op, magnitude, self.fill)
                    else:
                        img = _lut_op(_to_array(img) if isinstance(img, Image.Image) else img, op, magnitude)
            out[k] = _to_array(img) if isinstance(img, Image.Image) else img
        return out


def create(name: str, fill: Fill = None) -> AutoAugment:
    """The augmentation a CLI `--augment NAME` asks for, e.g. "autoaugment-svhn"."""
    if name not in NAMES:
        raise ValueError(f"unknown augmentation {name!r}; known: {sorted(NAMES)}")
    return AutoAugment(NAMES[name], fill)
