"""Declarative feature spec: YAML -> validated, typed objects (docs/design.md 1).

A spec says which raw fields an example carries, how each becomes a model input,
which fields are labels, which identify users and queries for GAUC/QAUC, and
which features form the MDL tokens and PMTA feature sets. Every later stage
(TFRecord reader, CSV/Parquet conversion, the model input stage, the serving
signatures) is built from one `FeatureSpec`, never from ad-hoc lists.

Example (``DIR/spec.yaml`` written by ``tfmdl data synth``)::

    name: feed
    scenario:
      feature: scenario_id
      names: [featured, nearby]
      multi_valued: false
    tasks:
      - {name: like, label: label_like}
    features:
      - {name: user_id, type: categorical, dtype: int64, hash_buckets: 100000,
         embedding_dim: 16}
      - {name: user_activity, type: numeric, default: 0.0,
         normalization: {kind: zscore, mean: 1.2, std: 0.5}}
      - {name: hist_items, type: sequence, dtype: int64, max_len: 10,
         pooling: mean, shared_table: item_id}
    passthrough:
      - {name: query_id, dtype: int64}
    group_keys: {user: user_id, query: query_id}
    semantic_groups: {user: [user_id, user_activity], item: [item_id]}
    feature_sets:
      extra_embedding: [user_id, item_id]
      scenario_prior: {featured: [...], nearby: [...], global: []}
      task_related: {like: [...]}
      domain_specific: [user_id, item_id]

Errors are `SpecError`s naming the key path (``features[3].embedding_dim``) and,
for an unknown key or name, the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from tfmdl.config import suggest as _suggest
from tfmdl.pipelines import filesystems

CATEGORICAL = "categorical"
NUMERIC = "numeric"
SEQUENCE = "sequence"
FEATURE_TYPES = (CATEGORICAL, NUMERIC, SEQUENCE)
NORMALIZATIONS = ("none", "zscore", "log1p")
POOLINGS = ("mean", "sum", "none")
PADDINGS = ("post", "pre")
GLOBAL_SCENARIO = "global"


class SpecError(ValueError):
    """A feature spec is invalid; the message names the key path."""


def _check_keys(raw: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: expected a mapping, got {type(raw).__name__} {raw!r}.")
    for key in raw:
        if key not in allowed:
            raise SpecError(f"{path}.{key}: unknown key.{_suggest(key, allowed)}")


def _require(raw: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in raw or raw[key] is None:
        raise SpecError(f"{path}.{key}: required key is missing.")
    return raw[key]


def _positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"{path}: expected a positive integer, got {value!r}.")
    return value


def _non_negative_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{path}: expected a non-negative integer, got {value!r}.")
    return value


def _choice(value: Any, choices: Sequence[str], path: str) -> str:
    if value not in choices:
        raise SpecError(f"{path}: expected one of {', '.join(choices)}, got {value!r}."
                        f"{_suggest(value, choices)}")
    return value


def _str_list(value: Any, path: str) -> List[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{path}: expected a list of names, got {value!r}.")
    return list(value)


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How a numeric feature is scaled: none, z-score ((x-mean)/std) or log1p."""
    kind: str = "none"
    mean: float = 0.0
    std: float = 1.0

    def to_dict(self) -> Dict[str, Any]:
        if self.kind == "zscore":
            return {"kind": self.kind, "mean": self.mean, "std": self.std}
        return {"kind": self.kind}


