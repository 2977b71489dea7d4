"""Training: the Python API (plain model.fit) and the tfmdl train command."""

import dataclasses
import importlib
import os
import pkgutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
import yaml

from tfmdl import config as config_lib
from tfmdl.models import registry
from tfmdl.pipelines import example_codec as codec
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord
from tfmdl.training import config as train_config
from tfmdl.training import model_dir as model_dir_lib
from tfmdl.training import trainer

SMALL = {"layers": 1, "width": 48, "heads": 4, "ffn_mult": 1}


def _config(tmp_path, **training):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": "mdl", "params": SMALL,
                                    "training": {"batch_size": 256, **training}}))
    return str(path)


def run_cli(*args, check=True, timeout=600):
    out = subprocess.run([sys.executable, "-m", "tfmdl.cli.main"] + list(args),
                         capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}")
    return out


def test_python_api_with_plain_model_fit(feed_dir, tmp_path):
    m = str(tmp_path / "m")
    run = trainer.prepare(_config(tmp_path, epochs=2, jit_compile="off"), feed_dir, m)
    assert not run.jit_compile and run.model is run.built.model
    history = run.model.fit(run.train_data, epochs=run.epochs,
                            validation_data=run.validation_data, callbacks=run.callbacks,
                            verbose=0)
    run.finish(history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert "val_finish_auc" in history.history
    for name in ("config.yaml", "spec.yaml", "train_summary.json", "weights/final.index"):
        assert os.path.exists(os.path.join(m, name)), name
    resolved = yaml.safe_load(open(os.path.join(m, "config.yaml")))
    assert resolved["params"]["width"] == 48 and resolved["training"]["epochs"] == 2
    assert resolved["training"]["embedding_optimizer"]["name"] == "adagrad"
    loaded, _ = model_dir_lib.load_trained(m)
    f, _, _ = next(iter(reader.make_dataset(run.spec, feed_dir, 64, split="eval",
                                            shuffle=False)))
    np.testing.assert_allclose(loaded.model(f)["like"].numpy(),
                               run.built.model(f)["like"].numpy(), rtol=1e-5)


def test_validation_fraction_validates_on_held_out_training_rows(feed_dir, tmp_path):
    run = trainer.prepare(_config(tmp_path, epochs=2, jit_compile="off",
                                  validation_fraction=0.25,
                                  early_stopping={"metric": "val_loss", "patience": 1}),
                          feed_dir, str(tmp_path / "m"))

    def count(ds):
        return sum(int(f["user_id"].shape[0]) for f, _, _ in ds)

    n_train, n_val = count(run.train_data), count(run.validation_data)
    assert n_train + n_val == 4000 and 800 < n_val < 1200   # the training split, not eval
    history = run.fit(verbose=0)
    assert len(history.history["val_loss"]) >= 1
    resolved = yaml.safe_load(open(os.path.join(str(tmp_path / "m"), "config.yaml")))
    assert resolved["training"]["validation_fraction"] == 0.25
    with pytest.raises(Exception, match="validation_fraction must be in"):
        trainer.prepare(_config(tmp_path, validation_fraction=1.5), feed_dir,
                        str(tmp_path / "m2"))


def test_adagrad_initial_accumulator_reaches_the_optimizer():
    opt = trainer.make_optimizer(train_config.OptimizerConfig(name="adagrad",
                                                              initial_accumulator=0.01))
    assert opt.get_config()["initial_accumulator_value"] == pytest.approx(0.01)
    default = trainer.make_optimizer(train_config.OptimizerConfig(name="adagrad"))
    assert default.get_config()["initial_accumulator_value"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="initial_accumulator must be positive"):
        train_config.OptimizerConfig(name="adagrad", initial_accumulator=0)


def test_split_optimizer_puts_tables_on_adagrad(feed_dir, tmp_path):
    run = trainer.prepare(_config(tmp_path, steps=2, jit_compile="off"), feed_dir,
                          str(tmp_path / "m"))
    opt = run.model.optimizer
    emb_opt, dense_opt = opt.optimizers
    assert isinstance(emb_opt, keras.optimizers.legacy.Adagrad)
    assert isinstance(dense_opt, keras.optimizers.legacy.Adam)
    run.model.fit(run.train_data, epochs=1, steps_per_epoch=2, verbose=0)
    emb_slots = {v.name for v in emb_opt.weights}
    dense_slots = {v.name for v in dense_opt.weights}
    assert any("embedding_user_id" in n for n in emb_slots)
    assert not any("embedding_" in n for n in dense_slots)
    assert any("kernel" in n for n in dense_slots)


def test_auto_schedule_anneals_the_dense_rate_to_zero_at_the_end_of_the_run(feed_dir, tmp_path):
    m = str(tmp_path / "m")
    run = trainer.prepare(_config(tmp_path, epochs=2, jit_compile="off", validate=False),
                          feed_dir, m)
    records = tfrecord.expected_records(reader.resolve_files(feed_dir, "train"))
    steps = 2 * -(-records // 256)
    emb_opt, dense_opt = run.model.optimizer.optimizers
    schedule = dense_opt.learning_rate
    assert isinstance(schedule, trainer.Anneal)
    tail = max(round(0.1 * steps), 1)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(steps - tail)) == pytest.approx(1e-3)
    assert float(schedule(steps)) == pytest.approx(0.0, abs=1e-9)
    assert not callable(emb_opt.learning_rate)  # the tables' rate stays constant
    dense = yaml.safe_load(open(os.path.join(m, "config.yaml")))["training"]["dense_optimizer"]
    assert dense["schedule"] == "anneal" and dense["decay_steps"] == steps


def test_anneal_schedule_against_numpy():
    schedule = trainer.Anneal(0.01, 200, 0.25)
    t = np.arange(0, 230)
    tail = 50
    want = 0.01 * 0.5 * (1 + np.cos(np.pi * np.clip((t - (200 - tail)) / tail, 0, 1)))
    np.testing.assert_allclose([float(schedule(i)) for i in t], want, atol=1e-8)
    assert want[150] == pytest.approx(0.01) and want[175] == pytest.approx(0.005)
    restored = trainer.Anneal(**schedule.get_config())
    assert float(restored(180)) == pytest.approx(float(schedule(180)))
    with pytest.raises(ValueError, match="anneal_fraction must be in"):
        train_config.OptimizerConfig(anneal_fraction=0)


def test_anneal_restart_moves_the_cosine():
    schedule = trainer.Anneal(0.01, 200, 0.1)
    schedule.restart_at(60, 20)
    t = np.arange(0, 100)
    want = 0.01 * 0.5 * (1 + np.cos(np.pi * np.clip((t - 60) / 20, 0, 1)))
    np.testing.assert_allclose([float(schedule(i)) for i in t], want, atol=1e-8)
    opt = trainer.make_optimizer(train_config.OptimizerConfig(schedule="anneal",
                                                              decay_steps=100))
    assert trainer.anneal_schedule(opt) is opt.learning_rate
    assert trainer.anneal_schedule(trainer.make_optimizer(train_config.OptimizerConfig())) \
        is None


class _ScriptedMonitor(keras.callbacks.Callback):
    """Overwrites ``val_loss`` in each epoch's logs with the next scripted value
    (placed before the early-stopping callback, which reads the same logs)."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights, self.steps = list(values), [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.steps.append(int(self.model.optimizer.iterations))
        if epoch < len(self.values):
            logs["val_loss"] = self.values[epoch]


def test_stop_and_anneal_restores_the_best_weights_and_anneals_them():
    x = np.random.default_rng(0).normal(size=(640, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = keras.Sequential([keras.layers.Dense(1, activation="sigmoid")])
    schedule = trainer.Anneal(0.01, 200, 0.1)
    model.compile(keras.optimizers.legacy.Adam(schedule), "binary_crossentropy")
    script = _ScriptedMonitor([1.0, 0.5, 0.6, 0.7, 0.8])
    stopper = trainer.StopAndAnneal("val_loss", 1, "auto", schedule, fraction=0.25)
    restored = []
    grab = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: restored.append(model.get_weights()) if e == 3 else None)
    history = model.fit(x, y, batch_size=32, epochs=5, verbose=0,
                        validation_data=(x[:64], y[:64]), callbacks=[script, stopper, grab])
    # 20 steps per epoch; best at epoch 2 (40 steps), no better at epoch 3: restore
    # epoch 2's weights at step 60 and anneal them over 0.25 * 40 = 10 steps
    assert len(history.epoch) == 4 and int(model.optimizer.iterations) == 70
    for got, want in zip(restored[0], script.weights[1]):
        np.testing.assert_array_equal(got, want)
    assert float(schedule(59)) == pytest.approx(0.01) and float(schedule(70)) == 0.0
    assert len(history.history["val_loss"]) == 4   # the annealed weights are validated
    assert stopper.report() == {"monitor": "val_loss", "mode": "min", "patience": 1,
                                "best": 0.5, "best_epoch": 2, "stopped_epoch": 3,
                                "anneal_steps": 10}
    assert stopper.pending_steps() == 0


def test_early_stopping_in_the_last_epoch_anneals_in_a_tail_fit(feed_dir, tmp_path):
    m = str(tmp_path / "m")
    run = trainer.prepare(_config(tmp_path, epochs=2, jit_compile="off",
                                  validation_fraction=0.2,
                                  early_stopping={"metric": "val_loss", "patience": 1}),
                          feed_dir, m)
    assert isinstance(run.early_stopping, trainer.StopAndAnneal)
    script = _ScriptedMonitor([0.5, 0.9])
    run.callbacks.insert(0, script)
    history = run.fit(verbose=0)
    summary = run.finish(history)
    report = summary["early_stopping"]
    assert report["best_epoch"] == 1 and report["stopped_epoch"] == 2
    assert report["anneal_steps"] == max(round(0.1 * script.steps[0]), 1)
    assert len(history.history["val_loss"]) == 3   # the tail's validation
    steps = int(run.model.optimizer.iterations)
    assert steps == script.steps[1] + report["anneal_steps"]
    schedule = trainer.anneal_schedule(run.model.optimizer.optimizers[1])
    assert float(schedule(steps)) == 0.0
    assert float(schedule(script.steps[1])) == pytest.approx(1e-3)


def test_resolve_schedules():
    cfg = train_config.TrainingConfig(epochs=3, validation_fraction=0.2, batch_size=100)
    assert trainer.total_steps(cfg, 1000) == 3 * 8
    assert trainer.total_steps(cfg, None) is None
    assert trainer.total_steps(dataclasses.replace(cfg, steps=50), None) == 50
    out = trainer.resolve_schedules(cfg, 24)
    assert (out.dense_optimizer.schedule, out.dense_optimizer.decay_steps) == ("anneal", 24)
    assert out.embedding_optimizer.schedule == "constant"
    assert trainer.resolve_schedules(cfg, None).dense_optimizer.schedule == "constant"
    explicit = dataclasses.replace(cfg, dense_optimizer=train_config.OptimizerConfig(
        schedule="exponential", decay_steps=7))
    assert trainer.resolve_schedules(explicit, 24).dense_optimizer.decay_steps == 7
    open_ended = dataclasses.replace(cfg, embedding_optimizer=train_config.OptimizerConfig(
        name="adagrad", schedule="cosine"))
    assert trainer.resolve_schedules(open_ended, 24).embedding_optimizer.decay_steps == 24
    with pytest.raises(config_lib.ConfigError,
                       match=r"training.embedding_optimizer.decay_steps: 0 means the run"):
        trainer.resolve_schedules(open_ended, None)
    with pytest.raises(ValueError, match="not resolved"):
        trainer.make_optimizer(open_ended.embedding_optimizer)


def test_loss_weights_scale_the_total_loss(feed_dir, tmp_path):
    weights = {"like": 3.0, "finish": 0.5}
    run = trainer.prepare(_config(tmp_path, steps=3, jit_compile="off", loss_weights=weights,
                                  validate=False), feed_dir, str(tmp_path / "m"))
    h = run.model.fit(run.train_data, epochs=1, steps_per_epoch=3, verbose=0).history
    total = sum(weights.get(t, 1.0) * h[f"{t}_loss"][0] for t in run.spec.task_names)
    assert h["loss"][0] == pytest.approx(total, rel=1e-3)


def test_mixed_bfloat16_keeps_float32_outputs(feed_dir, tmp_path):
    try:
        run = trainer.prepare(_config(tmp_path, steps=2, jit_compile="off",
                                      mixed_precision="mixed_bfloat16", validate=False),
                              feed_dir, str(tmp_path / "m"))
        h = run.model.fit(run.train_data, epochs=1, steps_per_epoch=2, verbose=0).history
        assert np.isfinite(h["loss"]).all()
        f, _, _ = next(iter(reader.make_dataset(run.spec, feed_dir, 8, split="eval")))
        out = run.built.model(f)
        assert all(out[t].dtype == tf.float32 for t in run.spec.task_names)
        dense = [l for l in run.built.core.layers if l.name == "feature_tokenizer"][0]
        assert dense.compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_every_registered_model_trains_under_xla():
    """The trainer's XLA path (``jit_compile`` on looked-up features, `split_optimizer`
    with dense embedding gradients) runs for every registered model in that model's
    test_builds_trains_under_xla_and_round_trips (tests/models/zoo_checks.py
    `train_steps_under_xla`: the loss falls, then a save/load round trip), one XLA
    compile per model. Each tests/models module lists those models as FULL_CYCLE;
    none may be left out."""
    import tests.models

    covered = set()
    for info in pkgutil.iter_modules(tests.models.__path__):
        if info.name.startswith("test_"):
            module = importlib.import_module(f"tests.models.{info.name}")
            covered |= set(getattr(module, "FULL_CYCLE", ()))
    assert covered == set(registry.names()), sorted(set(registry.names()) ^ covered)


def test_jit_auto_rules(two_cpus, mirrored):
    default = tf.distribute.get_strategy()
    assert trainer.resolve_jit("auto", default) is True
    assert trainer.resolve_jit("auto", default, embedding_params=10**9,
                               dense_tables=True) is False
    assert trainer.resolve_jit("off", default) is False
    assert trainer.resolve_jit("auto", mirrored) is False
    with pytest.raises(trainer.TrainingError, match="MirroredStrategy over logical CPU"):
        trainer.resolve_jit("on", mirrored)


def test_float_fields_take_exponent_literals_yaml_reads_as_strings():
    """PyYAML (YAML 1.1) reads ``1e-4`` as the string '1e-4'; a float field takes it
    as the number, from a config file or a ``--set`` override. Other strings stay
    errors that name the key."""
    raw = config_lib.apply_overrides({}, ["dense_optimizer.learning_rate=1e-4",
                                          "embedding_optimizer.learning_rate=5E-2",
                                          "loss_weights.like=2e0"])
    assert raw["dense_optimizer"]["learning_rate"] == "1e-4"   # what YAML hands over
    cfg = config_lib.dataclass_from_dict(train_config.TrainingConfig, raw, "training")
    assert cfg.dense_optimizer.learning_rate == 1e-4
    assert cfg.embedding_optimizer.learning_rate == 0.05
    assert cfg.loss_weights == {"like": 2.0}
    for bad in ("1e-4x", "fast", "e-4", ""):
        with pytest.raises(config_lib.ConfigError,
                           match=r"training\.dense_optimizer\.learning_rate: expected a number"):
            config_lib.dataclass_from_dict(train_config.TrainingConfig,
                                           {"dense_optimizer": {"learning_rate": bad}}, "training")


def test_config_errors_name_the_key(feed_dir, tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(ValueError, match=r"training\.batchsize: unknown key\. Did you mean 'batch_size'"):
        trainer.prepare(cfg, feed_dir, str(tmp_path / "m"), overrides=["training.batchsize=3"])
    with pytest.raises(ValueError, match=r"training\.loss_weights\.lke: no task 'lke' in the spec\. Did you mean 'like'"):
        trainer.prepare(cfg, feed_dir, str(tmp_path / "m"), overrides=["training.loss_weights={lke: 2}"])
    with pytest.raises(ValueError, match=r"early_stopping\.metric: 'val_like_acu' is not a metric of this run\. Did you mean 'val_like_auc'"):
        trainer.prepare(cfg, feed_dir, str(tmp_path / "m"),
                        overrides=["training.early_stopping.metric=val_like_acu"])
    with pytest.raises(ValueError, match="'rankmix' is not a registered model"):
        trainer.prepare(cfg, feed_dir, str(tmp_path / "m"), overrides=["model=rankmix"])
    with pytest.raises(reader.DataError, match=f"{tmp_path}/nodata"):
        trainer.prepare(cfg, str(tmp_path / "nodata"), str(tmp_path / "m"))


def _bad_data(tmp_path, feed_dir, **columns):
    """A copy of the feed spec with a few hand-written examples."""
    spec = spec_lib.load_spec(feed_dir)
    d = tmp_path / "bad"
    d.mkdir()
    spec_lib.save_spec(spec, str(d / "spec.yaml"))
    n = 64
    cols = {"scenario_id": codec.Column("int64", np.arange(n) % 2)}
    for f in spec.features:
        if f.type == "sequence":
            cols[f.name] = codec.Column("int64", np.ones((n, 2), np.int64))
        elif f.type == "numeric":
            cols[f.name] = codec.Column("float32", np.zeros(n, np.float32))
        else:
            cols[f.name] = codec.Column("int64", np.arange(n) % 3)
    for t in spec.tasks:
        cols[t.label] = codec.Column("int64", np.arange(n) % 2)
    cols.update(columns)
    with tfrecord.ShardedWriter(str(d), "train") as w:
        w.write(codec.encode_examples(cols, n))
    return str(d)


def test_nan_loss_stops_with_a_clear_message(feed_dir, tmp_path):
    n = 64
    # finite inputs (a NaN input is rejected by the reader, test_reader) whose
    # z-score overflows float32: the loss becomes NaN inside the model
    data = _bad_data(tmp_path, feed_dir, user_activity=codec.Column(
        "float32", np.full(n, 3e38, np.float32)))
    run = trainer.prepare(_config(tmp_path, epochs=1, jit_compile="off", validate=False,
                                  batch_size=32), data, str(tmp_path / "m"))
    with pytest.raises(trainer.TrainingError,
                       match=r"loss became NaN/inf at step 1 of epoch 1 .*check the inputs"):
        run.fit(verbose=0)
    assert not model_dir_lib.has_final_weights(str(tmp_path / "m"))


@pytest.mark.slow
def test_cli_bad_labels_and_missing_data_are_named(feed_dir, tmp_path):
    data = _bad_data(tmp_path, feed_dir, label_like=codec.Column("int64", np.full(64, 2)))
    cfg = _config(tmp_path, epochs=1, jit_compile="off", validate=False)
    out = run_cli("train", f"--config={cfg}", f"--data={data}", f"--model_dir={tmp_path}/m",
                  check=False)
    assert out.returncode == 2
    assert "label_like of task like must be 0, 1 or -1" in out.stderr
    out = run_cli("train", f"--config={cfg}", f"--data={tmp_path}/none", f"--model_dir={tmp_path}/m",
                  check=False)
    assert out.returncode == 2 and f"{tmp_path}/none" in out.stderr
    out = run_cli("train", f"--config={cfg}", f"--data={feed_dir}", f"--model_dir={tmp_path}/m",
                  "--set", "params.widht=3", check=False)
    assert out.returncode == 2 and "Did you mean 'width'" in out.stderr


def test_resume_refuses_a_changed_config_before_rewriting_anything(feed_dir, tmp_path):
    """Issue 23 item 8: a backup/ of a width-A run resumed with width B failed deep
    in Keras after config.yaml was already overwritten."""
    m = tmp_path / "m"
    first = trainer.prepare(_config(tmp_path, epochs=1, jit_compile="off", validate=False), feed_dir,
                            str(m))
    assert first.model is not None
    (m / "backup").mkdir()
    (m / "backup" / "chief").write_text("a killed run's state\n")   # what a kill leaves
    before = (m / "config.yaml").read_bytes()
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({"model": "mdl", "params": dict(SMALL, width=SMALL["width"] * 2),
                                       "training": {"batch_size": 256, "epochs": 1}}))
    with pytest.raises(model_dir_lib.ResumeError,
                       match=rf"{m}/backup holds a killed run of another config \(params\.width: "
                             rf"{SMALL['width']} -> {SMALL['width'] * 2}\).* delete {m}/backup"):
        trainer.prepare(str(changed), feed_dir, str(m))
    assert (m / "config.yaml").read_bytes() == before
    # the same config (or other epochs) resumes
    trainer.prepare(_config(tmp_path, epochs=2, jit_compile="off", validate=False), feed_dir, str(m))


def test_a_rejected_config_is_never_written(feed_dir, tmp_path):
    m = tmp_path / "new"
    with pytest.raises(config_lib.ConfigError, match="early_stopping.metric"):
        trainer.prepare(_config(tmp_path, early_stopping={"metric": "val_nope"}), feed_dir, str(m))
    assert not (m / "config.yaml").exists()


def test_killed_run_resumes_from_its_backup(feed_dir, tmp_path):
    m = str(tmp_path / "m")
    cfg = _config(tmp_path, steps=200, epochs=1, jit_compile="off", validate=False,
                  backup_every_steps=25)
    args = [sys.executable, "-m", "tfmdl.cli.main", "train", f"--config={cfg}",
            f"--data={feed_dir}", f"--model_dir={m}", "--verbose=0"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    backup = os.path.join(m, "backup")
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            saved = [f for f in (os.listdir(backup) if os.path.isdir(backup) else [])
                     if f.endswith(".index") or f == "chief"]
            if saved and proc.poll() is None:
                time.sleep(1.0)  # let at least one more step run past the save
                break
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("no backup was written in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not model_dir_lib.has_final_weights(m)
    out = run_cli("train", f"--config={cfg}", f"--data={feed_dir}", f"--model_dir={m}",
                  "--verbose=0")
    assert "resumed from step" in out.stdout, out.stdout
    step = int(out.stdout.split("resumed from step ")[1].split()[0])
    assert 25 <= step < 200 and step % 25 == 0
    assert model_dir_lib.has_final_weights(m)
    built, _ = model_dir_lib.load_trained(m)
    assert built.model is not None
    assert not os.path.exists(backup) or not os.listdir(backup)  # cleaned after finishing


def test_output_bias_prior_is_set_before_training_and_recorded(feed_dir, tmp_path):
    """``output_bias_init: prior`` (the default) sets the bias from the manifest's
    label counts and records it; ``zero`` leaves it at 0."""
    from tfmdl.models import base  # pylint: disable=g-import-not-at-top
    from tfmdl.pipelines import label_stats  # pylint: disable=g-import-not-at-top

    spec = spec_lib.load_spec(feed_dir)
    counts = label_stats.counts_in_manifest(tfrecord.read_manifest(feed_dir), "train", spec)
    assert counts is not None, "synth records label counts in manifest.json"
    m = str(tmp_path / "m")
    run = trainer.prepare(_config(tmp_path, epochs=1, jit_compile="off"), feed_dir, m)
    assert run.output_bias["init"] == "prior"
    assert run.output_bias["rates"] == pytest.approx(counts.rates())
    bias = base.output_bias_layer(run.built).bias.numpy()
    np.testing.assert_allclose(bias, [run.output_bias["bias"][t] for t in spec.task_names],
                               rtol=1e-6)
    # an untrained model predicts the rates on the training rows
    f, _, _ = next(iter(reader.make_dataset(spec, feed_dir, 4000, split="train", shuffle=False)))
    out = run.built.model(f)
    for t in spec.task_names:
        assert abs(float(out[t].numpy().mean()) / counts.rates()[t] - 1) < 0.1, t
    summary = run.finish()
    assert summary["output_bias"]["init"] == "prior"
    assert yaml.safe_load(open(os.path.join(m, "config.yaml")))["training"][
        "output_bias_init"] == "prior"

    zero = trainer.prepare(_config(tmp_path, epochs=1, jit_compile="off",
                                   output_bias_init="zero"), feed_dir, str(tmp_path / "z"))
    assert zero.output_bias == {"init": "zero"}
    assert not np.any(base.output_bias_layer(zero.built).bias.numpy())


def test_epoch_log_keeps_a_resumed_runs_earlier_epochs(tmp_path):
    """Issue 23 item 9: a run killed after its last epoch resumed with nothing to
    train and wrote an empty history; `EpochLog` keeps every epoch in
    M/history.json across the restart."""
    first = trainer.EpochLog(str(tmp_path), resuming=False)
    first.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.6})
    first.on_epoch_end(1, {"loss": 0.4, "val_loss": 0.55})
    resumed = trainer.EpochLog(str(tmp_path), resuming=True)       # nothing left to train
    assert resumed.history() == {"loss": [0.5, 0.4], "val_loss": [0.6, 0.55]}
    resumed.on_epoch_end(1, {"loss": 0.39, "val_loss": 0.5})        # a redone epoch replaces
    resumed.on_epoch_end(2, {"loss": 0.3, "val_loss": 0.45})
    assert resumed.history()["loss"] == [0.5, 0.39, 0.3]
    fresh = trainer.EpochLog(str(tmp_path), resuming=False)        # a new run starts over
    assert fresh.history() == {}


def test_train_summary_history_matches_history_json(feed_dir, tmp_path):
    import json

    m = tmp_path / "m"
    run = trainer.prepare(_config(tmp_path, epochs=2, steps=4, jit_compile="off", validate=False),
                          feed_dir, str(m))
    summary = run.finish(run.fit(verbose=0))
    saved = json.load(open(m / "history.json"))
    assert [e["epoch"] for e in saved["epochs"]] == [0, 1]
    assert summary["history"]["loss"] == [e["logs"]["loss"] for e in saved["epochs"]]
