import copy

import pytest

from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines.spec import FeatureSpec, SpecError

BASE = {
    "name": "t",
    "scenario": {"feature": "scenario_id", "names": ["a", "b"]},
    "tasks": [{"name": "click", "label": "label_click"}, {"name": "like"}],
    "features": [
        {"name": "user_id", "type": "categorical", "dtype": "int64", "hash_buckets": 100,
         "embedding_dim": 8},
        {"name": "item_id", "type": "categorical", "dtype": "string",
         "vocabulary": ["x", "y", "z"], "oov_buckets": 2, "embedding_dim": 4},
        {"name": "hist", "type": "sequence", "dtype": "string", "shared_table": "item_id",
         "max_len": 5, "pooling": "sum", "padding": "pre"},
        {"name": "age", "type": "categorical", "num_buckets": 10, "default": -1},
        {"name": "ctr", "type": "numeric", "default": 0.5,
         "normalization": {"kind": "zscore", "mean": 0.1, "std": 2.0}},
        {"name": "count", "type": "numeric", "normalization": "log1p"},
    ],
    "passthrough": [{"name": "query_id", "dtype": "int64"}],
    "group_keys": {"user": "user_id", "query": "query_id"},
    "semantic_groups": {"user": ["user_id", "age", "count"], "item": ["item_id", "ctr"],
                        "seq": ["hist"]},
    "feature_sets": {
        "extra_embedding": ["user_id", "item_id"],
        "scenario_prior": {"a": ["ctr"], "b": ["count"], "global": ["age"]},
        "task_related": {"click": ["item_id"], "like": ["user_id"]},
        "domain_specific": ["user_id"],
    },
}


def _with(path, value):
    raw = copy.deepcopy(BASE)
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


_DELETE = object()


def test_valid_spec_parses_into_typed_objects():
    spec = FeatureSpec.from_dict(BASE)
    assert spec.task_names == ["click", "like"]
    assert spec.tasks[1].label == "label_like"
    assert spec.scenario.count == 2 and not spec.scenario.multi_valued
    item = spec.feature("item_id")
    assert item.vocab_size == 5 and item.dtype == "string"
    hist = spec.feature("hist")
    assert hist.table_name == "item_id" and hist.max_len == 5 and hist.padding == "pre"
    assert spec.feature("ctr").normalization.std == 2.0
    assert spec.feature("count").normalization.kind == "log1p"
    assert spec.feature("age").vocab_size == 11
    assert spec.user_key == "user_id" and spec.query_key == "query_id"
    assert spec.feature_sets.task_related["click"] == ("item_id",)
    assert spec.feature_sets.scenario_prior["global"] == ("age",)


def test_round_trip_through_yaml(tmp_path):
    spec = FeatureSpec.from_dict(BASE)
    path = tmp_path / "spec.yaml"
    spec_lib.save_spec(spec, str(path))
    again = spec_lib.load_spec(str(path))
    assert again.to_dict() == spec.to_dict()
    assert spec_lib.load_spec(str(tmp_path)).to_dict() == spec.to_dict()


