"""Checks the zoo part-B model tests share (test_ctr, test_pepnet, test_topology).

Helpers, not tests, on top of `zoo_checks` (the checks every zoo model passes):
`check_builds` and `check_full_cycle` add that a model's inputs are exactly the
spec's features and the scenario field; `check_rankmixer_backbone` and
`check_configs` cover the backbone switch and the shipped config files.
"""

import glob
import os

import tensorflow as tf

from tests.models import zoo_checks
from tfmdl import models
from tfmdl.pipelines import spec as spec_lib

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")

batch = zoo_checks.batch


def _check_inputs(built, spec):
    assert set(built.model.input) == set(spec.feature_names) | {spec.scenario.feature}


def check_builds(built, spec, data_dir, n=16):
    """`zoo_checks.check_builds`; inputs are the spec's features + scenario."""
    _check_inputs(built, spec)
    return zoo_checks.check_builds(built, spec, data_dir, n)


def check_full_cycle(name, params, data_dir, tmp_path):
    """`zoo_checks.check_full_cycle` (build, XLA training through the trainer,
    weights and Keras round trips); inputs are the spec's features + scenario."""
    built = zoo_checks.check_full_cycle(name, params, data_dir, tmp_path)
    _check_inputs(built, built.spec)
    return built


def check_rankmixer_backbone(name, params, data_dir):
    """``backbone: rankmixer`` builds (tokenizer + blocks, no backbone MLP) and predicts."""
    spec = spec_lib.load_spec(data_dir)
    built = models.build(name, spec, dict(params, backbone="rankmixer", backbone_layers=1,
                                          backbone_width=48))
    names = {l.name for l in built.core.submodules}
    assert {"backbone_tokenizer", "backbone_block_0"} <= names, names
    assert "backbone_mlp" not in names
    check_builds(built, spec, data_dir, 8)
    return built


def config_files(model):
    return [p for p in sorted(glob.glob(os.path.join(CONFIG_DIR, f"{model}_*.yaml")))
            if os.path.basename(p) in (f"{model}_feed.yaml", f"{model}_search.yaml")]


def check_configs(model, data_dirs):
    """Loads configs/<model>_{feed,search}.yaml and builds each on its preset's spec."""
    files = config_files(model)
    assert [os.path.basename(p) for p in files] == [f"{model}_feed.yaml",
                                                    f"{model}_search.yaml"], files
    for path in files:
        preset = os.path.basename(path)[len(model) + 1:-len(".yaml")]
        spec = spec_lib.load_spec(data_dirs[preset])
        cfg = models.load_config(path)
        assert cfg.model == model and "training" in cfg.raw, path
        built = models.from_config(cfg, spec)
        x = {k: tf.zeros([2] + list(v.shape[1:]), v.dtype)
             for k, v in built.core.input.items()}
        out = built.core(x)
        assert set(out) == set(spec.task_names), path
