"""What every model builder returns, and the wiring all models share.

A built model comes in two nested Keras models that share weights:

* ``core``: looked-up features (embedding row ids, normalised numerics, checked
  scenario ids) -> ``{task: probability [B, 1]}``. Pure tensor math: it compiles
  under XLA, so ``jit_compile`` training feeds it a dataset mapped through
  ``lookup``. It is a `CoreModel`, whose ``compile(jit_compile="dense")``
  compiles the dense network with XLA and keeps the embedding lookup (and its
  sparse gradients) outside.
* ``model``: the spec's raw features -> ``lookup`` -> ``core``. This is what
  ``model.fit`` trains by default, what is saved and what serving exports.

`assemble` builds both from a ``core_fn`` that maps the looked-up input tensors
to one logit per task, so no model re-implements input plumbing or output heads.

Output heads (docs/training.md, "Output heads and the output-bias prior"): every
model's task k predicts ``ŷ_k = σ(z_k + b_k + Σ_s w_s d_{s,k})``, with ``z_k``
the model's own logit, ``w`` the instance's scenario share (`fusion.scenario_share`)
and ``b`` ``[K]``, ``d`` ``[S, K]`` the `OutputBias` layer's weights (named
``output_bias``, float32). `set_output_bias` starts ``b_k`` at the task's
log-odds ``log(p_k / (1 - p_k))`` and ``d_{s,k}`` at the cell's offset from it,
``logit(p̃_{s,k}) - logit(p_k)``, from the training data's positive rates, so an
untrained model predicts each (scenario, task) cell's base rate. The sigmoid is the task's output layer itself (a Keras
``sigmoid`` activation), so Keras' binary cross-entropy reads the logit behind
it and computes the loss from logits: a probability-only output is clipped to
``[1e-7, 1 - 1e-7]`` by the loss, whose gradient is zero outside that range,
and a rare task's head pushed below ``1e-7`` then never recovers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import dnn
from tfmdl.layers import fusion
from tfmdl.layers import inputs as inputs_lib
from tfmdl.pipelines import spec as spec_lib


@dataclasses.dataclass
class BuiltModel:
    """A model built from the registry (see module docstring)."""
    name: str
    spec: spec_lib.FeatureSpec
    params: Any
    model: keras.Model
    core: keras.Model
    lookup: inputs_lib.FeatureLookup
    aux: Optional[keras.Model] = None   # looked-up features -> auxiliary tensors

    @property
    def task_names(self):
        return self.spec.task_names

    def aux_outputs(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Runs the auxiliary read-out (e.g. MDL attention weights) on raw features."""
        if self.aux is None:
            raise ValueError(f"model {self.name!r} has no auxiliary outputs.")
        return self.aux(self.lookup(dict(features)), training=False)


def core_inputs(spec: spec_lib.FeatureSpec) -> Dict[str, keras.Input]:
    """Inputs of the core model: what `FeatureLookup` produces."""
    out = {}
    scen = spec.scenario
    out[scen.feature] = keras.Input(shape=(scen.count,) if scen.multi_valued else (),
                                    dtype=tf.int64, name=scen.feature)
    for f in spec.features:
        shape = (f.max_len,) if f.type == spec_lib.SEQUENCE else ()
        dtype = tf.float32 if f.type == spec_lib.NUMERIC else tf.int64
        out[f.name] = keras.Input(shape=shape, dtype=dtype, name=f.name)
    return out


