"""Every bad input to a command line ends in ONE line on stderr and a non-zero exit, never a traceback, and
before any work: a table of bad arguments per CLI, run in-process through `jaxdl.cli.run` (as `__main__` runs
them), with training and measuring replaced by functions that fail the test if a bad run ever reaches them.

Offline is simulated as in tests/test_resolve.py: an empty cache and a `reachable` that finds no host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import convert.__main__ as convert_cli
import experiments.convexity.__main__ as convexity
import experiments.mnist as mnist
import jaxdl.data as jdata
from experiments.bench import conv as bench_conv
from experiments.bench import frameworks as bench_frameworks
from experiments.bench import search as bench_search
from experiments.bench import train as bench_train
from jaxdl import cli, weights
from jaxdl.data import download, tfds_source

ROOT = Path(__file__).resolve().parents[1]


def fails_in_one_line(capsys: pytest.CaptureFixture, main, prog: str, argv: list[str], status: int = 2) -> str:
    """Run `main(argv)` as its `__main__` does; the error line, once the status and the one line are checked."""
    assert cli.run(main, prog, argv) == status
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), captured.err
    return lines[0]


def no_work(*args, **kwargs):
    raise AssertionError("a bad run reached the work: validation must come first")


# ------------------------------------------------------------------------------------------ experiments.mnist


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXDL_DATA", str(cache))
    for module in (jdata, download, tfds_source):
        monkeypatch.setattr(module, "reachable", lambda *args, **kwargs: [])
    return cache


@pytest.fixture
def mnist_no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist.search, "fit", no_work)
    monkeypatch.setattr(mnist.search.GridSearch, "fit", no_work)


MNIST_ARGS = [
    (["--seed", "-1"], "argument --seed: -1 is not an integer >= 0"),
    (["--lr", "nan"], "argument --lr: nan is not a positive number"),
    (["--lr", "-1"], "argument --lr: -1 is not a positive number"),
    (["--lr", "inf"], "argument --lr: inf is not a positive number"),
    (["--epochs", "0"], "argument --epochs: 0 is not a positive integer"),
    (["--batch-size", "0"], "argument --batch-size: 0 is not a positive integer"),
    (["--batch-size", "x"], "argument --batch-size: 'x' is not a positive integer"),
    (["--folds", "1"], "argument --folds: 1 is not a number of folds: cross-validation needs 2 or more"),
    (["--model", "rnn"], "argument --model: invalid choice: 'rnn'"),
    (["--grid", '{"units": "abc"}'], "grid key 'units' needs a non-empty list of values, got 'abc'"),
    (["--grid", '{"units": []}'], "grid key 'units' needs a non-empty list of values, got []"),
    (["--grid", "[1,2]"], "'[1,2]' is not a non-empty JSON object of lists"),
    (["--grid", "{}"], "'{}' is not a non-empty JSON object of lists"),
    (["--grid", "not json"], "'not json' is not JSON (Expecting value)"),
    (["--grid", '{"units": [0]}'], "units must be a positive integer, got 0"),
    (["--grid", '{"units": [32.5]}'], "units must be a positive integer, got 32.5"),
    (["--grid", '{"activation": ["swish"]}'], "unknown activation 'swish': choose one of relu"),
    (["--grid", '{"lr": [NaN]}'], "lr must be a positive number, got nan"),
    (["--grid", '{"lr": ["fast"]}'], "lr must be a positive number, got 'fast'"),
    (["--grid", '{"depth": [2]}'], "unknown grid key 'depth': use units, activation, lr"),
    (["--out", "FILE"], "--out FILE is a file, not a directory: name a directory"),
]


@pytest.mark.parametrize("argv, message", MNIST_ARGS, ids=[" ".join(a) for a, _ in MNIST_ARGS])
def test_mnist_bad_arguments(argv, message, tmp_path, capsys, mnist_no_training):
    file = tmp_path / "a-file"
    file.write_text("")
    argv, message = [str(file) if a == "FILE" else a for a in argv], message.replace("FILE", str(file))
    line = fails_in_one_line(capsys, mnist.main, mnist.PROG, argv)
    assert message in line


def test_mnist_official_files_offline(offline, tmp_path, capsys, mnist_no_training):
    line = fails_in_one_line(capsys, mnist.main, mnist.PROG, ["--data", "mnist", "--out", str(tmp_path / "run")])
    assert "--data mnist: mnist: offline" in line and f"into {offline / 'mnist'}" in line


def test_mnist_corrupt_files(offline, tmp_path, capsys, mnist_no_training):
    (offline / "mnist").mkdir(parents=True)
    for pair in jdata.mnist.FILES.values():
        for name, _ in pair:
            (offline / "mnist" / name).write_bytes(b"not a gzip file")
    line = fails_in_one_line(capsys, mnist.main, mnist.PROG, ["--data", "mnist", "--out", str(tmp_path / "run")])
    assert "train-images-idx3-ubyte.gz has md5" in line and "delete it and rerun" in line


def test_mnist_tfds_not_prepared_offline(offline, tmp_path, monkeypatch, capsys, mnist_no_training):
    class Unprepared:  # tensorflow-datasets as it answers for a data set nobody prepared
        @staticmethod
        def data_source(name, **kwargs):
            raise KeyError(f"{name} is not prepared")

    monkeypatch.setattr(tfds_source, "_import_tfds", lambda: Unprepared)
    line = fails_in_one_line(capsys, mnist.main, mnist.PROG, ["--data", "tfds", "--out", str(tmp_path / "run")])
    assert "--data tfds: tfds:mnist is not prepared and the host of" in line


@pytest.mark.filterwarnings("ignore:mnist is not cached")
def test_mnist_more_folds_than_the_data_allows(offline, tmp_path, capsys, mnist_no_training):
    line = fails_in_one_line(capsys, mnist.main, mnist.PROG,
                             ["--search", "--folds", "500", "--out", str(tmp_path / "run")])
    assert "--folds 500: folds=500 >" in line and "use at most" in line


def test_mnist_as_a_program_warns_and_fails_in_one_line_each(tmp_path):
    """The real `python -m experiments.mnist` (one subprocess): the offline warning is one line, then the error."""
    code = ("import runpy, jaxdl.data as d; d.reachable = lambda *a, **k: []; "
            "runpy.run_module('experiments.mnist', run_name='__main__', alter_sys=True)")
    env = {**os.environ, "JAXDL_DATA": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code, "--search", "--folds", "500", "--out", str(tmp_path / "run")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(lines) == 2, done.stderr
    assert lines[0].startswith("warning: mnist is not cached in") and "NOT on the real MNIST" in lines[0]
    assert lines[1].startswith("python -m experiments.mnist: error: --folds 500: ")


# ------------------------------------------------------------------------------------ experiments.convexity


@pytest.fixture
def convexity_no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    for part in (convexity.q1, convexity.q2, convexity.spectra):
        monkeypatch.setattr(part, "run", no_work)


CONVEXITY_ARGS = [
    (["--points", "0"], "argument --points: 0 is not a positive integer"),
    (["--datasets", "0"], "argument --datasets: 0 is not a positive integer"),
    (["--gd-steps", "0"], "argument --gd-steps: 0 is not a positive integer"),
    (["--gd-lr", "nan"], "argument --gd-lr: nan is not a positive number"),
    (["--gd-lr", "0"], "argument --gd-lr: 0 is not a positive number"),
    (["--seed", "-1"], "argument --seed: -1 is not an integer >= 0"),
    (["--lanczos-iters", "0"], "argument --lanczos-iters: 0 is too small: Lanczos needs 2 or more steps"),
    (["--lanczos-iters", "1"], "argument --lanczos-iters: 1 is too small"),
    (["--probes", "0"], "argument --probes: 0 is too small: Hutchinson's trace needs 2 or more probes"),
    (["--probes", "1"], "argument --probes: 1 is too small"),
    (["--slq-probes", "0"], "argument --slq-probes: 0 is not a positive integer"),
    (["--hessian-images", "0"], "argument --hessian-images: 0 is too small: the Hessian needs at least 10 digits"),
    (["--hessian-images", "100000"], "--hessian-images 100000 exceeds the 1437 training digits: use at most 1437"),
    (["--epochs", "0"], "argument --epochs: 0 is not a positive integer"),
    (["--resnet-epochs", "0"], "argument --resnet-epochs: 0 is not a positive integer"),
    (["--chunk", "0"], "argument --chunk: 0 is not a positive integer"),
    (["--chunk", "3"], "--chunk 3 does not divide --probes 20: choose a divisor"),
    (["--resnet-images", "-1"], "argument --resnet-images: -1 is not an integer >= 0"),
    (["--resnet-images", "300"], "--resnet-images 300 exceeds --hessian-images 256"),
    (["--out", "FILE"], "--out FILE is a file, not a directory: name a directory"),
]


@pytest.mark.parametrize("argv, message", CONVEXITY_ARGS, ids=[" ".join(a) for a, _ in CONVEXITY_ARGS])
def test_convexity_bad_arguments(argv, message, tmp_path, capsys, convexity_no_work):
    file = tmp_path / "a-file"
    file.write_text("")
    argv = ["--out", str(tmp_path / "run"), *(str(file) if a == "FILE" else a for a in argv)]
    line = fails_in_one_line(capsys, convexity.main, convexity.PROG, argv)
    assert message.replace("FILE", str(file)) in line


def test_convexity_needs_out_and_keeps_resnet_skip(tmp_path, capsys, convexity_no_work):
    assert "the following arguments are required: --out" in fails_in_one_line(capsys, convexity.main, convexity.PROG, [])
    args = convexity.parse(["--out", str(tmp_path / "run"), "--resnet-images", "0"])  # 0 still skips ResNet-18
    assert args.resnet_images == 0 and (tmp_path / "run").is_dir()
    args = convexity.parse(["--out", str(tmp_path / "run"), "--no-spectrum", "--hessian-images", "100000"])
    assert args.no_spectrum  # sizes of a part that does not run are not held against the run


# --------------------------------------------------------------------------------------------- python -m convert


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A resnet18 checkpoint, and the bad files a user can hand the converter."""
    import torch
    import torchvision

    d = tmp_path_factory.mktemp("convert-files")
    torch.save(torchvision.models.resnet18().state_dict(), d / "r18.pth")
    (d / "truncated.pth").write_bytes((d / "r18.pth").read_bytes()[:100_000])
    (d / "text.pth").write_text("hello")

    class Smuggled:  # a pickle that calls a function on load (a harmless one): weights_only refuses it
        def __reduce__(self):
            return os.getcwd, ()

    torch.save({"fc.weight": torch.zeros(2, 2), "payload": Smuggled()}, d / "smuggled.pth")
    save_file({"x": np.zeros(2, np.float32)}, str(d / "no-arch.safetensors"), metadata={"format": weights.FORMAT})
    (d / "a-dir").mkdir()
    return {p.stem: str(p) for p in d.iterdir()}


