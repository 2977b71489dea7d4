"""The serving signatures of an exported model (docs/design.md 8).

`ServingModule` is a `tf.Module` holding a trained model's full Keras model
(raw features -> lookup -> core); ``tf.saved_model.save(module, path,
signatures=module.signatures())`` exports two signatures:

* ``serving_default``: input ``examples``, tf.string ``[None]`` serialized
  `tf.train.Example` protos, parsed with the training reader's feature
  description (`tfmdl.pipelines.reader.make_parse_fn`; labels and passthrough
  fields are not needed and are ignored when present).
* ``predict_raw``: the raw feature tensors the parser produces, one input per
  feature named as in the spec: scalars ``[None]`` (int64, string or float32),
  sequences ``[None, max_len]`` padded with -1 / "", a multi-valued scenario
  ``[None, S]`` padded with -1.

Both return ``{task: float32 [None]}``, one probability per example and task.

Bad requests fail with an error naming the feature:

* a required feature (no ``default`` in the spec) missing from an Example:
  ``Feature: user_id (data type: int64) is required but could not be found``
  (from ``parse_example``); a missing ``predict_raw`` input is rejected before
  the graph runs (``missing a required argument: 'user_id'`` in Python,
  ``Missing but required: {user_id}`` from TF Serving);
* an Example feature of the wrong type: ``Key: user_id. Data types don't
  match``;
* a scenario id outside ``[0, S)``: ``scenario feature scenario_id must hold
  ids in [0, S)`` (the check in `FeatureLookup`);
* a NaN or ±inf numeric value: ``numeric feature ctr must be a finite number``
  (`tfmdl.pipelines.reader.check_finite`, the rule of every path: convert
  rejects it too);
* a ``predict_raw`` input of the wrong rank, width or batch size: an assertion
  naming the feature (signature shapes are not enforced by TF Serving or by
  restored signatures, and a sequence of the wrong width would otherwise be
  pooled silently).

A ``predict_raw`` input of the wrong dtype is rejected before the graph runs,
but TensorFlow names it by position (``input #16 was expected to be a int64
tensor``); `tfmdl.serving.client.check_raw_features` names it, and requests
built with `tfmdl.serving.client` always carry the spec's dtypes.
"""

from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf

from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib

SERVING_DEFAULT = "serving_default"
PREDICT_RAW = "predict_raw"
EXAMPLES = "examples"
SIGNATURE_NAMES = (SERVING_DEFAULT, PREDICT_RAW)

_DTYPES = {"int64": tf.int64, "string": tf.string, "float32": tf.float32}


def raw_input_specs(spec: spec_lib.FeatureSpec) -> Dict[str, tf.TensorSpec]:
    """``{name: TensorSpec}`` of the ``predict_raw`` inputs (what the reader's
    parser yields for the scenario field and every model feature)."""
    scen = spec.scenario
    out = {scen.feature: tf.TensorSpec([None, scen.count] if scen.multi_valued else [None],
                                       tf.int64, name=scen.feature)}
    for f in spec.features:
        shape = [None, f.max_len] if f.type == spec_lib.SEQUENCE else [None]
        out[f.name] = tf.TensorSpec(shape, _DTYPES[f.dtype], name=f.name)
    return out


def _check_raw_shapes(features: Mapping[str, tf.Tensor],
                      specs: Mapping[str, tf.TensorSpec]) -> Dict[str, tf.Tensor]:
    """Asserts every input's rank, width and batch size; messages name the feature."""
    names = sorted(specs)
    batch = tf.shape(features[names[0]])[0]
    out = {}
    for name in names:
        x, want = features[name], specs[name]
        shape = tf.shape(x)
        checks = [tf.debugging.assert_equal(
            tf.rank(x), want.shape.rank,
            message=f"predict_raw input {name} must have shape {want.shape} "
                    f"({'[batch, width]' if want.shape.rank == 2 else '[batch]'})")]
        if want.shape.rank == 2:
            checks.append(tf.debugging.assert_equal(
                shape[-1], want.shape[1],
                message=f"predict_raw input {name} must have width {want.shape[1]} "
                        f"(pad with the pad value); got shape"))
        checks.append(tf.debugging.assert_equal(
            shape[0], batch,
            message=f"predict_raw input {name} has a different batch size than "
                    f"{names[0]}; every input needs one row per example"))
        with tf.control_dependencies(checks):
            out[name] = tf.identity(x)
    return out


class ServingModule(tf.Module):
    """Holds a trained Keras model and its two serving functions.

    Args:
      model: the full Keras model of a `BuiltModel` (raw spec features ->
        ``{task: [B, 1]}``).
      spec: the feature spec the model was trained on.

    Example::

        built, _ = model_dir.load_trained("models/mdl")
        module = ServingModule(built.model, built.spec)
        tf.saved_model.save(module, "export/mdl/1", signatures=module.signatures())
    """

    def __init__(self, model, spec: spec_lib.FeatureSpec):
        super().__init__(name="tfmdl_serving")
        self.model = model
        self._spec = spec
        self._tasks = tuple(spec.task_names)
        self._raw_specs = raw_input_specs(spec)
        self._parse = reader.make_parse_fn(spec, include_labels=False)
        self.serve_examples = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES)])
        self.serve_raw = tf.function(self._serve_raw, input_signature=[self._raw_specs])

    def _outputs(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        probs = self.model(dict(features), training=False)
        return {t: tf.reshape(tf.cast(probs[t], tf.float32), [-1]) for t in self._tasks}

    def _serve_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        return self._outputs(self._parse(examples))

    def _serve_raw(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        return self._outputs(reader.check_finite(
            self._spec, _check_raw_shapes(features, self._raw_specs)))

    def signatures(self) -> Dict[str, object]:
        """The ``signatures`` argument of `tf.saved_model.save`."""
        return {SERVING_DEFAULT: self.serve_examples.get_concrete_function(),
                PREDICT_RAW: self.serve_raw.get_concrete_function()}
