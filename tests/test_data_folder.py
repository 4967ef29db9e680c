"""Image folders (torchvision's ImageFolder layout): classes, splits, batches against PIL, resume, bad data."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxdl.data as data
from jaxdl.data import DataCorrupt
from jaxdl.data.folder import FolderError, load_folder, stratified_split
from jaxdl.data.folder_pipeline import FolderLoader

UNIT = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}  # batch values == uint8 values
MODES = ("RGB", "L", "RGBA")
SIZES = ((10, 14), (20, 20), (7, 9), (16, 12))  # (width, height)
FORMATS = (("PNG", ".png"), ("JPEG", ".jpg"), ("PNG", ".PNG"), ("JPEG", ".JPEG"))


def write_image(path: Path, index: int, mode: str | None = None) -> None:
    """Image `index`: noise in a cycle of modes (grey, RGB, RGBA), sizes and formats (PNG, JPEG, any case)."""
    rng = np.random.default_rng(index)
    mode = mode or MODES[index % 3]
    width, height = SIZES[index % 4]
    fmt, ext = FORMATS[index % 4]
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"  # JPEG has no alpha
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path.with_suffix(ext), fmt)


def make_folder(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    """Class folders named by `counts`' keys holding that many images each, plus files that are not images."""
    index = start
    for name, n in counts.items():
        for _ in range(n):
            write_image(root / name / f"img{index:03d}", index)
            index += 1
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.png").write_bytes(b"skipped: hidden")
    (root / ".ipynb_checkpoints").mkdir(parents=True, exist_ok=True)  # a hidden folder is no class
    return root


