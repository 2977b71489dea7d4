"""Tests for tfmdl.layers.moe against NumPy loops over experts, gates and tasks."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.moe import (CGC, Experts, Gate, LabelSpaceFusion, MixtureOfExperts,
                              mix_experts, stop_gradient_except)


def randomize(layer, seed=0):
    """Random weights everywhere (zero biases would hide bugs)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_relu(z):
    return np.maximum(z, 0.0)


def np_expert(x, experts, e):
    """Expert ``e`` of an `Experts` layer on one input ``x`` ``[B, d]``."""
    h = x
    for layer in experts.layers_:
        h = np_relu(h @ layer.kernel.numpy()[e] + layer.bias.numpy()[e])
    return h


def np_gate(x, gate, g):
    """Gate ``g``'s softmax weights on ``x`` ``[B, d]`` (no bias)."""
    return np_softmax(x @ gate.logits.kernel.numpy()[g])


# ----------------------------------------------------------------------------- Experts / Gate
def test_experts_match_numpy_for_shared_and_per_expert_inputs():
    layer = Experts(3, [6, 4])
    x = x_input([5, 7])
    layer(x)
    randomize(layer)
    out = layer(x).numpy()
    assert out.shape == (5, 3, 4)
    for e in range(3):
        np.testing.assert_allclose(out[:, e], np_expert(x, layer, e), rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[:, 0], out[:, 1])           # experts have their own weights
    per = x_input([5, 3, 7], seed=2)
    out = layer(per).numpy()
    for e in range(3):
        np.testing.assert_allclose(out[:, e], np_expert(per[:, e], layer, e), rtol=1e-5,
                                   atol=1e-5)


def test_gate_is_a_softmax_per_gate():
    gate = Gate(2, 4)
    x = x_input([5, 3])
    gate(x)
    randomize(gate)
    w = gate(x).numpy()
    assert w.shape == (5, 2, 4) and gate.logits.bias is None
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    for g in range(2):
        np.testing.assert_allclose(w[:, g], np_gate(x, gate, g), rtol=1e-5, atol=1e-6)


