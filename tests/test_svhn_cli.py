"""`python -m experiments.svhn`: argument mistakes end in one line and exit status 2; tiny real runs write the
metrics, the report and the plots, say what data and weights they actually used, and train with the
documented defaults. Everything goes through the CLI's `main(argv)` and its output files."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import convert
from experiments.svhn.__main__ import DEFAULTS, main
from jaxdl import models


def run(out: Path, *argv: str) -> dict:
    """main(argv) on a small share of the real 8x8 digits; the one architecture's metrics.json record."""
    assert main(["--data", "digits", "--out", str(out), "--no-progress", *argv]) == 0
    (result,) = json.loads((out / "metrics.json").read_text())["results"].values()
    return result


@pytest.mark.parametrize("argv, expected", [
    (["--arch", "resnet19"], "unknown architecture resnet19: choose from mlp, cnn, lenet5"),
    (["--arch", "lenet5", "--data", "cifar"], "unknown --data 'cifar': choose one of auto, svhn"),
    (["--arch", "lenet5", "--weights", "/nonexistent/w.safetensors"], "no such file"),
    (["--arch", "lenet5", "--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--epochs", "two"], "argument --epochs: 'two' is not a positive integer"),
])
def test_bad_arguments_give_one_line_and_status_2(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("svhn: error: ") and expected in err


def test_no_training_flags_train_with_the_documented_defaults(tmp_path: Path):
    result = run(tmp_path / "run", "--arch", "lenet5", "--fraction", "0.1")
    assert result["config"] == DEFAULTS.to_dict()


def test_missing_imagenet_weights_warn_once_and_fall_back(tmp_path: Path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise convert.WeightsUnavailable("resnet18 IMAGENET1K_V1 weights are not cached and download.pytorch.org "
                                         "is unreachable")

    monkeypatch.setattr(convert, "pretrained", offline)
    lenet5 = functools.partial(models.create, "lenet5")  # stands in for ResNet-18, whose eager init alone takes ~25 s
    monkeypatch.setattr(models, "create", lambda arch, *args, **kwargs: lenet5(*args, **kwargs))
    result = run(tmp_path / "run", "--arch", "resnet18", "--fraction", "0.1", "--epochs", "1")
    assert capsys.readouterr().err.count("warning:") == 1
    assert result["weights"]["requested"] == "imagenet" and result["weights"]["used"] == "random init"
    assert "unavailable" in result["weights"]["note"]
    assert "because the ImageNet weights were unavailable" in (tmp_path / "run" / "report.md").read_text()


def test_tiny_run_writes_metrics_report_and_plots(tmp_path: Path, capsys):
    out = tmp_path / "run"
    argv = ["--arch", "lenet5", "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--optimizer", "sgd"]
    result = run(out, *argv)
    table = capsys.readouterr().out
    assert "| Model | Test Accuracy | Precision | Recall | F1 |" in table and "| lenet5 |" in table
    assert result["data"]["svhn"] is False and result["weights"]["used"] == "random init"
    assert result["config"]["weight_decay"] == 5e-4  # the L2 default of SGD, not AdamW's
    assert len(result["history"]) == 2 and result["params"] == 62_006 and result["flops_per_image"] > 0
    assert 0.0 <= result["accuracy"] <= 1.0 and sum(map(sum, result["confusion"])) == result["data"]["test_size"]
    report = (out / "report.md").read_text()
    assert "NOT SVHN" in report and "## Analysis" in report and "course reports" in report
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "confusion_lenet5.png").stat().st_size > 10_000
    # --resume after a completed run trains nothing more and reproduces the result
    again = run(out, *argv, "--resume")
    assert again["accuracy"] == result["accuracy"] and again["history"] == result["history"]
