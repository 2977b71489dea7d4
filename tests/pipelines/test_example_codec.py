import numpy as np
import pytest
import tensorflow as tf

from tfmdl.pipelines import example_codec as codec


def _columns(rows, rng):
    return {
        "user_id": codec.Column("int64", rng.integers(0, 1 << 40, rows)),
        "neg": codec.Column("int64", rng.integers(-5, 5, rows)),
        "zero": codec.Column("int64", np.zeros(rows, np.int64)),
        "score": codec.Column("float32", rng.normal(size=rows).astype(np.float32)),
        "hist": codec.Column("int64", rng.integers(0, 300, (rows, 7)),
                             lengths=rng.integers(0, 8, rows)),
        "floats": codec.Column("float32", rng.random((rows, 3)), lengths=rng.integers(0, 4, rows)),
        "tag": codec.Column("bytes", [[b"a" * int(k)] for k in rng.integers(0, 200, rows)]),
    }


def test_matches_protobuf_byte_for_byte():
    rng = np.random.default_rng(0)
    cols = _columns(300, rng)
    fast = codec.encode_examples(cols, 300)
    slow = codec.encode_with_protobuf(cols, 300)
    assert fast == slow


def test_parses_back_with_tensorflow():
    rng = np.random.default_rng(1)
    cols = _columns(50, rng)
    data = codec.encode_examples(cols, 50)
    parsed = tf.io.parse_example(data, {
        "user_id": tf.io.FixedLenFeature([], tf.int64),
        "neg": tf.io.FixedLenFeature([], tf.int64),
        "hist": tf.io.RaggedFeature(tf.int64),
    })
    np.testing.assert_array_equal(parsed["user_id"].numpy(), cols["user_id"].values)
    np.testing.assert_array_equal(parsed["neg"].numpy(), cols["neg"].values)
    lens = cols["hist"].lengths
    assert parsed["hist"].row_lengths().numpy().tolist() == lens.tolist()
    np.testing.assert_array_equal(parsed["hist"][3].numpy(), cols["hist"].values[3, :lens[3]])


def test_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        codec.Column("double", [1.0])
