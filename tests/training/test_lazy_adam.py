"""LazyAdam: Adam on the batch's rows only, checked against a NumPy re-computation."""

import numpy as np
import tensorflow as tf

from tfmdl.training import lazy_adam


def _numpy_lazy_adam(table, steps, lr=0.01, b1=0.9, b2=0.999, eps=1e-7):
    theta = table.copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, (rows, grads) in enumerate(steps, 1):
        g = np.zeros_like(theta)
        np.add.at(g, rows, grads)          # duplicate rows add up, as Keras sums them
        for i in sorted(set(rows)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            theta[i] -= lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m[i] / (np.sqrt(v[i]) + eps)
    return theta, m, v


def test_sparse_updates_move_only_the_touched_rows_as_numpy_does():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(6, 3)).astype(np.float32)
    steps = [([0, 2, 2], rng.normal(size=(3, 3)).astype(np.float32)),
             ([5], rng.normal(size=(1, 3)).astype(np.float32)),
             ([2, 0], rng.normal(size=(2, 3)).astype(np.float32))]
    var = tf.Variable(table)
    opt = lazy_adam.LazyAdam(learning_rate=0.01)
    for rows, grads in steps:
        opt.apply_gradients([(tf.IndexedSlices(tf.constant(grads), tf.constant(rows),
                                               tf.constant(table.shape)), var)])
    theta, m, v = _numpy_lazy_adam(table, steps)
    np.testing.assert_allclose(var.numpy(), theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.get_slot(var, "m").numpy(), m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(opt.get_slot(var, "v").numpy(), v, rtol=1e-4, atol=1e-9)
    untouched = [1, 3, 4]
    np.testing.assert_array_equal(var.numpy()[untouched], table[untouched])


def test_sparse_update_runs_inside_a_tf_function_and_config_round_trips():
    var = tf.Variable(tf.ones([4, 2]))
    opt = lazy_adam.LazyAdam(learning_rate=0.1)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(var, [1, 1, 3]))
        opt.apply_gradients([(tape.gradient(loss, var), var)])

    step()
    got = var.numpy()
    np.testing.assert_array_equal(got[[0, 2]], 1.0)
    assert (got[[1, 3]] < 1.0).all()
    clone = lazy_adam.LazyAdam.from_config(opt.get_config())
    assert abs(float(clone.learning_rate) - 0.1) < 1e-7
    assert clone.get_config()["name"] == "LazyAdam"
