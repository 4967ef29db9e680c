"""ImageNet weights through torchvision's own weights API and cache, converted once and kept as safetensors.

Offline, nothing retries: a missing file fails within seconds with one line naming the file and the folder
it belongs in, so a user without network can fetch it elsewhere and put it there.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from flax import nnx

from convert.core import from_torch
from jaxdl import weights as jaxdl_weights


class WeightsUnavailable(RuntimeError):
    """Pretrained weights that are neither cached nor downloadable."""


def cache_dir() -> Path:
    return Path(os.environ.get("JAXDL_DATA", Path.home() / ".cache" / "jaxdl")) / "weights"


def weights_entry(arch: str, weights: str = "imagenet"):
    """torchvision's WeightsEnum member: 'imagenet' means IMAGENET1K_V1, the weights the course used."""
    import torchvision

    available = torchvision.models.get_model_weights(arch)
    name = "IMAGENET1K_V1" if weights == "imagenet" else weights
    try:
        return available[name]
    except KeyError:
        raise ValueError(f"{arch} has no weights {weights!r}: choose imagenet or one of {', '.join(available.__members__)}") from None


def reachable(url: str, timeout: float = 3.0) -> bool:
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def torch_file(arch: str, weights: str = "imagenet", timeout: float = 3.0) -> Path:
    """The .pth file in torch's hub cache, downloaded (hash-checked by torchvision) if absent and reachable."""
    import torch

    entry = weights_entry(arch, weights)
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(entry.url).path).name
    if not file.exists():
        if not reachable(entry.url, timeout):
            raise WeightsUnavailable(
                f"{arch} {entry.name} weights are not cached and {urlparse(entry.url).hostname} is unreachable: "
                f"download {entry.url} and put it in {file.parent}/"
            )
        entry.get_state_dict(progress=True, check_hash=True)
    return file


def load_pth(file: str | Path) -> dict:
    """A state_dict from a .pth file, unpickled with weights_only=True (no code runs from the file)."""
    import torch

    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no such file") from None
    except Exception as e:  # torch raises a zoo of types for truncated or foreign files
        raise ValueError(f"{file} is not a readable PyTorch checkpoint ({type(e).__name__}): is it truncated?") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{file} holds a {type(obj).__name__}, not a state_dict")
    return obj


def sha256(file: str | Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_file(file: str | Path, arch: str, num_classes: int | None = None, *, source: str | None = None,
                 out: str | Path | None = None) -> nnx.Module:
    """Convert a .pth file; with `out`, also save it as safetensors, recording the source and its sha256."""
    model = from_torch(load_pth(file), arch, num_classes)
    if out is not None:
        jaxdl_weights.save(model, out, source=source or str(file), source_sha256=sha256(file))
    return model


def pretrained(arch: str, num_classes: int | None = None, weights: str = "imagenet", *, seed: int = 0) -> nnx.Module:
    """`arch` with torchvision's pretrained weights; the converted file is cached, so later calls need no torch."""
    entry = weights_entry(arch, weights)
    cached = cache_dir() / f"{arch}-{entry.name}.safetensors"
    if not cached.exists():
        convert_file(torch_file(arch, weights), arch, source=entry.url, out=cached)
    return jaxdl_weights.load(cached, num_classes, seed=seed)
