import pytest
import yaml

from tests.test_cli import run as run_cli

from tfmdl import models
from tfmdl.models import cost
from tfmdl.models import sizing
from tfmdl.pipelines import spec as spec_lib


@pytest.mark.parametrize("name,params,target", [
    ("dnn", {}, 250_000),
    ("mdl", {"layers": 1, "width": 48}, 600_000),
])
def test_fit_to_budget_lands_within_tolerance(feed_dir, name, params, target):
    spec = spec_lib.load_spec(feed_dir)
    fit = sizing.fit_to_budget(name, spec, target, params)
    assert abs(fit.count / target - 1) <= 0.05
    # the reported count is the count of the config it returns
    built = models.build(name, spec, fit.params)
    assert cost.parameter_counts(built)["total"] == fit.count
    # and it moved: the base config is not within the tolerance
    base = cost.parameter_counts(models.build(name, spec, params))["total"]
    assert abs(base / target - 1) > 0.05


def test_dense_count_matches_only_non_embedding_parameters(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    fit = sizing.fit_to_budget("dnn", spec, 60_000, count="dense")
    assert abs(fit.counts["dense"] / 60_000 - 1) <= 0.05
    assert fit.counts["total"] == fit.counts["dense"] + fit.counts["embedding"]


def test_mdl_fine_tunes_the_tokenizer_when_width_steps_are_too_coarse(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    fit = sizing.fit_to_budget("mdl", spec, 1_500_000, {"layers": 2}, tolerance=0.01)
    assert abs(fit.count / 1_500_000 - 1) <= 0.01
    assert fit.params.width % 12 == 0          # feed: 6 tokens x 4 heads


def test_unreachable_budget_names_the_embedding_floor(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    emb = cost.parameter_counts(models.build("dnn", spec))["embedding"]
    with pytest.raises(sizing.BudgetError, match=r"cannot reach 1,000 total parameters.*"
                                                 r"embedding tables alone are " + f"{emb:,}"):
        sizing.fit_to_budget("dnn", spec, 1000)


def test_model_info_target_params_writes_a_trainable_config(feed_dir, tmp_path):
    out = tmp_path / "fitted.yaml"
    text = run_cli("model-info", "--config=configs/mdl_feed.yaml", f"--data={feed_dir}",
                   "--set", "params.layers=1", "--target_params=700k", f"--out={out}").stdout
    assert "fitted mdl to 700,000 total parameters" in text and "chosen config:" in text
    config = yaml.safe_load(out.read_text())
    assert config["model"] == "mdl" and config["params"]["layers"] == 1
    assert "training" in config                      # the training section is kept
    built = models.from_config(str(out), spec_lib.load_spec(feed_dir))
    assert abs(cost.parameter_counts(built)["total"] / 700_000 - 1) <= 0.05
