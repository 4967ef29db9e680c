"""The benchmarks (`experiments.bench`): what they record must be true, whatever the timings.

A tiny real run of the framework comparison must show both frameworks computing the same logits from the same
weights and taking the same training steps, with model FLOPs that match a hand count; bad model names end in one
line; every bench's command line answers `--help` and the quick ones run end to end; the shared harness's clock,
machine description and Markdown output do what the benches rely on.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

import numpy as np
import pytest

from experiments.bench import conv, convert, frameworks, harness, train, twins
from jaxdl import cli


def test_framework_run_checks_the_twins_and_counts_flops(tmp_path):
    out = tmp_path / "bench.json"
    frameworks.main(["--models", "mlp", "--rounds", "1", "--steps", "1", "--seconds", "0", "--out", str(out)])
    result = json.loads(out.read_text())
    mlp = result["results"]["mlp"]
    train_row, eval_row = mlp["train"], mlp["eval"]
    # the same function: float32 twins agree within 1e-4 of the largest logit (README)
    assert 0 < mlp["logit_scale"] and mlp["max_abs_logit_diff"] <= 1e-4 * mlp["logit_scale"]
    # the same training: 2 warm-up + 1 timed SGD steps each on the same batch; one update more or less, or another
    # momentum, decay or rate, moves the loss by ~1e-2 here
    assert train_row["jax_loss"] == pytest.approx(train_row["torch_loss"], rel=1e-4)
    for row in (train_row, eval_row):
        assert np.isfinite(row["jax_img_s"]) and row["jax_img_s"] > 0 and row["torch_img_s"] > 0 and row["rounds"] == 1
    # 3072-256-128-10: forward and weight gradients 820,480 multiply-adds each, input gradients of the two upper
    # layers (the first layer's input is data) 34,048; 2 FLOPs per multiply-add.
    forward = 2 * (3072 * 256 + 256 * 128 + 128 * 10)
    assert train_row["train_flops"] == 2 * forward + 2 * (256 * 128 + 128 * 10)
    # XLA's count: one image's forward (matmuls plus the bias and ReLU elementwise work), tripled
    assert 3 * forward <= train_row["xla_train_flops"] <= 3 * forward * 1.01
    assert result["gemm_peak_gflops"] > 0 and train_row["gemm_peak_gflops"] > 0
    assert result["command"].startswith("python -m experiments.bench --models mlp")
    assert result["machine"]["xla_flags"] == os.environ.get("XLA_FLAGS", "")


def test_unknown_model_is_one_line(capsys):
    assert cli.run(frameworks.main, "python -m experiments.bench", ["--models", "mlp,resnet19"]) == 2
    assert capsys.readouterr().err == ("python -m experiments.bench: error: unknown architecture 'resnet19': choose one "
                                       "of mlp, cnn, lenet5, alexnet, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, "
                                       "vgg19, vgg19_bn, resnet18, resnet34, resnet50, resnet101, resnet152\n")


@pytest.mark.filterwarnings("ignore:'experiments.bench:RuntimeWarning")  # runpy: the module is imported already
@pytest.mark.parametrize("module", ["experiments.bench", "experiments.bench.conv", "experiments.bench.convert",
                                    "experiments.bench.hessian", "experiments.bench.search",
                                    "experiments.bench.train"])
def test_every_bench_answers_help_as_run(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m {module} ")


def test_conv_bench_times_every_form(tmp_path):
    out = tmp_path / "conv.json"
    conv.main(["--layers", "lenet5.conv2", "--seconds", "0", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["form"] for r in rows] == list(conv.FORMS)
    assert all(0 < r["forward_min_ms"] <= r["forward_median_ms"] and 0 < r["train_min_ms"] for r in rows)


def test_convert_bench_counts_torchvision_parameters(tmp_path):
    out = tmp_path / "convert.json"
    convert.main(["--arch", "resnet18", "--repeats", "1", "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["params"] == 11_689_512  # torchvision's ResNet-18 with its 1000-class head
    assert min(row["from_torch_s"], row["to_torch_s"], row["new_head_s"]) > 0


def test_train_bench_runs_both_frameworks(tmp_path):
    out = tmp_path / "train.json"
    train.main(["--arch", "mlp", "--n", "128", "--batch-size", "64", "--epochs", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["images_per_epoch"] == 128 and result["config"]["optimizer"] == "sgd"
    assert len(result["jax_epoch_s"]) == len(result["torch_epoch_s"]) == 1 and result["pipeline_img_s"] > 0


def test_same_function_catches_other_weights():
    x = np.random.default_rng(0).normal(size=(4, *twins.IMAGE)).astype(np.float32)
    model = twins.create("lenet5")  # convolutions through the CPU's space-to-depth form
    same = twins.same_function(model, twins.torch_twin(model), x)
    assert same["max_abs_logit_diff"] <= 1e-4 * same["logit_scale"]
    with pytest.raises(RuntimeError, match="lenet5: jaxdl's and PyTorch's logits differ"):
        twins.same_function(model, twins.torch_twin(twins.create("lenet5", seed=1)), x)


def test_same_logits_refuses_different_functions():
    ours = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    assert twins.same_logits("mlp", ours, ours + 1e-4) == {"max_abs_logit_diff": pytest.approx(1e-4, rel=1e-3),
                                                            "logit_scale": pytest.approx(3.0001)}
    with pytest.raises(RuntimeError, match="do not compute the same function"):
        twins.same_logits("mlp", ours, ours + 0.01)
    with pytest.raises(RuntimeError):
        twins.same_logits("mlp", ours, np.full_like(ours, np.nan))


def test_timed_drains_the_queue_around_the_steps():
    calls = []
    seconds = harness.timed(lambda: calls.append("run"), lambda: calls.append("sync"), steps=3)
    assert calls == ["sync", "run", "run", "run", "sync"] and seconds >= 0
    measured = harness.measure(lambda: 42)
    assert measured.value == 42 and measured.wall_s >= 0 and measured.cpu_s >= 0


def test_header_names_the_command_and_machine():
    head = harness.header("experiments.bench", ["--out", "my runs/bench.json"])
    assert head["command"] == "python -m experiments.bench --out 'my runs/bench.json'"
    m = head["machine"]
    assert m["cores"] == os.cpu_count() and m["jax"] and m["xla_flags"] == os.environ.get("XLA_FLAGS", "")
    assert m["cpu"] in harness.describe(m) and harness.gemm_peak(repeats=1) > 0


def test_markdown_table(capsys):
    harness.print_header("model", "img/s")
    harness.print_row("mlp", 123)
    assert capsys.readouterr().out == "| model | img/s |\n|---|---|\n| mlp | 123 |\n"
