"""ImageNet weights through torchvision's own weights API and cache, converted once and kept as safetensors.

Offline, nothing retries: a missing file fails within seconds with one line naming the file and the folder
it belongs in, so a user without network can fetch it elsewhere and put it there.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from flax import nnx

from convert.core import from_torch
from jaxdl import weights as jaxdl_weights
from jaxdl.files import PROBE_TIMEOUT_S, cache_dir, digest, reachable
from jaxdl.models import spec


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


def torchvision_metadata(entry, num_classes: int | None = None) -> dict:
    """What a torchvision weights entry says about using its weights: `classes`, its category names (None when
    it has none, or when `num_classes` replaces the head), and `preprocessing`, its eval transform as
    `jaxdl.weights.save` stores it ({"resize", "crop", "mean", "std"}, "interpolation" too when not bilinear)."""
    categories = (getattr(entry, "meta", None) or {}).get("categories")
    keep = categories is not None and (num_classes is None or num_classes == len(categories))
    transform = entry.transforms()

    def size(value):
        value = list(value) if isinstance(value, (list, tuple)) else [value]
        return int(value[0]) if len(value) == 1 else [int(v) for v in value]

    preprocessing = {"resize": size(transform.resize_size), "crop": size(transform.crop_size),
                     "mean": [float(v) for v in transform.mean], "std": [float(v) for v in transform.std]}
    interpolation = getattr(getattr(transform, "interpolation", None), "value", "bilinear")
    if interpolation != "bilinear":
        preprocessing["interpolation"] = interpolation
    return {"classes": list(map(str, categories)) if keep else None, "preprocessing": preprocessing}


def entry_for_url(arch: str, url: str | None):
    """torchvision's weights entry for `arch` whose file is `url`, or None (not a torchvision url or arch)."""
    if not url or not url.startswith(("https://", "http://")):
        return None
    try:
        import torchvision

        available = torchvision.models.get_model_weights(arch)
    except (ImportError, ValueError, KeyError):
        return None
    return next((entry for entry in available if entry.url == url), None)


def convert_file(file: str | Path, arch: str, num_classes: int | None = None, *, source: str | None = None,
                 out: str | Path | None = None, classes: Sequence[str] | None = None,
                 preprocessing: Mapping[str, Any] | None = None) -> nnx.Module:
    """Convert a .pth file; with `out`, also save it as safetensors, recording the source and its sha256.

    When `source` is the url of one of torchvision's weights for `arch` (as `pretrained` and `python -m convert`
    pass it), the file also stores that entry's category names (unless the head is replaced) and eval
    preprocessing (`torchvision_metadata`), which `python -m experiments.predict` applies; `classes` and
    `preprocessing`, when given, take their place. Other files store only what is given."""
    model = from_torch(load_pth(file), arch, num_classes)
    if out is not None:
        entry = entry_for_url(arch, source) if classes is None or preprocessing is None else None
        stored = torchvision_metadata(entry, spec(model).num_classes) if entry is not None else {}
        jaxdl_weights.save(model, out, source=source or str(file), source_sha256=digest(file),
                           classes=classes if classes is not None else stored.get("classes"),
                           preprocessing=preprocessing if preprocessing is not None else stored.get("preprocessing"))
    return model


def pretrained(arch: str, num_classes: int | None = None, weights: str = "imagenet", *, seed: int = 0) -> nnx.Module:
    """`arch` with torchvision's pretrained weights; the converted file is cached, so later calls need no torch."""
    entry = weights_entry(arch, weights)
    cached = weights_dir() / f"{arch}-{entry.name}.safetensors"
    if not cached.exists():
        convert_file(torch_file(arch, weights), arch, source=entry.url, out=cached, **torchvision_metadata(entry))
    return jaxdl_weights.load(cached, num_classes, seed=seed)