CONVERT_ARGS = [
    (["resnet18", "--num-classes", "-3", "--out", "{out}"], "argument --num-classes: -3 is not an integer >= 0"),
    (["resnet18", "--weights", "{r18}", "--out", "{a-dir}"], "--out {a-dir} is a directory: name the file to write"),
    (["resnet18", "--weights", "{r18}"], "--out is required"),
    (["--to-torch", "{no-arch}", "--out", "{out}"], "{no-arch} lacks the metadata arch, num_classes, options"),
    (["resnet18", "--weights", "{no-arch}", "--out", "{out}"],
     "--weights takes imagenet, a torchvision weights name or a .pth file; a .safetensors file is already jaxdl's "
     "format"),
    (["resnet18", "--weights", "{smuggled}", "--out", "{out}"],
     "{smuggled} holds Python objects or code, not just tensors, and jaxdl refuses to unpickle it"),
    (["vgg16", "--weights", "{r18}", "--out", "{out}"],
     "cannot convert to vgg16: the state_dict does not look like a vgg16 one: 32 of vgg16's 32 keys are missing; it "
     "looks like a resnet18 state_dict: convert it as resnet18"),
    (["vgg16", "--weights", "{r18}", "--num-classes", "10", "--out", "{out}"],
     "cannot convert state_dict to vgg16 (154 problems): the state_dict does not look like a vgg16 one"),
    (["resnet18", "--weights", "{truncated}", "--out", "{out}"],
     "{truncated} is not a readable PyTorch checkpoint (RuntimeError): is it truncated"),
    (["resnet18", "--weights", "{text}", "--out", "{out}"], "{text} is not a readable PyTorch checkpoint"),
    (["resnet18", "--weights", "{r18}missing.pth", "--out", "{out}"], "missing.pth: no such file"),
    (["--to-torch", "{r18}", "--out", "{out}"], "{r18} is not a readable safetensors file"),
    (["--to-torch", "{a-dir}/none.safetensors", "--out", "{out}"], "none.safetensors: no such file"),
    (["resnet19", "--out", "{out}"], "unknown architecture 'resnet19': choose one of"),
    (["mlp", "--out", "{out}"], "mlp has no torchvision weights: give a .pth file"),
    (["resnet18", "--weights", "NOPE", "--out", "{out}"], "resnet18 has no weights 'NOPE': choose imagenet or one of"),
    (["--out", "{out}"], "name an architecture (see --list), or use --to-torch FILE"),
]


