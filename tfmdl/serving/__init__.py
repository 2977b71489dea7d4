"""Serving: SavedModel export for TF Serving, its signatures, warm-up requests,
``models.config`` and client request helpers (docs/design.md 8).

* `tfmdl.serving.export`: ``export(model_dir, export_base, model_name)`` ->
  ``E/NAME/V/`` (atomic, integer versions).
* `tfmdl.serving.signatures`: ``serving_default`` (serialized Examples) and
  ``predict_raw`` (raw feature tensors).
* `tfmdl.serving.warmup`: ``assets.extra/tf_serving_warmup_requests``.
* `tfmdl.serving.model_config`: ``write_model_server_config``.
* `tfmdl.serving.client`: REST bodies, ``tf.train.Example`` and gRPC
  ``PredictRequest`` builders.

Modules load TensorFlow (and tensorflow-serving-api) when imported, so they are
not imported here.
"""
