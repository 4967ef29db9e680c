"""AutoAugment (SVHN policy) against torchvision's own, pixel for pixel on PIL images.

The reference is torchvision's PIL path (`autoaugment._apply_op` on a PIL image, nearest interpolation). The
geometric and ImageEnhance ops are the same PIL calls, the table ops (Invert, Solarize, Posterize, Equalize,
AutoContrast) numpy builds of the same ImageOps tables: the tolerance is zero, for every op, on every branch of
those tables, and for the whole transform given the same random choices.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl.data import augment
from jaxdl.data.augment import AutoAugment, apply_op, magnitude_bins

torch = pytest.importorskip("torch")
tv_aa = pytest.importorskip("torchvision.transforms.autoaugment")
from PIL import Image  # noqa: E402

NEAREST = tv_aa.InterpolationMode.NEAREST


def image(channels: int, h: int = 32, w: int = 30, seed: int = 0) -> np.ndarray:
    """Noise over a gradient: every pixel differs from its neighbours (so a one-pixel shift shows), and the
    histogram is uneven (so Equalize and AutoContrast have work to do)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 180, w)[None, :, None] + rng.integers(0, 60, (h, w, channels))
    return ramp.astype(np.uint8)


def pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def reference(array: np.ndarray, op: str, magnitude: float, fill=None) -> np.ndarray:
    out = np.asarray(tv_aa._apply_op(pil(array), op, magnitude, interpolation=NEAREST, fill=fill))
    return out[..., None] if out.ndim == 2 else out


BINS = magnitude_bins(32, 30)
CASES = [  # (op, magnitude): the SVHN policy's bins, both signs, plus a few others
    ("ShearX", float(BINS["ShearX"][0][4])), ("ShearX", -float(BINS["ShearX"][0][9])),
    ("ShearY", float(BINS["ShearY"][0][8])), ("ShearY", -float(BINS["ShearY"][0][5])),
    ("TranslateX", float(BINS["TranslateX"][0][3])), ("TranslateX", -float(BINS["TranslateX"][0][3])),
    ("TranslateY", float(BINS["TranslateY"][0][7])), ("TranslateY", -float(BINS["TranslateY"][0][6])),
    ("Rotate", float(BINS["Rotate"][0][3])), ("Rotate", -float(BINS["Rotate"][0][4])),
    ("Posterize", 4.0), ("Posterize", 7.0),
    ("Solarize", float(BINS["Solarize"][0][6])), ("Solarize", float(BINS["Solarize"][0][2])),
    ("Contrast", float(BINS["Contrast"][0][3])), ("Contrast", -float(BINS["Contrast"][0][8])),
    ("Brightness", 0.5), ("Color", -0.7), ("Sharpness", 0.9),
    ("Equalize", 0.0), ("Invert", 0.0), ("AutoContrast", 0.0),
]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("op,magnitude", CASES)
def test_op_matches_torchvision_exactly(op, magnitude, channels):
    x = image(channels)
    ours = apply_op(x, op, magnitude)
    np.testing.assert_array_equal(ours, reference(x, op, magnitude))
    assert ours.shape == x.shape and ours.dtype == np.uint8
    out = apply_op(pil(x), op, magnitude)  # the PIL-in, PIL-out form: same mode, same pixels
    assert out.mode == ("L" if channels == 1 else "RGB")
    np.testing.assert_array_equal(np.asarray(out).reshape(x.shape), ours)


def edge_images() -> dict[str, np.ndarray]:
    """Images on which the table ops take their other branches: one grey level (no stretch, no equalisation),
    two levels, every level once, saturated ends, and a histogram whose equalisation step rounds to 0."""
    rng = np.random.default_rng(1)
    skewed = np.full((32, 30, 3), 9, np.uint8)
    skewed[:6, :, 0] = 5  # 180 pixels off the top level: equalize's step (960 - 780) // 255 is 0 in red
    return {
        "constant": np.full((32, 30, 3), 77, np.uint8),
        "black": np.zeros((32, 30, 3), np.uint8),
        "white": np.full((32, 30, 3), 255, np.uint8),
        "two_levels": np.where(rng.random((32, 30, 3)) < 0.3, 3, 250).astype(np.uint8),
        "every_level": np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1),
        "full_noise": rng.integers(0, 256, (32, 30, 3), dtype=np.uint8),
        "narrow_noise": rng.integers(100, 111, (32, 30, 3), dtype=np.uint8),
        "skewed": skewed,
    }


@pytest.mark.parametrize("op,magnitude", [("Equalize", 0.0), ("AutoContrast", 0.0), ("Invert", 0.0),
                                          ("Solarize", 0.0), ("Solarize", 128.5), ("Solarize", 255.0),
                                          ("Posterize", 1.0), ("Posterize", 8.0)])
def test_table_ops_match_torchvision_on_edge_images(op, magnitude):
    """The per-pixel ops are numpy twins of PIL's ImageOps tables: exact on every branch of those tables."""
    for name, x in edge_images().items():
        for y in (x, x[..., :1]):
            np.testing.assert_array_equal(apply_op(y, op, magnitude), reference(y, op, magnitude),
                                          err_msg=f"{name} C={y.shape[-1]}")


