"""The exported SavedModel, loaded in a fresh Python process, scores like the Keras
model; saved_model_cli lists both signatures."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfmdl.pipelines import reader
from tfmdl.training import model_dir as model_dir_lib

_SCORE = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    export_dir, records_file, out = sys.argv[1:]
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(records_file)]
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    scores = serve(examples=tf.constant(records))
    np.savez(out, **{task: t.numpy() for task, t in scores.items()})
""")


def test_fresh_process_matches_keras_on_1000_eval_examples(tmp_path, exported,
                                                           trained_model_dir, eval_records):
    assert len(eval_records) == 1000
    records_file = str(tmp_path / "eval-1000.tfrecord")
    with tf.io.TFRecordWriter(records_file) as writer:
        for record in eval_records:
            writer.write(record)
    out = str(tmp_path / "scores.npz")
    # no tfmdl import in the child: the SavedModel must not need tfmdl's Python code
    proc = subprocess.run([sys.executable, "-c", _SCORE, exported.path, records_file, out],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = np.load(out)

    built, _ = model_dir_lib.load_trained(trained_model_dir)
    features = reader.make_parse_fn(built.spec, include_labels=False)(
        tf.constant(eval_records))
    keras_out = built.model(features, training=False)
    for task in built.spec.task_names:
        assert scores[task].shape == (1000,)
        np.testing.assert_allclose(scores[task], keras_out[task].numpy()[:, 0], rtol=0,
                                   atol=1e-5)


def test_saved_model_cli_lists_both_signatures(exported, feed_spec):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--dir", exported.path, "--all"], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "signature_def['serving_default']" in text and "signature_def['predict_raw']" in text
    default = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['examples'] tensor_info:" in default and "dtype: DT_STRING" in default
    for task in feed_spec.task_names:
        assert f"outputs['{task}'] tensor_info:" in default
    raw = text.split("signature_def['predict_raw']")[1].split("signature_def[")[0]
    assert "inputs['hist_items'] tensor_info:" in raw and "shape: (-1, 10)" in raw