@pytest.mark.parametrize("argv, message", CONVERT_ARGS, ids=[" ".join(a) for a, _ in CONVERT_ARGS])
def test_convert_bad_arguments_and_files(argv, message, files, tmp_path, capsys):
    names = {**files, "out": str(tmp_path / "out.safetensors")}
    line = fails_in_one_line(capsys, convert_cli.main, convert_cli.PROG, [a.format(**names) for a in argv])
    assert message.format(**names) in line
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("meta, message", [
    ({}, "lacks the metadata arch, num_classes, options a model is rebuilt from"),
    ({"arch": "mlp", "options": "{}"}, "lacks the metadata num_classes"),
    ({"arch": "resnet19", "num_classes": "10", "options": "{}"}, "names an architecture jaxdl does not have"),
    ({"arch": "mlp", "num_classes": "ten", "options": "{}"}, "has unreadable metadata (num_classes 'ten'"),
    ({"arch": "mlp", "num_classes": "10", "options": "{"}, "has unreadable metadata"),
    ({"arch": "mlp", "num_classes": "-1", "options": "{}"}, "has metadata mlp cannot be built from"),
    ({"arch": "mlp", "num_classes": "10", "options": '{"depth": 3}'}, "has metadata mlp cannot be built from"),
    ({"arch": "mlp", "num_classes": "10", "options": "[]"}, "has metadata mlp cannot be built from"),
])
def test_weights_metadata_errors_are_one_line(meta, message, tmp_path):
    file = tmp_path / "w.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(file), metadata={"format": weights.FORMAT, **meta})
    for read in (weights.metadata, weights.load):
        with pytest.raises(weights.WeightsError) as err:
            read(file)
        assert message in str(err.value) and "\n" not in str(err.value) and "jaxdl.weights.save" in str(err.value)


