"""tfmdl: multi-scenario x multi-task ranking models for TensorFlow (Keras 2 API).

Importing tfmdl sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow's Keras is first
touched, so ``tf.keras`` resolves to tf-keras (Keras 2), which TensorFlow
Recommenders and ParameterServerStrategy training require. Use ``tfmdl.keras``
(an alias of ``tf_keras``) in user code.
"""

import os as _os

_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if _os.environ["TF_USE_LEGACY_KERAS"] != "1":
    raise ImportError(
        "tfmdl needs the Keras 2 API: TF_USE_LEGACY_KERAS is set to "
        f"{_os.environ['TF_USE_LEGACY_KERAS']!r}, expected '1'. Unset it or set it "
        "to 1 before importing TensorFlow.")

__version__ = "0.1.0"


def __getattr__(name):
    # Keras (and with it TensorFlow) loads on first use, so numpy-only entry points
    # (data generation workers, the CLI's help) start quickly.
    if name == "keras":
        import tf_keras  # pylint: disable=g-import-not-at-top

        globals()["keras"] = tf_keras
        return tf_keras
    raise AttributeError(f"module 'tfmdl' has no attribute {name!r}")

__all__ = ["keras", "__version__"]
