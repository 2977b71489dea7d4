"""tfmdl runs on the Keras 2 API (tf_keras) and composes with TFRS layers."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfmdl
from tfmdl.layers import inputs as inputs_lib
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib


def test_import_sets_legacy_keras_before_tensorflow():
    code = ("import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
            "import tfmdl, tensorflow as tf, tf_keras\n"
            "assert os.environ['TF_USE_LEGACY_KERAS'] == '1'\n"
            "assert tfmdl.keras is tf_keras\n"
            "assert tf.keras.layers.Dense is tf_keras.layers.Dense, tf.keras.__name__\n"
            "print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_rejects_keras3_setting():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0")
    out = subprocess.run([sys.executable, "-c", "import tfmdl"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode != 0
    assert "TF_USE_LEGACY_KERAS" in out.stderr


def test_model_with_tfrs_cross_and_tfmdl_input_stage_fits(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    keras = tfmdl.keras
    inputs = inputs_lib.spec_inputs(spec)
    rows = inputs_lib.FeatureLookup(spec)(inputs)
    emb = inputs_lib.FeatureEmbedding(spec)(rows)
    x = keras.layers.Concatenate()([emb[f.name] for f in spec.features])
    x = tfrs.layers.dcn.Cross()(x0=x, x=x)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = {t: keras.layers.Dense(1, activation="sigmoid", name=t)(x)
               for t in spec.task_names}
    model = keras.Model(inputs, outputs)
    assert isinstance(model, keras.Model)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss={t: "binary_crossentropy" for t in spec.task_names})
    ds = reader.make_dataset(spec, feed_dir, 256, split="train", seed=1)
    ds = ds.map(lambda f, l, w: (f, {k: v[:, None] for k, v in l.items()},
                                 {k: v[:, None] for k, v in w.items()}))
    history = model.fit(ds, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
