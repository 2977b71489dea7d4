"""Peer benchmark: tfmdl against DeepCTR on the same architecture and data.

`run` builds DeepCTR's model (``deepctr.models.multitask``: MMOE, PLE,
SharedBottom; the ``bench`` extra) and tfmdl's model of the same name with the
same architecture — the same features, embedding tables and sizes (DeepCTR's
``SparseFeat`` per categorical feature, sharing tables where the spec shares
them; numerics as ``DenseFeat``; the scenario multi-hot as one ``DenseFeat``),
the same experts, gates and towers (tfmdl adds only its S x K output offsets per
(scenario, task), `base.OutputBias`) — and trains both on the same in-memory
batches with the same optimizer (Adam) and loss:

* speed: after an untimed warm-up, timed rounds alternate between the two
  models (``rounds`` x ``steps`` steps each) so machine noise hits both. The
  figures are training examples/s over all rounds; the headline ratio is the
  *median of the per-round ratios* tfmdl / DeepCTR (each round's two runs are
  adjacent in time), reported with the lowest and highest round. On a shared
  VM the machine's speed drifts by up to 2x between minutes, which moves a
  ratio of totals with it; a ratio of adjacent runs moves much less.
* quality: both models see the same batches in the same order for the same
  number of steps; their per-task AUC on the held-out split is reported so
  speed is not bought with a different model.

Both sides run the same optimisation, in Keras' fused optimizer implementations
(``keras.optimizers.legacy``, the ones tfmdl's trainer uses; DeepCTR compiled
with them trained faster than with its default ``"adam"``, so DeepCTR gets the
faster ones): Adam on the dense weights and, on the embedding tables, Adam with
the same learning rate (``table_optimizer="adam"``, the default: one optimiser
for everything, as DeepCTR's examples train) or Adagrad with learning rate 0.05
(``"adagrad"``: tfmdl's default split, the papers' sparse Adagrad; DeepCTR gets
the same split through TFRS' CompositeOptimizer), or ``"lazy_adam"`` / ``"sgd"``.
``deepctr_table_optimizer`` gives DeepCTR other tables than tfmdl's, to race
each library's defaults (tfmdl's Adagrad tables against DeepCTR's Adam on
everything). tfmdl's output biases start at its default prior (`set_prior`);
DeepCTR's start at 0, its default. tfmdl trains its ``core``
model (looked-up row ids in, as DeepCTR takes ids) exactly as ``tfmdl train``
does on one replica (`trainer.compile_model`): with XLA (``--jit_compile``) the
whole step is compiled with dense table gradients when the tables use Adam, and
only the dense network, with sparse table updates outside XLA, when they use
Adagrad (`trainer.xla_mode`). DeepCTR
trains as DeepCTR users run it (no XLA, the DeepCTR default), with
``l2_reg_embedding=0`` since tfmdl's models have no regulariser. Sequence
features are left out of both: DeepCTR's multi-task models take them only
through ``VarLenSparseFeat`` pooling layers with different semantics.

Both models read the same in-memory arrays through ``tf.data`` datasets passed
to ``fit`` (a Python iterator would make Keras pull every batch through a
``py_function``, a cost that would hide the models' own), with tf.data's
autotuning off: every ``fit`` call starts a new iterator, and tearing down an
autotuned one stalled ``fit``'s return by ~2 s in a third of the rounds on
this 2-core machine, for either library, which made round ratios noise.

* matmul bound: the dense network's matrix products are the same in both
  libraries — ``6 · batch · Σ kernel sizes`` FLOPs per step (forward, input
  gradient, weight gradient of every kernel; the first layer's input gradient
  feeds the embeddings). Divided into the rate of TensorFlow's float32 matmul on
  this machine (a ``[batch, 256] x [256, 128]`` product, measured next to every
  round), it bounds the examples/s of any library whose matmuls are
  TensorFlow's; each side is reported as a share of that bound.
* matmul floor (`matmul_floor`): the tfmdl model's own products — the same
  shapes and transposes, forward and both gradients, nothing else — timed
  alone next to every round with TensorFlow's kernels and with XLA; the faster
  engine's time is a step no TensorFlow implementation of the architecture
  can beat. The report says how much of each side's step it is, and how much
  of a step at 1.5x DeepCTR's speed it leaves for everything else.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl import metrics
from tfmdl.benchmark import matmul_floor
from tfmdl.models import base
from tfmdl.models import registry
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib

PEERS = ("mmoe", "ple", "shared_bottom")
# embedding-table optimizers the race can use (the dense weights always get Adam)
# name -> learning rate (None: --lr)
TABLE_OPTIMIZERS = {"adam": None, "adagrad": 0.05, "lazy_adam": None, "sgd": 0.5}


@dataclasses.dataclass(frozen=True)
class Arch:
    """The architecture both libraries build (DeepCTR's defaults)."""
    experts: int = 3              # mmoe
    shared_experts: int = 1       # ple
    task_experts: int = 1         # ple
    levels: int = 2               # ple
    expert_hidden: Tuple[int, ...] = (256, 128)
    bottom_hidden: Tuple[int, ...] = (256, 128)   # shared_bottom
    tower_hidden: Tuple[int, ...] = (64,)


def peer_spec(spec: spec_lib.FeatureSpec) -> spec_lib.FeatureSpec:
    """``spec`` without sequence features (and without references to them)."""
    drop = {f.name for f in spec.features if f.type == spec_lib.SEQUENCE}
    raw = spec.to_dict()
    raw["features"] = [f for f in raw["features"] if f["name"] not in drop]

    def keep(names):
        return [n for n in names if n not in drop]

    if raw.get("semantic_groups"):
        raw["semantic_groups"] = {g: keep(v) for g, v in raw["semantic_groups"].items()
                                  if keep(v)}
    sets = raw.get("feature_sets") or {}
    for key, value in list(sets.items()):
        if isinstance(value, Mapping):
            sets[key] = {k: keep(v) for k, v in value.items()}
        elif isinstance(value, list):
            sets[key] = keep(value)
    return spec_lib.FeatureSpec.from_dict(raw)


@dataclasses.dataclass
class Data:
    """In-memory looked-up features (what both models take), labels, weights."""
    ids: Dict[str, np.ndarray]
    labels: Dict[str, np.ndarray]     # 0/1 (missing labels set to 0 and weighted 0)
    weights: Dict[str, np.ndarray]
    scenario: np.ndarray              # [N, S] multi-hot

    def __len__(self):
        return len(next(iter(self.labels.values())))


def load(spec: spec_lib.FeatureSpec, data_dir: str, split: str, limit: int,
         lookup) -> Data:
    """Reads up to ``limit`` examples of ``split`` and looks them up once."""
    ds = reader.make_dataset(spec, data_dir, 8192, split=split, shuffle=False)
    parts: List[Tuple[dict, dict]] = []
    n = 0
    for features, labels, _ in ds:
        rows = lookup(features)
        parts.append(({k: v.numpy() for k, v in rows.items() if k in _model_keys(spec)},
                      {k: v.numpy() for k, v in labels.items()}))
        n += len(next(iter(labels.values())))
        if n >= limit:
            break
    ids = {k: np.concatenate([p[0][k] for p in parts])[:limit] for k in parts[0][0]}
    raw = {k: np.concatenate([p[1][k] for p in parts])[:limit] for k in parts[0][1]}
    labels = {t: np.where(raw[t] < 0, 0, raw[t]).astype(np.float32) for t in spec.task_names}
    weights = {t: (raw[t] >= 0).astype(np.float32) for t in spec.task_names}
    scen = ids[spec.scenario.feature]
    S = spec.scenario.count
    if scen.ndim == 1:
        multi = np.eye(S, dtype=np.float32)[scen]
    else:
        multi = np.zeros((len(scen), S), np.float32)
        for col in range(scen.shape[1]):
            ok = scen[:, col] >= 0
            multi[np.nonzero(ok)[0], scen[ok, col]] = 1.0
    return Data(ids=ids, labels=labels, weights=weights, scenario=multi)


def _model_keys(spec: spec_lib.FeatureSpec) -> set:
    return {spec.scenario.feature} | {f.name for f in spec.features}


# ----------------------------------------------------------------------------- DeepCTR


def deepctr_inputs(spec: spec_lib.FeatureSpec, data: Data) -> Dict[str, np.ndarray]:
    x = {f.name: data.ids[f.name] for f in spec.features}
    x["scenario"] = data.scenario
    return x


def build_deepctr(model: str, spec: spec_lib.FeatureSpec, arch: Arch, seed: int = 0):
    """DeepCTR's ``model`` for ``spec`` (raises a clear error without the extra)."""
    try:
        from deepctr.feature_column import DenseFeat  # pylint: disable=g-import-not-at-top
        from deepctr.feature_column import SparseFeat  # pylint: disable=g-import-not-at-top
        from deepctr.models import multitask  # pylint: disable=g-import-not-at-top
    except ImportError as exc:
        raise ImportError("the peer benchmark needs DeepCTR: pip install 'tfmdl[bench]' "
                          f"({exc})") from None
    columns = []
    for f in spec.features:
        if f.type == spec_lib.NUMERIC:
            columns.append(DenseFeat(f.name, 1))
            continue
        owner = spec.feature(f.table_name)
        columns.append(SparseFeat(f.name, vocabulary_size=owner.vocab_size,
                                  embedding_dim=owner.embedding_dim,
                                  embedding_name=owner.name, dtype="int64"))
    columns.append(DenseFeat("scenario", spec.scenario.count))
    tasks = list(spec.task_names)
    common = dict(task_types=["binary"] * len(tasks), task_names=tasks,
                  tower_dnn_hidden_units=arch.tower_hidden, l2_reg_embedding=0.0,
                  seed=seed)
    if model == "mmoe":
        return multitask.MMOE(columns, num_experts=arch.experts,
                              expert_dnn_hidden_units=arch.expert_hidden,
                              gate_dnn_hidden_units=(), **common)
    if model == "ple":
        return multitask.PLE(columns, shared_expert_num=arch.shared_experts,
                             specific_expert_num=arch.task_experts, num_levels=arch.levels,
                             expert_dnn_hidden_units=arch.expert_hidden,
                             gate_dnn_hidden_units=(), **common)
    if model == "shared_bottom":
        return multitask.SharedBottom(columns, bottom_dnn_hidden_units=arch.bottom_hidden,
                                      **common)
    raise ValueError(f"--model: {model!r} has no DeepCTR peer; choose one of {PEERS}.")


# ----------------------------------------------------------------------------- tfmdl


def tfmdl_params(model: str, arch: Arch) -> Dict[str, Any]:
    """tfmdl params giving the same architecture as `build_deepctr`."""
    common = {"backbone": "dnn", "tower_hidden": list(arch.tower_hidden)}
    if model == "mmoe":
        return dict(common, backbone_hidden=[], num_experts=arch.experts,
                    expert_hidden=list(arch.expert_hidden))
    if model == "ple":
        return dict(common, backbone_hidden=[], shared_experts=arch.shared_experts,
                    task_experts=arch.task_experts, levels=arch.levels,
                    expert_hidden=list(arch.expert_hidden))
    if model == "shared_bottom":
        return dict(common, backbone_hidden=list(arch.bottom_hidden))
    raise ValueError(f"--model: {model!r} has no DeepCTR peer; choose one of {PEERS}.")


# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Side:
    """One library's model in the race."""
    name: str
    model: keras.Model
    x: Dict[str, np.ndarray]
    eval_x: Dict[str, np.ndarray]
    params: int
    seconds: float = 0.0
    round_seconds: List[float] = dataclasses.field(default_factory=list)
    examples: int = 0
    steps: int = 0
    auc: Optional[Dict[str, float]] = None

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def _batches(x, y, w, order: np.ndarray, batch: int) -> Tuple[tf.data.Dataset, int]:
    """The batches of ``order`` (one permutation shared by both models) as one
    dataset element each, and their number."""
    n = len(order) // batch

    def take(a):
        a = a[order[:n * batch]]
        return a.reshape((n, batch) + a.shape[1:])

    ds = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(take, (x, y, w)))
    options = tf.data.Options()
    options.autotune.enabled = False   # module docstring: teardown stalls
    return ds.with_options(options), n


