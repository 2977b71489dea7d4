"""The head-experiment runner's hypothesis knobs and summary (docs/benchmarks.md)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmdl import models
from tfmdl.benchmark import head_experiments
from tfmdl.models import base
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.training import config as train_config
from tfmdl.training import trainer

SMALL_MDL = {"layers": 1, "width": 48, "heads": 4, "ffn_mult": 1}


def _bias_step(built, spec, feed_dir):
    """How far one SGD step (lr 0.1, every label positive) moves the output bias
    from -30, and how far it moves the first token-mixing kernel."""
    layer = base.output_bias_layer(built)
    layer.bias.assign(np.full([len(spec.tasks)], -30.0, np.float32))
    f, labels, _ = next(iter(reader.make_dataset(spec, feed_dir, 64, split="train",
                                                 shuffle=False)))
    y = {t: tf.ones_like(v)[:, None] for t, v in labels.items()}
    cfg = train_config.TrainingConfig(
        dense_optimizer=train_config.OptimizerConfig(name="sgd", learning_rate=0.1))
    model = trainer.compile_model(built, cfg, jit=False, metrics=False)
    other = next(v for v in built.model.trainable_variables if "task_attention/value" in v.name)
    before, other_before = layer.bias.numpy().copy(), other.numpy().copy()
    model.train_on_batch(f, y)
    return layer.bias.numpy() - before, np.abs(other.numpy() - other_before).max()


def test_head_lr_scale_moves_only_the_heads_faster(feed_dir, monkeypatch):
    spec = spec_lib.load_spec(feed_dir)
    keras_seed = 3
    tf.keras.utils.set_random_seed(keras_seed)
    plain, plain_other = _bias_step(models.build("mdl", spec, SMALL_MDL), spec, feed_dir)
    monkeypatch.setattr(trainer, "split_optimizer", trainer.split_optimizer)
    head_experiments._head_lr_optimizer(10.0)  # pylint: disable=protected-access
    tf.keras.utils.set_random_seed(keras_seed)
    fast, fast_other = _bias_step(models.build("mdl", spec, SMALL_MDL), spec, feed_dir)
    np.testing.assert_allclose(fast, 10 * plain, rtol=1e-4)
    assert fast_other == pytest.approx(plain_other, rel=1e-4)


def test_qk_init_scale_scales_query_and_key_kernels_only(feed_dir, monkeypatch):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("mdl", spec, SMALL_MDL)
    before = {v.name: v.numpy().copy() for v in built.model.weights}
    monkeypatch.setattr(trainer, "init_output_bias", lambda *a, **k: {"init": "zero"})
    head_experiments._scaled_qk_init(3.0)  # pylint: disable=protected-access
    assert trainer.init_output_bias(built) == {"init": "zero"}
    scaled = 0
    for v in built.model.weights:
        if v.name.split(":")[0].endswith(head_experiments.ATTENTION_QK):
            np.testing.assert_allclose(v.numpy(), 3 * before[v.name], rtol=1e-6)
            scaled += 1
        else:
            np.testing.assert_array_equal(v.numpy(), before[v.name])
    assert scaled == 4  # one block: scenario and task attention, query and key


def test_summarize_counts_dead_and_unhealthy_cells(tmp_path):
    def run(label, seed, auc, cal):
        cells = {"a/like": {"auc": auc, "calibration": cal, "positives": 200, "count": 10000},
                 "a/rare": {"auc": 0.4, "calibration": 1e-7, "positives": 20, "count": 10000}}
        with open(tmp_path / f"{label}-s{seed}.json", "w", encoding="utf-8") as fh:
            json.dump({"label": label, "cells": cells}, fh)

    run("good", 0, 0.70, 1.0)
    run("good", 1, 0.72, 0.9)
    run("noise", 0, 0.53, 1.0)  # inside the 95% half-width (about 0.04)
    table = head_experiments.summarize([str(tmp_path / "*.json")])
    rows = {l.split(" | ")[0][2:]: l.split(" | ") for l in table.splitlines()[2:]}
    assert rows["good"][1] == "2" and rows["good"][-2:] == ["2", "0 |"]
    assert rows["noise"][-2:] == ["1", "1 |"]
    assert "(20 pos)" in rows["good"][3]


def test_calibration_trace_records_every_n_steps_and_the_last(feed_dir, tmp_path):
    cfg = {"model": "mmoe", "params": {"num_experts": 2, "expert_hidden": [8],
                                       "tower_hidden": [8]},
           "training": {"batch_size": 64, "steps": 5, "validate": False, "jit_compile": "off"}}
    run = trainer.prepare(cfg, feed_dir, str(tmp_path / "m"))
    trace = []
    run.callbacks.append(head_experiments._CalibrationTrace(run, feed_dir, 2, trace))
    run.fit(verbose=0)
    assert [r["step"] for r in trace] == [2, 4, 5]
    pred = {t: 0.0 for t in run.spec.task_names}
    pos = dict(pred)
    for f, labels, w in reader.make_dataset(run.spec, feed_dir, 4096, split="eval",
                                            shuffle=False).take(4):
        out = run.built.model(f, training=False)
        for t in run.spec.task_names:
            wt = tf.reshape(tf.cast(w[t], tf.float32), [-1])
            pred[t] += float(tf.reduce_sum(tf.reshape(out[t], [-1]) * wt))
            pos[t] += float(tf.reduce_sum(tf.reshape(tf.cast(labels[t], tf.float32), [-1]) * wt))
    for t in run.spec.task_names:
        assert trace[-1][t] == pytest.approx(pred[t] / pos[t], rel=1e-5)
    assert len({round(r[run.spec.task_names[0]], 6) for r in trace}) > 1
