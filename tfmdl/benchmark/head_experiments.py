"""Head-health experiments (docs/benchmarks.md, "MDL's rare-task heads").

One run trains a config on a data directory with ``tfmdl train``'s code path
(`trainer.prepare`, weights and shuffle seeded by ``--seed``), predicts the eval
split and writes, per scenario x task cell, the AUC, the calibration (mean
prediction / positive rate), the mean prediction and the eval positives::

    python -m tfmdl.benchmark.head_experiments --config=configs/mdl_feed.yaml \\
        --data=DIR --out=OUT/run.json --seed=0 [--set=params.head_norm=true ...]
        [--loss_path=probability]

``--loss_path=probability`` rebuilds the output path tfmdl had before the fix:
the sigmoid applied to all logits, then sliced per task and wrapped in a linear
layer, so Keras' loss sees probabilities only and clips them to
``[1e-7, 1 - 1e-7]`` (zero gradient outside) — the hypothesis under test.
``--head_lr_scale=M`` trains the task heads (the layers named in `HEAD_LAYERS`:
the head norm, the logits layer, the output bias) with the dense learning rate
times M, through a third optimizer next to the tables' and the dense weights'.
``--qk_init_scale=S`` multiplies every attention layer's initial query and key
kernels by S (the attention logits by S^2) before the output-bias prior is
solved. Both are hypotheses under test, not library options.
``--calibration_every=N`` records, every N optimizer steps and after the last,
each task's calibration (mean prediction / positive rate) on `TRACE_ROWS` fixed
eval rows, as ``calibration_trace`` in the result: how far the weights' overall
calibration swings from step to step (docs/training.md, "Learning-rate schedule").
``--summarize OUT/*.json`` prints the table of finished runs.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/mdl_feed.yaml", "config file")
flags.DEFINE_string("data", None, "data directory")
flags.DEFINE_string("out", None, "result JSON")
flags.DEFINE_integer("seed", 0, "weights and shuffle seed")
flags.DEFINE_multi_string("set", [], "config overrides key.path=value")
flags.DEFINE_enum("loss_path", "logits", ["logits", "probability"],
                  "output path the loss sees (module docstring)")
flags.DEFINE_string("label", "", "variant label stored in the result")
flags.DEFINE_float("head_lr_scale", 1.0, "task heads' learning rate / the dense one")
flags.DEFINE_float("qk_init_scale", 1.0, "factor on the initial query/key kernels")
flags.DEFINE_multi_string("summarize", [], "result JSON globs to tabulate (no training)")
flags.DEFINE_integer("calibration_every", 0,
                     "every N steps (and at the last), record each task's mean prediction / "
                     "positive rate on TRACE_ROWS fixed eval rows (0: off)")

TRACE_ROWS = 16384

# layers of a task head (MDL and PMTA name theirs so; every model has output_bias)
HEAD_LAYERS = ("task_head_norm", "task_logits", "task_head", "output_bias")
ATTENTION_QK = ("/query/kernel", "/key/kernel")


def _probability_output_path():
    """Patches `base.assemble` to the pre-fix output path (module docstring)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    from tfmdl.models import base  # pylint: disable=g-import-not-at-top

    def assemble(name, spec, params, core_fn):
        inputs = base.core_inputs(spec)
        logits, aux = core_fn(inputs)
        stacked = tf.concat([logits[t] for t in spec.task_names], axis=-1)
        biased = base.OutputBias(name=base.OUTPUT_BIAS_LAYER)(stacked)
        probs = tf.nn.sigmoid(biased)
        outs = {t: probs[:, k:k + 1] for k, t in enumerate(spec.task_names)}
        core = base.CoreModel(inputs, base.name_outputs(outs), name=f"{name}_core")
        aux_model = keras.Model(inputs, aux, name=f"{name}_aux") if aux else None
        lookup = base.inputs_lib.FeatureLookup(spec, name="feature_lookup")
        raw = base.inputs_lib.spec_inputs(spec)
        full = keras.Model(raw, base.name_outputs(core(lookup(raw))), name=name)
        return base.BuiltModel(name=name, spec=spec, params=params, model=full, core=core,
                               lookup=lookup, aux=aux_model)

    base.assemble = assemble