@pytest.mark.parametrize("path,value,expected", [
    (("features", 0, "embeding_dim"), 4, r"features\[0\] \(user_id\)\.embeding_dim: unknown key\. Did you mean 'embedding_dim'"),
    (("scenaro",), {}, r"spec\.scenaro: unknown key\. Did you mean 'scenario'"),
    (("features", 0, "type"), "categorial", r"features\[0\] \(user_id\)\.type: expected one of .* Did you mean 'categorical'"),
    (("features", 0, "embedding_dim"), 0, r"embedding_dim: expected a positive integer, got 0"),
    (("features", 2, "shared_table"), "item", r"shared_table: feature 'item' is not declared\. Did you mean 'item_id'"),
    (("semantic_groups", "user"), ["user_id", "agee"], r"semantic_groups\.user\[1\]: 'agee' is not a declared .* Did you mean 'age'"),
    (("feature_sets", "task_related", "clik"), ["item_id"], r"feature_sets\.task_related\.clik: unknown key\. Did you mean 'click'"),
    (("feature_sets", "extra_embedding"), ["ctr"], r"extra_embedding\[0\]: 'ctr' is numeric"),
    (("group_keys", "user"), "usr_id", r"group_keys\.user: 'usr_id' is not a declared .* Did you mean 'user_id'"),
    (("tasks",), [], r"spec\.tasks: expected a non-empty list"),
    (("scenario", "names"), ["a", "a"], r"scenario\.names: names must be unique"),
    (("scenario", "names"), ["a", "global"], r"reserved for the global token"),
    (("features", 1, "vocabulary"), ["x", "x"], r"vocabulary: contains duplicate values"),
    (("features", 1, "vocabulary"), ["x", 3], r"vocabulary\[1\]: expected a string value"),
    (("features", 0, "num_buckets"), 5, r"needs exactly one of vocabulary, vocabulary_file, hash_buckets, num_buckets; got hash_buckets, num_buckets"),
    (("features", 0, "hash_buckets"), _DELETE, r"features\[0\] \(user_id\): a categorical feature needs exactly one of"),
    (("features", 0, "max_len"), 3, r"only sequence features take max_len"),
    (("features", 2, "max_len"), _DELETE, r"features\[2\] \(hist\)\.max_len: required key is missing"),
    (("features", 2, "pooling"), "avg", r"pooling: expected one of mean, sum, none"),
    (("features", 4, "normalization"), {"kind": "zscore", "std": 0}, r"normalization\.std: expected a positive number"),
    (("features", 4, "normalization"), {"kind": "log1p", "mean": 1}, r"only kind zscore takes mean"),
    (("features", 3, "default"), "x", r"features\[3\] \(age\)\.default: expected a int64 value"),
    (("features", 3, "oov_buckets"), 0, r"oov_buckets: expected a positive integer"),
    (("tasks", 0, "label"), "user_id", r"label: 'user_id' is a feature"),
    (("scenario", "feature"), "user_id", r"'user_id' is the scenario field"),
])
def test_errors_name_the_key_path(path, value, expected):
    with pytest.raises(SpecError, match=expected):
        FeatureSpec.from_dict(_with(path, value))


def test_duplicate_feature_is_an_error():
    raw = copy.deepcopy(BASE)
    raw["features"].append(dict(raw["features"][0]))
    with pytest.raises(SpecError, match=r"features\[6\] \(user_id\)\.name: feature 'user_id' is declared twice"):
        FeatureSpec.from_dict(raw)


def test_feature_in_two_semantic_groups_is_an_error():
    with pytest.raises(SpecError, match=r"semantic_groups\.item\[0\]: 'user_id' is already in group 'user'"):
        FeatureSpec.from_dict(_with(("semantic_groups", "item"), ["user_id"]))


def test_vocabulary_file_is_resolved_next_to_the_spec(tmp_path):
    (tmp_path / "items.txt").write_text("x\ny\n")
    raw = copy.deepcopy(BASE)
    del raw["features"][1]["vocabulary"]
    raw["features"][1]["vocabulary_file"] = "items.txt"
    (tmp_path / "spec.yaml").write_text(spec_lib.yaml.safe_dump(raw))
    spec = spec_lib.load_spec(str(tmp_path / "spec.yaml"))
    assert spec.feature("item_id").vocabulary_file == str(tmp_path / "items.txt")
    raw["features"][1]["vocabulary_file"] = "missing.txt"
    (tmp_path / "spec.yaml").write_text(spec_lib.yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"spec\.yaml: features\[1\] \(item_id\)\.vocabulary_file: file .*missing\.txt' does not exist"):
        spec_lib.load_spec(str(tmp_path / "spec.yaml"))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml: spec file not found"):
        spec_lib.load_spec(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        spec_lib.load_spec(str(bad))


def test_feature_lookup_suggests_nearest_name():
    spec = FeatureSpec.from_dict(BASE)
    with pytest.raises(KeyError, match="Did you mean 'user_id'"):
        spec.feature("userid")
