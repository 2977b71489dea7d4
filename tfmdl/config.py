"""Typed configs: dataclasses built from YAML mappings, with key-path errors.

A config file names a model from the registry and its parameters::

    model: mdl
    params: {layers: 2, width: 96, heads: 4}

`dataclass_from_dict` validates a mapping against a dataclass (unknown keys get
the nearest valid key as a suggestion; values are type-checked against the
field annotations) and `apply_overrides` applies ``key.path=value`` strings
(values parsed as YAML) as given on the command line with ``--set``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from typing import Any, Dict, List, Mapping, Sequence, Type, TypeVar

import yaml

T = TypeVar("T")
# a decimal number with an optional exponent (1e-4, -2.5E+3, .5): what a float
# field accepts when YAML hands it over as a string
FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config is invalid; the message names the key path."""


def suggest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    if close:
        return f" Did you mean {close[0]!r}?"
    return f" Valid keys: {', '.join(sorted(valid))}." if valid else ""


def _check_value(value: Any, annotation: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}.")
    if origin is typing.Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            value = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
        if value not in args:
            raise ConfigError(f"{path}: expected one of {', '.join(map(str, args))}, got "
                              f"{value!r}.{suggest(str(value), [str(a) for a in args])}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}.")
        inner = args[0] if args else Any
        return tuple(_check_value(v, inner, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or annotation in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}.")
        if len(args) == 2 and args[1] in (bool, int, float, str):   # e.g. Dict[str, float]
            return {k: _check_value(v, args[1], f"{path}.{k}") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return dataclass_from_dict(annotation, value, path)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}.")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}.")
        return value
    if annotation is float:
        if isinstance(value, str) and FLOAT_LITERAL.fullmatch(value.strip()):
            return float(value)   # YAML 1.1 (PyYAML) reads 1e-4, without a dot, as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}.")
        return value
    return value


def dataclass_from_dict(cls: Type[T], raw: Any, path: str = "config") -> T:
    """Builds dataclass ``cls`` from ``raw``, checking keys and value types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{path}.{key}: unknown key.{suggest(key, list(fields))}")
        kwargs[key] = _check_value(value, hints[key], f"{path}.{key}")
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain YAML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Returns a copy of ``raw`` with ``key.path=value`` overrides applied.

    Values are parsed as YAML (``3`` -> int, ``true`` -> bool, ``[a, b]`` -> list).
    Key validity is checked later, when the typed config is built.
    """
    import copy  # pylint: disable=g-import-not-at-top

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value.")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key.")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from None
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a mapping.")
            node = child
        node[parts[-1]] = value
    return out


def load_yaml(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise ConfigError(f"{path}: config file not found.")
    with open(path, "r", encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level.")
    return raw


def split_overrides(values: List[str]) -> List[str]:
    """Flattens repeated/comma-free ``--set`` values."""
    return [v for v in values if v]


def parse_count(text: Any, what: str = "--params") -> int:
    """A parameter count as people write it: ``"2M"``, ``"500k"``, ``"1.5G"``,
    ``"1_000_000"`` or ``4000000`` -> an integer. ``what`` names the flag or key in
    the error."""
    raw = str(text).strip().replace("_", "").replace(",", "")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", raw)
    if not match:
        raise ValueError(f"{what}={text!r}: expected a count such as 2000000, 500k or 2M.")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"{what}={text!r}: must be at least 1.")
    return int(round(value))
