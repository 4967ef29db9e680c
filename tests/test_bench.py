"""The benchmarks (`experiments.bench`): what they record must be true, whatever the timings.

A tiny real run of the framework comparison must show both frameworks computing the same logits from the same
weights and taking the same training steps, with model FLOPs that match a hand count at the input size asked
for, a torch.compile column that holds a rate or the reason compiling failed, and peak memory that is measured
or null with a reason; bad model names and too small inputs end in one line; every bench's command line answers
`--help` and the quick ones run end to end; the shared harness's clock, machine description, peak memory probe
and Markdown output do what the benches rely on. torch.compile itself is stood in for (a cold Inductor compile
of even the MLP takes ~30 s on the project's CPU).
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.bench import conv, convert, frameworks, harness, train, twins
from jaxdl import cli


def test_framework_run_checks_the_twins_and_counts_flops(tmp_path, monkeypatch, capsys):
    def broken(module):  # compiling fails at the first call, as Inductor does without a C++ compiler
        def call(*args):
            raise RuntimeError("no C++ compiler found\n(the rest of Inductor's message)")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    out = tmp_path / "bench.json"
    frameworks.main(["--models", "mlp", "--rounds", "1", "--steps", "1", "--seconds", "0", "--out", str(out)])
    result = json.loads(out.read_text())
    mlp = result["results"]["mlp"]
    train_row, eval_row = mlp["train"], mlp["eval"]
    # the same function: float32 twins agree within 1e-4 of the largest logit (README)
    assert 0 < mlp["logit_scale"] and mlp["max_abs_logit_diff"] <= 1e-4 * mlp["logit_scale"]
    # the same training: 2 warm-up + 1 timed SGD steps (+ the memory probe's) each on the same batch; one update
    # more or less, or another momentum, decay or rate, moves the loss by ~1e-2 here
    assert train_row["jax_loss"] == pytest.approx(train_row["torch_loss"], rel=1e-4)
    for row in (train_row, eval_row):
        assert np.isfinite(row["jax_img_s"]) and row["jax_img_s"] > 0 and row["torch_img_s"] > 0 and row["rounds"] == 1
        assert 0 < row["gemm_frac"] and 0 < row["torch_gemm_frac"] and row["gemm_peak_gflops"] > 0
    # 3072-256-128-10: forward and weight gradients 820,480 multiply-adds each, input gradients of the two upper
    # layers (the first layer's input is data) 34,048; 2 FLOPs per multiply-add.
    forward = 2 * (3072 * 256 + 256 * 128 + 128 * 10)
    assert train_row["train_flops"] == 2 * forward + 2 * (256 * 128 + 128 * 10) and eval_row["eval_flops"] == forward
    # XLA's count: one image's forward (matmuls plus the bias and ReLU elementwise work), tripled
    assert 3 * forward <= train_row["xla_train_flops"] <= 3 * forward * 1.01
    assert result["gemm_peak_gflops"] > 0 and result["image"] == "32x32x3" and result["torch_compile"] is True
    assert result["command"].startswith("python -m experiments.bench --models mlp")
    assert result["machine"]["xla_flags"] == os.environ.get("XLA_FLAGS", "")
    # torch.compile failed: its first line recorded, its figures null, n/a in the table, the bench went on
    assert mlp["torch_compile_error"] == "RuntimeError: no C++ compiler found"
    for key in ("torch_compile_img_s", "ratio_compile", "compile_gemm_frac"):
        assert train_row[key] is None and eval_row[key] is None
    assert train_row["torch_compile_loss"] is None and train_row["torch_compile_peak_mb"] is None
    table = capsys.readouterr().out
    assert "| mlp | train |" in table and "| n/a | n/a |" in table
    assert "torch.compile failed for mlp (n/a above): RuntimeError: no C++ compiler found" in table


def test_framework_run_at_another_image_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", lambda module: module)  # a stand-in: the column's plumbing, not Inductor
    monkeypatch.setattr(harness, "gemm_peak", lambda repeats=5: 100.0)  # GFLOP/s: the fractions are exact
    out = tmp_path / "bench.json"
    frameworks.main(["--models", "lenet5", "--image-size", "40", "--batch-size", "16", "--rounds", "1", "--steps",
                     "1", "--seconds", "0", "--out", str(out)])
    result = json.loads(out.read_text())
    lenet = result["results"]["lenet5"]
    train_row, eval_row = lenet["train"], lenet["eval"]
    assert result["image"] == "40x40x3" and result["image_size"] == 40
    assert lenet["max_abs_logit_diff"] <= 1e-4 * lenet["logit_scale"] and lenet["torch_compile_error"] is None
    # LeNet-5 on 40x40: conv1 5x5x3 -> 36x36x6, pool 18, conv2 5x5x6 -> 14x14x16, pool 7, fc 784-120-84-10
    convs = [36 * 36 * 6 * 75, 14 * 14 * 16 * 150]
    dense = [7 * 7 * 16 * 120, 120 * 84, 84 * 10]
    forward = 2 * (sum(convs) + sum(dense))
    assert eval_row["eval_flops"] == forward  # 2.3 MFLOP; 1.3 at 32x32 (input gradients: all but conv1's)
    assert train_row["train_flops"] == 2 * forward + 2 * (convs[1] + sum(dense))
    # all three sides took the same steps, the stand-in compiled side after its compiling warm-up was undone
    assert train_row["jax_loss"] == pytest.approx(train_row["torch_loss"], rel=1e-4)
    assert train_row["torch_compile_loss"] == pytest.approx(train_row["torch_loss"], rel=1e-6)
    for row, flops in ((train_row, train_row["train_flops"]), (eval_row, forward)):
        assert row["torch_compile_img_s"] > 0 and row["ratio_compile"] == row["jax_img_s"] / row["torch_compile_img_s"]
        assert row["compile_gemm_frac"] == pytest.approx(row["torch_compile_img_s"] * flops / 1e9 / 100.0)
        assert row["gemm_frac"] == pytest.approx(row["jax_img_s"] * flops / 1e9 / 100.0)
    peaks = [train_row[f"{side}_peak_mb"] for side in ("jax", "torch", "torch_compile")]
    if train_row["peak_mb_error"] is None:
        assert all(peak > 0 for peak in peaks)
    else:
        assert peaks == [None] * 3 and train_row["peak_mb_error"]
    assert train_row["jax_xla_step_mb"] > 0
    table = capsys.readouterr().out
    assert "| model (40x40, batch 16) | mode |" in table and "| lenet5 | eval |" in table


def test_too_small_image_is_one_line(capsys):
    assert cli.run(frameworks.main, "python -m experiments.bench", ["--models", "mlp,alexnet", "--image-size", "32"]) == 2
    assert capsys.readouterr().err == ("python -m experiments.bench: error: --image-size 32 is too small for alexnet: "
                                       "it needs at least 63 px\n")


def test_unknown_model_is_one_line(capsys):
    assert cli.run(frameworks.main, "python -m experiments.bench", ["--models", "mlp,resnet19"]) == 2
    assert capsys.readouterr().err == ("python -m experiments.bench: error: unknown architecture 'resnet19': choose one "
                                       "of mlp, cnn, lenet5, alexnet, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, "
                                       "vgg19, vgg19_bn, resnet18, resnet34, resnet50, resnet101, resnet152\n")


@pytest.mark.filterwarnings("ignore:'experiments.bench:RuntimeWarning")  # runpy: the module is imported already
@pytest.mark.parametrize("module", ["experiments.bench", "experiments.bench.conv", "experiments.bench.convert",
                                    "experiments.bench.hessian", "experiments.bench.search",
                                    "experiments.bench.train", "experiments.bench.sizes", "experiments.bench.profile",
                                    "experiments.bench.host"])
def test_every_bench_answers_help_as_run(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m {module} ")


def test_conv_bench_times_every_form(tmp_path):
    out = tmp_path / "conv.json"
    conv.main(["--layers", "lenet5.conv2", "--seconds", "0", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["form"] for r in rows] == list(conv.available_forms())
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


def test_step_peak_mb_sees_a_step_s_memory():
    if harness.peak_rss_unavailable():
        pytest.skip(harness.peak_rss_unavailable())
    held = []
    # 64 MB written (resident), freed at the end of the call: the peak sees it, although it is gone after
    peak = harness.step_peak_mb(lambda: held.append(np.ones(8_000_000)) or held.clear(), steps=2)
    assert 60 < peak < 100


def test_step_peak_mb_sees_a_step_s_memory_when_freed_memory_is_kept():
    """Under `use_fast_cpu_flags()` glibc keeps freed memory mapped, and `malloc_trim` cannot return the top of
    a thread's arena: a step allocating on a worker thread (as XLA's executor threads do) read as 0 MB. The
    measurement must see its 64 MB, and leave the setting on after it (a subprocess: the setting is
    process-wide)."""
    if harness.peak_rss_unavailable():
        pytest.skip(harness.peak_rss_unavailable())
    code = """
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from experiments.bench import harness
from jaxdl import runtime
assert runtime.keep_freed_memory()
worker = ThreadPoolExecutor(1)
step = lambda: worker.submit(lambda: np.ones(8_000_000).sum()).result()
for _ in range(3):
    step()
