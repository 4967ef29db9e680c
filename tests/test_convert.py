"""The converter's contract: exact round trips, strict errors that name the key, safetensors files with
provenance, and pretrained weights that fail fast and clearly offline."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

import convert
from convert import hub as pretrained_lib
from jaxdl import files, models, weights

ROOT = Path(__file__).resolve().parents[1]


def flat(model: nnx.Module) -> dict:
    return {weights.key(p): np.asarray(v.get_value()) for p, v in weights.variables(model).items()}


@pytest.fixture(scope="module")
def resnet18_sd() -> dict:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).state_dict()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg11_bn", "alexnet"])
def test_round_trip_is_exact(arch: str) -> None:
    torch.manual_seed(0)
    tmodel = torchvision.models.get_model(arch, num_classes=10)
    model = convert.from_torch(tmodel.state_dict(), arch)
    back = convert.to_torch(model)
    tmodel.load_state_dict(back, strict=True)
    for k, v in tmodel.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(back[k], v), k
    again = flat(convert.from_torch(back, arch))
    for k, v in flat(model).items():
        np.testing.assert_array_equal(again[k], v, err_msg=k)


def test_wrong_arch_lists_every_problem(resnet18_sd: dict) -> None:
    with pytest.raises(convert.ConversionError, match=r"cannot convert state_dict to resnet34 \(\d+ problems\).*missing key layer1.2.conv1.weight"):
        convert.from_torch(resnet18_sd, "resnet34")
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'"):
        convert.from_torch(resnet18_sd, "resnet19")
    with pytest.raises(convert.ConversionError, match=r"cannot convert state_dict to lenet5 \(\d+ problems\): the state_dict "
                       r"does not look like a lenet5 one: 9 of lenet5's 10 keys are missing; it looks like a resnet18"):
        convert.from_torch(resnet18_sd, "lenet5", num_classes=10)


def test_missing_extra_and_misshapen_keys_are_named(resnet18_sd: dict) -> None:
    sd = dict(resnet18_sd)
    del sd["layer2.0.bn1.running_var"]
    sd["layer9.weight"] = torch.zeros(3)
    sd["layer3.1.conv2.weight"] = torch.zeros(256, 256, 5, 5)
    with pytest.raises(convert.ConversionError) as err:
        convert.from_torch(sd, "resnet18")
    message = str(err.value)
    assert "(3 problems)" in message and "\n" not in message
    assert "missing key layer2.0.bn1.running_var" in message
    assert "unexpected key layer9.weight" in message
    assert "layer3.1.conv2.weight: shape (256, 256, 5, 5) does not fit resnet18's (256, 256, 3, 3)" in message


def test_new_num_classes_replaces_only_the_head(resnet18_sd: dict) -> None:
    model = convert.from_torch(resnet18_sd, "resnet18", num_classes=7)
    assert model.fc.kernel.shape == (512, 7)
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]), resnet18_sd["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    bound = 1 / np.sqrt(512)
    assert np.abs(np.asarray(model.fc.kernel[...])).max() <= bound and np.asarray(model.fc.kernel[...]).std() > bound / 4


def test_safetensors_round_trip_with_metadata(tmp_path: Path, resnet18_sd: dict) -> None:
    model = convert.from_torch(resnet18_sd, "resnet18")
    file = tmp_path / "r18.safetensors"
    weights.save(model, file, source="test", source_sha256="ab" * 32)
    meta = weights.metadata(file)
    assert (meta["arch"], meta["num_classes"], meta["source"]) == ("resnet18", "10", "test")
    loaded = flat(weights.load(file))
    for k, v in flat(model).items():
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)
    small = weights.load(file, num_classes=3)
    assert small.fc.kernel.shape == (512, 3)
    np.testing.assert_array_equal(np.asarray(small.layer4[1].bn2.var[...]), flat(model)["layer4.1.bn2.var"])


def test_corrupt_and_foreign_files_give_one_line(tmp_path: Path, resnet18_sd: dict) -> None:
    good = tmp_path / "good.safetensors"
    weights.save(convert.from_torch(resnet18_sd, "resnet18"), good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(weights.WeightsError, match="truncated.safetensors"):
        weights.load(truncated)
    pth = tmp_path / "r18.pth"
    torch.save(resnet18_sd, pth)
    half = tmp_path / "half.pth"
    half.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    with pytest.raises(ValueError, match="half.pth is not a readable PyTorch checkpoint.*truncated"):
        convert.load_pth(half)
    with pytest.raises(FileNotFoundError, match="nope.pth: no such file"):
        convert.load_pth(tmp_path / "nope.pth")


def test_pretrained_offline_fails_fast_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "jaxdl"))
    monkeypatch.setattr(pretrained_lib, "reachable", lambda urls, timeout=3.0: [])
    start = time.perf_counter()
    with pytest.raises(convert.WeightsUnavailable) as err:
        convert.pretrained("resnet18", 10)
    assert time.perf_counter() - start < 5
    assert f"resnet18-f37072fd.pth and put it in {tmp_path / 'hub' / 'checkpoints'}/" in str(err.value)


def test_pretrained_uses_torch_cache_then_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resnet18_sd: dict) -> None:
    """A file in torch's hub cache is converted once; the second call reads the safetensors cache (no torch)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "jaxdl"))
    torch.manual_seed(1)
    imagenet_like = torchvision.models.resnet18().state_dict()  # the real file's format, random values
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(imagenet_like, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model = convert.pretrained("resnet18", 10)
    cached = tmp_path / "jaxdl" / "weights" / "resnet18-IMAGENET1K_V1.safetensors"
    assert cached.exists() and weights.metadata(cached)["source_sha256"] == files.digest(
        tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").unlink()
    again = convert.pretrained("resnet18", 10)
    np.testing.assert_array_equal(np.asarray(again.layer1[0].conv1.kernel[...]), np.asarray(model.layer1[0].conv1.kernel[...]))
    assert model.fc.kernel.shape == (512, 10)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convert", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_round_trip_and_errors(tmp_path: Path, resnet18_sd: dict) -> None:
    pth = tmp_path / "r18.pth"
    torch.save(resnet18_sd, pth)
    out = tmp_path / "r18.safetensors"
    assert cli("resnet18", "--weights", str(pth), "--out", str(out)).returncode == 0
    assert weights.metadata(out)["source_sha256"] == files.digest(pth)
    back = tmp_path / "back.pth"
    assert cli("--to-torch", str(out), "--out", str(back)).returncode == 0
    reloaded = torch.load(back, weights_only=True)
    assert all(torch.equal(reloaded[k], v) for k, v in resnet18_sd.items() if "num_batches" not in k)
    bad = cli("resnet19", "--weights", str(pth), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "choose one of" in bad.stderr
    assert "resnet152" in cli("--list").stdout


@pytest.mark.parametrize("arch", models.names())
def test_derived_key_map_is_the_twins_state_dict(arch: str) -> None:
    """The map walked from the model names exactly the twin's state_dict keys, each with the twin's shape."""
    from convert.keymaps import keymap
    from convert.twins import torch_model

    with torch.device("meta"):  # shapes only: no 500 MB of VGG weights to initialise
        state = torch_model(arch, 10).state_dict()
    km = keymap(weights.blank(arch, 10))
    assert [e.torch_key for e in km.entries if e.torch_key not in state] == []
    assert [k for k in state if k not in {e.torch_key for e in km.entries}] == []
    targets = weights.variables(weights.blank(arch, 10))
    for e in km.mapped():
        assert e.layout.torch_shape(targets[e.path].shape) == tuple(state[e.torch_key].shape), e.torch_key


def test_models_built_directly_save_and_convert(tmp_path: Path) -> None:
    """A model built by its class (not `create`) knows its spec: it saves, reloads and converts."""
    from convert.twins import torch_model

    model = models.LeNet5(rngs=nnx.Rngs(3))
    weights.save(model, tmp_path / "lenet5.safetensors")
    again = weights.load(tmp_path / "lenet5.safetensors")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
    torch_model("lenet5", 10).load_state_dict(convert.to_torch(model), strict=True)
