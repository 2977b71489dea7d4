"""Checks every registered model passes, whoever adds it."""

import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl import models
from tfmdl.models import registry
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib


def test_every_model_names_its_paper():
    for name in registry.names():
        assert registry.get(name).paper.strip(), name


@pytest.mark.parametrize("name", registry.names())
def test_every_model_runs_under_mixed_bfloat16_with_float32_outputs(feed_dir, name):
    spec = spec_lib.load_spec(feed_dir)
    f, _, _ = next(iter(reader.make_dataset(spec, feed_dir, 8, split="eval", shuffle=False)))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        out = models.build(name, spec).model(f)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert set(out) == set(spec.task_names)
    for task, prob in out.items():
        assert prob.dtype == tf.float32, task
        p = prob.numpy()
        assert p.shape == (8, 1) and ((p >= 0) & (p <= 1)).all(), task