def matmul_flops_per_example(model: keras.Model) -> int:
    """Training FLOPs per example of ``model``'s dense kernels: ``6 · Σ sizes``
    (embedding tables and biases left out; the output layer's (scenario, task)
    offsets count: the scenario share multiplies them, `base.OutputBias`)."""
    tables = {id(v) for v in base.embedding_weights(model)}
    offsets = f"{base.OUTPUT_BIAS_LAYER}/scenario_bias"
    sizes = [v.shape.num_elements() for v in model.trainable_variables
             if id(v) not in tables and v.shape.rank >= 2
             and ("kernel" in v.name or v.name.startswith(offsets))]
    return 6 * int(sum(sizes))


def matmul_rate(batch: int, seconds: float = 0.3) -> float:
    """FLOP/s of TensorFlow's float32 ``[batch, 256] x [256, 128]`` matmul here."""
    a = tf.random.uniform([batch, 256])
    b = tf.random.uniform([256, 128])

    @tf.function
    def products(n):
        out = tf.zeros([batch, 128])
        for _ in tf.range(n):
            out += tf.matmul(a, b)
        return out

    products(tf.constant(2)).numpy()
    n, elapsed = 4, 0.0
    while elapsed < seconds:
        n *= 2
        start = time.perf_counter()
        products(tf.constant(n)).numpy()
        elapsed = time.perf_counter() - start
    return 2.0 * batch * 256 * 128 * n / elapsed


