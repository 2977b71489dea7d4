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
