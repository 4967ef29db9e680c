"""`python -m experiments.svhn`: argument mistakes end in one line and exit status 2; a tiny real run
writes the metrics, the report and the plots, and says what data and weights it actually used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import convert
from experiments import svhn


@pytest.mark.parametrize("argv, expected", [
    (["--arch", "resnet19"], "unknown architecture resnet19: choose from mlp, cnn, lenet5"),
    (["--arch", "lenet5", "--data", "cifar"], "unknown --data 'cifar': choose one of auto, svhn"),
    (["--arch", "lenet5", "--weights", "/nonexistent/w.safetensors"], "no such file"),
    (["--arch", "lenet5", "--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--epochs", "two"], "argument --epochs: invalid int value"),
])
def test_bad_arguments_give_one_line_and_status_2(argv, expected, capsys):
    assert svhn.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("svhn: error: ") and expected in err


def test_missing_imagenet_weights_warn_once_and_fall_back(monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise convert.WeightsUnavailable("resnet18 IMAGENET1K_V1 weights are not cached and download.pytorch.org is unreachable")

    monkeypatch.setattr(convert, "pretrained", offline)
    built = []
    monkeypatch.setattr(svhn.zoo, "create", lambda arch, *a, **kw: built.append(arch) or "model")  # skip the init
    w = svhn.build_model("resnet18", None, 32, 3, seed=0)
    assert built == ["resnet18"]
    assert (w.requested, w.used) == ("imagenet", "random init") and "unavailable" in w.note
    assert capsys.readouterr().err.count("warning:") == 1


def test_tiny_run_writes_metrics_report_and_plots(tmp_path: Path, capsys):
    out = tmp_path / "run"
    argv = ["--arch", "lenet5", "--data", "digits", "--epochs", "2", "--batch-size", "64", "--lr", "0.05",
            "--optimizer", "sgd", "--out", str(out), "--no-progress"]
    assert svhn.main(argv) == 0
    table = capsys.readouterr().out
    assert "| Model | Test Accuracy | Precision | Recall | F1 |" in table and "| lenet5 |" in table
    result = json.loads((out / "metrics.json").read_text())["results"]["lenet5"]
    assert result["data"]["svhn"] is False and result["weights"]["used"] == "random init"
    assert len(result["history"]) == 2 and result["params"] == 62_006 and result["flops_per_image"] > 0
    assert 0.0 <= result["accuracy"] <= 1.0 and sum(map(sum, result["confusion"])) == result["data"]["test_size"]
    report = (out / "report.md").read_text()
    assert "NOT SVHN" in report and "## Analysis" in report and "course reports" in report
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "confusion_lenet5.png").stat().st_size > 10_000
    # --resume after a completed run trains nothing more and reproduces the result
    assert svhn.main(argv + ["--resume"]) == 0
    again = json.loads((out / "metrics.json").read_text())["results"]["lenet5"]
    assert again["accuracy"] == result["accuracy"] and again["history"] == result["history"]
