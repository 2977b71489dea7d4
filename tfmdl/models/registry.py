"""Model registry: every model is built by name from a typed config and a spec.

A builder takes ``(spec, params)`` and returns a `BuiltModel`. Registering::

    @registry.register("mdl", MDLConfig, paper="MDL (2025), this repo's seed paper")
    def build_mdl(spec, params): ...

``tfmdl.models.get("mdl")`` returns the entry; unknown names get a suggestion.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable, Dict, List, Type

from tfmdl import config as config_lib


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: Type
    builder: Callable
    paper: str

    def build(self, spec, params=None):
        """Builds the model; ``params`` is a config instance, a mapping or None."""
        if params is None or isinstance(params, dict):
            params = config_lib.dataclass_from_dict(self.config_cls, params or {},
                                                    f"params ({self.name})")
        return self.builder(spec, params)


_REGISTRY: Dict[str, ModelEntry] = {}


def register(name: str, config_cls: Type, paper: str) -> Callable:
    def wrap(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice.")
        _REGISTRY[name] = ModelEntry(name, config_cls, builder, paper)
        return builder
    return wrap


# modules of tfmdl.models that hold no models; every other module registers its
# models (calls `register`) when imported
_NOT_MODELS = frozenset({"base", "common", "cost", "experiment", "registry", "sizing"})


def _load_all() -> None:
    import tfmdl.models as package  # pylint: disable=g-import-not-at-top
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_MODELS:
            importlib.import_module(f"tfmdl.models.{info.name}")


def get(name: str) -> ModelEntry:
    _load_all()
    if name not in _REGISTRY:
        raise config_lib.ConfigError(
            f"model: {name!r} is not a registered model.{config_lib.suggest(name, list(_REGISTRY))}"
            f" Registered: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def names() -> List[str]:
    _load_all()
    return sorted(_REGISTRY)
