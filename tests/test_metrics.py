"""Tests for tfmdl.metrics against brute-force definitions."""

import math

import numpy as np
import pytest

from tfmdl import metrics


# --------------------------------------------------------------------------- #
# Brute-force references
# --------------------------------------------------------------------------- #
def brute_auc(labels, preds):
    """Double loop over all (positive, negative) pairs, ties count 1/2."""
    pos = [p for y, p in zip(labels, preds) if y == 1]
    neg = [p for y, p in zip(labels, preds) if y == 0]
    if not pos or not neg:
        return float("nan")
    total = 0.0
    for pp in pos:
        for pn in neg:
            total += 1.0 if pp > pn else 0.5 if pp == pn else 0.0
    return total / (len(pos) * len(neg))


def brute_weighted_auc(labels, preds, weights):
    num = den = 0.0
    for yi, pi, wi in zip(labels, preds, weights):
        if yi != 1:
            continue
        for yj, pj, wj in zip(labels, preds, weights):
            if yj != 0:
                continue
            den += wi * wj
            num += wi * wj * (1.0 if pi > pj else 0.5 if pi == pj else 0.0)
    return num / den if den else float("nan")


def brute_group_auc(labels, preds, groups, weighted):
    groups = [tuple(g) if np.ndim(g) else g for g in groups]
    num = den = 0.0
    for g in set(groups):
        idx = [i for i, gi in enumerate(groups) if gi == g]
        a = brute_auc([labels[i] for i in idx], [preds[i] for i in idx])
        if math.isnan(a):
            continue
        w = len(idx) if weighted else 1.0
        num += w * a
        den += w
    return num / den if den else float("nan")


