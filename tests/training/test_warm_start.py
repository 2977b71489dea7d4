"""PMTA's parameter warm-up: `tfmdl.training.warm_start`, ``prepare(warm_start_from=...)``
and ``tfmdl train --warm_start_from``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfmdl import models
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.training import model_dir as model_dir_lib
from tfmdl.training import trainer
from tfmdl.training import warm_start

# the rankmixer source and the pmta target share the backbone and C1 settings
RANKMIXER = {"layers": 1, "width": 24, "tower_hidden": [16]}
PMTA = {"backbone": "rankmixer", "backbone_layers": 1, "backbone_width": 24,
        "classifier_width": 16, "prompt_dim": 8, "tpe_hidden": 16, "tpe_dim": 16,
        "width": 32, "heads": 4, "layers": 1, "ffn_mult": 1, "dar_bottleneck": 8}
QUICK = ["training.steps=3", "training.validate=false"]


def _config(tmp_path, model, params, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": model, "params": params,
                                    "training": {"batch_size": 128}}))
    return str(path)


@pytest.fixture(scope="module")
def rankmixer_dir(feed_dir, tmp_path_factory):
    """A rankmixer model dir trained for 3 steps (the warm-start source)."""
    work = tmp_path_factory.mktemp("warm_start_source")
    model_dir = str(work / "rankmixer")
    run = trainer.prepare(_config(work, "rankmixer", RANKMIXER, "rankmixer"), feed_dir,
                          model_dir, overrides=QUICK + ["training.jit_compile=off"])
    run.finish(run.fit(verbose=0))
    return model_dir


@pytest.mark.slow
def test_prepare_restores_backbone_and_first_classifier_layer(rankmixer_dir, feed_dir, tmp_path,
                                                               monkeypatch):
    source, _ = model_dir_lib.load_trained(rankmixer_dir)
    src = {w.name: w.numpy() for w in source.model.weights}
    fresh = models.build("pmta", spec_lib.load_spec(feed_dir), PMTA)
    logged = []   # absl logging (its handler setup varies with the tests run before)
    monkeypatch.setattr(warm_start.logging, "info", lambda msg, *a: logged.append(msg % a))
    model_dir = str(tmp_path / "pmta")
    run = trainer.prepare(_config(tmp_path, "pmta", PMTA, "pmta"), feed_dir, model_dir,
                          overrides=QUICK + ["training.jit_compile=off"],
                          warm_start_from=rankmixer_dir)
    report = run.warm_start
    expected = {"backbone_tokenizer/kernel:0", "backbone_block_0/ffn/hidden/kernel:0",
                "backbone_block_0/norm2/gamma:0", "task_towers/layer_0/kernel:0",
                "task_towers/layer_0/bias:0", "feature_embedding/embedding_user_id:0"}
    assert expected <= set(report.restored)
    assert not any(n.startswith(("cross_task", "task_prompt", "dar_", "task_logits"))
                   for n in report.restored)
    # every backbone / C1 / shared-embedding weight of the new model is restored; the
    # output bias is not in the scope: the new model keeps its prior (its logits
    # layer is new, so the source's trained bias does not belong to it)
    restorable = ({w.name for w in fresh.model.weights} & set(src)) - {
        "output_bias/bias:0", "output_bias/scenario_bias:0"}
    assert set(report.restored) == restorable
    assert "output_bias/bias:0" not in report.restored
    prior = [run.output_bias["bias"][t] for t in run.spec.task_names]
    np.testing.assert_allclose(
        {w.name: w for w in run.built.model.weights}["output_bias/bias:0"].numpy(), prior,
        rtol=1e-6)
    # the source's logit layer (no bias of its own since the shared output bias) and
    # its output bias are left unused
    assert {"task_towers/layer_1/kernel:0", "output_bias/bias:0",
            "output_bias/scenario_bias:0"} == set(report.unmatched_source)
    assert "feature_embedding/embedding_domain_user_id:0" in report.unmatched_target
    assert "cross_task_transformer/attention_0/query/kernel:0" in report.unmatched_target
    weights = {w.name: w for w in run.built.model.weights}
    for name in report.restored:
        np.testing.assert_array_equal(weights[name].numpy(), src[name], err_msg=name)
    assert "warm start: restored task_towers/layer_0/kernel:0" in logged
    assert "warm start: kept the initial value of dar_0/bottleneck/kernel:0" in logged
    assert logged[0] == report.summary()

    summary = run.finish(run.fit(verbose=0))
    assert summary["warm_start"]["restored"] == len(report.restored)
    saved = json.load(open(os.path.join(model_dir, model_dir_lib.SUMMARY)))
    assert saved["warm_start"]["source"] == rankmixer_dir and saved["model"] == "pmta"
    # training moved on from the source values
    trained = {w.name: w.numpy() for w in run.built.model.weights}
    assert not np.allclose(trained["task_towers/layer_0/kernel:0"],
                           src["task_towers/layer_0/kernel:0"])

    # ... and the result exports for serving like any model
    from tfmdl.serving import export  # pylint: disable=g-import-not-at-top
    exported = export.export(model_dir, str(tmp_path / "export"), "pmta_feed", data=feed_dir)
    serve = tf.saved_model.load(exported.path).signatures["serving_default"]
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(
        reader.resolve_files(feed_dir, "eval")).take(16)]
    scores = serve(examples=tf.constant(records))
    loaded, _ = model_dir_lib.load_trained(model_dir)
    features = reader.make_parse_fn(loaded.spec, include_labels=False)(tf.constant(records))
    keras_out = loaded.model(features, training=False)
    for task in loaded.spec.task_names:
        np.testing.assert_allclose(scores[task].numpy(), keras_out[task].numpy()[:, 0], atol=1e-5)


def test_warm_started_model_starts_at_the_prior(rankmixer_dir, feed_dir, tmp_path):
    """The output-bias prior is solved on the *warm-started* model's logits, so its
    untrained mean prediction is each task's training rate (solved before the
    warm start, the restored backbone would move every logit off the prior)."""
    from tfmdl.pipelines import label_stats  # pylint: disable=g-import-not-at-top
    from tfmdl.pipelines import tfrecord  # pylint: disable=g-import-not-at-top

    spec = spec_lib.load_spec(feed_dir)
    rates = label_stats.counts_in_manifest(tfrecord.read_manifest(feed_dir), "train",
                                           spec).rates()
    run = trainer.prepare(_config(tmp_path, "pmta", PMTA, "pmta"), feed_dir,
                          str(tmp_path / "pmta"), overrides=QUICK + ["training.jit_compile=off"],
                          warm_start_from=rankmixer_dir)
    assert run.warm_start.restored
    f, _, _ = next(iter(reader.make_dataset(spec, feed_dir, 4000, split="train", shuffle=False)))
    out = run.built.model(f)
    for t in spec.task_names:
        assert abs(float(out[t].numpy().mean()) / rates[t] - 1) < 0.1, t


def test_backbone_logit_starts_at_the_backbone_models_function(rankmixer_dir, feed_dir):
    """``backbone_logit: true``: once warm-started, PMTA's logits are its source's
    (the source's tower output layer is restored, the transformer's ``w_k`` is 0);
    without it the source's logit layer is left unused (test above)."""
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("pmta", spec, dict(PMTA, backbone_logit=True))
    assert not built.core.get_layer("task_logits").kernel.numpy().any()
    report = warm_start.warm_start(built, rankmixer_dir)
    assert "task_towers/layer_1/kernel:0" in report.restored
    source, _ = model_dir_lib.load_trained(rankmixer_dir)
    # give the new model the source's output bias (the trainer solves its own prior)
    bias = {w.name: w for w in source.model.weights if w.name.startswith("output_bias/")}
    for w in built.model.weights:
        if w.name in bias:
            w.assign(bias[w.name])
    f, _, _ = next(iter(reader.make_dataset(spec, feed_dir, 64, split="eval", shuffle=False)))
    got, want = built.model(f, training=False), source.model(f, training=False)
    for t in spec.task_names:
        assert np.std(want[t].numpy()) > 1e-4, t       # the source's scores are not constant
        np.testing.assert_allclose(got[t].numpy(), want[t].numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=t)


