"""Shared by the serving tests: one small trained MDL model and one export of it.

Training (~15 s) and exporting (~5 s) happen once per test run, and only when a
serving test asks for them.
"""

import os

import pytest
import yaml

SMALL = {"layers": 1, "width": 48, "heads": 4, "ffn_mult": 1}
MODEL_NAME = "mdl_feed"


@pytest.fixture(scope="session")
def trained_model_dir(feed_dir, tmp_path_factory):
    """A model directory trained for 5 steps on the small feed data."""
    from tfmdl.training import trainer

    work = tmp_path_factory.mktemp("serving_model")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"model": "mdl", "params": SMALL,
                                      "training": {"batch_size": 256}}))
    model_dir = str(work / "m")
    run = trainer.prepare(str(config), feed_dir, model_dir,
                          overrides=["training.steps=5", "training.jit_compile=off",
                                     "training.validate=false"])
    run.finish(run.fit(verbose=0))
    return model_dir


@pytest.fixture(scope="session")
def exported(trained_model_dir, feed_dir, tmp_path_factory):
    """`export.export` of the trained model: E/mdl_feed/1 with warm-up requests."""
    from tfmdl.serving import export

    base = str(tmp_path_factory.mktemp("export"))
    return export.export(trained_model_dir, base, MODEL_NAME, data=feed_dir)


@pytest.fixture(scope="session")
def loaded(exported):
    """The exported SavedModel loaded back with tf.saved_model.load."""
    import tensorflow as tf

    return tf.saved_model.load(exported.path)


@pytest.fixture(scope="session")
def feed_spec(feed_dir):
    from tfmdl.pipelines import spec as spec_lib

    return spec_lib.load_spec(feed_dir)


@pytest.fixture(scope="session")
def eval_records(feed_dir):
    """The first 1000 serialized eval examples, in file order."""
    from tfmdl.serving import warmup

    return warmup.read_records(feed_dir, "eval", 1000)


def model_base(result):
    return os.path.dirname(result.path)
