"""ImageNet weights through torchvision's own weights API and cache, converted once and kept as safetensors.

Offline, nothing retries: a missing file fails within seconds with one line naming the file and the folder
it belongs in, so a user without network can fetch it elsewhere and put it there.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from urllib.parse import urlparse

from flax import nnx

from convert.core import from_torch
from jaxdl import weights as jaxdl_weights
from jaxdl.files import PROBE_TIMEOUT_S, cache_dir, digest, reachable


class WeightsUnavailable(RuntimeError):
    """Pretrained weights that are neither cached nor downloadable."""


def weights_dir() -> Path:
    """Converted weights live beside the data sets, under the one cache root (`jaxdl.files.cache_dir`)."""
    return cache_dir() / "weights"


def weights_entry(arch: str, weights: str = "imagenet"):
    """torchvision's WeightsEnum member: 'imagenet' means IMAGENET1K_V1, the weights the course used."""
    import torchvision

    available = torchvision.models.get_model_weights(arch)
    name = "IMAGENET1K_V1" if weights == "imagenet" else weights
    try:
        return available[name]
    except KeyError:
        raise ValueError(f"{arch} has no weights {weights!r}: choose imagenet or one of {', '.join(available.__members__)}, "
                         "or give a .pth file") from None


def torch_file(arch: str, weights: str = "imagenet", timeout: float = PROBE_TIMEOUT_S) -> Path:
    """The .pth file in torch's hub cache, downloaded (hash-checked by torchvision) if absent and reachable.

    Reachability is the bounded probe of `jaxdl.files`: a plain connect with a timeout still waits out
    a hanging DNS lookup, and torch's own download would then retry for minutes.
    """
    import torch

    entry = weights_entry(arch, weights)
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(entry.url).path).name
    if not file.exists():
        if not reachable([entry.url], timeout):
            raise WeightsUnavailable(
                f"{arch} {entry.name} weights are not cached and {urlparse(entry.url).hostname} is unreachable: "
                f"download {entry.url} and put it in {file.parent}/"
            )
        entry.get_state_dict(progress=True, check_hash=True)
    return file


def _refusal(error: Exception) -> str | None:
    """torch's reason for refusing to unpickle something under weights_only=True (a global such as os.system,
    an opcode it does not allow), or None when `error` is not such a refusal."""
    text = str(error)
    if not (isinstance(error, pickle.UnpicklingError) and text.startswith("Weights only load failed")):
        return None
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Check the documentation", "Please file an issue"))]
    return reasons[-1] if reasons else "a type outside torch's allowlist"


def load_pth(file: str | Path) -> dict:
    """A state_dict from a .pth file, unpickled with weights_only=True (no code runs from the file)."""
    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the error below says what matters
            warnings.simplefilter("ignore")
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{file} is a directory: give the .pth file") from None
    except Exception as e:  # torch raises a zoo of types for truncated or foreign files
        refused = _refusal(e)
        if refused is not None:
            raise ValueError(f"{file} holds Python objects or code, not just tensors, and jaxdl refuses to unpickle it "
                             f"({refused}): re-save only the tensors with torch.save(model.state_dict(), ...) where the "
                             "file comes from, if you trust it") from None
        raise ValueError(f"{file} is not a readable PyTorch checkpoint ({type(e).__name__}): is it truncated, "
                         "or not a .pth file?") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{file} holds a {type(obj).__name__}, not a state_dict")
    return obj


def convert_file(file: str | Path, arch: str, num_classes: int | None = None, *, source: str | None = None,
                 out: str | Path | None = None) -> nnx.Module:
    """Convert a .pth file; with `out`, also save it as safetensors, recording the source and its sha256."""
    model = from_torch(load_pth(file), arch, num_classes)
    if out is not None:
        jaxdl_weights.save(model, out, source=source or str(file), source_sha256=digest(file))
    return model


def pretrained(arch: str, num_classes: int | None = None, weights: str = "imagenet", *, seed: int = 0) -> nnx.Module:
    """`arch` with torchvision's pretrained weights; the converted file is cached, so later calls need no torch."""
    entry = weights_entry(arch, weights)
    cached = weights_dir() / f"{arch}-{entry.name}.safetensors"
    if not cached.exists():
        convert_file(torch_file(arch, weights), arch, source=entry.url, out=cached)
    return jaxdl_weights.load(cached, num_classes, seed=seed)