print(harness.step_peak_mb(step, steps=2), runtime.keep_freed_memory.cache_info().currsize)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    peak, kept = done.stdout.split()
    assert 60 < float(peak) < 100 and kept == "1", done.stdout


def test_markdown_table(capsys):
    harness.print_header("model", "img/s")
    harness.print_row("mlp", 123)
    assert capsys.readouterr().out == "| model | img/s |\n|---|---|\n| mlp | 123 |\n"


def test_host_bench_runs_the_loop_and_the_bare_step(tmp_path):
    from experiments.bench import host

    out = tmp_path / "host.json"
    host.main(["--steps", "20", "--epochs", "2", "--json", str(out)])
    result = json.loads(out.read_text())
    assert all(result[k] > 0 for k in ("fit_steps_s", "bare_steps_s", "read_each_steps_s"))


def test_sizes_grid_is_checked_in_one_line(capsys):
    from experiments.bench import sizes

    assert cli.run(sizes.main, "python -m experiments.bench.sizes", ["--grid", "alexnet@32:8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "alexnet needs at least 63 px" in err


@pytest.mark.parametrize("module, flag", [("host", "--json"), ("profile", "--json"), ("sizes", "--out"),
                                          ("frameworks", "--out")])
def test_an_unwritable_output_is_refused_before_measuring(module, flag, tmp_path, capsys):
    import importlib

    bench = importlib.import_module(f"experiments.bench.{module}")
    assert cli.run(bench.main, module, [flag, str(tmp_path / "missing" / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a writable directory" in err, err


def test_profile_grid_sums_each_cell_by_kind(tmp_path, capsys):
    from experiments.bench import profile

    out = tmp_path / "profile.json"
    profile.main(["--grid", "mlp@32:8", "--steps", "1", "--json", str(out)])
    (cell,) = json.loads(out.read_text())["cells"]
    assert (cell["arch"], cell["image_size"], cell["batch_size"]) == ("mlp", 32, 8)
    for row in cell["modes"].values():  # both modes, every op under one kind, the matmuls found in both frameworks
        assert row["jax_kinds_ms"]["matmul"] > 0 and row["torch_kinds_ms"]["matmul"] > 0
        for side in ("jax", "torch"):
            assert sum(row[f"{side}_kinds_ms"].values()) == pytest.approx(sum(row[f"{side}_ops_ms"].values()))
    assert set(cell["modes"]) == {"train", "eval"} and "| mlp | 32 | 8 | eval |" in capsys.readouterr().out


def test_profile_counts_onednn_custom_calls_as_convolutions():
    """jaxdl's CPU convolutions are custom calls into oneDNN (`jaxdl.onednn`); the profile's kinds must count them
    as convolutions, not as "other"."""
    import jax
    import jax.numpy as jnp

    from experiments.bench import profile
    from jaxdl import onednn
    from jaxdl.models import ops

    if not onednn.available():
        pytest.skip("oneDNN library not built (make onednn)")
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    text = jax.jit(jax.grad(lambda w: ops.DEFAULT(x, w, (1, 1), ((1, 1), (1, 1))).sum())).lower(w).compile().as_text()
    calls = [line.split("%")[1].split(" ")[0] for line in text.splitlines() if "jaxdl_onednn_conv" in line]
    kinds = profile.hlo_kinds(text)
    assert calls and all(kinds[name] == "convolution" for name in calls), (calls, kinds)
