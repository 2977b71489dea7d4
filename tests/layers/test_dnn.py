"""Tests for tfmdl.layers.dnn (MLP, TaskTowers) against NumPy."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.dnn import MLP, TaskTowers, scenario_features


def randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def relu(z):
    return np.maximum(z, 0.0)


def np_mlp(x, layer, last=relu):
    h = x
    for j, dense in enumerate(layer.dense):
        act = last if j == len(layer.dense) - 1 else relu
        h = act(h @ dense.kernel.numpy() + dense.bias.numpy())
    return h


def np_towers(x, layer):
    """Tower k: relu hidden layers with kernel[k], then a linear unit."""
    K = layer.num_tasks
    x = np.repeat(x[:, None], K, axis=1) if x.ndim == 2 else x
    out = np.zeros((x.shape[0], K))
    for k in range(K):
        h = x[:, k]
        for j, dense in enumerate(layer.layers_):
            h = h @ dense.kernel.numpy()[k]
            if dense.bias is not None:
                h = h + dense.bias.numpy()[k]
            if j < len(layer.layers_) - 1:
                h = relu(h)
        out[:, k] = h[:, 0]
    return out


def test_mlp_matches_numpy():
    layer = MLP([6, 3])
    x = x_input([4, 5])
    layer(x)
    randomize(layer)
    np.testing.assert_allclose(layer(x).numpy(), np_mlp(x, layer), rtol=1e-5, atol=1e-5)
    linear = MLP([6, 3], output_activation="linear")
    linear(x)
    linear.set_weights(layer.get_weights())
    np.testing.assert_allclose(linear(x).numpy(), np_mlp(x, linear, last=lambda z: z),
                               rtol=1e-5, atol=1e-5)
    assert (linear(x).numpy() < 0).any()            # the last layer is not clipped


def test_mlp_without_units_is_the_identity():
    x = x_input([3, 4])
    layer = MLP([])
    np.testing.assert_allclose(layer(x).numpy(), x)
    assert layer.compute_output_shape([None, 4]) == tf.TensorShape([None, 4])


def test_mlp_on_3d_inputs():
    layer = MLP([2])
    x = x_input([2, 3, 4])
    out = layer(x).numpy()
    assert out.shape == (2, 3, 2)
    np.testing.assert_allclose(out, np_mlp(x, layer), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [[4, 5], [4, 3, 5]])
def test_task_towers_match_numpy(shape):
    layer = TaskTowers(3, [6, 2])
    x = x_input(shape)
    layer(x)
    randomize(layer)
    out = layer(x).numpy()
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out, np_towers(x, layer), rtol=1e-4, atol=1e-5)
    assert not np.allclose(out[:, 0], out[:, 1])          # own weights per task


def test_task_towers_last_layer_has_a_bias_only_with_logit_bias():
    """The zoo's models add their output bias after the towers (tfmdl.models.base),
    so by default the last tower layer has none; ``logit_bias=True`` adds it."""
    x = x_input([4, 5])
    plain, biased = TaskTowers(2, [3]), TaskTowers(2, [3], logit_bias=True)
    plain(x), biased(x)
    assert plain.layers_[0].bias is not None and plain.layers_[-1].bias is None
    assert biased.layers_[-1].bias.shape == (2, 1)
    randomize(biased)
    np.testing.assert_allclose(biased(x).numpy(), np_towers(x, biased), rtol=1e-4, atol=1e-5)
    assert TaskTowers.from_config(biased.get_config()).logit_bias


def test_task_towers_without_hidden_layers_are_linear_heads():
    layer = TaskTowers(2)
    x = x_input([4, 5])
    out = layer(x).numpy()
    assert len(layer.layers_) == 1 and layer.layers_[0].kernel.shape == (2, 5, 1)
    np.testing.assert_allclose(out, np_towers(x, layer), rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training():
    layer = MLP([64, 64], dropout=0.5)
    x = x_input([4, 8])
    np.testing.assert_allclose(layer(x, training=False).numpy(), layer(x).numpy())
    assert not np.allclose(layer(x, training=True).numpy(), layer(x, training=False).numpy())


def test_scenario_features_multi_hot():
    m = scenario_features(tf.constant([[0, 2], [1, -1]], tf.int64), 3).numpy()
    np.testing.assert_allclose(m, [[1, 0, 1], [0, 1, 0]])


LAYERS = [
    (MLP, dict(units=[4, 2], activation="gelu", dropout=0.25, output_activation="linear",
               kernel_initializer="he_normal"), [2, 5]),
    (TaskTowers, dict(num_tasks=3, hidden=[4], activation="relu", dropout=0.0,
                      kernel_initializer="lecun_uniform"), [2, 3, 5]),
]


@pytest.mark.parametrize("cls,kwargs,shape", LAYERS, ids=[c.__name__ for c, _, _ in LAYERS])
def test_get_config_round_trip(cls, kwargs, shape):
    layer = cls(**kwargs)
    x = x_input(shape)
    layer(x)
    config = layer.get_config()
    for key, value in kwargs.items():
        got = config[key]
        if key == "kernel_initializer":
            got, value = got["class_name"], type(keras.initializers.get(value)).__name__
        if key in ("activation", "output_activation"):
            value = keras.activations.serialize(keras.activations.get(value))
        assert got == value, key
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy(), rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is cls and again.get_config() == config


@pytest.mark.parametrize("cls,kwargs,shape", LAYERS, ids=[c.__name__ for c, _, _ in LAYERS])
def test_jit_compile_and_mirrored_match_eager(cls, kwargs, shape, mirrored):
    x = tf.constant(x_input(shape))
    with mirrored.scope():
        layer = cls(**kwargs)
        layer(x)
    eager = layer(x).numpy()
    compiled = tf.function(lambda t: layer(t), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)
    per_replica = mirrored.run(tf.function(lambda t: layer(t)), args=(x,))
    for value in mirrored.experimental_local_results(per_replica):
        np.testing.assert_allclose(value.numpy(), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make,message", [
    (lambda: MLP([4, 0]), r"units=\[4, 0\]"),
    (lambda: MLP(8), "units=8"),
    (lambda: MLP([4], dropout=1.0), "dropout=1.0"),
    (lambda: TaskTowers(0), "num_tasks=0"),
    (lambda: TaskTowers(2, [-1]), r"hidden=\[-1\]"),
])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_task_towers_reject_a_wrong_number_of_task_inputs():
    with pytest.raises(ValueError, match=r"\[batch, 3, d\]"):
        TaskTowers(3)(x_input([2, 2, 5]))