def _fit(side: Side, batches: tf.data.Dataset, num_batches: int, steps: int) -> float:
    # every fit() starts a new iterator: skip the batches this side has seen, so
    # successive rounds continue through the data instead of repeating its start
    ds = batches.repeat().skip(side.steps % num_batches).prefetch(tf.data.AUTOTUNE)
    start = time.perf_counter()
    side.model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start


def optimizer_configs(table_optimizer: str, learning_rate: float):
    """(table, dense) `OptimizerConfig` s of the race."""
    from tfmdl.training import config as train_config  # pylint: disable=g-import-not-at-top

    if table_optimizer not in TABLE_OPTIMIZERS:
        raise ValueError(f"--table_optimizer: {table_optimizer!r} is not one of "
                         f"{sorted(TABLE_OPTIMIZERS)}.")
    dense = train_config.OptimizerConfig(name="adam", learning_rate=learning_rate)
    table = train_config.OptimizerConfig(
        name=table_optimizer, learning_rate=TABLE_OPTIMIZERS[table_optimizer] or learning_rate)
    return table, dense


def deepctr_optimizer(peer: keras.Model, optimizers):
    """The (table, dense) optimizers for a DeepCTR model: one optimizer when
    both are the same, else a TFRS CompositeOptimizer over DeepCTR's embedding
    variables (its ``sparse_emb_*`` layers) and the rest."""
    from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

    table, dense = optimizers
    if table == dense:
        return trainer.make_optimizer(dense)
    import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

    def tables():
        return [v for v in peer.trainable_variables if "sparse_emb_" in v.name]

    def rest():
        return [v for v in peer.trainable_variables if "sparse_emb_" not in v.name]

    if not tables():
        raise ValueError("DeepCTR model has no sparse_emb_* embedding variables.")
    return tfrs.experimental.optimizers.CompositeOptimizer(
        [(trainer.make_optimizer(table), tables), (trainer.make_optimizer(dense), rest)])


