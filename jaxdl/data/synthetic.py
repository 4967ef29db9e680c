"""Generated SVHN-style house-number crops: the offline default when real data is missing.

Each image is a centred digit (the label) flanked by partial neighbouring digits that the
crop edges cut, as in SVHN's cropped-digit format, drawn in one of ~30 fonts with random
colours, contrast, scale, aspect, rotation, shear, illumination gradient, border lines,
blur and noise. That keeps it learnable but not trivial (a 3-conv CNN reached 91.8% test
accuracy after one epoch and 94.6% after two; the centre digit must be told from its
neighbours, so position-blind models do much worse), and training code can be exercised
end to end offline. It is NOT SVHN: `Dataset.real` is False so it is never reported as such.

Speed: glyphs are rasterised once (fonts.py); per image only a strip paste and one PIL
affine warp at 2x supersampling remain, colouring and degradations are vectorised over
the batch: 20,000 images cost ~14 s of one core. Results are cached as .npz keyed by
every parameter, the generator version and the fonts found.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import Dataset
from .download import cache_dir
from .fonts import GLYPH_HEIGHT, GlyphAtlas, glyph_atlas

GENERATOR_VERSION = 1  # bump whenever the rendering changes, so stale caches are not reused
DEFAULT_N = {"train": 20_000, "test": 4_000}
_SPLIT_STREAM = {"train": 0, "test": 1}  # train and test come from different seed streams
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_SUPERSAMPLE = 2
_CHUNK = 1024


def _draw_params(rng: np.random.Generator, n: int, n_fonts: int, size: int) -> dict[str, np.ndarray]:
    """All random choices for n images up front, so rendering in chunks cannot change them."""
    labels = rng.permutation(np.arange(n) % 10).astype(np.int32)  # exact class balance
    params = {
        "label": labels,
        "font": rng.integers(0, n_fonts, n),
        "left": np.where(rng.random(n) < 0.7, rng.integers(0, 10, n), -1),
        "right": np.where(rng.random(n) < 0.7, rng.integers(0, 10, n), -1),
        "gap": rng.uniform(0.02, 0.35, n) * GLYPH_HEIGHT,
        "height": rng.uniform(0.4, 0.9, n) * size * _SUPERSAMPLE,  # digit height in supersampled px
        "aspect": np.exp(rng.uniform(np.log(0.7), np.log(1.35), n)),
        "angle": np.deg2rad(np.clip(rng.normal(0.0, 6.0, n), -15.0, 15.0)),
        "shear": rng.uniform(-0.25, 0.25, n),
        "shift": rng.normal(0.0, 0.06 * size * _SUPERSAMPLE, (n, 2)),
        "background": rng.random((n, 3)),
        "ink_hue": rng.random((n, 3)),
        "contrast": rng.uniform(0.15, 0.8, n),
        "flip_polarity": rng.random(n) < 0.25,
        "gradient": rng.normal(0.0, 0.12, (n, 3, 2)),
        "border": rng.random(n) < 0.3,
        "border_axis": rng.integers(0, 2, n),
        "border_pos": rng.uniform(0.0, 0.2, n) * np.where(rng.random(n) < 0.5, 1.0, -1.0),
        "blur": rng.uniform(0.0, 0.3, n),
        "noise": rng.uniform(0.0, 0.07, n),
        "saturation": rng.uniform(0.0, 0.7, (n, 2)),  # of background and ink: street colours are muted
    }
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in params.items()}


def _affine(p: dict[str, np.ndarray], out: int, strip_shape: tuple[int, int]) -> np.ndarray:
    """Per image, PIL AFFINE coefficients (a, b, c, d, e, f) mapping output px to strip px.

    The forward map is rotate(angle) @ shear @ diag(scale * aspect, scale) about the
    strip centre, shifted by `shift` in the output; PIL wants its inverse.
    """
    h, w = strip_shape
    scale = p["height"] / GLYPH_HEIGHT  # output px per atlas px
    cos, sin = np.cos(p["angle"]), np.sin(p["angle"])
    sx, sy = scale * p["aspect"], scale
    a, b = (cos + p["shear"] * sin) / sx, (sin - p["shear"] * cos) / sx
    d, e = -sin / sy, cos / sy
    ox, oy = out / 2 + p["shift"][:, 0], out / 2 + p["shift"][:, 1]
    return np.stack([a, b, w / 2 - a * ox - b * oy, d, e, h / 2 - d * ox - e * oy], axis=1)


def _ink(atlas: GlyphAtlas, p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Ink coverage (n, size, size) in [0, 1].

    Per image: paste the centre digit and its neighbours into a strip, warp it with PIL's
    C affine resampler at 2x the output size (cheap, ~30 us), then average 2x2 blocks,
    which antialiases the downscaling that plain bilinear sampling would alias.
    """
    n, out = len(p["label"]), size * _SUPERSAMPLE
    gap_max = int(np.ceil(p["gap"].max())) if n else 0
    shape = (GLYPH_HEIGHT, 3 * atlas.max_width + 2 * gap_max + 2)
    mid = shape[1] // 2
    coeffs = _affine(p, out, shape)
    ink = np.empty((n, out, out), np.float32)
    for i in range(n):
        font = atlas.glyphs[p["font"][i]]
        strip = np.zeros(shape, np.float32)
        g = font[p["label"][i]]
        x0, gap = mid - g.shape[1] // 2, int(p["gap"][i])
        strip[:, x0:x0 + g.shape[1]] = g
        if p["left"][i] >= 0:
            left = font[p["left"][i]]
            strip[:, x0 - gap - left.shape[1]:x0 - gap] = left
        if p["right"][i] >= 0:
            right, start = font[p["right"][i]], x0 + g.shape[1] + gap
            strip[:, start:start + right.shape[1]] = right
        warped = Image.fromarray(strip, "F").transform((out, out), Image.AFFINE, tuple(coeffs[i]), Image.BILINEAR)
        ink[i] = np.asarray(warped)
    return ink.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))


