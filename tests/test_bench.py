"""`python -m experiments.bench`: a tiny real run writes the JSON the issue asks for, with the model FLOPs that
PyTorch's counter gives for a training step (checked against the MLP's hand count), and bad names end in one line."""

from __future__ import annotations

import json

import pytest

from experiments import bench


def test_mlp_run_writes_ratios_and_model_flops(tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--models", "mlp", "--rounds", "1", "--steps", "1", "--seconds", "0", "--out", str(out)])
    result = json.loads(out.read_text())
    train, evaluation = result["results"]["mlp"]["train"], result["results"]["mlp"]["eval"]
    for row in (train, evaluation):
        assert row["jax_img_s"] > 0 and row["torch_img_s"] > 0
        assert row["ratio"] == pytest.approx(row["jax_img_s"] / row["torch_img_s"])
    # 3072-256-128-10: forward and weight gradients 820,480 multiply-adds each, input gradients of the two upper
    # layers (the first layer's input is data) 34,048; 2 FLOPs per multiply-add.
    forward = 2 * (3072 * 256 + 256 * 128 + 128 * 10)
    assert train["train_flops"] == 2 * forward + 2 * (256 * 128 + 128 * 10)
    assert train["gemm_frac"] == pytest.approx(train["jax_img_s"] * train["train_flops"] / 1e9 / train["gemm_peak_gflops"])


def test_unknown_model_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--models", "mlp,resnet19"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse: the usage, then the error on one line
    assert exit_.value.code == 2 and last.endswith("error: unknown architecture 'resnet19': choose one of mlp, cnn, "
                                                   "lenet5, alexnet, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, "
                                                   "vgg19, vgg19_bn, resnet18, resnet34, resnet50, resnet101, resnet152")
