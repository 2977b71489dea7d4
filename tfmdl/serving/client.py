"""Building requests for a tfmdl model behind TF Serving (REST and gRPC).

    from tfmdl.serving import client
    ex = client.example_from_dict(spec, {"scenario_id": 0, "user_id": 17, "item_id": 3,
                                         "hist_items": [3, 9], ...})
    body = client.rest_request_body([ex.SerializeToString()])   # POST .../v1/models/NAME:predict
    request = client.grpc_predict_request(spec, "mdl_feed", [features])  # PredictionService.Predict

`example_from_dict` types every value from the spec (int64 ids, float32
numerics, strings, lists for sequences and a multi-valued scenario) and raises
`RequestError` naming an unknown, missing or ill-typed feature before anything
is sent. For the ``predict_raw`` signature, requests are built by serializing
the Examples and parsing them with the training reader, so they carry exactly
the tensors (dtypes, padding, widths) the signature expects.
"""

from __future__ import annotations

import base64
import math
import numbers
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfmdl.config import suggest
from tfmdl.pipelines import spec as spec_lib
from tfmdl.serving import signatures as sig_lib

try:
    from tensorflow_serving.apis import predict_pb2
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("tfmdl.serving.client needs tensorflow-serving-api: "
                      "pip install -e '.[serving]'") from _exc


class RequestError(ValueError):
    """A request cannot be built; the message names the feature (or signature)."""


def _serialized(example: Union[bytes, Any]) -> bytes:
    if isinstance(example, bytes):
        return example
    if hasattr(example, "SerializeToString"):
        return example.SerializeToString()
    raise RequestError(f"expected serialized tf.train.Example bytes or an Example, got "
                       f"{type(example).__name__}.")