def random_data(seed, n=150, decimals=1, pos_rate=0.4):
    """Labels correlated with heavily tied predictions (rounded scores)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pos_rate).astype(np.int64)
    preds = np.clip(0.3 * labels + 0.7 * rng.random(n), 0.0, 1.0)
    if decimals is not None:
        preds = np.round(preds, decimals)
    return labels, preds


# --------------------------------------------------------------------------- #
# AUC family
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [1, 2, None])
def test_auc_matches_pairwise_definition(seed, decimals):
    labels, preds = random_data(seed, decimals=decimals)
    assert metrics.auc(labels, preds) == pytest.approx(
        brute_auc(labels, preds), abs=1e-12)


def test_auc_simple_values():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5
    # 1 positive vs 2 negatives: beats one, ties one -> (1 + 0.5) / 2.
    assert metrics.auc([1, 0, 0], [0.5, 0.2, 0.5]) == 0.75


def test_auc_half_width_matches_hanley_mcneil_and_a_bootstrap():
    # by hand: A=0.8, Q1=2/3, Q2=0.64/0.9, 50 / 50:
    # se^2 = (0.16 + 49 * 0.02667 + 49 * 0.07111) / 2500 = 0.0019804
    se = metrics.auc_half_width(0.8, 50, 50, z=1.0)
    assert se == pytest.approx(0.044502, abs=2e-6)
    assert metrics.auc_half_width(0.8, 50, 50) == pytest.approx(1.96 * se)
    # against a bootstrap of a real score: the spread agrees within 15%
    rng = np.random.default_rng(0)
    labels = (rng.random(4000) < 0.05).astype(np.float32)
    preds = rng.normal(size=4000) + 0.8 * labels
    a = metrics.auc(labels, preds)
    reps = [metrics.auc(labels[i], preds[i])
            for i in (rng.integers(0, 4000, 4000) for _ in range(300))]
    n1 = int(labels.sum())
    assert metrics.auc_half_width(a, n1, 4000 - n1, z=1.0) == pytest.approx(np.std(reps),
                                                                            rel=0.15)
    assert math.isnan(metrics.auc_half_width(0.7, 0, 10))
    assert math.isnan(metrics.auc_half_width(float("nan"), 10, 10))


@pytest.mark.parametrize("seed", range(4))
def test_gauc_matches_per_group_loop(seed):
    labels, preds = random_data(seed, n=200)
    groups = np.random.default_rng(100 + seed).integers(0, 12, size=200)
    assert metrics.gauc(labels, preds, groups) == pytest.approx(
        brute_group_auc(labels, preds, groups, weighted=True), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_qauc_matches_per_group_loop(seed):
    labels, preds = random_data(seed, n=200)
    groups = np.random.default_rng(200 + seed).integers(0, 12, size=200)
    assert metrics.qauc(labels, preds, groups) == pytest.approx(
        brute_group_auc(labels, preds, groups, weighted=False), abs=1e-12)


def test_gauc_and_qauc_differ_in_weighting():
    # Group 0: 4 rows, AUC 1. Group 1: 2 rows, AUC 0. Group 2: one class only.
    labels = [0, 0, 1, 1, 0, 1, 1, 1]
    preds = [0.1, 0.2, 0.3, 0.4, 0.9, 0.1, 0.5, 0.6]
    groups = [0, 0, 0, 0, 1, 1, 2, 2]
    assert metrics.gauc(labels, preds, groups) == pytest.approx(4 / 6)
    assert metrics.qauc(labels, preds, groups) == pytest.approx(0.5)


def test_qauc_accepts_two_column_keys():
    labels, preds = random_data(7, n=300)
    rng = np.random.default_rng(7)
    keys = np.stack([rng.integers(0, 5, 300), rng.integers(0, 4, 300)], axis=1)
    combined = keys[:, 0] * 1000 + keys[:, 1]
    expected = brute_group_auc(labels, preds, keys, weighted=False)
    assert metrics.qauc(labels, preds, keys) == pytest.approx(expected,
                                                              abs=1e-12)
    assert metrics.qauc(labels, preds, combined) == pytest.approx(expected,
                                                                  abs=1e-12)
    # A pair is one group: the user column alone gives a different value.
    assert metrics.qauc(labels, preds, keys[:, 0]) != pytest.approx(expected)


def test_group_codes_match_unique_axis0():
    rng = np.random.default_rng(0)
    keys = np.stack([rng.integers(-3, 3, 500), rng.integers(0, 1 << 40, 500)
                     % 7], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    codes, num = metrics._group_codes(keys)
    assert num == len(uniq)
    np.testing.assert_array_equal(codes, inv.reshape(-1))


@pytest.mark.parametrize("decimals", [1, 2, None])
def test_weighted_auc_integer_weights_equal_repeated_auc(decimals):
    # decimals=1 / 2 / None exercise the reduceat / cumsum / no-tie branches.
    labels, preds = random_data(3, n=400, decimals=decimals)
    weights = np.random.default_rng(3).integers(0, 4, size=400)
    expected = metrics.auc(np.repeat(labels, weights),
                           np.repeat(preds, weights))
    assert metrics.weighted_auc(labels, preds, weights) == pytest.approx(
        expected, abs=1e-12)


def test_weighted_auc_matches_pairwise_with_float_weights():
    labels, preds = random_data(4, n=80)
    weights = np.random.default_rng(4).random(80)
    assert metrics.weighted_auc(labels, preds, weights) == pytest.approx(
        brute_weighted_auc(labels, preds, weights), abs=1e-12)
    assert metrics.weighted_auc(labels, preds, np.ones(80)) == pytest.approx(
        metrics.auc(labels, preds), abs=1e-12)


def test_weighted_auc_rejects_negative_weights():
    with pytest.raises(ValueError):
        metrics.weighted_auc([0, 1], [0.1, 0.2], [1.0, -1.0])


def test_single_class_returns_nan():
    assert math.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.auc([0, 0], [0.1, 0.2]))
    assert math.isnan(metrics.auc([], []))
    assert math.isnan(metrics.weighted_auc([0, 1], [0.1, 0.2], [1, 0]))
    # Every group has a single class even though the data has both.
    assert math.isnan(metrics.gauc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4],
                                   [0, 0, 1, 1]))
    assert math.isnan(metrics.qauc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4],
                                   [0, 0, 1, 1]))


def test_non_binary_labels_rejected_for_auc():
    with pytest.raises(ValueError):
        metrics.auc([0, 2, 1], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------- #
# Pointwise metrics
# --------------------------------------------------------------------------- #
def test_logloss_matches_formula_and_clips():
    labels, preds = random_data(5, n=50, decimals=None)
    expected = -np.mean([
        y * math.log(p) + (1 - y) * math.log(1 - p)
        for y, p in zip(labels, preds)
    ])
    assert metrics.logloss(labels, preds) == pytest.approx(expected, rel=1e-12)
    # A confident wrong prediction is clipped to 1e-7, not infinite.
    assert metrics.logloss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    assert metrics.logloss([0], [1.0]) == pytest.approx(-math.log(1e-7),
                                                        rel=1e-6)


def test_positive_rate_and_calibration():
    labels = [1, 0, 0, 1, 0]
    preds = [0.2, 0.1, 0.3, 0.4, 0.5]
    assert metrics.positive_rate(labels) == pytest.approx(0.4)
    assert metrics.calibration(labels, preds) == pytest.approx(0.3 / 0.4)
    assert math.isnan(metrics.calibration([0, 0], [0.1, 0.2]))
    assert math.isnan(metrics.calibration([], []))


# --------------------------------------------------------------------------- #
# Missing labels and masks
# --------------------------------------------------------------------------- #
def test_valid_mask():
    np.testing.assert_array_equal(
        metrics.valid_mask([1, -1, 0, -1]), [True, False, True, False])
    np.testing.assert_array_equal(
        metrics.valid_mask([1.0, np.nan, 0.0], mask=[False, True, True]),
        [False, False, True])


def test_missing_labels_are_excluded_everywhere():
    labels, preds = random_data(6, n=120)
    groups = np.random.default_rng(6).integers(0, 6, size=120)
    # Missing rows get extreme predictions that would move every metric.
    extra = 40
    lab_m = np.concatenate([labels, -np.ones(extra, dtype=np.int64)])
    pred_m = np.concatenate([preds, np.tile([0.0, 1.0], extra // 2)])
    grp_m = np.concatenate([groups, np.arange(extra) % 6])
    assert metrics.auc(lab_m, pred_m) == metrics.auc(labels, preds)
    assert metrics.gauc(lab_m, pred_m, grp_m) == pytest.approx(
        metrics.gauc(labels, preds, groups), abs=1e-15)
    assert metrics.qauc(lab_m, pred_m, grp_m) == pytest.approx(
        metrics.qauc(labels, preds, groups), abs=1e-15)
    assert metrics.weighted_auc(lab_m, pred_m, np.ones(len(lab_m))) == (
        pytest.approx(metrics.auc(labels, preds), abs=1e-15))
    assert metrics.logloss(lab_m, pred_m) == pytest.approx(
        metrics.logloss(labels, preds), abs=1e-15)
    assert metrics.positive_rate(lab_m) == metrics.positive_rate(labels)
    assert metrics.calibration(lab_m, pred_m) == pytest.approx(
        metrics.calibration(labels, preds), abs=1e-15)


def test_mask_argument_equals_filtering():
    labels, preds = random_data(8, n=150)
    groups = np.random.default_rng(8).integers(0, 5, size=150)
    mask = np.random.default_rng(9).random(150) < 0.6
    assert metrics.auc(labels, preds, mask) == metrics.auc(labels[mask],
                                                           preds[mask])
    assert metrics.gauc(labels, preds, groups, mask) == pytest.approx(
        brute_group_auc(labels[mask], preds[mask], groups[mask], True))
    assert metrics.logloss(labels, preds, mask) == pytest.approx(
        metrics.logloss(labels[mask], preds[mask]))


# --------------------------------------------------------------------------- #
# Slice table
# --------------------------------------------------------------------------- #
def _two_task_data(n=300, seed=11):
    rng = np.random.default_rng(seed)
    labels = np.stack([(rng.random(n) < 0.4), (rng.random(n) < 0.3)],
                      axis=1).astype(np.int64)
    preds = np.round(np.clip(0.3 * labels + 0.7 * rng.random((n, 2)), 0, 1), 2)
    labels[rng.random(n) < 0.5, 1] = -1  # second task mostly missing
    return labels, preds


def test_slice_table_multi_hot_counts_row_in_both_slices():
    labels, preds = _two_task_data()
    n = len(labels)
    rng = np.random.default_rng(12)
    member = np.zeros((n, 2), dtype=np.int64)
    member[:150, 0] = 1
    member[100:, 1] = 1  # rows 100..149 are in both scenarios
    users = rng.integers(0, 20, size=n)
    table = metrics.slice_table(labels, preds, member, ["ctr", "cvr"],
                                ["feed", "search"], user_ids=users)
    assert list(table) == ["feed", "search", "overall"]
    assert set(table["feed"]) == {"ctr", "cvr"}
    assert table["feed"]["ctr"]["count"] == 150
    assert table["search"]["ctr"]["count"] == 200
    assert table["overall"]["ctr"]["count"] == n
    assert table["feed"]["cvr"]["count"] == int(np.sum(labels[:150, 1] != -1))
    assert table["feed"]["ctr"]["count"] + table["search"]["ctr"]["count"] > n

    search = slice(100, n)
    cvr_ok = labels[search, 1] != -1
    assert table["search"]["cvr"]["auc"] == pytest.approx(
        brute_auc(labels[search, 1][cvr_ok], preds[search, 1][cvr_ok]))
    assert table["search"]["ctr"]["gauc"] == pytest.approx(
        brute_group_auc(labels[search, 0], preds[search, 0], users[search],
                        weighted=True))
    assert table["overall"]["ctr"]["logloss"] == pytest.approx(
        metrics.logloss(labels[:, 0], preds[:, 0]))
    assert table["feed"]["ctr"]["pos_rate"] == pytest.approx(
        labels[:150, 0].mean())
    assert table["feed"]["ctr"]["calibration"] == pytest.approx(
        preds[:150, 0].mean() / labels[:150, 0].mean())
    # QAUC is only reported when query ids are given.
    assert "qauc" not in table["feed"]["ctr"]


def test_slice_table_int_ids_and_metric_selection():
    labels, preds = _two_task_data()
    n = len(labels)
    scen = np.arange(n) % 3
    queries = np.stack([np.arange(n) % 10, np.arange(n) % 4], axis=1)
    table = metrics.slice_table(labels, preds, scen, ["ctr", "cvr"],
                                {0: "a", 1: "b", 2: "c"}, query_ids=queries,
                                metrics=("auc", "gauc", "qauc", "count"))
    assert list(table) == ["a", "b", "c", "overall"]
    cell = table["b"]["ctr"]
    assert set(cell) == {"auc", "qauc", "count"}  # no user ids -> no gauc
    rows = scen == 1
    assert cell["count"] == int(rows.sum())
    assert cell["auc"] == pytest.approx(
        brute_auc(labels[rows, 0], preds[rows, 0]))
    assert cell["qauc"] == pytest.approx(
        brute_group_auc(labels[rows, 0], preds[rows, 0], queries[rows],
                        weighted=False))
    with pytest.raises(ValueError):
        metrics.slice_table(labels, preds, scen, ["ctr", "cvr"], ["a", "b"])
    with pytest.raises(ValueError):
        metrics.slice_table(labels, preds, scen, ["ctr", "cvr"],
                            ["a", "b", "c"], metrics=("auc", "ndcg"))


def test_format_table_markdown_with_oracle():
    table = {
        "feed": {"ctr": {"auc": 0.7}, "cvr": {"auc": 0.65}},
        "overall": {"ctr": {"auc": 0.71234}, "cvr": {"auc": float("nan")}},
    }
    oracle = {
        "feed": {"ctr": {"auc": 0.8}, "cvr": {"auc": 0.8}},
        "overall": {"ctr": {"auc": 0.8}, "cvr": {"auc": 0.8}},
    }
    text = metrics.format_table_markdown(table)
    lines = text.splitlines()
    assert lines[0] == "| slice (auc) | ctr | cvr |"
    assert lines[2] == "| feed | 0.7000 | 0.6500 |"
    assert lines[3] == "| overall | 0.7123 | n/a |"
    assert len(lines) == 4

    text = metrics.format_table_markdown(table, oracle=oracle)
    lines = text.splitlines()
    assert "| feed (oracle) | 0.8000 | 0.8000 |" in lines
    assert "| feed (% of oracle gap closed) | 66.7% | 50.0% |" in lines
    assert "| overall (% of oracle gap closed) | 70.8% | n/a |" in lines


def test_format_table_markdown_real_table_renders():
    labels, preds = _two_task_data()
    member = np.ones((len(labels), 1), dtype=np.int64)
    table = metrics.slice_table(labels, preds, member, ["ctr", "cvr"], ["all"])
    text = metrics.format_table_markdown(table, metric="logloss", oracle=table)
    assert "| all (oracle) |" in text
    assert "gap closed" not in text  # no default baseline for logloss


# --------------------------------------------------------------------------- #
# Paired bootstrap
# --------------------------------------------------------------------------- #
def _phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _two_models(seed, n, mu_a=1.0, mu_b=0.7, rho=0.6):
    """Scores N(mu * y, 1): the population AUC is Phi(mu / sqrt(2))."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    e1 = rng.normal(size=n)
    e2 = rho * e1 + math.sqrt(1 - rho**2) * rng.normal(size=n)
    true_delta = _phi(mu_a / math.sqrt(2)) - _phi(mu_b / math.sqrt(2))
    return labels, mu_a * labels + e1, mu_b * labels + e2, true_delta


