"""The shared input stage: raw spec features -> embedding rows -> embeddings (docs/design.md 1).

Every model starts from the output of this stage, never from its own plumbing.
It has two parts, because they run in different places:

* `FeatureLookup` maps raw values to embedding row ids and normalises numeric
  features. String vocabularies and string hashing use lookup tables and string
  ops that XLA cannot compile, so for ``jit_compile`` training this part runs in
  the `tf.data` pipeline and the SavedModel re-attaches it for serving.
* `FeatureEmbedding` holds the embedding tables and turns row ids into
  per-feature embeddings (sequences pooled or kept). It is pure tensor math and
  compiles under XLA.

Row layout of a table with ``n`` known values and ``k`` OOV rows: known values
take rows ``[0, n)``, everything else (unknown values, the missing/pad value)
``n + (hash(value) mod k)``. Hash-bucket features take ``hash(value) mod
hash_buckets``. Integer hashing uses the splitmix64 finaliser (XLA-friendly);
strings use ``tf.strings.to_hash_bucket_fast``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from typing import Dict, Iterator, Mapping

import tensorflow as tf
import tf_keras as keras

from tfmdl.pipelines import spec as spec_lib


def splitmix64(x: tf.Tensor) -> tf.Tensor:
    """A well-mixed int64 -> non-negative int64 hash (splitmix64 finaliser).

    Wrapping int64 arithmetic, element-wise; compiles under XLA.
    """
    shift = tf.bitwise.right_shift
    xor = tf.bitwise.bitwise_xor

    def u64(v):
        return tf.constant(v, tf.uint64)

    x = tf.bitcast(tf.cast(x, tf.int64), tf.uint64)
    x = xor(x, shift(x, u64(30))) * u64(0xBF58476D1CE4E5B9)
    x = xor(x, shift(x, u64(27))) * u64(0x94D049BB133111EB)
    x = xor(x, shift(x, u64(31)))
    return tf.bitcast(shift(x, u64(1)), tf.int64)


def hash_bucket(values: tf.Tensor, buckets: int) -> tf.Tensor:
    """``hash(value) mod buckets`` for int64 or string tensors."""
    if values.dtype == tf.string:
        return tf.strings.to_hash_bucket_fast(values, buckets)
    return tf.math.floormod(splitmix64(values), buckets)


def check_scenario_ids(ids: tf.Tensor, feature: str, count: int,
                       multi_valued: bool) -> tf.Tensor:
    """Returns ``ids`` after asserting they lie in ``[0, count)`` (-1 pads allowed
    when multi-valued); the error names the feature and the valid range.

    A bare gather or one-hot of an out-of-range id gives zeros silently on GPU,
    so this check runs in the lookup stage, which stays outside XLA clusters
    (XLA drops assertions).
    """
    ids = tf.cast(ids, tf.int64)
    low = -1 if multi_valued else 0
    bad = (ids < low) | (ids >= count)
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"scenario feature {feature} must hold ids in [0, {count})"
         f"{' or -1 padding' if multi_valued else ''}; got", tf.boolean_mask(ids, bad)[:5]],
        name="check_scenario_ids")
    with tf.control_dependencies([check]):
        return tf.identity(ids)


@keras.utils.register_keras_serializable(package="tfmdl")
class FeatureLookup(keras.layers.Layer):
    """Raw features -> embedding row ids (categorical) and normalised floats (numeric).

    Input: ``{name: tensor}`` as produced by `tfmdl.pipelines.reader` (scalars
    ``[B]``, sequences ``[B, L]`` padded with the pad value). Output: the same
    keys; categorical/sequence values become int64 row ids in
    ``[0, vocab_size)`` (sequence pads become -1), numeric values float32
    ``[B]`` after ``none`` / ``zscore`` ``(x - mean) / std`` / ``log1p``
    ``sign(x) log(1 + |x|)``. The scenario field is checked to lie in
    ``[0, S)`` (an InvalidArgumentError naming the feature otherwise). Keys not in
    the spec pass through unchanged.

    Args:
      spec: the `FeatureSpec` (or its dict form, as stored by ``get_config``).
    """

    def __init__(self, spec, **kwargs):
        super().__init__(**kwargs)
        if isinstance(spec, Mapping):
            spec = spec_lib.FeatureSpec.from_dict(spec)
        self.spec = spec
        self._vocab_layers: Dict[str, keras.layers.Layer] = {}
        for f in spec.features:
            owner = spec.feature(f.table_name)
            if owner.vocabulary is not None or owner.vocabulary_file is not None:
                if owner.name not in self._vocab_layers:
                    cls = (keras.layers.StringLookup if owner.dtype == "string"
                           else keras.layers.IntegerLookup)
                    vocab = (list(owner.vocabulary) if owner.vocabulary is not None
                             else owner.vocabulary_file)
                    self._vocab_layers[owner.name] = cls(
                        vocabulary=vocab, num_oov_indices=max(owner.oov_buckets, 1),
                        mask_token=None, name=f"vocab_{owner.name}")

    def _rows(self, f: spec_lib.Feature, values: tf.Tensor) -> tf.Tensor:
        owner = self.spec.feature(f.table_name)
        if owner.hash_buckets is not None:
            return hash_bucket(values, owner.hash_buckets)
        if owner.num_buckets is not None:
            n, k = owner.num_buckets, owner.oov_buckets
            known = (values >= 0) & (values < n)
            oov = n + (tf.math.floormod(splitmix64(values), k) if k > 1
                       else tf.zeros_like(values))
            return tf.where(known, values, oov)
        # vocabulary: Keras puts OOV indices first; move them after the known values
        layer = self._vocab_layers[owner.name]
        k = max(owner.oov_buckets, 1)
        n = layer.vocabulary_size() - k
        idx = tf.cast(layer(values), tf.int64)
        return tf.where(idx >= k, idx - k, n + idx)

    def call(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        out = dict(features)
        scen = self.spec.scenario
        if scen.feature in features:
            out[scen.feature] = check_scenario_ids(features[scen.feature], scen.feature,
                                                   scen.count, scen.multi_valued)
        for f in self.spec.features:
            if f.name not in features:
                continue
            x = features[f.name]
            if f.type == spec_lib.NUMERIC:
                x = tf.cast(x, tf.float32)
                norm = f.normalization
                if norm.kind == "zscore":
                    x = (x - norm.mean) / norm.std
                elif norm.kind == "log1p":
                    x = tf.sign(x) * tf.math.log1p(tf.abs(x))
                out[f.name] = x
                continue
            rows = self._rows(f, x)
            if f.type == spec_lib.SEQUENCE:
                rows = tf.where(tf.equal(x, f.pad_value), tf.constant(-1, tf.int64), rows)
            out[f.name] = rows
        return out

    def get_config(self):
        config = super().get_config()
        config["spec"] = self.spec.to_dict()
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class FeatureEmbedding(keras.layers.Layer):
    """Row ids -> embeddings, one table per owner feature (``shared_table`` reuses).

    Input: the output of `FeatureLookup`. Output ``{name: tensor}``:
    categorical ``[B, d]``; sequence ``[B, d]`` for ``pooling: mean|sum``
    (masked over the -1 pads; an empty sequence gives zeros) or ``[B, L, d]``
    for ``pooling: none``, with its ``[B, L]`` float mask under
    ``"<name>/mask"``; numeric ``[B, 1]``.

    With ``extra_features``, each listed feature also gets a second, separate
    table (MDL's extra embeddings ``ê``, docs/design.md 1): its output is under
    ``"extra/<name>"``, same shape as the shared one.

    With ``domain_features``, each listed categorical feature also gets a
    domain-specific table keyed by (value, scenario) (PMTA's ``e_u^d, e_v^d``,
    docs/design.md 3): ``S`` rows per value, row ``r·S + s``. Its output is under
    ``"domain/<name>"``, ``[B, d]``; an instance in several scenarios
    (multi-valued scenario field) gets the mean over its scenarios' rows. The
    scenario field must then be among the inputs.

    `feeding` makes the layer return given outputs instead of looking them up:
    the split training step (`tfmdl.models.base.CoreModel`) looks the rows up
    outside XLA, so their gradients stay sparse, and feeds the result to the
    XLA-compiled rest of the model.

    Args:
      spec: the `FeatureSpec` (or its dict form).
      extra_features: features that get an extra embedding table.
      domain_features: categorical features that get a (value, scenario) table.
      embeddings_initializer: initializer of every table.
      embeddings_regularizer: optional regularizer of every table.
    """

    def __init__(self, spec, extra_features=(), embeddings_initializer="glorot_uniform",
                 embeddings_regularizer=None, domain_features=(), **kwargs):
        super().__init__(**kwargs)
        if isinstance(spec, Mapping):
            spec = spec_lib.FeatureSpec.from_dict(spec)
        self.spec = spec
        for name in extra_features:
            if not spec.feature(name).is_categorical:
                raise ValueError(f"extra_features: {name!r} is numeric; extra embeddings are "
                                 f"second lookups of categorical features.")
        self.extra_features = tuple(extra_features)
        for name in domain_features:
            if spec.feature(name).type != spec_lib.CATEGORICAL:
                raise ValueError(f"domain_features: {name!r} is {spec.feature(name).type}; "
                                 f"domain-specific embeddings are keyed by (value, scenario) "
                                 f"of a categorical feature.")
        self.domain_features = tuple(domain_features)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
        self.tables: Dict[str, tf.Variable] = {}
        # a plain holder, not a dict attribute: Keras would track a dict of tensors
        self._fed = types.SimpleNamespace(outputs=None)

    @contextlib.contextmanager
    def feeding(self, outputs: Mapping[str, tf.Tensor]) -> Iterator[None]:
        """While active, `call` returns ``outputs`` (an earlier result of `call`)
        instead of looking rows up. Used while tracing a function, so the
        function's graph takes the embeddings as inputs."""
        self._fed.outputs = dict(outputs)
        try:
            yield
        finally:
            self._fed.outputs = None

    def _rows(self, f: spec_lib.Feature) -> int:
        if f.vocab_size is None:  # vocabulary file: count its lines once
            with tf.io.gfile.GFile(f.vocabulary_file) as fh:
                return sum(1 for line in fh if line.strip()) + max(f.oov_buckets, 1)
        return f.vocab_size

    def build(self, input_shape):
        owners = [f for f in self.spec.features if f.is_categorical and not f.shared_table]
        owners += [dataclasses.replace(self.spec.feature(self.spec.feature(n).table_name),
                                                name=f"extra/{n}")
                   for n in self.extra_features]
        scenarios = self.spec.scenario.count
        owners += [dataclasses.replace(self.spec.feature(self.spec.feature(n).table_name),
                                       name=f"domain/{n}")
                   for n in self.domain_features]
        for f in owners:
            if f.name in self.tables:
                continue
            rows = self._rows(f) * (scenarios if f.name.startswith("domain/") else 1)
            self.tables[f.name] = self.add_weight(
                name=f"embedding_{f.name.replace('/', '_')}", shape=(rows, f.embedding_dim),
                # a fresh initializer per table: one instance would repeat its values
                initializer=self.embeddings_initializer.__class__.from_config(
                    self.embeddings_initializer.get_config()),
                regularizer=self.embeddings_regularizer)
        super().build(input_shape)

    def dim(self, name: str) -> int:
        """Output width of feature ``name`` (1 for numeric)."""
        f = self.spec.feature(name)
        if not f.is_categorical:
            return 1
        return self.spec.feature(f.table_name).embedding_dim

    def _embed(self, f: spec_lib.Feature, x: tf.Tensor, table: tf.Variable,
               out: Dict[str, tf.Tensor], key: str) -> None:
        # look rows up first, then cast: casting the whole table every step (or, under
        # parameter servers, assembling a partitioned table) would be O(table size)
        def rows(ids):
            return tf.cast(tf.nn.embedding_lookup(table, ids), self.compute_dtype)

        if f.type == spec_lib.CATEGORICAL:
            out[key] = rows(x)
            return
        mask = tf.cast(x >= 0, self.compute_dtype)                   # [B, L]
        emb = rows(tf.maximum(x, 0)) * mask[..., None]               # [B, L, d]
        if f.pooling == "none":
            out[key] = emb
            out[f"{key}/mask"] = mask
        elif f.pooling == "sum":
            out[key] = tf.reduce_sum(emb, axis=1)
        else:
            count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
            out[key] = tf.reduce_sum(emb, axis=1) / count

    def call(self, rows: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        if self._fed.outputs is not None:
            return dict(self._fed.outputs)
        out: Dict[str, tf.Tensor] = {}
        for f in self.spec.features:
            if f.name not in rows:
                continue
            x = rows[f.name]
            if not f.is_categorical:
                out[f.name] = tf.reshape(tf.cast(x, self.compute_dtype), [-1, 1])
                continue
            self._embed(f, x, self.tables[f.table_name], out, f.name)
        for name in self.extra_features:
            if name in rows:
                self._embed(self.spec.feature(name), rows[name], self.tables[f"extra/{name}"],
                            out, f"extra/{name}")
        if self.domain_features:
            out.update(self._domain(rows))
        return out

    def _domain(self, rows: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        scen = self.spec.scenario
        if scen.feature not in rows:
            raise ValueError(f"domain-specific embeddings need the scenario field "
                             f"{scen.feature!r} among the inputs.")
        S = scen.count
        ids = tf.cast(rows[scen.feature], tf.int64)
        out = {}
        for name in self.domain_features:
            table = self.tables[f"domain/{name}"]
            value = tf.cast(rows[name], tf.int64)
            if not scen.multi_valued:
                out[f"domain/{name}"] = tf.cast(
                    tf.nn.embedding_lookup(table, value * S + ids), self.compute_dtype)
                continue
            valid = ids >= 0                                              # [B, Ls]
            keys = value[:, None] * S + tf.maximum(ids, 0)
            mask = tf.cast(valid, self.compute_dtype)
            emb = tf.cast(tf.nn.embedding_lookup(table, keys), self.compute_dtype)
            count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
            out[f"domain/{name}"] = tf.reduce_sum(emb * mask[..., None], axis=1) / count
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            spec=self.spec.to_dict(),
            extra_features=list(self.extra_features),
            domain_features=list(self.domain_features),
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
            embeddings_regularizer=keras.regularizers.serialize(self.embeddings_regularizer)
            if self.embeddings_regularizer else None)
        return config


def spec_inputs(spec: spec_lib.FeatureSpec) -> Dict[str, keras.Input]:
    """Keras `Input`s for the scenario field and every model feature of ``spec``."""
    dtypes = {"int64": tf.int64, "string": tf.string, "float32": tf.float32}
    inputs = {}
    scen = spec.scenario
    inputs[scen.feature] = keras.Input(
        shape=(scen.count,) if scen.multi_valued else (), dtype=tf.int64, name=scen.feature)
    for f in spec.features:
        shape = (f.max_len,) if f.type == spec_lib.SEQUENCE else ()
        inputs[f.name] = keras.Input(shape=shape, dtype=dtypes[f.dtype], name=f.name)
    return inputs