def _head_lr_optimizer(scale):
    """Patches `trainer.split_optimizer`: head variables get their own dense
    optimizer with learning rate x ``scale`` (module docstring)."""
    import dataclasses  # pylint: disable=g-import-not-at-top

    import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

    from tfmdl.models import base  # pylint: disable=g-import-not-at-top
    from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

    def is_head(v):
        return v.name.split("/")[0] in HEAD_LAYERS

    def split_optimizer(built, cfg, dense_gradients=False, dense_optimizer=None):
        model = built.model
        emb_refs = {v.ref() for v in base.embedding_weights(model)}
        head_cfg = dataclasses.replace(cfg.dense_optimizer,
                                       learning_rate=cfg.dense_optimizer.learning_rate * scale)
        if not any(is_head(v) for v in model.trainable_variables):
            raise ValueError("--head_lr_scale: the model has no head layer "
                             f"{HEAD_LAYERS}")
        cls = (trainer.DenseGradientComposite if dense_gradients
               else tfrs.experimental.optimizers.CompositeOptimizer)
        pairs = [(trainer.make_optimizer(head_cfg),
                  lambda: [v for v in model.trainable_variables if is_head(v)]),
                 (dense_optimizer or trainer.make_optimizer(cfg.dense_optimizer),
                  lambda: [v for v in model.trainable_variables
                           if v.ref() not in emb_refs and not is_head(v)])]
        if emb_refs:
            pairs.insert(0, (trainer.make_optimizer(cfg.embedding_optimizer),
                             lambda: base.embedding_weights(model)))
        return cls(pairs)

    trainer.split_optimizer = split_optimizer


def _scaled_qk_init(scale):
    """Patches `trainer.init_output_bias` to scale the query/key kernels first."""
    from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

    original = trainer.init_output_bias

    def init_output_bias(built, *args, **kwargs):
        kernels = [v for v in built.model.weights if v.name.split(":")[0].endswith(ATTENTION_QK)]
        if not kernels:
            raise ValueError("--qk_init_scale: the model has no attention query/key kernels")
        for v in kernels:
            v.assign(v * scale)
        return original(built, *args, **kwargs)

    trainer.init_output_bias = init_output_bias