# ---------------------------------------------------------------------------------------- python -m experiments.bench


BENCH_ARGS = [
    (bench_frameworks, ["--models", "mlp,resnet19"], "unknown architecture 'resnet19'"),
    (bench_frameworks, ["--rounds", "0"], "argument --rounds: 0 is not a positive integer"),
    (bench_frameworks, ["--seconds", "nan"], "argument --seconds: nan is not a number >= 0"),
    (bench_conv, ["--layers", "x"], "unknown layer 'x': choose from"),
    (bench_search, ["--units", "32,x"], "argument --units: '32,x' is not a comma-separated list of positive integers"),
    (bench_search, ["--activations", "swish"], "activation(s) swish not in both libraries"),
    (bench_search, ["--lr", "0"], "argument --lr: 0 is not a positive number"),
    (bench_train, ["--arch", "x"], "argument --arch: unknown architecture 'x'"),
    (bench_train, ["--epochs", "0"], "argument --epochs: 0 is not a positive integer"),
]


@pytest.mark.parametrize("bench, argv, message", BENCH_ARGS, ids=[" ".join(a) for _, a, _ in BENCH_ARGS])
def test_bench_bad_arguments(bench, argv, message, capsys):
    prog = f"python -m {bench.MODULE}"
    assert message in fails_in_one_line(capsys, bench.main, prog, argv)