def _colour(ink: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Blend ink/background colours with a guaranteed minimum luma contrast, then degrade."""
    n, size, _ = ink.shape
    bg_luma = p["background"] @ _LUMA
    bg = bg_luma[:, None] + p["saturation"][:, :1] * (p["background"] - bg_luma[:, None])
    lighter = (bg_luma < 0.5) ^ p["flip_polarity"]
    ink_luma = np.clip(bg_luma + np.where(lighter, 1, -1) * p["contrast"], 0, 1)
    hue = p["saturation"][:, 1:] * (p["ink_hue"] - (p["ink_hue"] @ _LUMA)[:, None])
    fg = np.clip(ink_luma[:, None] + hue, 0, 1)
    too_faint = np.abs((fg - bg) @ _LUMA) < 0.12  # clipping can eat the contrast: fall back to black/white
    fg[too_faint] = np.where(bg_luma[too_faint, None] < 0.5, 1.0, 0.0)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = (p["gradient"][:, None, None, :, 0] * coords[None, None, :, None]
            + p["gradient"][:, None, None, :, 1] * coords[None, :, None, None])
    pos = np.where(p["border_axis"][:, None, None] == 0, coords[None, :, None], coords[None, None, :])
    edge = np.where(p["border_pos"] >= 0, -0.5 + p["border_pos"], 0.5 + p["border_pos"])[:, None, None]
    line = p["border"][:, None, None] & (np.abs(pos - edge) < 1.0 / size)
    alpha = np.maximum(ink, 0.7 * line)[..., None]
    img = (bg[:, None, None, :] * (1 - alpha) + fg[:, None, None, :] * alpha + ramp)
    a = p["blur"][:, None, None, None]
    for axis in (1, 2):  # separable [a, 1-2a, a] blur with edge replication
        pad = [(0, 0)] * 4
        pad[axis] = (1, 1)
        e = np.pad(img, pad, mode="edge")
        lo, hi = np.take(e, range(0, size), axis=axis), np.take(e, range(2, size + 2), axis=axis)
        img = a * (lo + hi) + (1 - 2 * a) * img
    img += rng.standard_normal(img.shape, dtype=np.float32) * p["noise"][:, None, None, None]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def generate(n: int, *, image_size: int = 32, channels: int = 3, seed: int = 0, split: str = "train") -> Dataset:
    """n images, a pure function of (n, image_size, channels, seed, split, installed fonts)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if split not in _SPLIT_STREAM:
        raise ValueError(f"synthetic split must be one of {sorted(_SPLIT_STREAM)}, got {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split], GENERATOR_VERSION])
    atlas = glyph_atlas()
    params = _draw_params(rng, n, len(atlas.names), image_size)
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    for start in range(0, n, _CHUNK):
        chunk = {k: v[start:start + _CHUNK] for k, v in params.items()}
        images[start:start + _CHUNK] = _colour(_ink(atlas, chunk, image_size), chunk, rng)
    if channels == 1:
        images = np.clip(np.rint(images.astype(np.float32) @ _LUMA), 0, 255).astype(np.uint8)[..., None]
    return Dataset(images, params["label"], dataset_name(channels), real=False)


def dataset_name(channels: int) -> str:
    if channels == 3:
        return "synthetic-svhn (generated, NOT real SVHN)"
    return "synthetic-mnist (generated grayscale digits, NOT real MNIST)"


def _cache_path(directory: Path, params: dict) -> Path:
    key = dict(params, version=GENERATOR_VERSION, fonts=glyph_atlas().names)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return directory / f"{params['split']}-{params['image_size']}px-{params['channels']}ch-{digest}.npz"


def load_synthetic(split: str = "train", *, seed: int = 0, n: int | None = None, image_size: int = 32,
                   channels: int = 3, data_dir: str | None = None, cache: bool = True) -> Dataset:
    """`generate` with split-dependent defaults (20,000 train / 4,000 test) and an .npz cache."""
    params = {"split": split, "seed": seed, "n": DEFAULT_N.get(split, 0) if n is None else n,
              "image_size": image_size, "channels": channels}
    path = _cache_path(Path(data_dir) if data_dir else cache_dir() / "synthetic", params)
    if cache and path.is_file():
        with np.load(path) as f:
            return Dataset(f["images"], f["labels"], dataset_name(channels), real=False)
    ds = generate(params["n"], image_size=image_size, channels=channels, seed=seed, split=split)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            np.savez(tmp, images=ds.images, labels=ds.labels)
        os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates 0600; the cache is shareable
        os.replace(tmp.name, path)  # atomic: a concurrent reader never sees half a file
    return ds
