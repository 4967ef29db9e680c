"""`python -m experiments.predict`: top-k predictions equal to a direct computation (PIL decode, torchvision's
preprocessing, the model's forward, softmax), unreadable images named and skipped (exit 1), mistakes in one line
(exit 2); and the converter storing torchvision's class names and eval preprocessing with ImageNet weights."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms._presets import ImageClassification

from convert import hub
from experiments import predict
from jaxdl import cli, models, weights

CLASSES = ["three", "five", "eight"]
PRE = {"resize": [32, 32], "crop": None, "mean": [0.5] * 3, "std": [0.25] * 3}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def save_lenet(path: Path, *, in_channels: int = 3, **metadata) -> Path:
    """A LeNet-5 with random weights (filled in directly: `create`'s initialisation costs seconds on CPU)."""
    model = weights.blank("lenet5", 3, in_channels=in_channels, image_size=32)
    rng = np.random.default_rng(in_channels)
    weights.assign(model, {k: (rng.normal(size=v.shape) * (2 / np.prod(v.shape[:-1])) ** 0.5).astype(np.float32)
                           for k, v in ((weights.key(p), v) for p, v in weights.variables(model).items())},
                   what="random weights")
    weights.save(model, path, **metadata)
    return path


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> Path:
    return save_lenet(tmp_path_factory.mktemp("w") / "best.safetensors", classes=CLASSES, preprocessing=PRE)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """PNG and JPEG of mixed sizes and modes (RGB, grey, RGBA), one in a subfolder, plus a file to ignore."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), "L").save(root / "b.JPG")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(root / "sub" / "c.png")
    Image.fromarray(rng.integers(0, 256, (61, 45, 3), dtype=np.uint8)).save(root / "sub" / "d.jpeg", quality=90)
    (root / "notes.txt").write_text("not an image")
    return root


def run(argv: list[str], capsys) -> tuple[int, list[str], list[str]]:
    status = cli.run(predict.main, "predict", argv)
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def reference(weights_file: Path, files: list[Path], transform) -> np.ndarray:
    """The probabilities computed directly: PIL's loader, torchvision's transform, the model, softmax."""
    model = weights.load(weights_file)
    model.eval()
    grey = dict(models.spec(model).options)["in_channels"] == 1
    batch = []
    for f in files:
        with Image.open(f) as im:
            x = transform(im.convert("L" if grey else "RGB"))  # CHW float tensor
        batch.append(x.permute(1, 2, 0).numpy())
    padded = np.zeros((8, *batch[0].shape), np.float32)  # one batch shape for every test: eager ops compile once
    padded[:len(batch)] = batch
    return np.asarray(jax.nn.softmax(model(padded), axis=-1))[:len(batch)]


def lenet_transform(mean=PRE["mean"], std=PRE["std"]):
    return T.Compose([T.Resize((32, 32)), T.ToTensor(), T.Normalize(mean, std)])


def check(lines: list[str], results: list[dict], files: list[Path], expected: np.ndarray, k: int) -> None:
    assert [r["file"] for r in results] == [str(f) for f in files]
    assert len(lines) == len(files)
    for line, result, f, probs in zip(lines, results, files, expected):
        order = np.argsort(-probs)[:k]
        assert [t["class"] for t in result["topk"]] == [CLASSES[c] for c in order]
        np.testing.assert_allclose([t["probability"] for t in result["topk"]], probs[order], atol=1e-5)
        path, shown = line.split(": ", 1)
        assert path == str(f)
        pairs = [p.rsplit(" ", 1) for p in shown.split(", ")]
        assert [name for name, _ in pairs] == [CLASSES[c] for c in order]
        np.testing.assert_allclose([float(p) for _, p in pairs], probs[order], atol=5e-5)  # printed to 4 decimals


def test_topk_lines_and_json_equal_the_direct_computation(lenet, images, tmp_path, capsys) -> None:
    out = tmp_path / "pred.json"
    # a directory (recursive, sorted, only images) and a file; 5 images in batches of 2: the last one padded
    status, lines, err = run(["--weights", str(lenet), str(images), str(images / "a.png"), "--topk", "2",
                              "--batch-size", "2", "--json", str(out)], capsys)
    assert (status, err) == (0, [])
    files = [images / "a.png", images / "b.JPG", images / "sub" / "c.png", images / "sub" / "d.jpeg", images / "a.png"]
    check(lines, json.loads(out.read_text()), files, reference(lenet, files, lenet_transform()), 2)


def test_resize_and_crop_are_torchvisions_and_grey_models_get_grey(images, tmp_path, capsys) -> None:
    """Shorter side resized keeping the aspect, then a centre crop (padded where the image is smaller), as
    torchvision's Resize(int) + CenterCrop; a model with in_channels=1 sees PIL's grey conversion."""
    pre = {"resize": 36, "crop": 32, "mean": [0.4], "std": [0.3]}
    grey = save_lenet(tmp_path / "grey.safetensors", in_channels=1, classes=CLASSES, preprocessing=pre)
    out = tmp_path / "pred.json"
    status, lines, err = run(["--weights", str(grey), str(images), "--topk", "3", "--json", str(out)], capsys)
    assert (status, err) == (0, [])
    files = [images / "a.png", images / "b.JPG", images / "sub" / "c.png", images / "sub" / "d.jpeg"]
    transform = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize([0.4], [0.3])])
    check(lines, json.loads(out.read_text()), files, reference(grey, files, transform), 3)
    padded = predict.stored({"resize": [20, 27], "crop": 32, "mean": [0.5] * 3, "std": [0.25] * 3}, 3)
    with Image.open(images / "a.png") as im:
        expected = T.Compose([T.Resize((20, 27)), T.CenterCrop(32), T.ToTensor(), T.Normalize(PRE["mean"], PRE["std"])])(im)
    np.testing.assert_allclose(padded(str(images / "a.png")), expected.permute(1, 2, 0).numpy(), atol=1e-6)


def test_unreadable_image_is_named_others_predicted_exit_1(lenet, images, tmp_path, capsys) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    out = tmp_path / "pred.json"
    status, lines, err = run(["--weights", str(lenet), str(images / "a.png"), str(bad), str(images / "b.JPG"),
                              "--json", str(out)], capsys)
    assert status == 1
    assert len(err) == 2 and str(bad) in err[0] and "not a readable image" in err[0]
    assert "1 of 3 images could not be read" in err[1] and str(out) in err[1]
    files = [images / "a.png", images / "b.JPG"]
    check(lines, json.loads(out.read_text()), files, reference(lenet, files, lenet_transform()), 3)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "{tmp}/nope.safetensors", "{img}"], "nope.safetensors: no such file"),
    (["--weights", "{lenet}", "{img}", "--topk", "4"], "--topk 4 is more than the model's 3 classes"),
    (["--weights", "{lenet}", "{img}", "--topk", "0"], "argument --topk: 0 is not a positive integer"),
    (["--weights", "{lenet}"], "no images"),
    (["--weights", "{lenet}", "{tmp}"], "no images in"),
    (["--weights", "{lenet}", "{tmp}/missing.png"], "missing.png: no such file or directory"),
    (["--weights", "{lenet}", "{img}", "--mean", "0.5"], "stores its preprocessing"),
    (["--weights", "{bare}", "{img}"], "stores no preprocessing"),
    (["--weights", "{bare}", "{img}", "--mean", "0.5", "--std", "0,1,1"], "--std [0.0, 1.0, 1.0] has a value <= 0"),
    (["--weights", "{misfit}", "{img}"], "lenet5 takes 32x32 inputs, but the preprocessing gives inputs whose shorter side is 32"),
])
def test_mistakes_are_one_line_exit_2(argv, message, lenet, images, tmp_path, capsys) -> None:
    bare = save_lenet(tmp_path / "bare.safetensors")
    misfit = save_lenet(tmp_path / "misfit.safetensors", preprocessing={**PRE, "resize": 32})
    names = {"tmp": tmp_path, "img": images / "a.png", "lenet": lenet, "bare": bare, "misfit": misfit}
    status, lines, err = run([a.format(**names) for a in argv], capsys)
    assert (status, lines, len(err)) == (2, [], 1), err
    assert err[0].startswith("predict: error: ") and message in err[0], err


def test_without_stored_preprocessing_mean_and_std_are_asked_for(images, tmp_path, capsys) -> None:
    bare = save_lenet(tmp_path / "bare.safetensors")  # no class names either: 0..K-1
    status, lines, err = run(["--weights", str(bare), str(images / "a.png"), "--mean", "0.5", "--std", "0.25",
                              "--topk", "1"], capsys)
    assert (status, err) == (0, [])
    expected = reference(bare, [images / "a.png"], lenet_transform())[0]
    assert lines[0].startswith(f"{images / 'a.png'}: {np.argmax(expected)} ")


# ------------------------------------------------------------------------------------------ the converter's part


class FakeEntry:
    """A torchvision WeightsEnum member, as far as the converter looks."""

    name = "FAKE_V1"
    url = "https://download.example/models/resnet18-fake0000.pth"
    meta = {"categories": [f"category {i}" for i in range(1000)]}

    @staticmethod
    def transforms():
        return ImageClassification(crop_size=224, resize_size=256)


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    file = tmp_path_factory.mktemp("pth") / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), file)
    return file


IMAGENET_PRE = {"resize": 256, "crop": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def test_pretrained_stores_the_entrys_class_names_and_preprocessing(imagenet_like, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(hub, "weights_entry", lambda arch, weights="imagenet": FakeEntry)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "jaxdl"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet18-fake0000.pth").write_bytes(imagenet_like.read_bytes())
    hub.pretrained("resnet18")
    cached = tmp_path / "jaxdl" / "weights" / "resnet18-FAKE_V1.safetensors"
    assert weights.classes(cached) == FakeEntry.meta["categories"]
    assert weights.preprocessing(cached) == IMAGENET_PRE


def test_convert_stores_torchvisions_metadata_but_no_names_for_a_new_head(imagenet_like, tmp_path) -> None:
    """`python -m convert resnet18 --weights imagenet [--num-classes 10]`'s path: the source is the entry's url."""
    entry = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    out = tmp_path / "r18.safetensors"
    hub.convert_file(imagenet_like, "resnet18", 10, source=entry.url, out=out)
    assert weights.classes(out) is None and weights.preprocessing(out) == IMAGENET_PRE
    hub.convert_file(imagenet_like, "resnet18", source=entry.url, out=out)
    assert weights.classes(out) == entry.meta["categories"] and weights.preprocessing(out) == IMAGENET_PRE
    hub.convert_file(imagenet_like, "resnet18", out=out)  # a .pth of unknown origin: nothing is made up
    assert weights.classes(out) is None and weights.preprocessing(out) is None