def name_outputs(outputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Gives each task output a float32 layer named by the task (Keras uses layer
    names as output names; float32 keeps outputs exact under mixed precision).
    The identity keeps the tensor itself, so the logit Keras' loss reads behind a
    sigmoid output (module docstring) survives the wrapping."""
    return {task: keras.layers.Activation("linear", dtype="float32", name=task)(t)
            for task, t in outputs.items()}


OUTPUT_BIAS_LAYER = "output_bias"
# the prior's rates are clipped to [PRIOR_MIN_RATE, 1 - PRIOR_MIN_RATE]: a task with
# no positives (or no negatives) in the training data gets a finite bias
PRIOR_MIN_RATE = 1e-6


@keras.utils.register_keras_serializable(package="tfmdl")
class OutputBias(keras.layers.Layer):
    """Adds the output biases to the models' logits: ``z_k + b_k + Σ_s w_s d_{s,k}``.

    ``b`` ``[K]`` is one bias per task; with ``num_scenarios = S > 0``, ``d``
    ``[S, K]`` is one offset per (scenario, task) cell, weighted by the instance's
    scenario share ``w`` ``[B, S]`` (`fusion.scenario_share`: 1 on its scenario,
    an equal split over a multi-valued field's). A rare task's rate often differs
    by scenario (a search tab likes less than the main feed): ``d`` lets every
    model start at, and keep, each cell's base rate instead of learning the
    offsets through its towers.

    Shapes: logits ``[B, K]``, ``scenario_share`` ``[B, S]`` -> ``[B, K]`` float32
    (inputs of any float dtype are cast, so under mixed precision the sigmoid
    after it runs in float32). Both weights start at zero; `set_output_bias` sets
    them to the prior before training (module docstring).
    """

    def __init__(self, num_scenarios: int = 0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(num_scenarios, bool) or not isinstance(num_scenarios, (int, np.integer)) \
                or num_scenarios < 0:
            raise ValueError("num_scenarios should be a non-negative integer. "
                             f"Received: num_scenarios={num_scenarios!r}")
        self.num_scenarios = int(num_scenarios)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError(f"{self.name}: logits must be [batch, K] with static K. "
                             f"Received: shape {shape}")
        K = int(shape[-1])
        self.bias = self.add_weight("bias", shape=[K], initializer="zeros")
        self.scenario_bias = None
        if self.num_scenarios:
            self.scenario_bias = self.add_weight(
                "scenario_bias", shape=[self.num_scenarios, K], initializer="zeros")
        super().build(shape)

    def call(self, logits, scenario_share=None):
        out = logits + self.bias
        if self.scenario_bias is None:
            if scenario_share is not None:
                raise ValueError(f"{self.name}: built with num_scenarios=0, but called "
                                 f"with a scenario_share.")
            return out
        if scenario_share is None:
            raise ValueError(f"{self.name}: num_scenarios={self.num_scenarios} needs the "
                             f"scenario_share [batch, {self.num_scenarios}].")
        share = tf.cast(scenario_share, self.compute_dtype)
        if share.shape.rank != 2 or share.shape[-1] != self.num_scenarios:
            raise ValueError(f"{self.name}: scenario_share must be [batch, "
                             f"{self.num_scenarios}]. Received: shape {share.shape}")
        return out + tf.matmul(share, self.scenario_bias)

    def get_config(self):
        config = super().get_config()
        config["num_scenarios"] = self.num_scenarios
        return config


def prior_logits(rates: Mapping[str, float], task_names: Sequence[str]) -> np.ndarray:
    """``log(p / (1 - p))`` per task of ``task_names`` (float32 ``[K]``); ``p`` is
    clipped to ``[PRIOR_MIN_RATE, 1 - PRIOR_MIN_RATE]``, and a task whose rate is
    NaN (no labels) or absent gets 0."""
    out = []
    for t in task_names:
        p = rates.get(t, math.nan)
        if p is None or not math.isfinite(p):
            out.append(0.0)
            continue
        p = min(max(float(p), PRIOR_MIN_RATE), 1.0 - PRIOR_MIN_RATE)
        out.append(math.log(p / (1.0 - p)))
    return np.asarray(out, np.float32)


# a cell's rate in the prior is shrunk toward its task's: p̃ = (positives +
# PRIOR_CELL_ROWS·p) / (labelled rows + PRIOR_CELL_ROWS), so a cell with few labels
# starts near the task's rate rather than at its own noisy (or 0) rate
PRIOR_CELL_ROWS = 100.0
# a cell's offset is solved on the prior batch's rows of its scenario (like the
# per-task bias) when the batch has at least this many; else it is the plain offset
PRIOR_MIN_CELL_ROWS = 200


def shrunk_cell_rates(counts, rates: Mapping[str, float], task_names: Sequence[str],
                      scenario_names: Sequence[str]) -> np.ndarray:
    """``p̃_{s,k} = (P_{s,k} + PRIOR_CELL_ROWS p_k) / (n_{s,k} + PRIOR_CELL_ROWS)``
    float64 ``[S, K]`` from a `label_stats.LabelCounts`' cell counts, clipped to
    ``[PRIOR_MIN_RATE, 1 - PRIOR_MIN_RATE]``; NaN for a task without labels."""
    out = np.full([len(scenario_names), len(task_names)], np.nan)
    rows = [counts.scenario_names.index(s) for s in scenario_names]
    for k, t in enumerate(task_names):
        p = rates.get(t, math.nan)
        if p is None or not math.isfinite(p):
            continue
        col = counts.task_names.index(t)
        pos = counts.cell_positives[rows, col].astype(np.float64)
        n = pos + counts.cell_negatives[rows, col]
        out[:, k] = (pos + PRIOR_CELL_ROWS * p) / (n + PRIOR_CELL_ROWS)
    return np.clip(out, PRIOR_MIN_RATE, 1.0 - PRIOR_MIN_RATE)


def prior_offsets(counts, rates: Mapping[str, float], task_names: Sequence[str],
                  scenario_names: Sequence[str]) -> np.ndarray:
    """``d_{s,k} = logit(p̃_{s,k}) - logit(p_k)`` float32 ``[S, K]``: each cell's
    log-odds offset from its task's (``p̃`` shrunk by ``PRIOR_CELL_ROWS``, both
    clipped like `prior_logits`); 0 for a task without labels. ``counts``: a
    `label_stats.LabelCounts` with cell counts (its ``cell_positives`` and
    ``cell_negatives`` ``[S, K]``, in ``scenario_names`` x ``task_names`` order)."""
    cells = shrunk_cell_rates(counts, rates, task_names, scenario_names)
    offsets = np.log(cells / (1.0 - cells)) - prior_logits(rates, task_names)
    return np.nan_to_num(offsets, nan=0.0).astype(np.float32)


def output_bias_layer(built: "BuiltModel") -> OutputBias:
    """The model's `OutputBias` layer (in ``built.core``)."""
    return built.core.get_layer(OUTPUT_BIAS_LAYER)


def pre_bias_logits(built: "BuiltModel", features: Mapping[str, tf.Tensor],
                    looked_up: bool = False) -> np.ndarray:
    """The model's logits ``z`` ``[B, K]`` before the output bias, for a batch of
    raw ``features`` (or of the core's inputs with ``looked_up``), in inference
    mode."""
    return pre_bias_inputs(built, features, looked_up)[0]


def pre_bias_inputs(built: "BuiltModel", features: Mapping[str, tf.Tensor],
                    looked_up: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(z [B, K], w [B, S] or None)``: what the output bias adds to (the logits
    and the scenario share), for a batch, in inference mode."""
    layer = output_bias_layer(built)
    node = layer.inbound_nodes[0]
    share = node.call_kwargs.get("scenario_share")
    probe = keras.Model(built.core.inputs, [layer.input] + ([share] if share is not None else []))
    inputs = dict(features) if looked_up else built.lookup(dict(features))
    out = probe(inputs, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    z = np.asarray(out[0], np.float64)
    return z, (np.asarray(out[1], np.float64) if len(out) > 1 else None)


def calibrated_bias(logits: np.ndarray, rate: float, iterations: int = 80) -> float:
    """The ``b`` with ``mean σ(logits + b) = rate`` (bisection; the mean is
    increasing in ``b``), for 1-D ``logits``."""
    lo, hi = -60.0, 60.0
    z = np.asarray(logits, np.float64)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        mean = np.mean(0.5 * (1.0 + np.tanh(0.5 * (z + mid))))
        lo, hi = (mid, hi) if mean < rate else (lo, mid)
    return 0.5 * (lo + hi)


def set_output_bias(built: "BuiltModel", rates: Mapping[str, float],
                    features: Optional[Mapping[str, tf.Tensor]] = None,
                    looked_up: bool = False, counts=None) -> np.ndarray:
    """Sets every task's output bias to the prior of ``rates`` and returns the values.

    With ``counts`` (a `label_stats.LabelCounts`), the (scenario, task) offsets
    ``d`` start at `prior_offsets`, the per-task biases are solved with them in
    place, and then each cell's offset is solved on the batch's rows of that
    scenario alone (at least ``PRIOR_MIN_CELL_ROWS``), so that their mean
    prediction is the cell's shrunk rate. Without ``counts``, ``d`` is 0.

    Without ``features`` the bias is ``log(p / (1 - p))`` (`prior_logits`). With a
    batch of raw training ``features`` it is corrected for the spread of the
    untrained model's own logits: a randomly initialised last layer spreads
    ``z_k`` around 0, and by Jensen's inequality ``mean σ(z_k + b)`` then exceeds
    ``σ(b)`` for a rare task (an untrained MDL predicted up to 17x its rates
    with the plain log-odds). The bias is solved per task so that the batch's
    mean prediction equals ``p`` (`calibrated_bias`), which is what "an untrained
    model predicts the base rate" asks for. ``looked_up``: ``features`` are the
    core model's inputs (`FeatureLookup`'s output) rather than raw features.
    """
    layer = output_bias_layer(built)
    spec = built.spec
    values = prior_logits(rates, spec.task_names)
    offsets = None
    if layer.scenario_bias is not None:
        offsets = np.zeros(layer.scenario_bias.shape, np.float32)
        if counts is not None:
            offsets = prior_offsets(counts, rates, spec.task_names, spec.scenario.names)
        layer.scenario_bias.assign(offsets)
    if features is not None:
        z, share = pre_bias_inputs(built, features, looked_up)
        shifted = z + share @ offsets.astype(np.float64) if offsets is not None else z
        for k, t in enumerate(built.spec.task_names):
            p = rates.get(t, math.nan)
            if p is not None and math.isfinite(p):
                p = min(max(float(p), PRIOR_MIN_RATE), 1.0 - PRIOR_MIN_RATE)
                values[k] = calibrated_bias(shifted[:, k], p)
        if offsets is not None and counts is not None:
            # each cell with enough rows of its scenario alone in the batch is solved
            # on them: the untrained logits' spread differs by scenario
            cells = shrunk_cell_rates(counts, rates, spec.task_names, spec.scenario.names)
            for i in range(spec.scenario.count):
                rows = share[:, i] > 0.999          # rows of scenario i alone
                if rows.sum() < PRIOR_MIN_CELL_ROWS:
                    continue
                for k in np.flatnonzero(np.isfinite(cells[i])):
                    offsets[i, k] = calibrated_bias(z[rows, k] + values[k], cells[i, k])
            layer.scenario_bias.assign(offsets)
    layer.bias.assign(values)
    return values


def output_offsets(built: "BuiltModel") -> Optional[np.ndarray]:
    """The model's (scenario, task) output offsets ``d`` ``[S, K]`` (None if it has
    none)."""
    layer = output_bias_layer(built)
    return None if layer.scenario_bias is None else np.asarray(layer.scenario_bias.numpy())


@keras.utils.register_keras_serializable(package="tfmdl")
class CoreModel(keras.Model):
    """The functional core model, with one more XLA mode: ``jit_compile="dense"``.

    Under Keras' ``jit_compile=True`` the whole training step is one XLA
    computation, and XLA has no sparse (`tf.IndexedSlices`) gradients: every
    embedding table gets a dense gradient and a dense optimizer update each
    step, O(table rows) however few rows the batch touched.

    ``compile(..., jit_compile="dense")`` splits the step instead:

    1. outside XLA, the `FeatureEmbedding` layer looks the batch's rows up;
    2. one XLA-compiled function runs the rest of the model on those
       embeddings (the layer `FeatureEmbedding.feeding` them while it is
       traced), the loss, and the loss's gradient with respect to the dense
       weights and to the looked-up embeddings — forward and backward in one
       XLA computation, so XLA fuses across them and the step launches one
       executable;
    3. outside XLA again, the embeddings' gradient is carried back through the
       lookup as `tf.IndexedSlices`, so table optimizers apply sparse updates
       (e.g. ``ResourceSparseApplyAdagradV2``, the touched rows only), and the
       optimizer applies them with Keras' ``apply_gradients`` (the same gradient
       clipping, aggregation across replicas and split optimizers as Keras'
       ``minimize``).

    With a split optimizer (TFRS `CompositeOptimizer`, what the trainer builds)
    the sub-optimizers that own dense weights only apply their updates inside
    the XLA computation of step 2 — one fused executable instead of a kernel
    per weight (`_optimizer_split` says when that applies); the table
    optimizers stay in step 3.

    Prediction and evaluation run without XLA in this mode. Any other
    ``jit_compile`` value is Keras' own. The numbers are those of the plain
    step: the same loss, gradients and updates.
    """

    def compile(self, *args, jit_compile=None, **kwargs):  # pylint: disable=arguments-differ
        """Keras' ``compile``; ``jit_compile="dense"`` selects the split step."""
        self._xla_dense = jit_compile == "dense"
        self._dense_step = None
        super().compile(*args, jit_compile=False if self._xla_dense else jit_compile,
                        **kwargs)

    @property
    def xla_dense(self) -> bool:
        """Whether the model was compiled with ``jit_compile="dense"``."""
        return getattr(self, "_xla_dense", False)

    def _embedding_layer(self) -> inputs_lib.FeatureEmbedding:
        layers = [layer for layer in self.layers
                  if isinstance(layer, inputs_lib.FeatureEmbedding)]
        if len(layers) != 1:
            raise ValueError(f"{self.name}: jit_compile='dense' needs exactly one "
                             f"FeatureEmbedding layer in the model, found {len(layers)}.")
        return layers[0]

    def _split_variables(self):
        """(dense, table) trainable variables."""
        tables = self._embedding_layer().trainable_weights
        ids = {id(v) for v in tables}
        return [v for v in self.trainable_variables if id(v) not in ids], tables

    def _optimizer_split(self):
        """``(inside, outside)``: the sub-optimizers of a TFRS `CompositeOptimizer`
        that update dense weights only, whose updates run inside the XLA
        computation, and the others (those with a table), applied outside it;
        each as ``(optimizer, {variable refs})``. ``((), ())`` when there is no
        such split: a single optimizer, or tables and dense weights under one
        sub-optimizer (its step counter must move once a step), a variable no
        sub-optimizer handles (the composite's own error names it), or a
        distribution strategy (its cross-replica gradient aggregation stays in
        Keras' ``apply_gradients``)."""
        optimizer = self.optimizer
        pairs = getattr(optimizer, "_optimizers_and_vars", None)
        if not pairs or tf.distribute.has_strategy():
            return (), ()
        _, tables = self._split_variables()
        table_refs = {v.ref() for v in tables}
        inside, outside, handled = [], [], set()
        for sub, variables in pairs:
            refs = {v.ref() for v in variables()}
            (outside if refs & table_refs else inside).append((sub, refs))
            handled |= refs
        if not inside or any(v.ref() not in handled for v in self.trainable_variables):
            return (), ()
        return tuple(inside), tuple(outside)

    def _dense_step_fn(self, x, embeddings, y, sample_weight):
        dense, _ = self._split_variables()
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            with self._embedding_layer().feeding(embeddings):
                y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        grads, embedding_grads = tape.gradient(loss, (dense, embeddings))
        # a dense weight the loss does not reach keeps its None gradient (Keras
        # skips it with a warning, as `minimize` would); an embedding that does
        # not reach the loss sends zeros back through the lookup
        embedding_grads = tf.nest.map_structure(
            lambda g, e: tf.zeros_like(e) if g is None else g, embedding_grads, embeddings)
        inside, _ = self._optimizer_split()
        applied = set()
        for sub, refs in inside:
            pairs = [(g, v) for g, v in zip(grads, dense) if g is not None and v.ref() in refs]
            sub.apply_gradients(pairs)
            applied |= refs
        grads = [None if v.ref() in applied else g for g, v in zip(grads, dense)]
        return y_pred, loss, grads, embedding_grads

    def train_step(self, data):
        if not self.xla_dense:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self._dense_step is None:
            self._dense_step = tf.function(self._dense_step_fn, jit_compile=True)
        dense, tables = self._split_variables()
        with tf.GradientTape() as tape:
            embeddings = self._embedding_layer()(x, training=True)
        y_pred, _, grads, embedding_grads = self._dense_step(x, embeddings, y, sample_weight)
        table_grads = tape.gradient(embeddings, tables, output_gradients=embedding_grads)
        rest = [(g, v) for g, v in zip(list(grads) + list(table_grads), dense + list(tables))
                if g is not None]
        inside, outside = self._optimizer_split()
        if not inside:
            self.optimizer.apply_gradients(rest)
        for sub, refs in outside:
            sub.apply_gradients([(g, v) for g, v in rest if v.ref() in refs])
        return self.compute_metrics(x, y, y_pred, sample_weight)


