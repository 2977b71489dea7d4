"""Config files that name a model and its parameters, and building from them.

    model: mdl            # a registered model (tfmdl models lists them)
    params: {width: 96}   # that model's typed config; unknown keys are errors

Command-line overrides (``--set params.width=128``) are applied before
validation, so a typo in an override gets the same "did you mean" error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from tfmdl import config as config_lib
from tfmdl.models import registry


@dataclasses.dataclass
class ExperimentConfig:
    """The resolved config: model name, its typed params, and the raw mapping."""
    model: str
    params: Any
    raw: Dict[str, Any]
    source: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out = dict(self.raw)
        out["model"] = self.model
        out["params"] = config_lib.to_dict(self.params)
        return out


_TOP_KEYS = ("model", "params", "training")


def load_config(source: Union[str, Mapping[str, Any]],
                overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Loads a YAML path (or mapping), applies overrides, validates it."""
    path = source if isinstance(source, str) else None
    raw = config_lib.load_yaml(source) if path else dict(source)
    raw = config_lib.apply_overrides(raw, overrides)
    where = path or "config"
    try:
        for key in raw:
            if key not in _TOP_KEYS:
                raise config_lib.ConfigError(
                    f"{key}: unknown key.{config_lib.suggest(key, _TOP_KEYS)}")
        if "model" not in raw:
            raise config_lib.ConfigError("model: required key is missing (a registered "
                                         f"model: {', '.join(registry.names())}).")
        entry = registry.get(raw["model"])
        params = config_lib.dataclass_from_dict(entry.config_cls, raw.get("params") or {},
                                                "params")
    except config_lib.ConfigError as exc:
        raise config_lib.ConfigError(f"{where}: {exc}") from None
    return ExperimentConfig(model=entry.name, params=params, raw=raw, source=path)


def build(model: str, spec, params: Optional[Mapping[str, Any]] = None):
    """Builds registered model ``model`` for ``spec``."""
    return registry.get(model).build(spec, params)


def from_config(config: Union[str, Mapping[str, Any], ExperimentConfig], spec,
                overrides: Sequence[str] = ()):
    """Builds the model a config file (or mapping) describes."""
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides)
    return registry.get(config.model).build(spec, config.params)
