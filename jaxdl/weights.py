"""Save and load model weights as safetensors, without PyTorch.

Files hold the model's parameters and BatchNorm statistics in jaxdl's own layout (HWIO kernels), keyed by their
dotted path (`layer1.0.conv1.kernel`), plus metadata naming the architecture and where the weights came from,
so a file is enough to rebuild its model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from jaxdl.models import ModelSpec, architecture, check_num_classes, create, head, spec
from jaxdl.models.layers import linear

FORMAT = "jaxdl-nhwc-v1"
VarPath = tuple[str | int, ...]


class WeightsError(ValueError):
    """Weights that do not fit the model, or a file that is not what it claims to be."""


def variables(model: nnx.Module) -> dict[VarPath, nnx.Variable]:
    """The model's weights (parameters and BatchNorm statistics) by path; the model's own Variables, not copies."""
    return dict(nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))))


def key(path: VarPath) -> str:
    return ".".join(map(str, path))


def save(model: nnx.Module, file: str | Path, *, source: str = "jaxdl", source_sha256: str = "",
         classes: Sequence[str] | None = None, preprocessing: Mapping[str, Any] | None = None) -> None:
    """Write `model` with what rebuilds and applies it: arch, options, provenance, and optionally the names of
    its classes and the preprocessing its inputs need, which `python -m experiments.predict` applies:
    {"resize": int (the shorter side, aspect kept) or [h, w] (exactly), "crop": int or None (a centre square),
    "mean": [...], "std": [...]} on the [0, 1] scale, RGB, bilinear antialiased resizing. Written to a temporary file first: a kill never leaves half a file."""
    described: ModelSpec = spec(model)
    if classes is not None and described.num_classes and len(classes) != described.num_classes:
        raise WeightsError(f"{len(classes)} class names for a {described.num_classes}-class {described.arch}")
    tensors = {key(p): np.asarray(v.get_value()) for p, v in variables(model).items()}
    metadata = {
        "format": FORMAT,
        "arch": described.arch,
        "num_classes": str(described.num_classes),
        "options": json.dumps(dict(described.options)),
        "source": source,
        "source_sha256": source_sha256,
        **({"classes": json.dumps(list(map(str, classes)))} if classes is not None else {}),
        **({"preprocessing": json.dumps(dict(preprocessing))} if preprocessing is not None else {}),
    }
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    part = file.with_name(file.name + ".part")
    save_file(tensors, str(part), metadata=metadata)
    os.replace(part, file)


def classes(file: str | Path) -> list[str] | None:
    """The class names stored with the weights, or None."""
    meta = metadata(file)
    return json.loads(meta["classes"]) if "classes" in meta else None


def preprocessing(file: str | Path) -> dict[str, Any] | None:
    """The input preprocessing stored with the weights (resize, crop, mean, std), or None."""
    meta = metadata(file)
    return json.loads(meta["preprocessing"]) if "preprocessing" in meta else None


def metadata(file: str | Path) -> dict[str, str]:
    try:
        with safe_open(str(file), framework="numpy") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise WeightsError(f"{file}: no such file") from None
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{file} is not a readable safetensors file ({e}): re-create it with `python -m convert`") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{file} was not written by jaxdl (format {meta.get('format')!r}): convert it with `python -m convert`")
    _check_model_metadata(file, meta)
    return meta


def _check_model_metadata(file: str | Path, meta: dict[str, str]) -> None:
    """The metadata `load` rebuilds the model from: present, readable, and naming an architecture jaxdl has."""
    fix = "re-save the model with jaxdl.weights.save or re-create the file with `python -m convert`"
    missing = [k for k in ("arch", "num_classes", "options") if k not in meta]
    if missing:
        raise WeightsError(f"{file} lacks the metadata {', '.join(missing)} a model is rebuilt from: {fix}")
    try:
        arch = architecture(meta["arch"])
    except ValueError as e:
        raise WeightsError(f"{file} names an architecture jaxdl does not have ({e}): {fix}") from None
    try:
        num_classes, options = int(meta["num_classes"]), json.loads(meta["options"])
    except ValueError:
        raise WeightsError(f"{file} has unreadable metadata (num_classes {meta['num_classes']!r}, "
                           f"options {meta['options']!r}): {fix}") from None
    unknown = sorted(set(options) - set(arch.options)) if isinstance(options, dict) else None
    if num_classes < 0 or unknown is None or unknown:
        raise WeightsError(f"{file} has metadata {arch.name} cannot be built from (num_classes {meta['num_classes']!r}, "
                           f"options {meta['options']!r}): {fix}")


def blank(arch: str, num_classes: int, *, seed: int = 0, **options) -> nnx.Module:
    """The model's structure with shapes but no weights: skips initialising what is about to be overwritten
    (seconds for a ResNet on CPU). Every weight must then be assigned; dropout streams are seeded here."""
    check_num_classes(num_classes)  # here, not under eval_shape, whose tracebacks add lines to the message
    model = nnx.eval_shape(lambda: create(arch, num_classes, **options))
    nnx.reseed(model, default=seed)
    return model


def fresh_head(model: nnx.Module, seed: int = 0) -> dict[str, np.ndarray]:
    """A new classifier layer, PyTorch's fine-tuning idiom `model.fc = nn.Linear(in_features, num_classes)`;
    nothing for a model built with num_classes=0, which has no classifier layer."""
    described = spec(model)
    if described.num_classes == 0:
        return {}
    prefix = head(described.arch)
    layer = model
    for part in prefix.split("."):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    new = linear(layer.in_features, layer.out_features, rngs=nnx.Rngs(seed))
    return {f"{prefix}.kernel": np.asarray(new.kernel.get_value()), f"{prefix}.bias": np.asarray(new.bias.get_value())}


def without_head(tensors: dict[str, np.ndarray], arch: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if not k.startswith(f"{head(arch)}.")}


def load(file: str | Path, num_classes: int | None = None, *, seed: int = 0) -> nnx.Module:
    """Rebuild the model a file describes and fill in its weights, strictly.

    A `num_classes` other than the file's keeps everything but the classifier layer, which starts fresh
    (seeded by `seed`): the fine-tuning case. `num_classes=0` keeps only the backbone (no classifier layer);
    a file saved with num_classes=0 loads with a fresh classifier for any other `num_classes`.
    """
    meta = metadata(file)
    arch, saved_classes = meta["arch"], int(meta["num_classes"])
    num_classes = saved_classes if num_classes is None else num_classes
    model = blank(arch, num_classes, seed=seed, **json.loads(meta["options"]))
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{file} is corrupt ({e}): re-create it with `python -m convert`") from None
    if num_classes != saved_classes:
        tensors = without_head(tensors, arch) | fresh_head(model, seed)
    assign(model, tensors, what=str(file))
    return model


def assign(model: nnx.Module, tensors: dict[str, np.ndarray], *, what: str) -> None:
    """Copy `tensors` (keyed like `save` writes them) into `model`; every problem is reported at once."""
    targets = {key(p): v for p, v in variables(model).items()}
    problems = [f"missing {k}" for k in targets if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in targets]
    problems += [
        f"{k}: shape {tuple(tensors[k].shape)} does not fit {tuple(v.shape)}"
        for k, v in targets.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if problems:
        raise WeightsError(f"{what} does not fit {spec(model).arch}: " + "; ".join(problems))
    for k, v in targets.items():
        v.set_value(jnp.asarray(tensors[k], dtype=v.get_value().dtype))