def test_bootstrap_interval_contains_true_delta():
    labels, pa, pb, true_delta = _two_models(0, 3000)
    res = metrics.paired_bootstrap_auc(labels, pa, pb, n_boot=500, seed=1)
    assert res.low < true_delta < res.high
    assert res.low < res.delta < res.high
    assert res.delta == pytest.approx(
        metrics.auc(labels, pa) - metrics.auc(labels, pb))
    assert res.n_boot == 500 and res.n_valid == 500


def test_bootstrap_coverage_is_roughly_nominal():
    hits = 0
    trials = 30
    for seed in range(trials):
        labels, pa, pb, true_delta = _two_models(100 + seed, 400)
        res = metrics.paired_bootstrap_auc(labels, pa, pb, n_boot=300,
                                           seed=seed)
        hits += res.low <= true_delta <= res.high
    assert hits >= 24  # nominal 95% -> about 28.5 of 30


def test_bootstrap_identical_predictions():
    labels, pa, _, _ = _two_models(1, 500)
    groups = np.arange(500) % 37
    for g in (None, groups):
        res = metrics.paired_bootstrap_auc(labels, pa, pa.copy(), groups=g,
                                           n_boot=200)
        assert res.delta == 0.0
        assert res.low == 0.0 and res.high == 0.0
        assert res.p_value == 1.0