@dataclasses.dataclass(frozen=True)
class Feature:
    """One model input feature.

    Categorical and sequence features map raw ids to embedding rows by exactly one
    of: ``vocabulary`` (inline list), ``vocabulary_file`` (one value per line),
    ``hash_buckets`` (hash of the raw value) or ``num_buckets`` (int64 identity
    ids in ``[0, num_buckets)``). ``oov_buckets`` extra rows take values outside
    the vocabulary / identity range. ``shared_table`` names another feature whose
    embedding table this one uses (e.g. a behaviour sequence sharing ``item_id``).
    """
    name: str
    type: str
    dtype: str = "int64"
    embedding_dim: int = 8
    vocabulary: Optional[Tuple[Any, ...]] = None
    vocabulary_file: Optional[str] = None
    hash_buckets: Optional[int] = None
    num_buckets: Optional[int] = None
    oov_buckets: int = 1
    shared_table: Optional[str] = None
    default: Any = None
    normalization: Normalization = Normalization()
    max_len: int = 1
    pooling: str = "mean"
    padding: str = "post"

    @property
    def is_categorical(self) -> bool:
        return self.type in (CATEGORICAL, SEQUENCE)

    @property
    def table_name(self) -> str:
        """The embedding table this feature reads (its own or the shared one)."""
        return self.shared_table or self.name

    @property
    def pad_value(self) -> Any:
        return "" if self.dtype == "string" else -1

    @property
    def missing_value(self) -> Any:
        """Value that stands in for an absent feature when parsing."""
        if self.default is not None:
            return self.default
        if self.type == NUMERIC:
            return 0.0
        return self.pad_value

    @property
    def vocab_size(self) -> Optional[int]:
        """Number of embedding rows, or None while a vocabulary file is unread."""
        if self.hash_buckets is not None:
            return self.hash_buckets
        if self.num_buckets is not None:
            return self.num_buckets + self.oov_buckets
        if self.vocabulary is not None:
            return len(self.vocabulary) + self.oov_buckets
        return None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == NUMERIC:
            if self.default is not None:
                out["default"] = self.default
            if self.normalization.kind != "none":
                out["normalization"] = self.normalization.to_dict()
            return out
        out["dtype"] = self.dtype
        if self.shared_table:
            out["shared_table"] = self.shared_table
        else:
            out["embedding_dim"] = self.embedding_dim
            for key in ("hash_buckets", "num_buckets"):
                if getattr(self, key) is not None:
                    out[key] = getattr(self, key)
            if self.vocabulary_file is not None:
                # absolute, so a spec copied next to converted data still finds it
                out["vocabulary_file"] = os.path.abspath(self.vocabulary_file)
            if self.vocabulary is not None:
                out["vocabulary"] = list(self.vocabulary)
            if self.hash_buckets is None:
                out["oov_buckets"] = self.oov_buckets
        if self.default is not None:
            out["default"] = self.default
        if self.type == SEQUENCE:
            out.update(max_len=self.max_len, pooling=self.pooling, padding=self.padding)
        return out


@dataclasses.dataclass(frozen=True)
class Passthrough:
    """A field carried through the pipeline but not fed to the model (true
    probabilities, query ids, request ids)."""
    name: str
    dtype: str = "int64"
    default: Any = None

    def to_dict(self) -> Dict[str, Any]:
        out = {"name": self.name, "dtype": self.dtype}
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclasses.dataclass(frozen=True)
class Scenario:
    """The scenario (domain) field: an int64 id in ``[0, count)``; multi-valued
    when an instance may belong to several scenarios (a list of ids)."""
    feature: str
    names: Tuple[str, ...]
    multi_valued: bool = False

    @property
    def count(self) -> int:
        return len(self.names)

    def to_dict(self) -> Dict[str, Any]:
        return {"feature": self.feature, "names": list(self.names),
                "multi_valued": self.multi_valued}


@dataclasses.dataclass(frozen=True)
class Task:
    """A prediction task and its label field (int64 in {0, 1}; -1 or absent = missing)."""
    name: str
    label: str

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "label": self.label}