def test_mmoe_gate_softmax_mixing_matches_numpy():
    layer = MixtureOfExperts(num_gates=3, num_experts=4, expert_units=[5])
    x = x_input([6, 7])
    layer(x)
    randomize(layer)
    out = layer(x).numpy()
    assert out.shape == (6, 3, 5)
    experts = np.stack([np_expert(x, layer.experts, e) for e in range(4)], axis=1)  # [B, E, u]
    for k in range(3):
        g = np_gate(x, layer.gate, k)                                                # [B, E]
        expected = np.zeros((6, 5))
        for e in range(4):
            expected += g[:, e:e + 1] * experts[:, e]
        np.testing.assert_allclose(out[:, k], expected, rtol=1e-5, atol=1e-5)
    # gates read gate_inputs when given
    other = x_input([6, 7], seed=3)
    mixed = layer(x, other).numpy()
    g = np_gate(other, layer.gate, 0)
    np.testing.assert_allclose(mixed[:, 0], np.einsum("be,beu->bu", g, experts), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(layer.gate_weights(x).numpy().sum(-1), 1.0, rtol=1e-6)


def test_mix_experts():
    experts = x_input([2, 3, 4])
    weights = np_softmax(x_input([2, 5, 3], seed=2))
    expected = np.stack([[sum(weights[b, g, e] * experts[b, e] for e in range(3))
                          for g in range(5)] for b in range(2)])
    np.testing.assert_allclose(mix_experts(experts, weights).numpy(), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- CGC
def np_cgc(x, layer):
    """PLE's CGC as a loop over groups and tasks (x ``[B, N*(K+1), d]`` slots)."""
    K, mt, ms, N = layer.num_tasks, layer.task_experts, layer.shared_experts, layer.num_groups
    per_group = K * mt + ms
    outs = []
    for n in range(N):
        slot = lambda k: x[:, n * (K + 1) + k]  # noqa: E731
        base = n * per_group
        task_exp = [[np_expert(slot(k), layer.experts, base + k * mt + j) for j in range(mt)]
                    for k in range(K)]
        shared_exp = [np_expert(slot(K), layer.experts, base + K * mt + j) for j in range(ms)]
        for k in range(K):
            g = np_gate(slot(k), layer.task_gate, n * K + k)          # own + shared experts
            chosen = task_exp[k] + shared_exp
            outs.append(sum(g[:, j:j + 1] * chosen[j] for j in range(mt + ms)))
        if layer.shared_output:
            g = np_gate(slot(K), layer.shared_gate, n)                # all of the group
            chosen = [e for exps in task_exp for e in exps] + shared_exp
            outs.append(sum(g[:, j:j + 1] * chosen[j] for j in range(per_group)))
    return np.stack(outs, axis=1)


@pytest.mark.parametrize("shared_output,num_groups,mt,ms", [
    (False, 1, 2, 1), (True, 1, 1, 2), (True, 2, 1, 1), (False, 3, 0, 2), (True, 1, 2, 0)])
def test_cgc_gates_over_task_and_shared_experts_match_numpy(shared_output, num_groups, mt, ms):
    K, d = 2, 5
    layer = CGC(num_tasks=K, task_experts=mt, shared_experts=ms, expert_units=[4, 3],
                shared_output=shared_output, num_groups=num_groups)
    x = x_input([4, num_groups * (K + 1), d])
    layer(x)
    randomize(layer)
    out = layer(x).numpy()
    slots = num_groups * (K + 1) if shared_output else num_groups * K
    assert out.shape == (4, slots, 3)
    assert layer.task_gate.logits.kernel.shape == (num_groups * K, d, mt + ms)
    np.testing.assert_allclose(out, np_cgc(x, layer), rtol=1e-4, atol=1e-5)
    # the first level: one input for every slot
    flat = x_input([4, d], seed=5)
    tiled = np.repeat(flat[:, None], num_groups * (K + 1), axis=1)
    np.testing.assert_allclose(layer(flat).numpy(), np_cgc(tiled, layer), rtol=1e-4, atol=1e-5)


def test_cgc_task_output_ignores_other_tasks_experts():
    layer = CGC(num_tasks=2, task_experts=1, shared_experts=1, expert_units=[4])
    x = x_input([3, 5])
    layer(x)
    randomize(layer)
    before = layer(x).numpy()
    kernel = layer.experts.layers_[0].kernel
    value = kernel.numpy()
    value[1] += 1.0                      # expert 1 = task 1's own expert
    kernel.assign(value)
    after = layer(x).numpy()
    np.testing.assert_allclose(after[:, 0], before[:, 0])      # task 0 does not see it
    assert not np.allclose(after[:, 1], before[:, 1])


def test_stacked_cgc_levels():
    first = CGC(2, 1, 1, [4], shared_output=True)
    last = CGC(2, 1, 1, [3])
    out = last(first(x_input([3, 5])))
    assert out.shape == (3, 2, 3)
    with pytest.raises(ValueError, match=r"\[batch, 3, d\]"):
        last(x_input([3, 2, 4]))


def test_slot_major_calls_match_the_batch_major_ones():
    # stacked levels and experts chain slot-major ([slots, batch, d]); it must be
    # the same map as the public batch-major call, transposed
    first = CGC(2, 2, 1, [4], shared_output=True)
    last = CGC(2, 2, 1, [3])
    x = x_input([3, 5])
    first(x)
    randomize(first)
    y = first(x)
    last(y)
    randomize(last)
    chained = last.token_major_call(first.token_major_call(x))        # [K, batch, u]
    np.testing.assert_allclose(np.transpose(chained.numpy(), [1, 0, 2]), last(y).numpy(),
                               rtol=1e-5, atol=1e-6)
    experts = Experts(3, [4, 2])
    per_expert = x_input([3, 3, 5], seed=2)
    experts(per_expert)
    tm = experts.token_major_call(tf.transpose(per_expert, [1, 0, 2]))
    np.testing.assert_allclose(np.transpose(tm.numpy(), [1, 0, 2]), experts(per_expert).numpy(),
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- HMoE fusion
def test_label_space_fusion_matches_numpy():
    S, K = 3, 2
    layer = LabelSpaceFusion(S, K)
    preds = np.random.default_rng(0).uniform(size=(4, S, K)).astype(np.float32)
    x = x_input([4, 5])
    mask = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], np.float32)
    layer(preds, x, mask)
    randomize(layer)
    out = layer(preds, x, mask).numpy()
    kernel, bias = layer.gate.logits.kernel.numpy(), layer.gate.logits.bias.numpy()
    for b in range(4):
        own = np.flatnonzero(mask[b])
        for k in range(K):
            omega = np.mean([np_softmax(x[b] @ kernel[s * K + k] + bias[s * K + k])
                             for s in own], axis=0)                 # weights over S
            assert np.isclose(omega.sum(), 1.0)
            np.testing.assert_allclose(out[b, k], omega @ preds[b, :, k], rtol=1e-5)


def test_label_space_fusion_stops_gradient_on_borrowed_predictions():
    S, K = 3, 2
    layer = LabelSpaceFusion(S, K)
    preds = tf.Variable(np.random.default_rng(0).uniform(size=(4, S, K)).astype(np.float32))
    x = x_input([4, 5])
    mask = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], np.float32)
    with tf.GradientTape() as tape:
        out = layer(preds, x, mask)
        loss = tf.reduce_sum(out)
    grad = tape.gradient(loss, preds).numpy()                           # [B, S, K]
    own = mask[:, :, None].astype(bool) & np.ones((1, 1, K), bool)
    assert (grad[~own] == 0).all()                                      # borrowed: no gradient
    assert (grad[own] > 0).all()                                        # own: the gate weight
    values = tf.random.normal([2, 3])
    with tf.GradientTape() as tape:
        tape.watch(values)
        y = stop_gradient_except(values, tf.constant([[1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(y.numpy(), values.numpy())
    np.testing.assert_allclose(tape.gradient(y, values).numpy(), [[1, 0, 1], [1, 0, 1]])


# ----------------------------------------------------------------------------- generic
LAYERS = [
    (Experts, dict(num_experts=3, units=[4, 2], activation="gelu", dropout=0.25,
                   kernel_initializer="he_normal"), lambda: (x_input([2, 5]),)),
    (Gate, dict(num_gates=2, num_experts=3, use_bias=True,
                kernel_initializer="lecun_uniform"), lambda: (x_input([2, 5]),)),
    (MixtureOfExperts, dict(num_gates=2, num_experts=3, expert_units=[4], activation="relu",
                            dropout=0.0, gate_bias=True), lambda: (x_input([2, 5]),)),
    (CGC, dict(num_tasks=2, task_experts=1, shared_experts=2, expert_units=[4],
               shared_output=True, num_groups=2, activation="relu", dropout=0.0),
     lambda: (x_input([2, 5]),)),
    (LabelSpaceFusion, dict(num_scenarios=2, num_tasks=3, gate_bias=False),
     lambda: (x_input([2, 2, 3]), x_input([2, 5]), np.eye(2, dtype=np.float32))),
]


@pytest.mark.parametrize("cls,kwargs,args", LAYERS, ids=[c.__name__ for c, _, _ in LAYERS])
def test_get_config_round_trip(cls, kwargs, args):
    layer = cls(**kwargs)
    inputs = args()
    layer(*inputs)
    config = layer.get_config()
    for key, value in kwargs.items():
        got = config[key]
        if key == "kernel_initializer":
            got, value = got["class_name"], type(keras.initializers.get(value)).__name__
        if key == "activation":
            value = keras.activations.serialize(keras.activations.get(value))
        assert got == value, key
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(*inputs).numpy(), layer(*inputs).numpy(), rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is cls and again.get_config() == config


@pytest.mark.parametrize("cls,kwargs,args", LAYERS, ids=[c.__name__ for c, _, _ in LAYERS])
def test_jit_compile_matches_eager(cls, kwargs, args):
    layer = cls(**kwargs)
    inputs = [tf.constant(a) for a in args()]
    eager = layer(*inputs).numpy()
    compiled = tf.function(lambda *a: layer(*a), jit_compile=True)(*inputs).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs,args", LAYERS, ids=[c.__name__ for c, _, _ in LAYERS])
def test_runs_in_mirrored_strategy(cls, kwargs, args, mirrored):
    with mirrored.scope():
        layer = cls(**kwargs)
        inputs = [tf.constant(a) for a in args()]
        layer(*inputs)
    eager = layer(*inputs).numpy()
    per_replica = mirrored.run(tf.function(lambda *a: layer(*a)), args=inputs)
    for value in mirrored.experimental_local_results(per_replica):
        np.testing.assert_allclose(value.numpy(), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make,message", [
    (lambda: Experts(0, [4]), "num_experts=0"),
    (lambda: Experts(2, []), "units=\\[\\]"),
    (lambda: Experts(2, [4, -1]), "units=\\[4, -1\\]"),
    (lambda: Gate(2, 0), "num_experts=0"),
    (lambda: CGC(2, 0, 0, [4]), "task_experts=0, shared_experts=0"),
    (lambda: CGC(2, -1, 1, [4]), "task_experts=-1"),
    (lambda: CGC(2, 1, 1, [4], num_groups=0), "num_groups=0"),
    (lambda: LabelSpaceFusion(0, 2), "num_scenarios=0"),
    (lambda: Experts(2, [4], dropout=1.0), "dropout=1.0"),
])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_shape_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"experts.*\[batch, 3, d\]"):
        Experts(3, [4], name="experts")(x_input([2, 2, 5]))
    fuse = LabelSpaceFusion(2, 3)
    with pytest.raises(ValueError, match=r"predictions must be \[batch, 2, 3\]"):
        fuse(x_input([2, 3, 3]), x_input([2, 5]), np.eye(2, dtype=np.float32))