def compile_tfmdl(built: base.BuiltModel, optimizers: Tuple[Any, Any],
                  jit_compile: bool) -> keras.Model:
    """Compiles the model ``tfmdl train`` would train (`trainer.compile_model`:
    with XLA the core under ``jit_compile="dense"``) with the (table, dense)
    optimizer configs, without metrics; returns it."""
    from tfmdl.training import config as train_config  # pylint: disable=g-import-not-at-top
    from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

    table, dense = optimizers
    tcfg = train_config.TrainingConfig(dense_optimizer=dense, embedding_optimizer=table)
    return trainer.compile_model(built, tcfg, jit_compile, metrics=False, core=True)


def set_prior(built: base.BuiltModel, data: "Data") -> Dict[str, float]:
    """tfmdl's default output-bias prior (``training.output_bias_init: prior``)
    from the loaded training rows' labels; DeepCTR keeps its own zero bias, as
    each side trains with its library's defaults. Returns the rates."""
    from tfmdl.pipelines import label_stats  # pylint: disable=g-import-not-at-top
    from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

    spec = built.spec
    labels = np.stack([np.where(data.weights[t] > 0, data.labels[t], -1)
                       for t in spec.task_names], axis=1)
    counts = label_stats.LabelCounts(spec.task_names, spec.scenario.names)
    counts.add(labels, data.scenario)
    rates = counts.rates()
    rows = min(len(data), trainer.PRIOR_BATCH)
    base.set_output_bias(built, rates, {k: v[:rows] for k, v in data.ids.items()},
                         looked_up=True, counts=counts)
    return rates


def _auc(side: Side, spec: spec_lib.FeatureSpec, data: Data, batch: int) -> Dict[str, float]:
    out = side.model.predict(side.eval_x, batch_size=batch, verbose=0)
    if isinstance(out, dict):
        preds = {t: np.asarray(out[t]).reshape(-1) for t in spec.task_names}
    else:
        out = out if isinstance(out, list) else [out]
        preds = {t: np.asarray(p).reshape(-1) for t, p in zip(spec.task_names, out)}
    return {t: float(metrics.auc(data.labels[t], preds[t], mask=data.weights[t] > 0))
            for t in spec.task_names}