@dataclasses.dataclass(frozen=True)
class FeatureSets:
    """Named feature sets the MDL and PMTA layers read (docs/design.md 2.1 and 3)."""
    extra_embedding: Tuple[str, ...] = ()
    scenario_prior: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    task_related: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    domain_specific: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "extra_embedding": list(self.extra_embedding),
            "scenario_prior": {k: list(v) for k, v in self.scenario_prior.items()},
            "task_related": {k: list(v) for k, v in self.task_related.items()},
            "domain_specific": list(self.domain_specific),
        }


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """A validated feature spec. Build with `FeatureSpec.from_dict` / `load_spec`."""
    name: str
    scenario: Scenario
    tasks: Tuple[Task, ...]
    features: Tuple[Feature, ...]
    passthrough: Tuple[Passthrough, ...] = ()
    group_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    semantic_groups: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    feature_sets: FeatureSets = FeatureSets()
    source: Optional[str] = None

    # -- look-ups -------------------------------------------------------------
    @property
    def task_names(self) -> List[str]:
        return [t.name for t in self.tasks]

    @property
    def feature_names(self) -> List[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature {name!r} is not declared in spec {self.name!r}."
                       f"{_suggest(name, self.feature_names)}")

    @property
    def user_key(self) -> Optional[str]:
        return self.group_keys.get("user")

    @property
    def query_key(self) -> Optional[str]:
        return self.group_keys.get("query")

    # -- (de)serialisation ------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "scenario": self.scenario.to_dict(),
            "tasks": [t.to_dict() for t in self.tasks],
            "features": [f.to_dict() for f in self.features],
            "passthrough": [p.to_dict() for p in self.passthrough],
            "group_keys": dict(self.group_keys),
            "semantic_groups": {k: list(v) for k, v in self.semantic_groups.items()},
            "feature_sets": self.feature_sets.to_dict(),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None,
                              width=100)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: Optional[str] = None) -> "FeatureSpec":
        return _SpecParser(raw, source).parse()


def load_spec(path: str) -> FeatureSpec:
    """Reads and validates a spec YAML file (or ``DIR/spec.yaml``; remote URLs
    through `filesystems`); errors name the file and key path."""
    if filesystems.isdir(path):
        path = os.path.join(path, "spec.yaml")
    if not filesystems.exists(path):
        raise SpecError(f"{path}: spec file not found.")
    try:
        raw = yaml.safe_load(filesystems.read_text(path))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    try:
        return FeatureSpec.from_dict(raw, source=path)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def save_spec(spec: FeatureSpec, path: str) -> None:
    """Writes the spec as YAML atomically (temporary file, then rename)."""
    filesystems.write_text(path, spec.to_yaml())


_TOP_KEYS = ("name", "scenario", "tasks", "features", "passthrough", "group_keys",
             "semantic_groups", "feature_sets")
_FEATURE_KEYS = ("name", "type", "dtype", "embedding_dim", "vocabulary", "vocabulary_file",
                 "hash_buckets", "num_buckets", "oov_buckets", "shared_table", "default",
                 "normalization", "max_len", "pooling", "padding")
_NUMERIC_KEYS = ("name", "type", "default", "normalization")