def test_bootstrap_clearly_better_model():
    labels, pa, pb, _ = _two_models(2, 2000, mu_a=1.5, mu_b=0.3)
    users = np.random.default_rng(2).integers(0, 200, size=2000)
    for g in (None, users):
        res = metrics.paired_bootstrap_auc(labels, pa, pb, groups=g,
                                           n_boot=300)
        assert res.delta > 0.2
        assert res.low > 0
        assert res.p_value < 0.01
        # Swapping the models mirrors the result.
        swapped = metrics.paired_bootstrap_auc(labels, pb, pa, groups=g,
                                               n_boot=300)
        assert swapped.high < 0
        assert swapped.delta == pytest.approx(-res.delta)


def test_bootstrap_is_deterministic_per_seed():
    labels, pa, pb, _ = _two_models(3, 800, mu_a=0.9, mu_b=0.8)
    groups = np.arange(800) % 50
    first = metrics.paired_bootstrap_auc(labels, pa, pb, groups, n_boot=200,
                                         seed=5)
    again = metrics.paired_bootstrap_auc(labels, pa, pb, groups, n_boot=200,
                                         seed=5)
    other = metrics.paired_bootstrap_auc(labels, pa, pb, groups, n_boot=200,
                                         seed=6)
    assert first == again
    assert (other.low, other.high) != (first.low, first.high)


