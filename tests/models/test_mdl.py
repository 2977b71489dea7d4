import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tests.models import zoo_checks
from tfmdl import metrics
from tfmdl import models
from tfmdl.layers import mdl_block
from tfmdl.models import cost
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib

SMALL = {"layers": 2, "width": 48, "heads": 4, "ffn_mult": 1}
FULL_CYCLE = ["mdl"]   # build, XLA train, save/load (test_trainer checks all are covered)


def _spec(d):
    return spec_lib.load_spec(d)


def _batch(spec, d, n=64, split="eval"):
    return next(iter(reader.make_dataset(spec, d, n, split=split, shuffle=False)))


def _fit_ds(spec, d, batch=256, **kw):
    ds = reader.make_dataset(spec, d, batch, split="train", seed=0, **kw)
    return ds.map(lambda f, l, w: (f, {k: v[:, None] for k, v in l.items()},
                                   {k: v[:, None] for k, v in w.items()}))


def _compile(model, spec, **kw):
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss={t: "binary_crossentropy" for t in spec.task_names}, **kw)


def test_builds_with_one_named_probability_per_task(feed_dir):
    spec = _spec(feed_dir)
    built = models.build("mdl", spec, SMALL)
    assert sorted(built.model.output_names) == sorted(spec.task_names)
    f, _, _ = _batch(spec, feed_dir)
    out = built.model(f)
    assert set(out) == set(spec.task_names)
    for t in spec.task_names:
        p = out[t].numpy()
        assert p.shape == (64, 1) and ((p > 0) & (p < 1)).all()
    # the model's inputs are exactly the spec's features + the scenario field
    assert set(built.model.input) == set(spec.feature_names) | {"scenario_id"}


def test_config_errors_name_the_key(feed_dir):
    spec = _spec(feed_dir)
    with pytest.raises(ValueError, match=r"params \(mdl\)\.widht: unknown key\. Did you mean 'width'"):
        models.build("mdl", spec, {"widht": 64})
    with pytest.raises(ValueError, match="'mdll' is not a registered model. Did you mean 'mdl'"):
        models.build("mdll", spec)
    with pytest.raises(ValueError, match=r"width \(50\) must be divisible by heads \(4\)"):
        models.build("mdl", spec, {"width": 50})
    with pytest.raises(ValueError, match="divisible by the number of tokens"):
        models.build("mdl", spec, {"width": 52, "heads": 4})


def test_from_config_file_with_overrides(feed_dir, tmp_path):
    spec = _spec(feed_dir)
    built = models.from_config("configs/mdl_feed.yaml", spec,
                               overrides=["params.width=48", "params.layers=1"])
    assert built.params.width == 48 and built.params.layers == 1
    with pytest.raises(ValueError, match=r"mdl_feed\.yaml: params\.layer: unknown key\. Did you mean 'layers'"):
        models.load_config("configs/mdl_feed.yaml", ["params.layer=3"])


