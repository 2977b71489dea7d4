"""Checks the zoo part-B model tests share (test_ctr, test_pepnet, test_topology).

Helpers, not tests: `check_full_cycle` builds a model from the spec, trains a few
XLA-compiled steps of its core model the way ``tfmdl train`` does under XLA
(`zoo_checks.train_steps_under_xla`), and round-trips it through a weights
checkpoint and the Keras format (`zoo_checks.check_save_load`);
`check_rankmixer_backbone` and `check_configs` cover the backbone switch and the
shipped config files.
"""

import glob
import os

import numpy as np
import tensorflow as tf

from tests.models import zoo_checks
from tfmdl import models
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def batch(spec, data_dir, n=32):
    return next(iter(reader.make_dataset(spec, data_dir, n, split="eval", shuffle=False)))[0]


def check_builds(built, spec, data_dir, n=16):
    """One named probability per task; inputs are the spec's features + scenario."""
    assert sorted(built.model.output_names) == sorted(spec.task_names)
    assert set(built.model.input) == set(spec.feature_names) | {spec.scenario.feature}
    out = built.model(batch(spec, data_dir, n))
    for t in spec.task_names:
        p = out[t].numpy()
        assert p.shape == (n, 1) and ((p > 0) & (p < 1)).all(), t
    return out


def check_trains_under_xla(built, spec, data_dir):
    """A few XLA-compiled steps of the core model through the trainer's split
    optimizer (`zoo_checks.train_steps_under_xla`) lower the loss, and the full
    model shares the trained weights."""
    loss = zoo_checks.train_steps_under_xla(built, spec, data_dir)
    assert np.isfinite(loss).all() and loss[-1] < loss[0], loss
    f = batch(spec, data_dir, 8)
    t = spec.task_names[0]
    np.testing.assert_allclose(built.model(f)[t].numpy(),
                               built.core(built.lookup(f))[t].numpy(), rtol=1e-5, atol=1e-6)


def check_full_cycle(name, params, data_dir, tmp_path):
    """Build from the spec, train a few XLA steps, save and load."""
    spec = spec_lib.load_spec(data_dir)
    built = models.build(name, spec, params)
    check_builds(built, spec, data_dir)
    check_trains_under_xla(built, spec, data_dir)
    zoo_checks.check_save_load(built, spec, data_dir, tmp_path, n=16)
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