def rest_request_body(serialized_examples: Iterable[Union[bytes, Any]],
                      signature_name: str = sig_lib.SERVING_DEFAULT) -> Dict[str, Any]:
    """The JSON body of a TF Serving REST ``:predict`` call on ``serving_default``.

    Returns ``{"signature_name": ..., "instances": [{"examples": {"b64": ...}}, ...]}``;
    binary strings travel base64-encoded under ``"b64"``, as the REST API requires.
    """
    instances = [{sig_lib.EXAMPLES: {"b64": base64.b64encode(_serialized(e)).decode("ascii")}}
                 for e in serialized_examples]
    return {"signature_name": signature_name, "instances": instances}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return (isinstance(v, numbers.Real) or isinstance(v, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def _values(name: str, value: Any, dtype: str, is_list: bool) -> list:
    """Checks one feature's value against its spec dtype; returns the list to store."""
    if is_list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise RequestError(f"feature {name}: expected a list of {dtype} values, got "
                               f"{type(value).__name__} {value!r}.")
        items = list(value)
    else:
        if isinstance(value, (list, tuple, np.ndarray)):
            raise RequestError(f"feature {name}: expected one {dtype} value, got a list "
                               f"{value!r}.")
        items = [value]
    for v in items:
        if dtype == "int64" and not _is_int(v):
            raise RequestError(f"feature {name}: expected an int64 id, got "
                               f"{type(v).__name__} {v!r}.")
        if dtype == "float32" and not (_is_number(v) and math.isfinite(float(v))):
            raise RequestError(f"feature {name}: expected a finite number, got "
                               f"{type(v).__name__} {v!r}.")
        if dtype == "string" and not isinstance(v, (str, bytes)):
            raise RequestError(f"feature {name}: expected a string, got "
                               f"{type(v).__name__} {v!r}.")
    if dtype == "int64":
        return [int(v) for v in items]
    if dtype == "float32":
        return [float(v) for v in items]
    return [v.encode("utf-8") if isinstance(v, str) else v for v in items]


def example_from_dict(spec: spec_lib.FeatureSpec, features: Mapping[str, Any]):
    """Builds the `tf.train.Example` of one request from ``{feature: value}``.

    Keys are the scenario field and the spec's features. Scalars take one value
    (int for int64 ids, a number for numerics, str/bytes for strings); sequences
    and a multi-valued scenario take a list. Features with a ``default`` may be
    left out.

    Raises:
      RequestError: naming an unknown key, a missing required feature, a value
        of the wrong type or a scenario id outside ``[0, S)``.
    """
    scen = spec.scenario
    fields = {scen.feature: ("int64", scen.multi_valued, None)}
    for f in spec.features:
        fields[f.name] = (f.dtype, f.type == spec_lib.SEQUENCE, f)
    for name in features:
        if name not in fields:
            raise RequestError(f"feature {name!r} is not an input of spec {spec.name!r} "
                               f"(the scenario field and the features are)."
                               f"{suggest(name, list(fields))}")
    example = tf.train.Example()
    fmap = example.features.feature
    for name, (dtype, is_list, feature) in fields.items():
        if name not in features or features[name] is None:
            required = feature is None or (feature.default is None
                                           and feature.type != spec_lib.SEQUENCE)
            if required:
                raise RequestError(f"feature {name} is required (no default in spec "
                                   f"{spec.name!r}) but missing.")
            continue
        values = _values(name, features[name], dtype, is_list)
        if feature is None:
            bad = [v for v in values if not 0 <= v < scen.count]
            if bad or not values:
                raise RequestError(f"scenario feature {name} must hold ids in "
                                   f"[0, {scen.count}); got {values!r}.")
        if dtype == "int64":
            fmap[name].int64_list.value.extend(values)
        elif dtype == "float32":
            fmap[name].float_list.value.extend(values)
        else:
            fmap[name].bytes_list.value.extend(values)
    return example


def check_raw_features(spec: spec_lib.FeatureSpec, features: Mapping[str, Any]) -> None:
    """Checks ``predict_raw`` inputs' names, dtypes and ranks against the spec.

    TensorFlow rejects a wrongly typed signature input by position only; this
    names the feature. Raises `RequestError`.
    """
    specs = sig_lib.raw_input_specs(spec)
    for name in features:
        if name not in specs:
            raise RequestError(f"predict_raw has no input {name!r}.{suggest(name, list(specs))}")
    for name, want in specs.items():
        if name not in features:
            raise RequestError(f"predict_raw input {name} is missing.")
        got = tf.as_dtype(getattr(features[name], "dtype", None) or
                          np.asarray(features[name]).dtype)
        if got != want.dtype:
            raise RequestError(f"predict_raw input {name} must be {want.dtype.name}, "
                               f"got {got.name}.")
        rank = len(getattr(features[name], "shape", np.shape(features[name])))
        if rank != want.shape.rank:
            raise RequestError(f"predict_raw input {name} must have shape {want.shape}, "
                               f"got rank {rank}.")


def predict_request(spec: spec_lib.FeatureSpec, model_name: str,
                    serialized_examples: Sequence[bytes],
                    signature_name: str = sig_lib.SERVING_DEFAULT,
                    version: Optional[int] = None):
    """A `PredictRequest` for serialized Examples on either signature.

    ``serving_default`` receives them as the ``examples`` string tensor;
    ``predict_raw`` receives the tensors the training reader parses from them.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    records = [_serialized(e) for e in serialized_examples]
    if signature_name == sig_lib.SERVING_DEFAULT:
        request.inputs[sig_lib.EXAMPLES].CopyFrom(
            tf.make_tensor_proto(records, dtype=tf.string, shape=[len(records)]))
    elif signature_name == sig_lib.PREDICT_RAW:
        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top

        parsed = reader.make_parse_fn(spec, include_labels=False)(tf.constant(records))
        for name, value in parsed.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    else:
        raise RequestError(f"unknown signature {signature_name!r}; tfmdl exports "
                           f"{', '.join(sig_lib.SIGNATURE_NAMES)}."
                           f"{suggest(signature_name, sig_lib.SIGNATURE_NAMES)}")
    return request


def grpc_predict_request(spec: spec_lib.FeatureSpec, model_name: str,
                         feature_dicts: Iterable[Mapping[str, Any]],
                         signature_name: str = sig_lib.SERVING_DEFAULT,
                         version: Optional[int] = None):
    """A `PredictRequest` (``PredictionService.Predict``) for a batch of feature dicts.

    Each dict goes through `example_from_dict` (so a bad feature is named here,
    before anything is sent). Send it with::

        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel("localhost:8500"))
        response = stub.Predict(request, 10.0)
        like = tf.make_ndarray(response.outputs["like"])     # float32 [batch]
    """
    examples: List[bytes] = [example_from_dict(spec, d).SerializeToString()
                             for d in feature_dicts]
    if not examples:
        raise RequestError("grpc_predict_request: no feature dicts given.")
    return predict_request(spec, model_name, examples, signature_name, version)
