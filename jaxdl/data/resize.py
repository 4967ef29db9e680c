"""Batched bilinear resize with antialiasing, as two small matrix products.

PIL resizes one image per call; in the input pipeline a batch of 256 crops per step
would cost more than the step. Pillow's BILINEAR filter is separable, so its exact
coefficients (triangle filter widened by the downscale factor) are built once per size
pair and applied to the whole batch with `einsum`. Results match PIL to +-1 grey level
(PIL rounds its coefficients to fixed point).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of Pillow's antialiased bilinear filter (ImagingResample)."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # triangle filter of radius 1, widened when shrinking
    weights = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        x = (np.arange(lo, hi) - centre + 0.5) / support
        w = np.clip(1.0 - np.abs(x), 0.0, None)
        weights[i, lo:hi] = w / w.sum()
    return weights


def resize(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize NHWC `images` to `size` (square int or (H, W)); float32 out, values not clipped."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, h, w, _ = images.shape
    x = images.astype(np.float32, copy=False)
    if (h, w) == (out_h, out_w):
        return x
    return np.einsum("ph,nhwc,qw->npqc", resize_matrix(h, out_h), x, resize_matrix(w, out_w), optimize=True)


def resize_uint8(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """`resize` rounded back to uint8, for storing resized data sets."""
    return np.clip(np.rint(resize(images, size)), 0, 255).astype(np.uint8)
