"""models.config: a ModelServerConfig text proto, written atomically."""

import os

import pytest

from tfmdl.serving import model_config


def test_writes_and_parses_back(tmp_path):
    path = str(tmp_path / "serving" / "models.config")
    text = model_config.write_model_server_config(path, [
        ("mdl_feed", "/models/mdl_feed", [2, 1]),
        ("mdl_search", "/models/mdl_search", None)])
    assert os.listdir(tmp_path / "serving") == ["models.config"]   # no temporary file left
    assert 'name: "mdl_feed"' in text and "specific" in text
    config = model_config.read_model_server_config(path)
    feed, search = config.model_config_list.config
    assert (feed.name, feed.base_path, feed.model_platform) == (
        "mdl_feed", "/models/mdl_feed", "tensorflow")
    assert list(feed.model_version_policy.specific.versions) == [1, 2]
    assert feed.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert search.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert search.model_version_policy.latest.num_versions == 1


@pytest.mark.parametrize("models, message", [
    ([], "at least one"),
    ([("m", "/models/m", None), ("m", "/models/m2", None)], "'m' is listed twice"),
    ([("", "/models/m", None)], "model name"),
    ([("m", "", None)], "base_path"),
    ([("m", "/models/m", [1, -2])], "non-negative integers"),
    ([("m", "/models/m", [])], "non-empty list"),
])
def test_bad_entries_are_named(tmp_path, models, message):
    with pytest.raises(ValueError, match=message):
        model_config.write_model_server_config(str(tmp_path / "models.config"), models)
    assert not os.path.exists(tmp_path / "models.config")
