"""The single-backbone baselines ``dnn`` and ``rankmixer``, and every zoo config
of part A (dnn, rankmixer, shared_bottom, mmoe, ple, ple_md, star, hmoe)."""

import numpy as np
import pytest

from tests.models import zoo_checks
from tfmdl import models
from tfmdl.layers import dnn
from tfmdl.layers import mixing
from tfmdl.pipelines import spec as spec_lib

SMALL = {
    "dnn": {"hidden": [32, 16], "tower_hidden": [8]},
    "rankmixer": {"layers": 1, "width": 24, "ffn_mult": 1, "tower_hidden": [8]},
}
FULL_CYCLE = sorted(SMALL)   # build, XLA train, save/load (test_trainer checks all are covered)
CONFIG_MODELS = ["dnn", "rankmixer", "shared_bottom", "mmoe", "ple", "ple_md", "star", "hmoe"]


@pytest.mark.parametrize("name", FULL_CYCLE)
def test_builds_trains_under_xla_and_round_trips(name, feed_dir, tmp_path):
    zoo_checks.check_full_cycle(name, SMALL[name], feed_dir, tmp_path)


def test_layer_layout(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("dnn", spec, SMALL["dnn"])
    mlp = built.core.get_layer("backbone_mlp")
    assert isinstance(mlp, dnn.MLP) and mlp.units == [32, 16]
    towers = built.core.get_layer("task_towers")
    assert towers.num_tasks == len(spec.tasks) and towers.hidden == [8]
    # input: every feature embedding and the scenario multi-hot
    emb = built.core.get_layer("feature_embedding")
    width = sum(emb.dim(n) for n in spec.feature_names) + spec.scenario.count
    assert mlp.dense[0].kernel.shape == (width, 32)

    rm = models.build("rankmixer", spec, SMALL["rankmixer"])
    blocks = [l for l in rm.core.submodules if isinstance(l, mixing.RankMixerBlock)]
    assert len(blocks) == 1
    assert blocks[0].output_shape == (None, len(spec.semantic_groups), 24)
    assert rm.core.get_layer("task_towers").num_tasks == len(spec.tasks)


def test_rankmixer_predictions_depend_on_the_scenario(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("rankmixer", spec, SMALL["rankmixer"])
    f = zoo_checks.batch(spec, feed_dir, 16)
    flipped = dict(f, scenario_id=1 - f["scenario_id"])
    t = spec.task_names[0]
    assert not np.allclose(built.model(f)[t].numpy(), built.model(flipped)[t].numpy())


@pytest.mark.parametrize("name,params,message", [
    ("rankmixer", {"width": 25}, "divisible by the number of tokens"),
    ("dnn", {"hidden": [0]}, r"params \(dnn\): hidden must hold positive widths, got \[0\]"),
    ("dnn", {"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1\.0"),
    ("rankmixer", {"layer": 2}, "Did you mean 'layers'"),
])
def test_config_errors_name_the_key(feed_dir, name, params, message):
    spec = spec_lib.load_spec(feed_dir)
    with pytest.raises(ValueError, match=message):
        models.build(name, spec, params)


@pytest.mark.parametrize("name", CONFIG_MODELS)
def test_configs_load_and_build(name, feed_dir, search_dir):
    zoo_checks.check_configs(name, {"feed": feed_dir, "search": search_dir})