def test_bootstrap_matches_materialised_resamples():
    """Weighted replicates equal AUCs of explicitly resampled arrays."""
    labels, pa, pb, _ = _two_models(4, 120, mu_a=0.8, mu_b=0.7)
    pa, pb = np.round(pa, 1), np.round(pb, 1)  # ties in both models
    groups = np.arange(120) % 15
    n_boot, seed, alpha = 40, 9, 0.1
    res = metrics.paired_bootstrap_auc(labels, pa, pb, groups, n_boot=n_boot,
                                       seed=seed, alpha=alpha)

    # Reference: same group draws, arrays built by explicit concatenation.
    counts = metrics._bootstrap_counts(np.random.default_rng(seed), 15, n_boot)
    deltas = []
    for rep in range(n_boot):
        idx = np.concatenate([
            np.flatnonzero(groups == g) for g in range(15)
            for _ in range(int(counts[rep, g]))
        ])
        deltas.append(
            brute_auc(labels[idx], pa[idx]) - brute_auc(labels[idx], pb[idx]))
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    assert res.low == pytest.approx(low, abs=1e-12)
    assert res.high == pytest.approx(high, abs=1e-12)
    sign_flips = np.mean(np.asarray(deltas) <= 0) if res.delta > 0 else (
        np.mean(np.asarray(deltas) >= 0))
    assert 0 < sign_flips < 0.5  # a p-value strictly between 0 and 1
    assert res.p_value == pytest.approx(2 * sign_flips)


