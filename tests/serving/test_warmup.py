"""assets.extra/tf_serving_warmup_requests: PredictionLog records of real eval
examples, replayed through the exported SavedModel."""

import numpy as np
import tensorflow as tf

from tfmdl.serving import warmup

from tests.serving.conftest import MODEL_NAME


def test_warmup_requests_replay_through_the_saved_model(exported, loaded, feed_spec,
                                                        eval_records):
    logs = warmup.read_requests(warmup.warmup_path(exported.path))
    shapes = []
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == MODEL_NAME
        name = request.model_spec.signature_name
        if name == "serving_default":
            examples = tf.make_ndarray(request.inputs["examples"])
            shapes.append((name, examples.shape[0]))
            # real eval examples, in file order
            assert list(examples) == eval_records[:len(examples)]
        else:
            assert set(request.inputs) == {"scenario_id", *feed_spec.feature_names}
            shapes.append((name, tf.make_ndarray(request.inputs["user_id"]).shape[0]))
    assert shapes == [("serving_default", 1), ("serving_default", 8),
                      ("serving_default", 32), ("predict_raw", 8)]

    outputs = warmup.replay(loaded.signatures, logs, model_name=MODEL_NAME)
    for (_, batch), out in zip(shapes, outputs):
        assert sorted(out) == sorted(feed_spec.task_names)
        assert all(v.shape == (batch,) for v in out.values())
    # the raw request holds the same 8 examples as the second one
    for task in feed_spec.task_names:
        np.testing.assert_allclose(outputs[3][task].numpy(), outputs[1][task].numpy(),
                                   atol=1e-6)
