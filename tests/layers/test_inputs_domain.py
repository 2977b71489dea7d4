"""Domain-specific embeddings e^d (docs/design.md 1, PMTA 2.1):
`FeatureEmbedding(domain_features=...)`."""

import numpy as np
import pytest
import tensorflow as tf

from tfmdl.layers import inputs as inputs_lib
from tfmdl.pipelines import spec as spec_lib

S = 3


def _spec(multi_valued=False):
    return spec_lib.FeatureSpec.from_dict({
        "scenario": {"feature": "scen", "names": ["a", "b", "c"], "multi_valued": multi_valued},
        "tasks": [{"name": "click"}],
        "features": [
            {"name": "uid", "type": "categorical", "num_buckets": 5, "oov_buckets": 1,
             "embedding_dim": 4},
            {"name": "item", "type": "categorical", "num_buckets": 4, "oov_buckets": 1,
             "embedding_dim": 2},
            {"name": "hist", "type": "sequence", "max_len": 2, "shared_table": "item"},
        ],
    })


def _layer(spec, rows):
    layer = inputs_lib.FeatureEmbedding(spec, domain_features=["uid", "item"])
    return layer, layer(rows)


def test_domain_rows_are_value_times_s_plus_scenario():
    spec = _spec()
    rows = {"scen": tf.constant([0, 2, 1, 2], tf.int64), "uid": tf.constant([0, 4, 3, 1], tf.int64),
            "item": tf.constant([1, 1, 0, 3], tf.int64),
            "hist": tf.constant([[1, -1]] * 4, tf.int64)}
    layer, out = _layer(spec, rows)
    table = layer.tables["domain/uid"].numpy()
    assert table.shape == (6 * S, 4)            # (5 values + 1 OOV) x S scenarios
    assert layer.tables["domain/item"].shape == (5 * S, 2)
    for b, (r, s) in enumerate(zip([0, 4, 3, 1], [0, 2, 1, 2])):
        np.testing.assert_array_equal(out["domain/uid"].numpy()[b], table[r * S + s])
    item = layer.tables["domain/item"].numpy()
    np.testing.assert_array_equal(out["domain/item"].numpy()[3], item[3 * S + 2])
    # separate from the shared table
    assert not np.allclose(out["domain/uid"].numpy(), out["uid"].numpy())


def test_same_value_in_different_scenarios_gives_different_vectors():
    spec = _spec()
    rows = {"scen": tf.constant([0, 1, 2], tf.int64), "uid": tf.constant([2, 2, 2], tf.int64),
            "item": tf.constant([0, 0, 0], tf.int64), "hist": tf.constant([[0, 1]] * 3, tf.int64)}
    _, out = _layer(spec, rows)
    d = out["domain/uid"].numpy()
    assert not np.allclose(d[0], d[1]) and not np.allclose(d[1], d[2])
    np.testing.assert_array_equal(out["uid"].numpy()[0], out["uid"].numpy()[2])  # shared: same


def test_multi_valued_scenario_takes_the_mean_of_its_scenarios():
    spec = _spec(multi_valued=True)
    rows = {"scen": tf.constant([[0, 2, -1], [1, -1, -1], [0, 1, 2]], tf.int64),
            "uid": tf.constant([3, 3, 1], tf.int64), "item": tf.constant([2, 0, 1], tf.int64),
            "hist": tf.constant([[0, 1]] * 3, tf.int64)}
    layer, out = _layer(spec, rows)
    table = layer.tables["domain/uid"].numpy()
    d = out["domain/uid"].numpy()
    np.testing.assert_allclose(d[0], (table[3 * S + 0] + table[3 * S + 2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(d[1], table[3 * S + 1], rtol=1e-6)
    np.testing.assert_allclose(d[2], table[S:2 * S].mean(axis=0), rtol=1e-6)
    # and under XLA
    fn = tf.function(lambda r: layer(r)["domain/uid"], jit_compile=True)
    np.testing.assert_allclose(fn(rows).numpy(), d, rtol=1e-6)


def test_domain_features_must_be_categorical():
    with pytest.raises(ValueError, match="domain_features: 'hist' is sequence"):
        inputs_lib.FeatureEmbedding(_spec(), domain_features=["hist"])