class _SpecParser:
    """Turns a raw mapping into a `FeatureSpec`, reporting the first problem."""

    def __init__(self, raw: Mapping[str, Any], source: Optional[str]):
        self.raw = raw
        self.source = source

    def parse(self) -> FeatureSpec:
        raw = self.raw
        _check_keys(raw, _TOP_KEYS, "spec")
        name = str(raw.get("name", "spec"))
        features = self._features(_require(raw, "features", "spec"))
        names = [f.name for f in features]
        passthrough = self._passthrough(raw.get("passthrough") or [], set(names))
        fields = names + [p.name for p in passthrough]
        self._check_shared_tables(features)
        scenario = self._scenario(_require(raw, "scenario", "spec"), fields)
        tasks = self._tasks(_require(raw, "tasks", "spec"), fields)
        group_keys = self._group_keys(raw.get("group_keys") or {}, fields)
        semantic_groups = self._semantic_groups(raw.get("semantic_groups") or {}, names)
        feature_sets = self._feature_sets(raw.get("feature_sets") or {}, features, scenario,
                                          tasks)
        return FeatureSpec(name=name, scenario=scenario, tasks=tuple(tasks),
                           features=tuple(features), passthrough=tuple(passthrough),
                           group_keys=group_keys, semantic_groups=semantic_groups,
                           feature_sets=feature_sets, source=self.source)

    # -- features -------------------------------------------------------------
    def _features(self, raw: Any) -> List[Feature]:
        if not isinstance(raw, list) or not raw:
            raise SpecError("spec.features: expected a non-empty list of features.")
        out, seen = [], set()
        for i, item in enumerate(raw):
            path = f"features[{i}]"
            if isinstance(item, Mapping) and "name" in item:
                path = f"features[{i}] ({item['name']})"
            feature = self._feature(item, path)
            if feature.name in seen:
                raise SpecError(f"{path}.name: feature {feature.name!r} is declared twice.")
            seen.add(feature.name)
            out.append(feature)
        return out

    def _feature(self, raw: Any, path: str) -> Feature:
        _check_keys(raw, _FEATURE_KEYS, path)
        name = _require(raw, "name", path)
        if not isinstance(name, str) or not name:
            raise SpecError(f"{path}.name: expected a non-empty string, got {name!r}.")
        ftype = _choice(_require(raw, "type", path), FEATURE_TYPES, f"{path}.type")
        if ftype == NUMERIC:
            _check_keys(raw, _NUMERIC_KEYS, path)
            default = raw.get("default")
            if default is not None and not isinstance(default, (int, float)):
                raise SpecError(f"{path}.default: expected a number, got {default!r}.")
            return Feature(name=name, type=ftype, dtype="float32",
                           default=None if default is None else float(default),
                           normalization=self._normalization(raw.get("normalization"),
                                                             f"{path}.normalization"))
        dtype = _choice(raw.get("dtype", "int64"), ("int64", "string"), f"{path}.dtype")
        kwargs: Dict[str, Any] = {"name": name, "type": ftype, "dtype": dtype}
        shared = raw.get("shared_table")
        lookups = [k for k in ("vocabulary", "vocabulary_file", "hash_buckets", "num_buckets")
                   if raw.get(k) is not None]
        if shared is not None:
            if lookups or "embedding_dim" in raw:
                raise SpecError(f"{path}.shared_table: a feature that shares {shared!r}'s "
                                f"table takes its lookup and embedding_dim from it; remove "
                                f"{', '.join(lookups + (['embedding_dim'] if 'embedding_dim' in raw else []))}.")
            kwargs["shared_table"] = str(shared)
        else:
            if len(lookups) != 1:
                raise SpecError(f"{path}: a categorical feature needs exactly one of vocabulary, "
                                f"vocabulary_file, hash_buckets, num_buckets"
                                f"{'' if not lookups else '; got ' + ', '.join(lookups)}.")
            kwargs.update(self._lookup(raw, lookups[0], dtype, path))
            kwargs["embedding_dim"] = _positive_int(raw.get("embedding_dim", 8),
                                                    f"{path}.embedding_dim")
            # at least one OOV row: unknown and missing values need a row, never a
            # silent out-of-range gather
            kwargs["oov_buckets"] = _positive_int(raw.get("oov_buckets", 1),
                                                  f"{path}.oov_buckets")
        default = raw.get("default")
        if default is not None:
            expected = str if dtype == "string" else int
            if isinstance(default, bool) or not isinstance(default, expected):
                raise SpecError(f"{path}.default: expected a {dtype} value, got {default!r}.")
            kwargs["default"] = default
        if ftype == SEQUENCE:
            kwargs["max_len"] = _positive_int(_require(raw, "max_len", path), f"{path}.max_len")
            kwargs["pooling"] = _choice(raw.get("pooling", "mean"), POOLINGS, f"{path}.pooling")
            kwargs["padding"] = _choice(raw.get("padding", "post"), PADDINGS, f"{path}.padding")
        else:
            for key in ("max_len", "pooling", "padding"):
                if key in raw:
                    raise SpecError(f"{path}.{key}: only sequence features take {key}; "
                                    f"declare type: sequence for a multi-valued feature.")
        return Feature(**kwargs)

    def _lookup(self, raw: Mapping[str, Any], key: str, dtype: str, path: str) -> Dict[str, Any]:
        value = raw[key]
        if key == "hash_buckets":
            return {key: _positive_int(value, f"{path}.{key}")}
        if key == "num_buckets":
            if dtype != "int64":
                raise SpecError(f"{path}.num_buckets: identity ids need dtype int64, "
                                f"got dtype {dtype}; use vocabulary or hash_buckets for strings.")
            return {key: _positive_int(value, f"{path}.{key}")}
        if key == "vocabulary_file":
            if not isinstance(value, str):
                raise SpecError(f"{path}.vocabulary_file: expected a path, got {value!r}.")
            resolved = value
            if self.source and not filesystems.is_absolute(value):
                resolved = os.path.join(os.path.dirname(self.source), value)
            if not filesystems.exists(resolved):
                raise SpecError(f"{path}.vocabulary_file: file {resolved!r} does not exist.")
            return {key: resolved}
        if not isinstance(value, list) or not value:
            raise SpecError(f"{path}.vocabulary: expected a non-empty list, got {value!r}.")
        expected = str if dtype == "string" else int
        for j, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, expected):
                raise SpecError(f"{path}.vocabulary[{j}]: expected a {dtype} value, got {v!r}.")
        if len(set(value)) != len(value):
            raise SpecError(f"{path}.vocabulary: contains duplicate values.")
        return {"vocabulary": tuple(value)}

    def _normalization(self, raw: Any, path: str) -> Normalization:
        if raw is None:
            return Normalization()
        if isinstance(raw, str):
            raw = {"kind": raw}
        _check_keys(raw, ("kind", "mean", "std"), path)
        kind = _choice(raw.get("kind", "none"), NORMALIZATIONS, f"{path}.kind")
        if kind != "zscore":
            for key in ("mean", "std"):
                if key in raw:
                    raise SpecError(f"{path}.{key}: only kind zscore takes {key}.")
            return Normalization(kind=kind)
        mean = raw.get("mean", 0.0)
        std = raw.get("std", 1.0)
        if not isinstance(mean, (int, float)) or isinstance(mean, bool):
            raise SpecError(f"{path}.mean: expected a number, got {mean!r}.")
        if not isinstance(std, (int, float)) or isinstance(std, bool) or std <= 0:
            raise SpecError(f"{path}.std: expected a positive number, got {std!r}.")
        return Normalization(kind=kind, mean=float(mean), std=float(std))

    def _check_shared_tables(self, features: List[Feature]) -> None:
        by_name = {f.name: f for f in features}
        for i, f in enumerate(features):
            if f.shared_table is None:
                continue
            path = f"features[{i}] ({f.name}).shared_table"
            owner = by_name.get(f.shared_table)
            if owner is None:
                raise SpecError(f"{path}: feature {f.shared_table!r} is not declared."
                                f"{_suggest(f.shared_table, list(by_name))}")
            if owner.shared_table is not None:
                raise SpecError(f"{path}: {f.shared_table!r} itself shares "
                                f"{owner.shared_table!r}'s table; point at the owner directly.")
            if not owner.is_categorical or owner.dtype != f.dtype:
                raise SpecError(f"{path}: {f.shared_table!r} must be a categorical feature "
                                f"of dtype {f.dtype}.")

    def _passthrough(self, raw: Any, feature_names: set) -> List[Passthrough]:
        if not isinstance(raw, list):
            raise SpecError(f"spec.passthrough: expected a list, got {raw!r}.")
        out = []
        for i, item in enumerate(raw):
            path = f"passthrough[{i}]"
            _check_keys(item, ("name", "dtype", "default"), path)
            name = _require(item, "name", path)
            if name in feature_names or name in {p.name for p in out}:
                raise SpecError(f"{path}.name: {name!r} is already declared.")
            dtype = _choice(item.get("dtype", "int64"), ("int64", "float32", "string"),
                            f"{path}.dtype")
            out.append(Passthrough(name=name, dtype=dtype, default=item.get("default")))
        return out

    # -- scenario, tasks, groups ---------------------------------------------------
    def _field_ref(self, name: Any, fields: Sequence[str], path: str) -> str:
        if name not in fields:
            raise SpecError(f"{path}: {name!r} is not a declared feature or passthrough field."
                            f"{_suggest(name, fields)}")
        return name

    def _scenario(self, raw: Any, fields: Sequence[str]) -> Scenario:
        path = "scenario"
        _check_keys(raw, ("feature", "names", "count", "multi_valued"), path)
        feature = _require(raw, "feature", path)
        if not isinstance(feature, str) or not feature:
            raise SpecError(f"{path}.feature: expected a field name, got {feature!r}.")
        if feature in fields:
            raise SpecError(f"{path}.feature: {feature!r} is the scenario field; it is declared "
                            f"here only, not under features or passthrough.")
        names = raw.get("names")
        count = raw.get("count")
        if names is None and count is None:
            raise SpecError(f"{path}: give names (a list) or count.")
        if names is None:
            names = [f"scenario_{i}" for i in range(_positive_int(count, f"{path}.count"))]
        names = _str_list(names, f"{path}.names")
        if not names:
            raise SpecError(f"{path}.names: expected at least one scenario.")
        if count is not None and _positive_int(count, f"{path}.count") != len(names):
            raise SpecError(f"{path}.count: {count} does not match the {len(names)} names.")
        if GLOBAL_SCENARIO in names or len(set(names)) != len(names):
            raise SpecError(f"{path}.names: names must be unique and not {GLOBAL_SCENARIO!r} "
                            f"(reserved for the global token), got {names}.")
        multi = raw.get("multi_valued", False)
        if not isinstance(multi, bool):
            raise SpecError(f"{path}.multi_valued: expected true or false, got {multi!r}.")
        return Scenario(feature=feature, names=tuple(names), multi_valued=multi)

    def _tasks(self, raw: Any, fields: Sequence[str]) -> List[Task]:
        if not isinstance(raw, list) or not raw:
            raise SpecError("spec.tasks: expected a non-empty list of tasks.")
        out = []
        for i, item in enumerate(raw):
            path = f"tasks[{i}]"
            _check_keys(item, ("name", "label"), path)
            name = _require(item, "name", path)
            label = item.get("label", f"label_{name}")
            if name in {t.name for t in out}:
                raise SpecError(f"{path}.name: task {name!r} is declared twice.")
            if label in fields:
                raise SpecError(f"{path}.label: {label!r} is a feature; a label must not be a "
                                f"model input.")
            out.append(Task(name=str(name), label=str(label)))
        return out

    def _group_keys(self, raw: Any, fields: Sequence[str]) -> Dict[str, str]:
        _check_keys(raw, ("user", "query"), "group_keys")
        return {k: self._field_ref(v, fields, f"group_keys.{k}") for k, v in raw.items()}

    def _semantic_groups(self, raw: Any, names: Sequence[str]) -> Dict[str, Tuple[str, ...]]:
        if not isinstance(raw, Mapping):
            raise SpecError(f"semantic_groups: expected a mapping of group -> features, "
                            f"got {raw!r}.")
        out, owner = {}, {}
        for group, members in raw.items():
            path = f"semantic_groups.{group}"
            members = _str_list(members, path)
            if not members:
                raise SpecError(f"{path}: a semantic group needs at least one feature.")
            for j, m in enumerate(members):
                self._field_ref(m, names, f"{path}[{j}]")
                if m in owner:
                    raise SpecError(f"{path}[{j}]: {m!r} is already in group {owner[m]!r}; "
                                    f"each feature forms part of one token.")
                owner[m] = group
            out[str(group)] = tuple(members)
        return out

    def _feature_sets(self, raw: Any, features: List[Feature], scenario: Scenario,
                      tasks: List[Task]) -> FeatureSets:
        path = "feature_sets"
        names = [f.name for f in features]
        categorical = {f.name for f in features if f.is_categorical}
        _check_keys(raw, ("extra_embedding", "scenario_prior", "task_related",
                          "domain_specific"), path)

        def names_list(value: Any, p: str, categorical_only: bool = False) -> Tuple[str, ...]:
            items = _str_list(value, p)
            for j, m in enumerate(items):
                self._field_ref(m, names, f"{p}[{j}]")
                if categorical_only and m not in categorical:
                    raise SpecError(f"{p}[{j}]: {m!r} is numeric; this set takes categorical "
                                    f"(embedded) features only.")
            return tuple(items)

        scen_prior = raw.get("scenario_prior") or {}
        _check_keys(scen_prior, list(scenario.names) + [GLOBAL_SCENARIO], f"{path}.scenario_prior")
        task_rel = raw.get("task_related") or {}
        _check_keys(task_rel, [t.name for t in tasks], f"{path}.task_related")
        return FeatureSets(
            extra_embedding=names_list(raw.get("extra_embedding") or [],
                                       f"{path}.extra_embedding", categorical_only=True),
            scenario_prior={k: names_list(v, f"{path}.scenario_prior.{k}")
                            for k, v in scen_prior.items()},
            task_related={k: names_list(v, f"{path}.task_related.{k}")
                          for k, v in task_rel.items()},
            domain_specific=names_list(raw.get("domain_specific") or [],
                                       f"{path}.domain_specific", categorical_only=True),
        )
