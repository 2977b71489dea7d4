"""The CTR baselines: deepfm, dcn, dcnv2, dcnv2_mt, xdeepfm."""

import numpy as np
import pytest
import tensorflow_recommenders as tfrs

from tests.models import baseline_checks as checks
from tfmdl import models
from tfmdl.layers import ctr
from tfmdl.pipelines import spec as spec_lib

SMALL = {
    "deepfm": {"hidden": [32, 16], "field_dim": 8},
    "dcn": {"cross_layers": 2, "hidden": [32, 16]},
    "dcnv2": {"cross_layers": 2, "projection_dim": 8, "hidden": [32, 16]},
    "dcnv2_mt": {"cross_layers": 2, "backbone_hidden": [32, 16], "tower_hidden": [8]},
    "xdeepfm": {"cin_layers": [8, 4], "hidden": [32, 16], "field_dim": 8},
}
MODELS = sorted(SMALL)
FULL_CYCLE = MODELS   # build, XLA train, save/load (test_trainer checks all are covered)


@pytest.mark.parametrize("name", FULL_CYCLE)
def test_builds_trains_under_xla_and_round_trips(name, feed_dir, tmp_path):
    checks.check_full_cycle(name, SMALL[name], feed_dir, tmp_path)


def test_dcnv2_mt_rankmixer_backbone(feed_dir):
    built = checks.check_rankmixer_backbone("dcnv2_mt", SMALL["dcnv2_mt"], feed_dir)
    assert len(_layers(built, tfrs.layers.dcn.Cross)) == 2


@pytest.mark.parametrize("name", MODELS)
def test_configs_load_and_build(name, feed_dir, search_dir):
    checks.check_configs(name, {"feed": feed_dir, "search": search_dir})


def _layers(built, cls):
    return [l for l in built.core.submodules if isinstance(l, cls)]


def test_dcnv2_uses_tfrs_cross_and_dcn_its_v1_cross(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    full = models.build("dcnv2", spec, dict(SMALL["dcnv2"], projection_dim=0, cross_layers=3))
    low = models.build("dcnv2", spec, dict(SMALL["dcnv2"], diag_scale=0.5))
    v1 = models.build("dcn", spec, SMALL["dcn"])
    crosses = _layers(full, tfrs.layers.dcn.Cross)
    assert len(crosses) == 3 and not _layers(full, ctr.CrossV1)
    width = full.core.get_layer("backbone_mlp").input_shape[-1]          # x = [e; m]
    assert crosses[0]._dense.kernel.shape == (width, width)          # full-rank W
    low_cross = _layers(low, tfrs.layers.dcn.Cross)[0]
    assert low_cross._dense_u.kernel.shape == (width, 8)              # U V, rank 8
    assert low_cross._diag_scale == 0.5
    assert len(_layers(v1, ctr.CrossV1)) == 2 and not _layers(v1, tfrs.layers.dcn.Cross)
    assert _layers(v1, ctr.CrossV1)[0].kernel.shape == (width, 1)    # a vector
    # stacked: the deep MLP reads the cross output
    stacked = models.build("dcnv2", spec, dict(SMALL["dcnv2"], structure="stacked"))
    mlp = stacked.core.get_layer("backbone_mlp")
    assert mlp.input_shape[-1] == width
    checks.check_builds(stacked, spec, feed_dir, 8)


def test_deepfm_fields_share_one_width_and_fm_matches_pairwise_sum(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("deepfm", spec, SMALL["deepfm"])
    proj = built.core.get_layer("field_projection")
    # every feature plus the scenario field; only fields not 8 wide are projected
    assert len(proj.field_widths) == len(spec.features) + 1
    assert proj.field_widths[-1] == spec.scenario.count
    assert proj.kernel.shape[0] == sum(w != 8 for w in proj.field_widths)
    default = models.build("deepfm", spec, {"hidden": [8]})
    assert default.core.get_layer("field_projection").dim == 16      # widest embedding
    assert default.core.get_layer("field_projection").kernel.shape[0] == sum(
        w != 16 for w in proj.field_widths)
    assert isinstance(built.core.get_layer("fm"), ctr.FMInteraction)


def test_xdeepfm_cin_sees_every_field(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("xdeepfm", spec, SMALL["xdeepfm"])
    cin = built.core.get_layer("cin")
    assert cin.kernels[0].shape == (8, len(spec.features) + 1, len(spec.features) + 1)
    assert cin.output_dim == 4 + 4


@pytest.mark.parametrize("name,params,message", [
    ("dcnv2", {"diag_scale": -1.0}, r"diag_scale must be >= 0, got -1\.0"),
    ("dcnv2", {"structure": "serial"}, r"structure: expected one of parallel, stacked"),
    ("dcn", {"cross_layers": 0}, "cross_layers must be >= 1, got 0"),
    ("deepfm", {"field_dim": -2}, "field_dim must be >= 0"),
    ("xdeepfm", {"cin_layers": [5, 4]}, r"cin_layers: with cin_split_half.*\[5, 4\]"),
    ("dcnv2_mt", {"backbone": "rankmixer", "structure": "stacked"},
     "structure 'stacked' .* needs backbone 'dnn'"),
    ("dcnv2_mt", {"backbone_hiden": [4]}, "Did you mean 'backbone_hidden'"),
    ("dcnv2_mt", {"backbone": "dcnv2"}, "its own cross network .* got 'dcnv2'"),
    ("pmta", {"backbone": "dcnv2", "backbone_cross_layers": 0},
     "backbone_cross_layers must be >= 1, got 0"),
])
def test_config_errors_name_the_key(feed_dir, name, params, message):
    spec = spec_lib.load_spec(feed_dir)
    with pytest.raises(ValueError, match=message):
        models.build(name, spec, params)


def test_heads_are_per_task(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("deepfm", spec, SMALL["deepfm"])
    out = built.model(checks.batch(spec, feed_dir, 16))
    preds = np.concatenate([out[t].numpy() for t in spec.task_names], axis=1)
    assert not np.allclose(preds[:, :1], preds[:, 1:])