def test_pmta_on_a_dcnv2_backbone_warm_starts_from_the_dcnv2_model(feed_dir, tmp_path):
    """``backbone: dcnv2``: the source is the plain ``dcnv2`` model with the same
    cross network and MLP (`pmta.backbone_source`); its cross layers, MLP and
    first tower layer are restored."""
    from tfmdl.models import pmta  # pylint: disable=g-import-not-at-top

    spec = spec_lib.load_spec(feed_dir)
    params = dict(PMTA, backbone="dcnv2", backbone_hidden=[16], backbone_cross_layers=2,
                  backbone_projection_dim=4)
    target = models.build("pmta", spec, params)
    source_cfg = pmta.backbone_source(target.params)
    assert source_cfg["model"] == "dcnv2"
    model_dir = str(tmp_path / "dcnv2")
    run = trainer.prepare(_config(tmp_path, source_cfg["model"], source_cfg["params"],
                                  "dcnv2"), feed_dir, model_dir,
                          overrides=QUICK + ["training.jit_compile=off"])
    run.finish(run.fit(verbose=0))
    report = warm_start.warm_start(target, model_dir)
    assert {"backbone_cross_0/dense/kernel:0", "backbone_cross_1/dense_1/bias:0",
            "task_towers/layer_0/kernel:0"} <= set(
                report.restored), sorted(report.restored)
    assert any(n.startswith("backbone_mlp/") for n in report.restored)
    source, _ = model_dir_lib.load_trained(model_dir)
    src = {w.name: w.numpy() for w in source.model.weights}
    for w in target.model.weights:
        if w.name.startswith(("backbone_cross_", "backbone_mlp/")):
            np.testing.assert_array_equal(w.numpy(), src[w.name], err_msg=w.name)


