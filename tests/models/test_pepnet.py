"""The pepnet model: EPNet on the embeddings, PPNet-gated task towers."""

import numpy as np
import pytest

from tests.models import baseline_checks as checks
from tfmdl import models
from tfmdl.layers import inputs as inputs_lib
from tfmdl.layers import pepnet as pepnet_layers
from tfmdl.pipelines import spec as spec_lib

SMALL = {"tower_hidden": [16, 8], "gate_hidden": 8, "scenario_dim": 4}
FULL_CYCLE = ["pepnet"]   # build, XLA train, save/load (test_trainer checks all are covered)


@pytest.mark.parametrize("name", FULL_CYCLE)
def test_builds_trains_under_xla_and_round_trips(name, feed_dir, tmp_path):
    checks.check_full_cycle(name, SMALL, feed_dir, tmp_path)


def test_rankmixer_backbone_reads_the_epnet_output(feed_dir):
    built = checks.check_rankmixer_backbone("pepnet", SMALL, feed_dir)
    assert isinstance(built.core.get_layer("epnet"), pepnet_layers.EPNet)


def test_configs_load_and_build(feed_dir, search_dir):
    checks.check_configs("pepnet", {"feed": feed_dir, "search": search_dir})


def _width(spec, names):
    emb = inputs_lib.FeatureEmbedding(spec)
    return sum(emb.dim(n) for n in names)


def test_default_gate_inputs_come_from_the_spec_feature_sets(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("pepnet", spec, SMALL)
    sets = spec.feature_sets
    general = _width(spec, spec.feature_names)
    priors = sorted({n for names in sets.scenario_prior.values() for n in names})
    epnet = built.core.get_layer("epnet")
    # GateNU([scenario embedding ; scenario-prior features ; ∅(E)]) -> one gate per E entry
    assert epnet.gate.kernel_1.shape == (1, SMALL["scenario_dim"] + _width(spec, priors)
                                         + general, 8)
    assert epnet.gate.kernel_2.shape == (1, 8, general)
    # PPNet gates read the extra (second-table) user/item embeddings and ∅(O_ep)
    tables = built.core.get_layer("feature_embedding").tables
    assert {f"extra/{n}" for n in sets.extra_embedding} <= set(tables)
    ppnet = built.core.get_layer("ppnet")
    K = len(spec.tasks)
    gate_in = _width(spec, sets.extra_embedding) + general
    assert [g.kernel_1.shape for g in ppnet.gates] == [(K, gate_in, 8)] * 3
    # default backbone_hidden []: the towers sit on [O_ep ; m]
    assert [g.units for g in ppnet.gates] == [general + spec.scenario.count, 16, 8]
    assert all(g.gamma == 2.0 for g in ppnet.gates + [epnet.gate])


def test_explicit_gate_features_and_scenario_dependence(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("pepnet", spec, dict(SMALL, epnet_features=["device"],
                                              ppnet_features=["user_id", "user_activity"],
                                              gamma=1.5))
    tables = built.core.get_layer("feature_embedding").tables
    assert "extra/user_id" in tables and "extra/item_id" not in tables
    ppnet = built.core.get_layer("ppnet")
    general = _width(spec, spec.feature_names)
    assert ppnet.gates[0].kernel_1.shape[1] == 16 + 1 + general
    assert ppnet.gates[0].gamma == 1.5
    f = checks.batch(spec, feed_dir, 16)
    flipped = dict(f, scenario_id=1 - f["scenario_id"])
    t = spec.task_names[0]
    assert not np.allclose(built.model(f)[t].numpy(), built.model(flipped)[t].numpy())


@pytest.mark.parametrize("params,message", [
    ({"epnet_features": ["nope"]}, "epnet_features: 'nope' is not a feature of spec"),
    ({"ppnet_features": ["user_idd"]}, "ppnet_features: 'user_idd' is not a feature"),
    ({"tower_hidden": []}, "tower_hidden must hold at least one positive width"),
    ({"gamma": 0.0}, r"gamma must be > 0, got 0\.0"),
    ({"gate_hidden": -1}, "gate_hidden must be >= 0"),
    ({"backbone": "mlp"}, "backbone: expected one of dnn, rankmixer"),
])
def test_config_errors_name_the_key(feed_dir, params, message):
    spec = spec_lib.load_spec(feed_dir)
    with pytest.raises(ValueError, match=message):
        models.build("pepnet", spec, params)