def run(_):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    if FLAGS.loss_path == "probability":
        _probability_output_path()
    if FLAGS.head_lr_scale != 1.0:
        _head_lr_optimizer(FLAGS.head_lr_scale)
    if FLAGS.qk_init_scale != 1.0:
        _scaled_qk_init(FLAGS.qk_init_scale)
    from tfmdl import evaluation  # pylint: disable=g-import-not-at-top
    from tfmdl import metrics  # pylint: disable=g-import-not-at-top
    from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

    keras.utils.set_random_seed(FLAGS.seed)
    model_dir = FLAGS.out + ".model"
    overrides = [f"training.seed={FLAGS.seed}"] + list(FLAGS.set)
    start = time.time()
    run_ = trainer.prepare(FLAGS.config, FLAGS.data, model_dir, overrides=overrides)
    trace = []
    if FLAGS.calibration_every:
        run_.callbacks.append(_CalibrationTrace(run_, FLAGS.data, FLAGS.calibration_every, trace))
    history = run_.fit(verbose=0)
    run_.finish(history)
    seconds = time.time() - start
    p = evaluation.predict(run_.built, run_.spec, FLAGS.data, split="eval")
    table = metrics.slice_table(p.labels, p.preds, p.scenarios, p.task_names,
                                p.scenario_names, metrics=("auc", "calibration", "count",
                                                           "pos_rate"))
    cells = {}
    for s in p.scenario_names:
        for t in p.task_names:
            m = table[s][t]
            cells[f"{s}/{t}"] = {"auc": m["auc"], "calibration": m["calibration"],
                                 "positives": int(round(m["pos_rate"] * m["count"])),
                                 "count": int(m["count"])}
    out = {"label": FLAGS.label, "config": FLAGS.config, "seed": FLAGS.seed,
           "overrides": list(FLAGS.set), "loss_path": FLAGS.loss_path,
           "head_lr_scale": FLAGS.head_lr_scale, "qk_init_scale": FLAGS.qk_init_scale, "data": FLAGS.data,
           "train_seconds": round(seconds, 1), "cells": cells,
           "output_bias": run_.output_bias,
           "history": {k: [float(x) for x in v] for k, v in history.history.items()}}
    if trace:
        out["calibration_trace"] = trace
    with open(FLAGS.out + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(evaluation.json_safe(out), fh, indent=1)
    os.replace(FLAGS.out + ".tmp", FLAGS.out)
    print(f"{FLAGS.label or FLAGS.out} seed {FLAGS.seed}: {seconds:.0f} s; worst calibration "
          f"{min(c['calibration'] for c in cells.values() if c['calibration'] == c['calibration']):.3g}",
          flush=True)
    del np


def _CalibrationTrace(run_, data_dir, every, trace):  # pylint: disable=invalid-name
    """A callback appending ``{"step", task: calibration}`` to ``trace`` every
    ``every`` steps and at the end of training, on `TRACE_ROWS` fixed eval rows
    scored by the full model (its weights are the trained core's)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top

    spec = run_.spec
    rows = reader.make_dataset(spec, reader.resolve_files(data_dir, "eval"), 4096,
                               shuffle=False).take(TRACE_ROWS // 4096)
    batches = list(rows)
    def flat(x):
        return tf.reshape(tf.cast(x, tf.float32), [-1])

    positives = {t: sum(float(tf.reduce_sum(flat(l[t]) * flat(w[t]))) for _, l, w in batches)
                 for t in spec.task_names}

    class Trace(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0

        def record(self):
            pred = {t: 0.0 for t in spec.task_names}
            for f, _, w in batches:
                out = run_.built.model(f, training=False)
                for t in spec.task_names:
                    pred[t] += float(tf.reduce_sum(flat(out[t]) * flat(w[t])))
            trace.append({"step": self.step, **{
                t: (pred[t] / positives[t] if positives[t] else None) for t in spec.task_names}})

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % every == 0:
                self.record()

        def on_train_end(self, logs=None):
            if not trace or trace[-1]["step"] != self.step:
                self.record()

    return Trace()


def summarize(patterns, min_positives: int = 100) -> str:
    """Markdown table: per variant and cell, the mean AUC over seeds / the worst
    seed's calibration (cells under ``min_positives`` eval positives marked), the
    dead heads (a seed's cell with calibration < 0.01: the collapse) and the
    unhealthy measurable cells (>= ``min_positives`` positives, calibration
    outside [0.5, 2] or AUC <= 0.5), counted over seeds."""
    import numpy as np  # pylint: disable=g-import-not-at-top

    from tfmdl import metrics  # pylint: disable=g-import-not-at-top

    runs = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if path.endswith(".json"):
                with open(path, encoding="utf-8") as fh:
                    runs.append(json.load(fh))
    variants = {}
    for r in runs:
        variants.setdefault(r["label"], []).append(r)
    cells = list(runs[0]["cells"]) if runs else []
    lines = ["| variant | seeds | " + " | ".join(cells) + " | dead heads | unhealthy cells |",
             "|---|---|" + "---|" * len(cells) + "---|---|"]

    def num(x):
        return float("nan") if x is None else float(x)

    for label, rs in variants.items():
        row = [label, str(len(rs))]
        dead = unhealthy = 0
        for c in cells:
            aucs = np.array([num(r["cells"][c]["auc"]) for r in rs])
            cals = np.array([num(r["cells"][c]["calibration"]) for r in rs])
            pos = rs[0]["cells"][c]["positives"]
            dead += int(np.sum(cals < 0.01))
            if pos >= min_positives:
                count = rs[0]["cells"][c].get("count")
                half = np.array([metrics.auc_half_width(a, pos, count - pos) if count else 0.0
                                 for a in aucs])
                unhealthy += int(np.sum(~((cals >= 0.5) & (cals <= 2) & (aucs - 0.5 > half))))
            worst = cals[np.nanargmax(np.abs(np.log(cals)))] if np.isfinite(cals).any() \
                else float("nan")
            mark = "" if pos >= min_positives else f" ({pos} pos)"
            row.append(f"{np.nanmean(aucs):.3f} / {worst:.2g}{mark}")
        row += [str(dead), str(unhealthy)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv):
    if FLAGS.summarize:
        print(summarize(FLAGS.summarize))
        return
    if not FLAGS.data or not FLAGS.out:
        sys.exit("--data and --out are required")
    run(argv)


if __name__ == "__main__":
    app.run(main)