def test_shape_mismatch_names_the_variable_and_both_shapes(rankmixer_dir, feed_dir):
    built = models.build("pmta", spec_lib.load_spec(feed_dir), dict(PMTA, classifier_width=32))
    before = [w.numpy() for w in built.model.weights]
    with pytest.raises(warm_start.WarmStartError,
                       match=r"task_towers/layer_0/kernel:0: source \(6, 26, 16\) vs new "
                             r"\(6, 26, 32\)"):
        warm_start.warm_start(built, rankmixer_dir)
    # nothing was half-restored
    for b, w in zip(before, built.model.weights):
        np.testing.assert_array_equal(b, w.numpy())


def test_warm_start_into_a_mirrored_model(rankmixer_dir, feed_dir, mirrored):
    with mirrored.scope():
        built = models.build("pmta", spec_lib.load_spec(feed_dir), PMTA)
    report = warm_start.warm_start(built, rankmixer_dir)
    source, _ = model_dir_lib.load_trained(rankmixer_dir)
    expected = source.core.get_layer("backbone_block_0").ffn.hidden.kernel.numpy()
    kernel = built.core.get_layer("backbone_block_0").ffn.hidden.kernel
    assert "backbone_block_0/ffn/hidden/kernel:0" in report.restored
    for replica in kernel.values:          # every replica's copy holds the source values
        np.testing.assert_array_equal(replica.numpy(), expected)


def test_source_without_a_backbone_or_missing_dir_is_an_error(feed_dir, tmp_path):
    spec = spec_lib.load_spec(feed_dir)
    target = models.build("pmta", spec, PMTA)
    # MDL shares the embedding tables (and a task_logits layer name) but has no
    # backbone_* / task_towers/layer_0 weights
    source = models.build("mdl", spec, {"layers": 1, "width": 48, "ffn_mult": 1})
    with pytest.raises(warm_start.WarmStartError, match="no backbone or task_towers variable"):
        warm_start.restore_matching(target, source, "models/mdl")
    with pytest.raises(warm_start.WarmStartError, match=r"--warm_start_from: .*nowhere does "
                                                         r"not exist"):
        warm_start.warm_start(target, str(tmp_path / "nowhere"))


def test_cli_train_warm_start_from(rankmixer_dir, feed_dir, tmp_path):
    model_dir = str(tmp_path / "pmta_cli")
    out = subprocess.run(
        [sys.executable, "-m", "tfmdl.cli.main", "train",
         f"--config={_config(tmp_path, 'pmta', PMTA, 'pmta')}", f"--data={feed_dir}",
         f"--model_dir={model_dir}", f"--warm_start_from={rankmixer_dir}", "--steps=2",
         "--jit_compile=off", "--set=training.validate=false", "--verbose=0"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert f"warm start from {rankmixer_dir} (rankmixer): restored" in out.stdout
    summary = json.load(open(os.path.join(model_dir, model_dir_lib.SUMMARY)))
    assert summary["warm_start"]["restored"] > 10