def test_bootstrap_counts_are_uniform_draws_with_replacement():
    counts = metrics._bootstrap_counts(np.random.default_rng(0), 50, 4000)
    assert counts.shape == (4000, 50)
    np.testing.assert_array_equal(counts.sum(axis=1), 50)
    # Multinomial(50, 1/50): every group has mean 1 and variance 1 - 1/50.
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=0.08)
    np.testing.assert_allclose(counts.var(axis=0), 0.98, atol=0.12)


def test_bootstrap_singleton_groups_equal_row_resampling():
    labels, pa, pb, _ = _two_models(5, 300)
    by_row = metrics.paired_bootstrap_auc(labels, pa, pb, n_boot=100, seed=3)
    by_group = metrics.paired_bootstrap_auc(labels, pa, pb,
                                            groups=np.arange(300), n_boot=100,
                                            seed=3)
    assert by_row == by_group


def test_normalized_entropy_against_numpy():
    rng = np.random.default_rng(3)
    y = (rng.random(5000) < 0.03).astype(np.float64)
    p = np.clip(0.03 + 0.02 * rng.normal(size=5000), 1e-4, 0.5)
    y[:50] = metrics.MISSING_LABEL                       # missing labels are dropped
    keep = y != metrics.MISSING_LABEL
    yy, pp = y[keep], p[keep]
    rate = yy.mean()
    want = -np.mean(yy * np.log(pp) + (1 - yy) * np.log(1 - pp)) / \
        -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert metrics.normalized_entropy(y, p) == pytest.approx(want, rel=1e-9)
    # predicting the rate itself gives NE = 1
    assert metrics.normalized_entropy(yy, np.full_like(yy, rate)) == pytest.approx(1.0)
    assert np.isnan(metrics.normalized_entropy(np.zeros(10), np.full(10, 0.1)))
    assert np.isnan(metrics.entropy(0.0)) and metrics.entropy(0.5) == pytest.approx(np.log(2))
    table = metrics.slice_table(y, p, np.zeros(5000, dtype=int), ["t"], ["s"],
                                metrics=("ne", "positives", "count"))
    assert table["s"]["t"]["ne"] == pytest.approx(want, rel=1e-9)
    assert table["s"]["t"]["positives"] == int(yy.sum())
    assert table["s"]["t"]["count"] == 4950
