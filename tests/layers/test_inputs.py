import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import inputs as inputs_lib
from tfmdl.pipelines import spec as spec_lib

SPEC = spec_lib.FeatureSpec.from_dict({
    "scenario": {"feature": "scen", "names": ["a", "b", "c"]},
    "tasks": [{"name": "click"}],
    "features": [
        {"name": "uid", "type": "categorical", "num_buckets": 5, "oov_buckets": 2,
         "embedding_dim": 3},
        {"name": "city", "type": "categorical", "dtype": "string",
         "vocabulary": ["x", "y"], "oov_buckets": 1, "embedding_dim": 2},
        {"name": "h", "type": "categorical", "hash_buckets": 7, "embedding_dim": 2},
        {"name": "ctr", "type": "numeric", "normalization": {"kind": "zscore", "mean": 1.0, "std": 2.0}},
        {"name": "cnt", "type": "numeric", "normalization": "log1p"},
        {"name": "seq", "type": "sequence", "max_len": 3, "shared_table": "uid", "pooling": "mean"},
        {"name": "seq_sum", "type": "sequence", "max_len": 3, "shared_table": "uid", "pooling": "sum"},
        {"name": "seq_keep", "type": "sequence", "max_len": 3, "shared_table": "uid", "pooling": "none"},
    ],
})


def _batch():
    return {
        "scen": tf.constant([0, 2, 1], tf.int64),
        "uid": tf.constant([0, 4, 9], tf.int64),      # 9 is out of range -> OOV row
        "city": tf.constant(["y", "zz", "x"]),
        "h": tf.constant([123, -5, 123], tf.int64),
        "ctr": tf.constant([1.0, 3.0, -1.0]),
        "cnt": tf.constant([0.0, np.e - 1, -(np.e - 1)], tf.float32),
        "seq": tf.constant([[1, 2, -1], [-1, -1, -1], [3, 3, 3]], tf.int64),
        "seq_sum": tf.constant([[1, 2, -1], [-1, -1, -1], [3, 3, 3]], tf.int64),
        "seq_keep": tf.constant([[1, 2, -1], [-1, -1, -1], [3, 3, 3]], tf.int64),
    }


def test_lookup_rows_and_normalisation():
    out = inputs_lib.FeatureLookup(SPEC)(_batch())
    uid = out["uid"].numpy()
    assert uid[0] == 0 and uid[1] == 4 and 5 <= uid[2] < 7
    np.testing.assert_array_equal(out["city"].numpy(), [1, 2, 0])  # y, OOV, x
    h = out["h"].numpy()
    assert h[0] == h[2] and all(0 <= v < 7 for v in h)
    np.testing.assert_allclose(out["ctr"].numpy(), [0.0, 1.0, -1.0])
    np.testing.assert_allclose(out["cnt"].numpy(), [0.0, 1.0, -1.0], rtol=1e-6)
    np.testing.assert_array_equal(out["seq"].numpy(), [[1, 2, -1], [-1, -1, -1], [3, 3, 3]])


def test_out_of_range_scenario_is_an_error_naming_the_feature():
    batch = dict(_batch(), scen=tf.constant([0, 3, 1], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"scenario feature scen must hold ids in \[0, 3\)"):
        inputs_lib.FeatureLookup(SPEC)(batch)
    lookup = inputs_lib.FeatureLookup(SPEC)
    fn = tf.function(lambda b: lookup(b))
    with pytest.raises(tf.errors.InvalidArgumentError, match="scen"):
        fn(dict(_batch(), scen=tf.constant([-1, 0, 0], tf.int64)))


def test_embedding_pooling_matches_numpy():
    rows = inputs_lib.FeatureLookup(SPEC)(_batch())
    layer = inputs_lib.FeatureEmbedding(SPEC, extra_features=["uid"])
    out = layer(rows)
    table = layer.tables["uid"].numpy()
    assert table.shape == (7, 3) and layer.tables["city"].shape == (3, 2)
    np.testing.assert_allclose(out["uid"].numpy()[1], table[4])
    np.testing.assert_allclose(out["seq"].numpy()[0], (table[1] + table[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out["seq"].numpy()[1], np.zeros(3))
    np.testing.assert_allclose(out["seq_sum"].numpy()[2], 3 * table[3], rtol=1e-6)
    assert out["seq_keep"].shape == (3, 3, 3)
    np.testing.assert_array_equal(out["seq_keep/mask"].numpy()[0], [1, 1, 0])
    assert out["ctr"].shape == (3, 1)
    extra = layer.tables["extra/uid"].numpy()
    assert not np.allclose(extra, table)
    np.testing.assert_allclose(out["extra/uid"].numpy()[0], extra[0])


def test_splitmix_hash_is_xla_compatible_and_stable():
    x = tf.constant([0, 1, 2, -1, 2**40], tf.int64)
    eager = inputs_lib.hash_bucket(x, 1000).numpy()
    xla = tf.function(lambda v: inputs_lib.hash_bucket(v, 1000), jit_compile=True)(x).numpy()
    np.testing.assert_array_equal(eager, xla)
    assert len(set(eager.tolist())) == 5 and (eager >= 0).all()


def test_config_round_trip():
    layer = inputs_lib.FeatureEmbedding(SPEC, extra_features=["uid"])
    again = inputs_lib.FeatureEmbedding.from_config(layer.get_config())
    assert again.spec.to_dict() == SPEC.to_dict() and again.extra_features == ("uid",)
    lookup = inputs_lib.FeatureLookup.from_config(inputs_lib.FeatureLookup(SPEC).get_config())
    assert lookup.spec.to_dict() == SPEC.to_dict()


def test_extra_features_must_be_categorical():
    with pytest.raises(ValueError, match="'ctr' is numeric"):
        inputs_lib.FeatureEmbedding(SPEC, extra_features=["ctr"])