def run(model: str, data_dir: str, *, train: int = 100_000, eval_examples: int = 20_000,
        batch_size: int = 1024, warmup_steps: int = 20, steps: int = 40, rounds: int = 3,
        learning_rate: float = 1e-3, jit_compile: bool = True, arch: Arch = Arch(),
        table_optimizer: str = "adam", seed: int = 0,
        deepctr_table_optimizer: Optional[str] = None,
        log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Races tfmdl's and DeepCTR's ``model`` (module docstring); returns the result."""
    if model not in PEERS:
        raise ValueError(f"--model: {model!r} has no DeepCTR peer; choose one of {PEERS}.")
    optimizers = optimizer_configs(table_optimizer, learning_rate)
    # DeepCTR's side: the same tables by default; another optimizer (e.g. "adam",
    # DeepCTR's out-of-the-box Adam on every weight) compares each library's defaults
    peer_optimizers = optimizers if deepctr_table_optimizer in (None, table_optimizer) \
        else optimizer_configs(deepctr_table_optimizer, learning_rate)
    spec = peer_spec(spec_lib.load_spec(data_dir))
    keras.utils.set_random_seed(seed)
    built: base.BuiltModel = registry.get(model).build(spec, tfmdl_params(model, arch))
    train_data = load(spec, data_dir, "train", train, built.lookup)
    eval_data = load(spec, data_dir, "eval", eval_examples, built.lookup)
    tasks = list(spec.task_names)

    compile_tfmdl(built, optimizers, jit_compile)
    set_prior(built, train_data)
    peer = build_deepctr(model, spec, arch, seed)
    peer.compile(optimizer=deepctr_optimizer(peer, peer_optimizers),
                 loss=["binary_crossentropy"] * len(tasks))
    sides = [
        Side("tfmdl", built.core, train_data.ids, eval_data.ids, built.core.count_params()),
        Side("deepctr", peer, deepctr_inputs(spec, train_data),
             deepctr_inputs(spec, eval_data), peer.count_params()),
    ]
    labels = {t: train_data.labels[t][:, None] for t in tasks}
    weights = {t: train_data.weights[t] for t in tasks}
    order = np.random.default_rng(seed).permutation(len(train_data))
    if len(order) < batch_size:
        raise ValueError(f"--train={len(order)} examples are fewer than one batch "
                         f"(--batch_size={batch_size}).")
    batches = {
        "tfmdl": _batches(sides[0].x, labels, weights, order, batch_size),
        "deepctr": _batches(sides[1].x, tuple(labels[t] for t in tasks),
                            tuple(weights[t] for t in tasks), order, batch_size),
    }
    log(f"peer benchmark {model}: {len(train_data):,} train / {len(eval_data):,} eval "
        f"examples in memory, batch {batch_size}, tables {table_optimizer}, dense adam, "
        f"tfmdl XLA {'on' if jit_compile else 'off'}; "
        f"parameters tfmdl {sides[0].params:,}, DeepCTR {sides[1].params:,}")
    for side in sides:
        _fit(side, *batches[side.name], warmup_steps)   # traces, compiles, warms caches
        side.steps += warmup_steps
    flops = matmul_flops_per_example(built.core)
    floor = matmul_floor.Floor(matmul_floor.model_products(built.core, batch_size))
    rates, floors = [], []
    for r in range(rounds):
        rates.append(matmul_rate(batch_size))
        floors.append(floor.measure(repeats=3))
        for side in (sides if r % 2 == 0 else sides[::-1]):
            seconds = _fit(side, *batches[side.name], steps)
            side.seconds += seconds
            side.round_seconds.append(seconds)
            side.examples += steps * batch_size
            side.steps += steps
        log(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{s.name} {s.examples_per_second:,.0f} ex/s" for s in sides))
    for side in sides:
        side.auc = _auc(side, spec, eval_data, 4096)
    # same steps per round on both sides: a round's speed ratio is DeepCTR's time / tfmdl's
    round_ratios = [p / t for t, p in zip(sides[0].round_seconds, sides[1].round_seconds)]
    bound = float(np.median(rates)) / flops
    floor_seconds = {engine: float(np.median([f[engine] for f in floors]))
                     for engine in matmul_floor.Floor.ENGINES}
    floor_step = min(floor_seconds.values())
    return {
        "model": model, "arch": dataclasses.asdict(arch), "batch_size": batch_size,
        "table_optimizer": table_optimizer,
        "deepctr_table_optimizer": deepctr_table_optimizer or table_optimizer,
        "train_examples": len(train_data), "eval_examples": len(eval_data),
        "jit_compile": jit_compile, "steps_trained": sides[0].steps,
        "matmul": {"flops_per_example": flops, "rate": float(np.median(rates)),
                   "bound_examples_per_second": bound},
        "floor": {"products": len(floor.products), "flops_per_step": floor.flops,
                  "seconds_per_step": floor_seconds, "step_seconds": floor_step},
        "sides": {s.name: {"examples_per_second": s.examples_per_second, "params": s.params,
                           "share_of_bound": s.examples_per_second / bound,
                           "step_seconds": batch_size / s.examples_per_second,
                           "auc": s.auc, "mean_auc": float(np.nanmean(list(s.auc.values())))}
                  for s in sides},
        "ratio": float(np.median(round_ratios)),
        "round_ratios": round_ratios,
        "ratio_of_totals": sides[0].examples_per_second / sides[1].examples_per_second,
    }


def format_result(result: Mapping[str, Any]) -> str:
    tfmdl_side, peer_side = result["sides"]["tfmdl"], result["sides"]["deepctr"]
    tasks = list(tfmdl_side["auc"])
    lines = [
        f"| | examples/s | parameters | mean AUC | " + " | ".join(tasks) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(tasks),
    ]
    for name, side in (("tfmdl", tfmdl_side), ("DeepCTR", peer_side)):
        lines.append(f"| {name} | {side['examples_per_second']:,.0f} | {side['params']:,} | "
                     f"{side['mean_auc']:.4f} | "
                     + " | ".join(f"{side['auc'][t]:.4f}" for t in tasks) + " |")
    lines.append("")
    rounds = result["round_ratios"]
    lines.append(f"speed ratio tfmdl / DeepCTR: {result['ratio']:.2f} (median of {len(rounds)} "
                 f"rounds, range {min(rounds):.2f}-{max(rounds):.2f}; ratio of the totals "
                 f"{result['ratio_of_totals']:.2f}; after {result['steps_trained']} steps "
                 f"each, batch {result['batch_size']})")
    mm = result["matmul"]
    lines.append(f"matmul bound: {mm['flops_per_example'] * result['batch_size'] / 1e9:.2f} GFLOP "
                 f"of dense matmuls per step; TensorFlow's float32 matmul here "
                 f"{mm['rate'] / 1e9:.0f} GFLOP/s (median over the rounds) -> at most "
                 f"{mm['bound_examples_per_second']:,.0f} examples/s; tfmdl at "
                 f"{tfmdl_side['share_of_bound']:.0%}, DeepCTR at "
                 f"{peer_side['share_of_bound']:.0%} of it")
    lines.append(format_floor(result))
    return "\n".join(lines)


TARGET_RATIO = 1.5   # issue 7: tfmdl >= 1.5x DeepCTR


def format_floor(result: Mapping[str, Any]) -> str:
    """The matmul-floor line: the floor per engine, each side's step against it,
    and what a step at `TARGET_RATIO` x DeepCTR's speed leaves beside it."""
    floor = result["floor"]
    sec = floor["seconds_per_step"]
    step = floor["step_seconds"]
    tfmdl_step = result["sides"]["tfmdl"]["step_seconds"]
    peer_step = result["sides"]["deepctr"]["step_seconds"]
    target = peer_step / TARGET_RATIO
    return (f"matmul floor: the model's {floor['products']} products forward and backward "
            f"({floor['flops_per_step'] / 1e9:.2f} GFLOP) alone take "
            f"{sec['tensorflow'] * 1e3:.1f} ms with TensorFlow's kernels, "
            f"{sec['xla'] * 1e3:.1f} ms with XLA (median over the rounds); steps: tfmdl "
            f"{tfmdl_step * 1e3:.1f} ms = {tfmdl_step / step:.2f}x the floor, DeepCTR "
            f"{peer_step * 1e3:.1f} ms = {peer_step / step:.2f}x; a step at "
            f"{TARGET_RATIO:g}x DeepCTR's speed ({target * 1e3:.1f} ms) leaves "
            f"{(target - step) * 1e3:.1f} ms beside the floor for everything else")

