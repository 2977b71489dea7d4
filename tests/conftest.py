"""Test set-up: quiet TensorFlow, Keras 2 API, two logical CPU devices."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so MirroredStrategy tests run with 2 replicas. This must
# happen before TensorFlow initialises its devices, i.e. before any op runs.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # devices already initialised by an earlier import
    pass


@pytest.fixture(scope="session")
def mirrored(two_cpus):
    """One 2-replica MirroredStrategy shared by the whole run.

    Several MirroredStrategy objects in one process reuse the same collective
    instance keys, and TensorFlow caches a collective's shape by key, so a second
    strategy's all-reduce can fail with "Shape mismatch in the collective instance".
    A single strategy allocates fresh keys for every model.
    """
    return tf.distribute.MirroredStrategy(two_cpus)


@pytest.fixture(scope="session")
def two_cpus():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("two logical CPU devices could not be configured")
    return devices[:2]


def _small_data(tmp_path_factory, preset, **kw):
    from tfmdl.pipelines import synthetic

    out = str(tmp_path_factory.mktemp(f"synth_{preset}"))
    cfg = synthetic.SynthConfig(preset=preset, train=kw.pop("train", 4000),
                                eval=kw.pop("eval", 2000), seed=kw.pop("seed", 7),
                                users=2000, items=1000, chunk_size=1024,
                                records_per_shard=1500, calibration_rows=5000, **kw)
    synthetic.generate(cfg, out, workers=1)
    return out


@pytest.fixture(scope="session")
def feed_dir(tmp_path_factory):
    """A small `feed` data set (4000 train / 2000 eval), generated once per run."""
    return _small_data(tmp_path_factory, "feed")


@pytest.fixture(scope="session")
def search_dir(tmp_path_factory):
    """A small `search` data set (4000 train / 2000 eval), generated once per run."""
    return _small_data(tmp_path_factory, "search")


# `make test` runs this suite on two pytest-xdist workers (``-n 2 --dist loadgroup``).
# Tests that share an expensive session- or module-scoped fixture (a trained model,
# a benchmark run, a distributed baseline) must run on one worker, or each worker
# builds the fixture again. xdist's loadgroup would take the groups from
# ``xdist_group`` marks, but it passes them on by rewriting node ids, which pytest
# 9.2 no longer allows (pytest-xdist issue 1386: the marks are silently ignored).
# So the scheduler below groups by test path: every test under one of these
# prefixes is one unit of work; every other test is scheduled on its own.
XDIST_GROUPS = {
    "tests/benchmark/test_quality.py": "quality_run",          # fixture quality_run
    "tests/benchmark/test_plot_attention.py": "quality_run",
    "tests/serving/": "serving_model",              # trained_model_dir, exported, loaded
    "tests/test_evaluation.py": "evaluation_models",   # feed_model, search_model
    "tests/training/test_warm_start.py": "warm_start",  # rankmixer_dir
    "tests/training/test_distributed.py": "distributed",  # baseline; one cluster at a time
}


# the expensive shared fixtures and the group every test using them must be in
SHARED_FIXTURES = {"quality_run": "quality_run", "trained_model_dir": "serving_model",
                   "feed_model": "evaluation_models", "search_model": "evaluation_models",
                   "feed_untrained": "evaluation_models", "rankmixer_dir": "warm_start",
                   "baseline": "distributed"}


def xdist_group(nodeid):
    """The `XDIST_GROUPS` group of a test's node id, or None."""
    for prefix, group in XDIST_GROUPS.items():
        if nodeid.startswith(prefix):
            return group
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, group in SHARED_FIXTURES.items():
            if fixture in item.fixturenames and xdist_group(item.nodeid) != group:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the fixture {fixture}: add its path to "
                    f"XDIST_GROUPS in tests/conftest.py as group {group!r}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PathGroupScheduling(LoadScopeScheduling):
        """LoadScopeScheduling whose units are `XDIST_GROUPS` groups and single tests
        (units with more tests are handed out first)."""

        def _split_scope(self, nodeid):
            return xdist_group(nodeid) or nodeid

    return PathGroupScheduling(config, log)