@pytest.mark.parametrize("op,magnitude", [("ShearX", -0.3), ("TranslateY", 9.0), ("Rotate", 20.0)])
@pytest.mark.parametrize("fill", [128, [10, 200, 30]])
def test_fill_matches_torchvision(op, magnitude, fill):
    x = image(3)
    np.testing.assert_array_equal(apply_op(x, op, magnitude, fill=fill), reference(x, op, magnitude, fill=fill))


def test_svhn_policy_table_is_torchvisions():
    tv = tv_aa.AutoAugment(tv_aa.AutoAugmentPolicy.SVHN)
    assert list(AutoAugment("svhn").policies) == tv._get_policies(tv_aa.AutoAugmentPolicy.SVHN)


@pytest.mark.parametrize("hw", [(32, 32), (28, 28), (64, 48), (227, 227), (331, 331), (7, 301)])
def test_magnitude_bins_are_torchvisions_bit_for_bit(hw):
    tv = tv_aa.AutoAugment(tv_aa.AutoAugmentPolicy.SVHN)._augmentation_space(10, hw)
    ours = magnitude_bins(*hw)
    assert ours.keys() == tv.keys()
    for op, (values, signed) in tv.items():
        assert ours[op][1] == signed, op
        if values.ndim == 0:
            assert ours[op][0] is None, op
        else:
            np.testing.assert_array_equal(ours[op][0], values.numpy(), err_msg=op)


def test_translation_pixels_are_torchvisions_at_every_size():
    """Translations are truncated to whole pixels, so a last-bit difference in a bin could move an image by
    one pixel; over every size up to 512 the truncated values are torchvision's."""
    for size in range(1, 513):
        tv = tv_aa.AutoAugment()._augmentation_space(10, (size, size))["TranslateX"][0]
        assert [int(v) for v in magnitude_bins(size, size)["TranslateX"][0].tolist()] == [int(v) for v in tv.tolist()]


@pytest.mark.parametrize("channels", [3, 1])
def test_whole_transform_is_torchvisions_given_the_same_choices(channels, monkeypatch):
    """Feed torchvision's AutoAugment the sub-policy, probabilities and signs our Generator drew for each
    image: every output image is torchvision's, pixel for pixel."""
    images = np.stack([image(channels, seed=s) for s in range(64)])
    ours = AutoAugment("svhn")(images, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # the same draws, in AutoAugment's documented order
    ids, probs, signs = rng.integers(25, size=64), rng.random((64, 2)), rng.integers(2, size=(64, 2))
    choices = iter(zip(ids, probs, signs))
    monkeypatch.setattr(tv_aa.AutoAugment, "get_params", staticmethod(
        lambda n: (lambda c: (int(c[0]), torch.from_numpy(c[1]), torch.from_numpy(c[2])))(next(choices))))
    tv = tv_aa.AutoAugment(tv_aa.AutoAugmentPolicy.SVHN)
    expected = np.stack([np.asarray(tv(pil(x))).reshape(x.shape) for x in images])
    np.testing.assert_array_equal(ours, expected)


def test_deterministic_given_generator_and_changes_images():
    images = np.stack([image(3, seed=s) for s in range(32)])
    before = images.copy()
    aa = AutoAugment("svhn")
    a = aa(images, np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(a, aa(images, np.random.default_rng([1, 2, 3])))
    np.testing.assert_array_equal(images, before)  # the input is not modified
    assert a.shape == images.shape and a.dtype == np.uint8
    changed = (a != images).any(axis=(1, 2, 3)).mean()
    assert changed > 0.7  # most sub-policies apply an op with p >= 0.6
    assert not np.array_equal(a, aa(images, np.random.default_rng([1, 2, 4])))
    grey = aa(images[..., :1], np.random.default_rng(0))
    assert grey.shape == (32, 32, 30, 1) and grey.dtype == np.uint8


def test_names_and_errors():
    assert augment.create("autoaugment-svhn").policy == "svhn"
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.create("autoaugment-imagenet")
    with pytest.raises(ValueError, match="policy"):
        AutoAugment("cifar10")
    with pytest.raises(ValueError, match="uint8 NHWC"):
        AutoAugment()(np.zeros((2, 8, 8, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        AutoAugment()(np.zeros((2, 8, 8, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown AutoAugment op"):
        apply_op(image(3), "Cutout", 1.0)
    with pytest.raises(ValueError, match="fill"):
        apply_op(image(3), "Rotate", 5.0, fill=[1, 2])


def test_loader_applies_autoaugment_to_training_batches_reproducibly():
    from jaxdl.data import Dataset, Loader

    rng = np.random.default_rng(0)
    ds = Dataset(rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8), (np.arange(64) % 10).astype(np.int32),
                 "random", real=False)
    plain = Loader(ds, 16, train=True, mean=(0.5,) * 3, std=(0.25,) * 3, prefetch=0)
    augmented = Loader(ds, 16, train=True, mean=(0.5,) * 3, std=(0.25,) * 3, prefetch=0, autoaugment="autoaugment-svhn")
    a, b = augmented.batch(1, 2), augmented.batch(1, 2)
    np.testing.assert_array_equal(a["image"], b["image"])  # a pure function of (seed, epoch, index): resumes exactly
    assert not np.array_equal(a["image"], plain.batch(1, 2)["image"])
    np.testing.assert_array_equal(a["label"], plain.batch(1, 2)["label"])  # the same samples, augmented
