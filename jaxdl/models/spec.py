"""What a model is, by name: enough to rebuild it when loading saved weights or converting them."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An architecture's registry name, its number of classes and the options it was built with.

    Every model of the zoo sets its own `spec` in its constructor, however it was built (`create`,
    `LeNet5(rngs=...)`, a grid search's builder), so any model can be saved and converted. Options are
    sorted (name, value) pairs with lists made tuples: hashable, since the spec is a static attribute
    of the model and so part of its GraphDef.
    """

    arch: str
    num_classes: int
    options: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(arch: str, num_classes: int, **options: Any) -> ModelSpec:
        return ModelSpec(arch, num_classes, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                                         for k, v in options.items())))
