"""The two serving signatures, and bad requests failing with the feature's name,
all through the exported SavedModel loaded back with tf.saved_model.load."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfmdl import models
from tfmdl.pipelines import reader
from tfmdl.serving import client
from tfmdl.serving import signatures as sig_lib

from tests.serving.conftest import SMALL


def _example(record: bytes) -> tf.train.Example:
    ex = tf.train.Example()
    ex.ParseFromString(record)
    return ex


def _parsed(spec, records):
    return reader.make_parse_fn(spec, include_labels=False)(tf.constant(records))


def test_signature_inputs_and_outputs(loaded, feed_spec):
    assert set(loaded.signatures) == {"serving_default", "predict_raw"}
    default = loaded.signatures["serving_default"]
    (inputs,) = default.structured_input_signature[1:]
    assert list(inputs) == ["examples"]
    assert inputs["examples"].dtype == tf.string and inputs["examples"].shape.as_list() == [None]
    for name in ("serving_default", "predict_raw"):
        outputs = loaded.signatures[name].structured_outputs
        assert sorted(outputs) == sorted(feed_spec.task_names)
        for spec in outputs.values():
            assert spec.dtype == tf.float32 and spec.shape.as_list() == [None]
    raw = loaded.signatures["predict_raw"].structured_input_signature[1]
    assert set(raw) == {"scenario_id", *feed_spec.feature_names}
    assert raw["scenario_id"].shape.as_list() == [None]
    assert raw["hist_items"].shape.as_list() == [None, 10] and raw["hist_items"].dtype == tf.int64
    assert raw["user_activity"].dtype == tf.float32 and raw["user_id"].dtype == tf.int64


def test_predict_raw_matches_serving_default(loaded, feed_spec, eval_records):
    records = eval_records[:64]
    a = loaded.signatures["serving_default"](examples=tf.constant(records))
    b = loaded.signatures["predict_raw"](**_parsed(feed_spec, records))
    for task in feed_spec.task_names:
        assert a[task].shape == (64,)
        np.testing.assert_allclose(a[task].numpy(), b[task].numpy(), atol=1e-6)
        assert ((a[task].numpy() > 0) & (a[task].numpy() < 1)).all()


def _fails_naming(fn, feature, error=tf.errors.InvalidArgumentError):
    with pytest.raises(error) as info:
        fn()
    assert feature in str(info.value), str(info.value)[:2000]


def test_bad_examples_fail_naming_the_feature(loaded, eval_records):
    serve = loaded.signatures["serving_default"]
    good = _example(eval_records[0])

    missing = tf.train.Example()
    missing.CopyFrom(good)
    del missing.features.feature["item_id"]                      # required: no default
    _fails_naming(lambda: serve(examples=tf.constant([eval_records[1],
                                                      missing.SerializeToString()])),
                  "item_id")

    wrong_type = tf.train.Example()
    wrong_type.CopyFrom(good)
    wrong_type.features.feature["user_id"].Clear()
    wrong_type.features.feature["user_id"].float_list.value.append(3.0)
    _fails_naming(lambda: serve(examples=tf.constant([wrong_type.SerializeToString()])),
                  "user_id")

    out_of_range = tf.train.Example()
    out_of_range.CopyFrom(good)
    out_of_range.features.feature["scenario_id"].int64_list.value[:] = [2]
    _fails_naming(lambda: serve(examples=tf.constant([out_of_range.SerializeToString()])),
                  "scenario_id")

    for value in (float("nan"), float("inf")):        # issue 23 item 2: never a NaN score
        not_finite = tf.train.Example()
        not_finite.CopyFrom(good)
        not_finite.features.feature["user_activity"].float_list.value[:] = [value]
        _fails_naming(lambda: serve(examples=tf.constant([eval_records[1],
                                                          not_finite.SerializeToString()])),
                      "numeric feature user_activity must be a finite number")

    # a feature with a default may be left out; labels and passthrough fields are ignored
    optional = tf.train.Example()
    optional.CopyFrom(good)
    for key in ("user_age", "label_like", "true_like"):
        del optional.features.feature[key]
    assert serve(examples=tf.constant([optional.SerializeToString()]))["like"].shape == (1,)


def test_bad_raw_inputs_fail_naming_the_feature(loaded, feed_spec, eval_records):
    raw = loaded.signatures["predict_raw"]
    f = _parsed(feed_spec, eval_records[:4])

    missing = dict(f)
    missing.pop("item_id")
    _fails_naming(lambda: raw(**missing), "item_id", TypeError)
    _fails_naming(lambda: raw(**dict(f, scenario_id=f["scenario_id"] + 7)), "scenario_id")
    _fails_naming(lambda: raw(**dict(f, hist_items=f["hist_items"][:, :3])), "hist_items")
    _fails_naming(lambda: raw(**dict(f, user_id=f["user_id"][:2])), "user_id")
    nan = tf.tensor_scatter_nd_update(f["user_activity"], [[1]], [float("nan")])
    _fails_naming(lambda: raw(**dict(f, user_activity=nan)),
                  "numeric feature user_activity must be a finite number")
    # a wrong dtype fails before the graph runs (TensorFlow names the input by
    # position); the client check names the feature
    wrong = dict(f, user_activity=tf.cast(f["user_activity"], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float"):
        raw(**wrong)
    with pytest.raises(client.RequestError, match="user_activity must be float32"):
        client.check_raw_features(feed_spec, wrong)
    client.check_raw_features(feed_spec, f)


def test_multi_valued_scenario_signatures(feed_spec, eval_records):
    spec = dataclasses.replace(feed_spec,
                               scenario=dataclasses.replace(feed_spec.scenario,
                                                            multi_valued=True))
    built = models.build("mdl", spec, SMALL)
    module = sig_lib.ServingModule(built.model, spec)
    assert sig_lib.raw_input_specs(spec)["scenario_id"].shape.as_list() == [None, 2]

    ex = _example(eval_records[0])
    ex.features.feature["scenario_id"].int64_list.value[:] = [1, 0]
    by_examples = module.serve_examples(tf.constant([ex.SerializeToString(), eval_records[1]]))
    raw = _parsed(spec, [ex.SerializeToString(), eval_records[1]])
    assert raw["scenario_id"].numpy()[1, 1] == -1                 # padded to [B, S]
    by_raw = module.serve_raw(raw)
    for task in spec.task_names:
        np.testing.assert_allclose(by_examples[task].numpy(), by_raw[task].numpy(), atol=1e-6)
    ex.features.feature["scenario_id"].int64_list.value[:] = [0, 3]
    _fails_naming(lambda: module.serve_examples(tf.constant([ex.SerializeToString()])),
                  "scenario_id")
