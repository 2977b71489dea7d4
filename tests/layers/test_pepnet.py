"""Tests for tfmdl.layers.pepnet (GateNU, EPNet, PPNet) against NumPy."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.pepnet import EPNet, GateNU, PPNet


def randomize(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * scale
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gate(x, gate, n=0):
    """γ·σ(W2 ReLU(W1 x + b1) + b2) of gate n, one row at a time."""
    out = []
    for row in x:
        hidden = np.maximum(row @ gate.kernel_1.numpy()[n] + gate.bias_1.numpy()[n], 0.0)
        out.append(gate.gamma * sigmoid(hidden @ gate.kernel_2.numpy()[n]
                                        + gate.bias_2.numpy()[n]))
    return np.stack(out)


# ----------------------------------- GateNU ------------------------------------- #
def test_gate_nu_matches_numpy_and_lies_in_zero_gamma():
    x = x_input([5, 3])
    gate = GateNU(4, hidden_units=6)
    gate(x)
    randomize(gate)
    out = gate(x).numpy()
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out, np_gate(x, gate), rtol=1e-5, atol=1e-6)
    assert (out > 0).all() and (out < 2).all()
    # extreme inputs saturate towards 0 and γ but never leave (0, γ) in float64 terms
    big = gate(100.0 * x).numpy()
    assert big.min() >= 0 and big.max() <= 2
    assert big.max() > 1.9 and big.min() < 0.1
    # zero weights: σ(0) = ½, so the gate is neutral (exactly 1 with γ = 2)
    gate.set_weights([np.zeros(w.shape, np.float32) for w in gate.get_weights()])
    np.testing.assert_allclose(gate(x).numpy(), 1.0)


def test_gate_nu_gamma_and_independent_gates():
    x = x_input([4, 3])
    gate = GateNU(2, gamma=3.0, num_gates=5)
    gate(x)
    randomize(gate, scale=1.0)
    out = gate(x).numpy()
    assert out.shape == (4, 5, 2) and gate.kernel_1.shape == (5, 3, 2)
    assert (out > 0).all() and (out < 3).all() and out.max() > 2.0
    for n in range(5):
        np.testing.assert_allclose(out[:, n], np_gate(x, gate, n), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[:, 0], out[:, 1])     # own weights per gate


@pytest.mark.parametrize("make,message", [
    (lambda: GateNU(0), "units=0"), (lambda: GateNU(3, gamma=0), "gamma=0"),
    (lambda: GateNU(3, hidden_units=-1), "hidden_units=-1"),
    (lambda: GateNU(3, num_gates=0), "num_gates=0"),
    (lambda: PPNet(2, [4, 0]), r"hidden=\[4, 0\]"), (lambda: PPNet(2, [4], dropout=1.0),
                                                     "dropout=1.0"),
    (lambda: EPNet(gamma=-1.0), "gamma=-1.0")])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ----------------------------------- EPNet -------------------------------------- #
def test_epnet_scales_embeddings_by_gate_of_domain_and_stopped_embeddings():
    emb, dom = x_input([3, 6], 1), x_input([3, 2], 2)
    ep = EPNet(gate_hidden=4)
    ep([emb, dom])
    randomize(ep)
    gate = np_gate(np.concatenate([dom, emb], axis=1), ep.gate)
    np.testing.assert_allclose(ep([emb, dom]).numpy(), gate * emb, rtol=1e-5, atol=1e-6)
    # ∅(E): the gradient reaches E only through the scaled path (d O / d E = δ)
    e = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(e)
        total = tf.reduce_sum(ep([e, tf.constant(dom)]))
    np.testing.assert_allclose(tape.gradient(total, e).numpy(), gate, rtol=1e-5, atol=1e-6)


# ----------------------------------- PPNet -------------------------------------- #
def np_ppnet(h, priors, ep_out, layer):
    """A Python loop over tasks and layers."""
    gate_in = np.concatenate([priors, ep_out], axis=1)
    logits = np.zeros((h.shape[0], layer.num_tasks))
    for k in range(layer.num_tasks):
        x = h if h.ndim == 2 else h[:, k]
        for j, dense in enumerate(layer.layers_):
            x = np_gate(gate_in, layer.gates[j], k) * x
            x = x @ dense.kernel.numpy()[k] + dense.bias.numpy()[k]
            if j < len(layer.hidden):
                x = np.maximum(x, 0.0)
        logits[:, k] = x[:, 0]
    return logits


@pytest.mark.parametrize("tower_input", [[3, 5], [3, 4, 5]])
def test_ppnet_matches_numpy_loop_over_tasks(tower_input):
    h, priors, ep_out = x_input(tower_input, 1), x_input([3, 2], 2), x_input([3, 6], 3)
    net = PPNet(4, [7, 3], gate_hidden=5)
    net([h, priors, ep_out])
    randomize(net)
    out = net([h, priors, ep_out]).numpy()
    assert out.shape == (3, 4)
    assert [g.kernel_2.shape[-1] for g in net.gates] == [5, 7, 3]   # every layer input gated
    np.testing.assert_allclose(out, np_ppnet(h, priors, ep_out, net), rtol=1e-4, atol=1e-5)
    # ∅(O_ep): no gradient reaches the EPNet output through the gates
    ep = tf.constant(ep_out)
    with tf.GradientTape() as tape:
        tape.watch(ep)
        total = tf.reduce_sum(net([tf.constant(h), tf.constant(priors), ep]))
    assert tape.gradient(total, ep) is None


# ------------------------------- common checks ---------------------------------- #
LAYERS = [
    (lambda: GateNU(3, hidden_units=2, gamma=1.5, num_gates=2,
                    kernel_initializer="he_normal"), [[2, 4]]),
    (lambda: EPNet(gate_hidden=3, gamma=2.5), [[2, 5], [2, 3]]),
    (lambda: PPNet(3, [4], gate_hidden=2, activation="gelu", dropout=0.1), [[2, 5], [2, 2],
                                                                            [2, 3]]),
]


def _inputs(shapes):
    xs = [x_input(s, i) for i, s in enumerate(shapes)]
    return xs[0] if len(xs) == 1 else xs


@pytest.mark.parametrize("make,shapes", LAYERS)
def test_get_config_round_trip(make, shapes):
    layer = make()
    x = _inputs(shapes)
    ref = layer(x).numpy()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), ref, rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == config


@pytest.mark.parametrize("make,shapes", LAYERS)
def test_jit_compile_matches_eager(make, shapes):
    layer = make()
    x = tf.nest.map_structure(tf.constant, _inputs(shapes))
    eager = layer(x).numpy()
    compiled = tf.function(lambda t: layer(t), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)


def test_layers_in_two_replica_mirrored_strategy(mirrored):
    with mirrored.scope():
        ep = EPNet()
        pp = PPNet(2, [3])
        ep.build([[None, 4], [None, 2]])
        pp.build([[None, 4], [None, 2], [None, 4]])

    @tf.function
    def step(emb, dom):
        def replica(e, d):
            with tf.GradientTape() as tape:
                o = ep([e, d])
                loss = tf.reduce_sum(pp([o, d, o]))
            return tape.gradient(loss, ep.trainable_weights + pp.trainable_weights)
        return mirrored.run(replica, args=(emb, dom))

    grads = step(tf.constant(x_input([4, 4])), tf.constant(x_input([4, 2])))
    assert all(g is not None for g in grads)
