"""Lazy Adam for embedding tables: Adam that moves only the batch's rows.

Keras' Adam applied to a sparse (`tf.IndexedSlices`) table gradient still decays
every row's moments each step (``m ← β1·m`` over the whole table before the
scatter), so a step costs O(table rows) however few rows the batch touched, and
the whole step must run densely under XLA. `LazyAdam` updates the touched rows
only (the algorithm of TensorFlow Addons' ``LazyAdam``, whose last release
supports TensorFlow ≤ 2.15; none is kept for Keras 2 today). For every row ``i``
in the batch, at step ``t``::

    m_i ← β1·m_i + (1 − β1)·g_i
    v_i ← β2·v_i + (1 − β2)·g_i²
    θ_i ← θ_i − lr·√(1 − β2^t)/(1 − β1^t) · m_i / (√v_i + ε)

and rows outside the batch, with their moments, are left as they are (their
moments are not decayed: a row's moments age only when it is seen). Dense
gradients get Keras' Adam update. Measured against Adagrad, Adam and SGD tables
in docs/training.md, "Table optimizer".
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="tfmdl")
class LazyAdam(keras.optimizers.legacy.Adam):
    """Adam whose sparse updates touch only the gradient's rows (module docstring).

    Takes Keras' legacy Adam arguments; ``amsgrad`` is not supported.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 name="LazyAdam", **kwargs):
        if kwargs.pop("amsgrad", False):
            raise ValueError("LazyAdam does not support amsgrad.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=False, name=name, **kwargs)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        # Keras has already summed duplicate indices (_resource_apply_sparse_duplicate_indices)
        var_device, var_dtype = var.device, var.dtype.base_dtype
        coefficients = (apply_state or {}).get((var_device, var_dtype)) or \
            self._fallback_apply_state(var_device, var_dtype)
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_rows = (coefficients["beta_1_t"] * tf.gather(m, indices)
                  + coefficients["one_minus_beta_1_t"] * grad)
        v_rows = (coefficients["beta_2_t"] * tf.gather(v, indices)
                  + coefficients["one_minus_beta_2_t"] * tf.square(grad))
        step = coefficients["lr"] * m_rows / (tf.sqrt(v_rows) + coefficients["epsilon"])
        return tf.group(
            self._resource_scatter_update(m, indices, m_rows),
            self._resource_scatter_update(v, indices, v_rows),
            tf.raw_ops.ResourceScatterSub(resource=var.handle, indices=indices,
                                          updates=step))

    def get_config(self):
        config = super().get_config()
        config.pop("amsgrad", None)
        return config