CoreFn = Callable[[Dict[str, tf.Tensor]], Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]]


def assemble(name: str, spec: spec_lib.FeatureSpec, params: Any, core_fn: CoreFn) -> BuiltModel:
    """Builds core and full models around ``core_fn(inputs) -> (task_logits, aux)``
    (``{task: logit [B, 1]}``); the output bias and the sigmoid heads are added
    here, the same for every model (module docstring)."""
    inputs = core_inputs(spec)
    logits, aux = core_fn(inputs)
    missing = [t for t in spec.task_names if t not in logits]
    if missing:
        raise ValueError(f"model {name!r} produced no output for task(s) {missing}.")
    if OUTPUT_BIAS_LAYER in spec.task_names:
        raise ValueError(f"task name {OUTPUT_BIAS_LAYER!r} is reserved for the models' "
                         f"output-bias layer; rename the task in the spec.")
    stacked = tf.concat([logits[t] for t in spec.task_names], axis=-1) \
        if len(spec.task_names) > 1 else logits[spec.task_names[0]]
    share = fusion.scenario_share(
        dnn.scenario_features(inputs[spec.scenario.feature], spec.scenario.count))
    biased = OutputBias(spec.scenario.count, name=OUTPUT_BIAS_LAYER)(
        stacked, scenario_share=share)
    probs = {t: keras.layers.Activation("sigmoid", dtype="float32", name=t)(biased[:, k:k + 1])
             for k, t in enumerate(spec.task_names)}
    core = CoreModel(inputs, probs, name=f"{name}_core")
    aux_model = keras.Model(inputs, aux, name=f"{name}_aux") if aux else None
    lookup = inputs_lib.FeatureLookup(spec, name="feature_lookup")
    raw = inputs_lib.spec_inputs(spec)
    full = keras.Model(raw, name_outputs(core(lookup(raw))), name=name)
    return BuiltModel(name=name, spec=spec, params=params, model=full, core=core,
                      lookup=lookup, aux=aux_model)


def embedding_weights(model: keras.Model):
    """The embedding-table variables of a built model (for split optimizers and
    parameter accounting)."""
    out = []
    for layer in model.submodules:
        if isinstance(layer, inputs_lib.FeatureEmbedding):
            out.extend(layer.trainable_weights)
    return out