def pil_decode(path: Path, size: int) -> np.ndarray:
    """What torchvision's pil_loader + Resize((size, size)) give, directly from PIL."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def grain_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("grain-prefetch")]


def threads_end(seconds: float = 5.0) -> bool:
    """Whether the decoding threads are gone within `seconds` (a closed epoch lets each finish its batch)."""
    deadline = time.monotonic() + seconds
    while grain_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not grain_threads()


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("flat"), {"three": 20, "five": 10, "eight": 30})


def test_classes_are_sorted_folder_names_and_labels_follow_folders(flat):
    splits = {s: load_folder(flat, s) for s in ("train", "val", "test")}
    for split in splits.values():
        assert split.classes == ("eight", "five", "three") and split.num_classes == 3
        assert split.class_to_idx == {"eight": 0, "five": 1, "three": 2}
        assert split.labels.dtype == np.int32 and split.real
        for path, label in split.samples:
            assert Path(path).parent.name == split.classes[label] and Path(path).is_file()
    files = [set(s.paths) for s in splits.values()]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    every = {p.relative_to(flat).as_posix() for p in flat.glob("*/img*")}  # .png .PNG .jpg .JPEG; no .txt/hidden
    assert set().union(*files) == every and len(every) == 60


def test_split_is_stratified_and_a_pure_function_of_files_and_seed(flat, tmp_path):
    fractions = {"val_fraction": 0.1, "test_fraction": 0.2}
    val, test = load_folder(flat, "val", **fractions), load_folder(flat, "test", **fractions)
    assert val.counts() == {"eight": 3, "five": 1, "three": 2} and test.counts() == {"eight": 6, "five": 2, "three": 4}
    assert load_folder(flat, "train", **fractions).counts() == {"eight": 21, "five": 7, "three": 14}
    again = load_folder(flat, "val", **fractions)
    assert again.paths == val.paths and again.fingerprint == val.fingerprint
    assert load_folder(flat, "val", seed=1, **fractions).paths != val.paths
    # Largest remainder: 7 classes of 3 at 0.1 give round(2.1) = 2 images, never one class's last training image.
    labels = np.repeat(np.arange(7), 3).astype(np.int32)
    parts = stratified_split([f"c{i // 3}/{i}.png" for i in range(21)], labels, {"val": 0.1, "test": 0.5}, seed=0)
    assert len(parts["val"]) == 2 and len(parts["test"]) == 10
    assert np.bincount(labels[parts["train"]], minlength=7).min() >= 1
    # The same files under another root split the same way.
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in flat.rglob("*"):
        if p.is_file():
            (moved / p.relative_to(flat)).parent.mkdir(parents=True, exist_ok=True)
            (moved / p.relative_to(flat)).write_bytes(p.read_bytes())
    assert load_folder(moved, "val").fingerprint == load_folder(flat, "val").fingerprint


def test_train_val_test_folders_are_used_and_a_missing_val_is_carved_from_train(tmp_path):
    make_folder(tmp_path / "train", {"three": 10, "five": 10, "eight": 10})
    make_folder(tmp_path / "test", {"three": 2, "eight": 3}, start=100)  # a split may lack a class
    test = load_folder(tmp_path, "test")
    assert test.root == tmp_path / "test" and test.classes == ("eight", "five", "three")
    assert test.counts() == {"eight": 3, "five": 0, "three": 2}
    train, val = load_folder(tmp_path, "train", val_fraction=0.2), load_folder(tmp_path, "val", val_fraction=0.2)
    assert val.counts() == {"eight": 2, "five": 2, "three": 2} and len(train) == 24
    assert val.root == train.root == tmp_path / "train" and not set(train.paths) & set(val.paths)
    with pytest.raises(FolderError, match="no val/ folder and val_fraction is 0"):
        load_folder(tmp_path, "val", val_fraction=0)
    make_folder(tmp_path / "val", {"five": 2}, start=200)
    assert load_folder(tmp_path, "val").counts() == {"eight": 0, "five": 2, "three": 0}
    assert len(load_folder(tmp_path, "train")) == 30  # val and test folders present: train is all of train/
    make_folder(tmp_path / "val", {"seven": 1}, start=300)
    with pytest.raises(FolderError, match="class folders that train/ lacks: seven"):
        load_folder(tmp_path, "val")


def test_eval_batches_are_pil_decoded_resized_images_padded_and_masked(flat):
    split = load_folder(flat, "val", val_fraction=0.2)  # 12 images: grey, RGB, RGBA; PNG, JPEG; 4 sizes
    loader = FolderLoader(split, 5, train=False, image_size=12, **UNIT)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 3 and {b["image"].shape for b in batches} == {(5, 12, 12, 3)}
    images = np.concatenate([b["image"] for b in batches])
    mask, labels = np.concatenate([b["mask"] for b in batches]), np.concatenate([b["label"] for b in batches])
    assert mask.tolist() == [True] * 12 + [False] * 3 and not images[12:].any()
    np.testing.assert_array_equal(labels[:12], split.labels)
    expected = np.stack([pil_decode(split.file(i), 12) for i in range(len(split))]).astype(np.float32)
    np.testing.assert_allclose(images[:12], expected, rtol=0, atol=1e-3)  # 1/(1/255)/255 rounding only
    modes = {Image.open(split.file(i)).mode for i in range(len(split))}
    assert {"L", "RGB", "RGBA"} <= modes
    ds = split.to_dataset(12)
    np.testing.assert_array_equal(ds.images, expected.astype(np.uint8))
    np.testing.assert_array_equal(ds.labels, split.labels)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normed = next(FolderLoader(split, 5, train=False, image_size=12, mean=mean, std=std).epoch(0))["image"]
    np.testing.assert_allclose(normed, (expected[:5] / 255 - mean) / std, rtol=0, atol=1e-5)


def memory_loader(split, options: dict) -> data.Loader:
    return data.Loader(split.to_dataset(10), 8, **options)


def test_train_batches_equal_loaders_over_the_decoded_images_and_resume_exactly(flat):
    split = load_folder(flat, "train")  # 48 images
    folder = FolderLoader(split, 8, train=True, seed=3, image_size=10, **UNIT)
    memory = data.Loader(split.to_dataset(10), 8, train=True, seed=3, **UNIT)
    assert len(folder) == len(memory) == 6 and folder.classes == ("eight", "five", "three")
    epochs = {}
    for e in (0, 1):
        epochs[e] = list(folder.epoch(e))
        for a, b in zip(epochs[e], memory.epoch(e), strict=True):
            for key in ("image", "label", "mask"):
                np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(epochs[0][0]["image"], epochs[1][0]["image"])
    again = list(folder.epoch(1))  # a resumed run: the same epoch again, then from batch 4 on, unthreaded
    resumed = list(FolderLoader(split, 8, train=True, seed=3, image_size=10, workers=0, **UNIT).epoch(1, start=4))
    for a, b in zip(again + resumed, epochs[1] + epochs[1][4:], strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert (np.concatenate([b["image"] for b in epochs[0]]) == 0).any()  # crops reach into the zero border
    auto = {"train": True, "seed": 3, "autoaugment": "autoaugment-svhn", **UNIT}
    for a, b in zip(FolderLoader(split, 8, image_size=10, **auto).epoch(2), memory_loader(split, auto).epoch(2),
                    strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    mean, std = split.mean_std(10)
    np.testing.assert_allclose(mean, np.asarray(memory.ds.images, np.float64).mean(axis=(0, 1, 2)) / 255, atol=1e-9)
    assert len(std) == 3 and min(std) > 0
    assert threads_end()


def test_corrupt_image_stops_the_epoch_naming_the_file(tmp_path):
    make_folder(tmp_path, {"three": 12, "five": 12})
    good = sorted((tmp_path / "five").glob("img*.jpg"))[0]
    (tmp_path / "five" / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    (tmp_path / "three" / "text.png").write_text("this is not a PNG")
    split = load_folder(tmp_path, "train", val_fraction=0, test_fraction=0)
    for bad in ("truncated.jpg", "text.png"):
        with pytest.raises(DataCorrupt, match=rf"{bad}: not a readable image") as caught:
            split.read(split.paths.index(f"{'five' if bad.endswith('jpg') else 'three'}/{bad}"))
        assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)
    for workers in (2, 0):
        loader = FolderLoader(split, 4, train=False, image_size=8, workers=workers, **UNIT)
        with pytest.raises(DataCorrupt, match=r"(truncated\.jpg|text\.png): not a readable image") as caught:
            for _ in loader.epoch(0):
                pass
        assert "\n" not in str(caught.value) and not getattr(caught.value, "__notes__", None)
    assert threads_end()


def test_abandoned_epoch_stops_its_threads(flat):
    loader = FolderLoader(load_folder(flat, "train"), 4, train=True, image_size=8, workers=2, **UNIT)
    it = loader.epoch(0)
    next(it)
    assert grain_threads()
    it.close()
    assert threads_end()
    it = loader.epoch(1)
    next(it)
    del it  # dropped without close: the generator's finally closes grain's iterator
    gc.collect()
    assert threads_end()


def layout_error(root: Path, split: str = "train") -> str:
    with pytest.raises(ValueError) as caught:
        load_folder(root, split)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_bad_layouts_are_one_line_errors_naming_the_path(tmp_path):
    assert "no such directory" in layout_error(tmp_path / "missing") and "missing" in layout_error(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    assert "is a file, not a directory" in layout_error(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    assert "has no class folders" in layout_error(tmp_path / "empty")
    write_image(tmp_path / "loose" / "a", 0)
    assert "1 images lie directly in it" in layout_error(tmp_path / "loose")
    make_folder(tmp_path / "single", {"three": 3})
    assert "single class folder (three)" in layout_error(tmp_path / "single")
    make_folder(tmp_path / "hollow", {"three": 3, "five": 3})
    (tmp_path / "hollow" / "eight").mkdir()
    (tmp_path / "hollow" / "eight" / "readme.txt").write_text("no images here")
    message = layout_error(tmp_path / "hollow")
    assert "empty class folder" in message and str(tmp_path / "hollow" / "eight") in message
    (tmp_path / "none" / "three").mkdir(parents=True)
    (tmp_path / "none" / "five").mkdir()
    assert "no images in" in layout_error(tmp_path / "none")
    make_folder(tmp_path / "nosplit" / "val", {"three": 2, "five": 2})
    assert "but no train/ folder" in layout_error(tmp_path / "nosplit")
    make_folder(tmp_path / "mixed" / "train", {"three": 2, "five": 2})
    make_folder(tmp_path / "mixed", {"eight": 2})
    assert "mixes split folders (train) with other folders (eight)" in layout_error(tmp_path / "mixed")
    make_folder(tmp_path / "ok", {"three": 2, "five": 2})
    assert "split must be one of" in layout_error(tmp_path / "ok", "validation")
    with pytest.raises(FolderError, match="leave none for val"):
        load_folder(tmp_path / "ok", "val", test_fraction=0.5)  # 4 images, one per class kept: test takes the rest
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        FolderLoader(load_folder(tmp_path / "ok"), 1, train=False, image_size=0, **UNIT)
    assert issubclass(FolderError, ValueError) and issubclass(DataCorrupt, Exception)


@pytest.mark.parametrize("train", [True, False])
def test_a_process_builds_its_rows_with_the_numbers_of_the_whole_batch(flat, train):
    split = load_folder(flat, "train", val_fraction=0.2)
    kw = {"train": train, "image_size": 12, "seed": 3, "workers": 0, "autoaugment": "autoaugment-svhn", **UNIT}
    whole = FolderLoader(split, 5, **kw)
    parts = [FolderLoader(split, 5, rows=rows, **kw) for rows in ((0, 3), (3, 5))]
    for index in range(len(whole)):
        expected = whole.batch(1, index)
        for key in expected:
            np.testing.assert_array_equal(np.concatenate([p.batch(1, index)[key] for p in parts]), expected[key])
