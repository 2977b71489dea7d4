import builtins
import math

import numpy as np
import pytest

from tfmdl import models
from tfmdl.benchmark import peer
from tfmdl.pipelines import spec as spec_lib

pytest.importorskip("deepctr", reason="the peer benchmark needs the bench extra")


def test_peer_spec_drops_sequences_and_their_references(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    seq = [f.name for f in spec.features if f.type == spec_lib.SEQUENCE]
    assert seq
    reduced = peer.peer_spec(spec)
    names = {f.name for f in reduced.features}
    assert not names & set(seq)
    assert names == {f.name for f in spec.features} - set(seq)
    for group in reduced.semantic_groups.values():
        assert not set(group) & set(seq)


# shared_bottom's architecture is compared in test_ratio_is_the_median_of_the_rounds
@pytest.mark.parametrize("model", ["mmoe", "ple"])
def test_both_libraries_build_the_same_architecture(feed_dir, model):
    result = peer.run(model, feed_dir, train=1024, eval_examples=512, batch_size=128,
                      warmup_steps=1, steps=2, rounds=1, log=lambda _: None)
    assert result["ratio"] > 0
    sides = result["sides"]
    # same embeddings, experts, gates, towers and per-task output biases; tfmdl
    # adds one output offset per (scenario, task) cell (base.OutputBias)
    spec = spec_lib.load_spec(feed_dir)
    assert sides["tfmdl"]["params"] == \
        sides["deepctr"]["params"] + spec.scenario.count * len(spec.tasks)
    assert result["steps_trained"] == 3
    for side in sides.values():
        assert side["examples_per_second"] > 0
        assert set(side["auc"]) == set(spec_lib.load_spec(feed_dir).task_names)
        # rare tasks may have no positive among 512 eval rows: AUC undefined (NaN)
        assert all(math.isnan(v) or 0 <= v <= 1 for v in side["auc"].values())
        assert not math.isnan(side["auc"]["finish"])
    assert len(result["round_ratios"]) == 1
    assert result["ratio"] == pytest.approx(result["round_ratios"][0])
    # one round: the median round ratio is the ratio of the totals
    assert result["ratio_of_totals"] == pytest.approx(
        sides["tfmdl"]["examples_per_second"] / sides["deepctr"]["examples_per_second"])
    assert result["ratio"] == pytest.approx(result["ratio_of_totals"])
    text = peer.format_result(result)
    assert "speed ratio tfmdl / DeepCTR" in text and "| DeepCTR |" in text


def test_missing_deepctr_names_the_extra(feed_dir, monkeypatch):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("deepctr"):
            raise ImportError("No module named 'deepctr'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    spec = peer.peer_spec(spec_lib.load_spec(feed_dir))
    with pytest.raises(ImportError, match=r"pip install 'tfmdl\[bench\]'"):
        peer.build_deepctr("mmoe", spec, peer.Arch())


def _offsets(data_dir):
    """tfmdl's (scenario, task) output offsets: S x K weights DeepCTR has no peer of."""
    spec = spec_lib.load_spec(data_dir)
    return spec.scenario.count * len(spec.tasks)


def test_unknown_model_is_named(feed_dir):
    with pytest.raises(ValueError, match=r"--model: 'star' has no DeepCTR peer"):
        peer.run("star", feed_dir)


def test_ratio_is_the_median_of_the_rounds(feed_dir):
    result = peer.run("shared_bottom", feed_dir, train=512, eval_examples=256, batch_size=128,
                      warmup_steps=1, steps=1, rounds=3, log=lambda _: None)
    rounds = result["round_ratios"]
    assert len(rounds) == 3 and result["steps_trained"] == 4
    sides = result["sides"]
    # same architecture, plus tfmdl's (scenario, task) output offsets
    assert sides["tfmdl"]["params"] == sides["deepctr"]["params"] + _offsets(feed_dir)
    assert all(side["examples_per_second"] > 0 for side in sides.values())
    assert result["ratio"] == pytest.approx(sorted(rounds)[1])
    assert "median of 3 rounds" in peer.format_result(result)


def test_too_few_examples_for_a_batch_is_named(feed_dir):
    with pytest.raises(ValueError, match=r"--train=100 examples are fewer than one batch"):
        peer.run("shared_bottom", feed_dir, train=100, eval_examples=64, batch_size=128)


def test_adagrad_tables_on_both_sides(feed_dir):
    result = peer.run("shared_bottom", feed_dir, train=512, eval_examples=256, batch_size=128,
                      warmup_steps=1, steps=1, rounds=1, table_optimizer="adagrad",
                      log=lambda _: None)
    assert result["table_optimizer"] == "adagrad"
    assert result["sides"]["tfmdl"]["params"] == \
        result["sides"]["deepctr"]["params"] + _offsets(feed_dir)


def test_deepctr_gets_the_same_table_split(feed_dir):
    spec = peer.peer_spec(spec_lib.load_spec(feed_dir))
    model = peer.build_deepctr("shared_bottom", spec, peer.Arch())
    table, dense = peer.optimizer_configs("adagrad", 1e-3)
    assert (table.name, table.learning_rate, dense.name) == ("adagrad", 0.05, "adam")
    opt = peer.deepctr_optimizer(model, (table, dense))
    assert type(opt).__name__ == "CompositeOptimizer"
    same = peer.deepctr_optimizer(model, peer.optimizer_configs("adam", 1e-3))
    assert type(same).__name__ == "Adam"
    with pytest.raises(ValueError, match=r"--table_optimizer: 'ftrl' is not one of"):
        peer.optimizer_configs("ftrl", 1e-3)


def test_matmul_flops_count_every_kernel_three_times(feed_dir):
    spec = peer.peer_spec(spec_lib.load_spec(feed_dir))
    built = models.build("shared_bottom", spec, peer.tfmdl_params("shared_bottom", peer.Arch()))
    first = [v for v in built.core.trainable_variables if "dense_0/kernel" in v.name]
    d = first[0].shape[0]                                           # embedding concat width
    T = len(spec.task_names)
    macs = d * 256 + 256 * 128 + T * (128 * 64 + 64 * 1)              # Arch defaults
    macs += spec.scenario.count * T                    # scenario share x output offsets
    assert peer.matmul_flops_per_example(built.core) == 6 * macs


def test_matmul_rate_is_a_plausible_flop_rate():
    rate = peer.matmul_rate(64, seconds=0.05)
    assert 1e8 < rate < 1e13


def test_result_reports_each_side_against_the_matmul_bound(feed_dir):
    result = peer.run("shared_bottom", feed_dir, train=512, eval_examples=256, batch_size=128,
                      warmup_steps=1, steps=1, rounds=1, log=lambda _: None)
    mm = result["matmul"]
    assert mm["bound_examples_per_second"] == pytest.approx(mm["rate"] / mm["flops_per_example"])
    for side in result["sides"].values():
        assert side["share_of_bound"] == pytest.approx(
            side["examples_per_second"] / mm["bound_examples_per_second"])
    assert "matmul bound:" in peer.format_result(result)
    floor = result["floor"]
    assert floor["products"] == 5  # shared_bottom: bottom 2 layers, towers 2, output offsets
    assert floor["flops_per_step"] == 128 * mm["flops_per_example"]
    assert floor["step_seconds"] == min(floor["seconds_per_step"].values()) > 0
    for side in result["sides"].values():
        assert side["step_seconds"] == pytest.approx(128 / side["examples_per_second"])
    assert "matmul floor: the model's 5 products" in peer.format_result(result)


def test_race_batches_have_autotuning_off(feed_dir):
    x = {"a": np.arange(8)}
    ds, n = peer._batches(x, {"t": np.ones(8)}, {"t": np.ones(8)}, np.arange(8), 4)
    assert n == 2 and ds.options().autotune.enabled is False


def test_deepctr_side_can_train_its_own_default_tables(feed_dir, monkeypatch):
    """--deepctr_table_optimizer races tfmdl's tables against DeepCTR's defaults."""
    seen = []
    real = peer.deepctr_optimizer
    monkeypatch.setattr(peer, "deepctr_optimizer",
                        lambda model, opts: seen.append(opts) or real(model, opts))
    result = peer.run("shared_bottom", feed_dir, train=1024, eval_examples=512,
                      batch_size=128, warmup_steps=1, steps=1, rounds=1,
                      table_optimizer="adagrad", deepctr_table_optimizer="adam",
                      log=lambda _: None)
    assert result["table_optimizer"] == "adagrad"
    assert result["deepctr_table_optimizer"] == "adam"
    (table, dense), = seen
    assert table.name == "adam" and dense.name == "adam"