def test_out_of_range_scenario_id_names_the_feature(feed_dir):
    spec = _spec(feed_dir)
    built = models.build("mdl", spec, SMALL)
    f, _, _ = _batch(spec, feed_dir, 8)
    f = dict(f, scenario_id=tf.constant([0, 1, 2, 0, 1, 0, 1, 0], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"scenario feature scenario_id must hold ids in \[0, 2\)"):
        built.model(f)


def _layer_names(model):
    return {l.name for l in model.submodules if hasattr(l, "name")}


@pytest.mark.parametrize("switch,present,absent,aux_keys", [
    ({}, {"scenario_tokenizer", "task_tokenizer", "task_logits"},
     {"task_towers", "scenario_task_heads"}, {"layer_0/scenario", "layer_0/task"}),
    ({"no_task_tokens": True}, {"scenario_tokenizer", "task_towers"}, {"task_tokenizer"},
     {"layer_0/scenario"}),
    ({"task_interaction": "mixing"}, {"task_tokenizer", "scenario_tokenizer"}, set(),
     {"layer_0/scenario"}),
    ({"no_scenario_tokens": True}, {"task_tokenizer", "scenario_task_heads"},
     {"scenario_tokenizer"}, {"layer_0/task"}),
    ({"no_global_token": True}, {"scenario_tokenizer", "task_tokenizer"}, set(),
     {"layer_0/scenario", "layer_0/task"}),
    ({"scenario_interaction": "mixing", "width": 72}, {"scenario_tokenizer"}, set(),
     {"layer_0/task"}),
    ({"no_task_tokens": True, "no_scenario_tokens": True},
     {"task_towers", "scenario_task_heads"}, {"scenario_tokenizer", "task_tokenizer"}, set()),
])
def test_every_ablation_builds_and_changes_the_graph(feed_dir, switch, present, absent, aux_keys):
    spec = _spec(feed_dir)
    params = dict(SMALL, layers=1, **switch)
    built = models.build("mdl", spec, params)
    names = _layer_names(built.core)
    assert present <= names, names
    assert not absent & names
    f, _, _ = _batch(spec, feed_dir, 16)
    out = built.model(f)
    assert all(np.isfinite(out[t].numpy()).all() for t in spec.task_names)
    aux = set(built.aux.output) if built.aux is not None else set()
    assert aux == aux_keys
    block = [l for l in built.core.submodules if isinstance(l, mdl_block.MDLBlock)][0]
    assert block.use_global == (not switch.get("no_global_token", False))
    assert block.scenario_mode == ("none" if switch.get("no_scenario_tokens")
                                   else switch.get("scenario_interaction", "daa"))
    assert block.task_mode == ("none" if switch.get("no_task_tokens")
                               else switch.get("task_interaction", "daa"))


def test_no_global_token_changes_predictions(feed_dir):
    spec = _spec(feed_dir)
    a = models.build("mdl", spec, dict(SMALL, layers=1))
    b = models.build("mdl", spec, dict(SMALL, layers=1, no_global_token=True))
    b.model.set_weights(a.model.get_weights())
    f, _, _ = _batch(spec, feed_dir, 16)
    pa, pb = a.model(f)["like"].numpy(), b.model(f)["like"].numpy()
    assert not np.allclose(pa, pb)


def test_instance_gradient_reaches_only_its_scenario_and_global_tokens(feed_dir):
    spec = _spec(feed_dir)
    built = models.build("mdl", spec, dict(SMALL, layers=2))
    f, _, _ = _batch(spec, feed_dir, 64)
    scen = f["scenario_id"].numpy()
    row = int(np.flatnonzero(scen == 1)[0])
    one = {k: v[row:row + 1] for k, v in f.items()}
    tokenizer = built.core.get_layer("scenario_tokenizer")
    with tf.GradientTape() as tape:
        out = built.model(one)
        loss = tf.add_n([tf.reduce_sum(out[t]) for t in spec.task_names])
    grads = tape.gradient(loss, tokenizer.trainable_weights)
    kernels = [(w, g) for w, g in zip(tokenizer.trainable_weights, grads)
               if w.shape.rank >= 2 and w.shape[0] == 3]
    assert kernels
    for w, g in kernels:
        per_token = np.abs(tf.convert_to_tensor(g).numpy()).reshape(3, -1).sum(axis=1)
        assert per_token[0] == 0, w.name          # scenario 0 ("featured"): untouched
        assert per_token[1] > 0 and per_token[2] > 0, w.name   # own scenario + global


def test_attention_readout(feed_dir):
    spec = _spec(feed_dir)
    built = models.build("mdl", spec, SMALL)
    f, _, _ = _batch(spec, feed_dir, 8)
    att = built.aux_outputs(f)
    T = len(spec.semantic_groups)
    assert set(att) == {"layer_0/scenario", "layer_0/task", "layer_1/scenario", "layer_1/task"}
    assert att["layer_1/scenario"].shape == (8, 4, spec.scenario.count + 1, T)
    assert att["layer_0/task"].shape == (8, 4, len(spec.tasks), T)
    np.testing.assert_allclose(att["layer_0/task"].numpy().sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", FULL_CYCLE)
def test_builds_trains_under_xla_and_round_trips(name, feed_dir, tmp_path):
    zoo_checks.check_full_cycle(name, SMALL, feed_dir, tmp_path)


def test_trains_in_two_replica_mirrored_strategy(feed_dir, two_cpus, mirrored):
    spec = _spec(feed_dir)
    strategy = mirrored
    with strategy.scope():
        built = models.build("mdl", spec, SMALL)
        _compile(built.model, spec)
    # two cached batches per epoch: the step traced per replica is the cost, not the data
    ds = _fit_ds(spec, feed_dir).take(2).cache().repeat()
    hist = built.model.fit(ds, epochs=2, steps_per_epoch=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_flops_counter_on_a_dense_model():
    x = keras.Input((4,))
    y = keras.layers.Dense(8)(x)
    fn = tf.function(keras.Model(x, y))
    graph = fn.get_concrete_function(tf.TensorSpec([1, 4])).graph
    assert cost.graph_matmul_flops(graph) == 2 * 4 * 8
    assert cost._einsum_flops("bnd,ndh->bnh", [tf.TensorShape([2, 3, 4]),
                                               tf.TensorShape([3, 4, 5])]) == 2 * 2 * 3 * 4 * 5


def test_model_info(feed_dir):
    spec = _spec(feed_dir)
    built = models.build("mdl", spec, SMALL)
    info = cost.model_info(built)
    emb = sum(int(np.prod(w.shape)) for w in built.model.trainable_weights
              if "embedding" in w.name)
    assert info["params_embedding"] == emb > 0
    assert info["params_total"] == built.model.count_params()
    wide = cost.model_info(models.build("mdl", spec, dict(SMALL, width=96)))
    assert wide["flops_per_example"] > 2 * info["flops_per_example"] > 0


@pytest.mark.slow
def test_mdl_beats_a_constant_on_search_click(search_dir):
    spec = _spec(search_dir)
    built = models.build("mdl", spec, dict(SMALL, width=56, heads=4))
    _compile(built.model, spec)
    built.model.fit(_fit_ds(spec, search_dir, batch=128), epochs=3, verbose=0)
    labels, preds = [], []
    for f, l, w in reader.make_dataset(spec, search_dir, 500, split="eval", shuffle=False):
        labels.append(l["click"].numpy())
        preds.append(built.model(f)["click"].numpy()[:, 0])
    auc = metrics.auc(np.concatenate(labels), np.concatenate(preds))
    assert auc > 0.6, auc
