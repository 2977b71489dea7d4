"""Label counts per task and per scenario x task cell (the output-bias prior's rates)."""

import io
import math

import numpy as np
import pytest

from tfmdl.pipelines import label_stats
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib


def test_counts_exclude_missing_labels_and_count_every_scenario_of_a_row():
    c = label_stats.LabelCounts(["a", "b"], ["s0", "s1"])
    c.add(np.array([[1, 0], [0, -1], [-1, 1]]), np.array([0, 1, 1]))
    c.add(np.array([[1, 1]]), np.array([[1, 1]]))            # a multi-valued row
    assert c.rows == 4
    assert c.positives.tolist() == [2, 2] and c.negatives.tolist() == [1, 1]
    assert c.cell_positives.tolist() == [[2, 1], [1, 2]]
    assert c.cell_negatives.tolist() == [[0, 1], [1, 0]]
    assert c.rates() == {"a": 2 / 3, "b": 2 / 3}


def test_a_task_without_labels_has_a_nan_rate():
    c = label_stats.LabelCounts(["a"], ["s"])
    c.add(np.array([[-1], [-1]]), np.array([0, 0]))
    assert math.isnan(c.rates()["a"])


def test_dict_round_trip_and_named_errors():
    c = label_stats.LabelCounts(["a", "b"], ["s0"])
    c.add(np.array([[1, 0], [0, 0]]), np.array([0, 0]))
    back = label_stats.LabelCounts.from_dict(c.to_dict(), ["a", "b"], ["s0"])
    assert back.to_dict() == c.to_dict()
    body = c.to_dict()
    body["tasks"]["b"] = {"positives": "x"}
    with pytest.raises(ValueError, match=r"label_counts.tasks.b: expected"):
        label_stats.LabelCounts.from_dict(body, ["a", "b"], ["s0"])
    with pytest.raises(ValueError, match="labels must be"):
        c.add(np.zeros((2, 3)), np.zeros(2))


def test_counting_pass_matches_the_labels_read_back(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    files = reader.resolve_files(feed_dir, "train", "auto")
    out = io.StringIO()
    counted = label_stats.count_files(spec, files, batch_size=1000, total=4000, out=out)
    assert "counting labels: 4,000 / 4,000 rows" in out.getvalue()
    pos = {t: 0 for t in spec.task_names}
    neg = dict(pos)
    for _, labels, weights in reader.make_dataset(spec, files, 512, shuffle=False, repeat=False):
        for t in spec.task_names:
            y, w = labels[t].numpy(), weights[t].numpy()
            pos[t] += int(((y == 1) & (w > 0)).sum())
            neg[t] += int(((y == 0) & (w > 0)).sum())
    assert counted.rows == 4000
    assert counted.to_dict()["tasks"] == {t: {"positives": pos[t], "negatives": neg[t]}
                                          for t in spec.task_names}
    # single-valued scenario: each row in one cell, so the cells add up to the task
    np.testing.assert_array_equal(counted.cell_positives.sum(axis=0), counted.positives)


def test_multi_hot_of_ids_and_of_padded_multi_valued_ids():
    np.testing.assert_array_equal(label_stats.multi_hot(np.array([1, 0]), 3),
                                  [[0, 1, 0], [1, 0, 0]])
    got = label_stats.multi_hot(np.array([[0, 2], [1, -1]]), 3, np.float64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[1, 0, 1], [0, 1, 0]])
