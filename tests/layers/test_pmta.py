"""Tests for tfmdl.layers.pmta against NumPy re-computations of PMTA's equations."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import dnn
from tfmdl.layers.pmta import (CrossTaskTransformer, DomainAwareRescaling, TaskClassifierFirstLayer,
                               TaskFusionMLP, TaskPromptEmbedding)
from tests.layers.numpy_reference import np_layer_norm, np_self_attention

B, K, D = 3, 4, 8


def randomize(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * scale
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------ NumPy references ------------------------------ #
def np_tpe(x, layer):
    """TPE_k = W2_k ReLU(W1_k [p_k ; e_k] + b1_k) + b2_k, one task at a time."""
    p, w1, b1 = layer.prompt.numpy(), layer.kernel1.numpy(), layer.bias1.numpy()
    w2, b2 = layer.kernel2.numpy(), layer.bias2.numpy()
    out = []
    for k in range(x.shape[1]):
        inp = np.concatenate([np.broadcast_to(p[k], (x.shape[0], p.shape[1])), x[:, k]], -1)
        out.append(relu(inp @ w1[k] + b1[k]) @ w2[k] + b2[k])
    return np.stack(out, axis=1)


def np_dense(x, dense):
    return x @ dense.kernel.numpy() + dense.bias.numpy()


def np_ctt(m, layer, rescale=None):
    """X_1 = LN(M); A = LN(MHA(X)+X); X' = LN(FFN(A)+A) (⊙ DAR_i)."""
    x = np_layer_norm(m, layer.input_norm)
    for i in range(layer.num_layers):
        a = np_layer_norm(np_self_attention(x, layer.attention[i]) + x, layer.norm1[i])
        ffn = np_dense(relu(np_dense(a, layer.ffn_hidden[i])), layer.ffn_output[i])
        x = np_layer_norm(ffn + a, layer.norm2[i])
        if rescale is not None:
            s = rescale[:, i]
            x = x * (s[:, None, :] if s.ndim == 2 else s)
    return x


def np_fusion_mlp(m, layer, rescale=None):
    x = np_layer_norm(m, layer.input_norm)
    for j, dense in enumerate(layer.dense):
        w, b = dense.kernel.numpy(), dense.bias.numpy()
        x = relu(np.stack([x[:, k] @ w[k] + b[k] for k in range(x.shape[1])], axis=1))
        if rescale is not None:
            x = x * rescale[:, j][:, None, :]
    return x


def np_dar(e, layer):
    return 2.0 * sigmoid(np_dense(relu(np_dense(e, layer.bottleneck)), layer.expand))


# ---------------------------- TaskPromptEmbedding ----------------------------- #
def test_tpe_matches_numpy_with_padded_task_features():
    layer = TaskPromptEmbedding(K, prompt_dim=3, hidden_dim=6, output_dim=5,
                                feature_widths=[5, 2, 0, 4])
    x = x_input([B, K, 5])
    layer(x)
    w1 = layer.kernel1.numpy()
    # padded rows (beyond P + F_k) start at zero, so padding never changes a task's output
    assert w1.shape == (K, 3 + 5, 6)
    assert not w1[1, 3 + 2:].any() and not w1[2, 3:].any() and w1[0, 3:].any()
    randomize(layer)
    np.testing.assert_allclose(layer(x).numpy(), np_tpe(x, layer), rtol=1e-5, atol=1e-5)


def test_tpe_tasks_have_their_own_weights_and_prompts():
    layer = TaskPromptEmbedding(2, prompt_dim=3, hidden_dim=4, output_dim=4)
    layer(tf.zeros([1, 2, 3]))
    randomize(layer)
    # identical task features still give different task embeddings
    out = layer(np.ones([2, 2, 3], np.float32)).numpy()
    assert not np.allclose(out[:, 0], out[:, 1])
    assert layer.prompt.shape == (2, 3)


def test_tpe_without_task_features_is_a_prompt_mlp():
    layer = TaskPromptEmbedding(K, prompt_dim=3, hidden_dim=6, output_dim=5)
    x = np.zeros([B, K, 0], np.float32)
    out = layer(x).numpy()
    randomize(layer)
    out = layer(x).numpy()
    assert out.shape == (B, K, 5)
    np.testing.assert_allclose(out, np_tpe(x, layer), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0], out[2])       # no personal features: same for all


def test_tpe_validation():
    with pytest.raises(ValueError, match="prompt_dim=0"):
        TaskPromptEmbedding(2, 0, 4, 4)
    with pytest.raises(ValueError, match=r"feature_widths=\[1\]"):
        TaskPromptEmbedding(2, 2, 4, 4, feature_widths=[1])
    with pytest.raises(ValueError, match=r"expected \[batch, 2, F\]"):
        TaskPromptEmbedding(2, 2, 4, 4)(tf.zeros([1, 3, 4]))


# -------------------------- TaskClassifierFirstLayer -------------------------- #
def test_classifier_first_layer_is_the_first_layer_of_task_towers():
    towers = dnn.TaskTowers(K, [6], name="task_towers")
    h = x_input([B, D])
    towers(h)
    randomize(towers)
    c1 = TaskClassifierFirstLayer(K, 6, name="task_towers")
    c1(h)
    names = [w.name for w in c1.weights]
    assert names == ["task_towers/layer_0/kernel:0", "task_towers/layer_0/bias:0"]
    assert set(names) < {w.name for w in towers.weights}
    c1.set_weights(towers.get_weights()[:2])
    kernel, bias = towers.get_weights()[:2]
    expected = np.stack([relu(h @ kernel[k] + bias[k]) for k in range(K)], axis=1)
    np.testing.assert_allclose(c1(h).numpy(), expected, rtol=1e-5, atol=1e-5)
    # per-task inputs [B, K, d] work too
    ht = np.repeat(h[:, None], K, axis=1)
    np.testing.assert_allclose(c1(ht).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_classifier_with_logit_is_the_whole_one_layer_tower():
    """``with_logit``: ``b_k = v_k · C1_k(h)`` with the weight names of `TaskTowers`,
    so restored from a backbone model's towers it gives that model's logits."""
    towers = dnn.TaskTowers(K, [6], name="task_towers")
    h = x_input([B, D])
    towers(h)
    randomize(towers)
    c1 = TaskClassifierFirstLayer(K, 6, with_logit=True, name="task_towers")
    hidden, logit = c1(h)
    assert [w.name for w in c1.weights] == [w.name for w in towers.weights]
    c1.set_weights(towers.get_weights())
    kernel, bias, v = towers.get_weights()
    first = np.stack([relu(h @ kernel[k] + bias[k]) for k in range(K)], axis=1)   # [B, K, 6]
    expected = np.einsum("bku,ku->bk", first, v[:, :, 0])
    hidden, logit = c1(h)
    np.testing.assert_allclose(hidden.numpy(), first, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logit.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logit.numpy(), towers(h).numpy(), rtol=1e-5, atol=1e-5)
    again = TaskClassifierFirstLayer.from_config(c1.get_config())
    assert again.with_logit and again.get_config() == c1.get_config()
    compiled = tf.function(lambda x: c1(x), jit_compile=True)(h)       # XLA
    np.testing.assert_allclose(compiled[1].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_classifier_with_logit_in_a_mirrored_scope(mirrored):
    with mirrored.scope():
        c1 = TaskClassifierFirstLayer(K, 6, with_logit=True)
        hidden, logit = c1(x_input([B, D]))
    assert hidden.shape == (B, K, 6) and logit.shape == (B, K)
    assert len(c1.trainable_weights) == 3


# ---------------------------- CrossTaskTransformer ---------------------------- #
@pytest.mark.parametrize("scale_shape", [None, (B, 2, D), (B, 2, K, D)])
def test_cross_task_transformer_matches_numpy(scale_shape):
    layer = CrossTaskTransformer(num_layers=2, num_heads=2, ffn_mult=2)
    m = x_input([B, K, D])
    rescale = None if scale_shape is None else \
        np.random.default_rng(5).uniform(0.1, 1.9, scale_shape).astype(np.float32)
    layer(m)
    randomize(layer)
    np.testing.assert_allclose(layer(m, rescale=rescale).numpy(), np_ctt(m, layer, rescale),
                               rtol=1e-4, atol=1e-4)
    assert layer.ffn_hidden[0].kernel.shape == (D, 2 * D)


def test_cross_task_transformer_mixes_tasks_and_rescale_one_is_neutral():
    layer = CrossTaskTransformer(num_layers=1, num_heads=2)
    m = x_input([B, K, D])
    base = layer(m).numpy()
    np.testing.assert_allclose(layer(m, rescale=np.ones([B, 1, D], np.float32)).numpy(), base,
                               rtol=1e-6)
    changed = m.copy()
    changed[:, 1] += x_input([B, D], seed=9)
    # attention carries task 1's change into task 0's row
    assert not np.allclose(layer(changed).numpy()[:, 0], base[:, 0])


def test_cross_task_transformer_validation():
    with pytest.raises(ValueError, match=r"d=10, num_heads=4"):
        CrossTaskTransformer(num_heads=4)(tf.zeros([1, 3, 10]))
    with pytest.raises(ValueError, match=r"rescale must be \[batch, 2, 8\]"):
        CrossTaskTransformer(num_layers=2, num_heads=2)(tf.zeros([1, 3, 8]),
                                                        rescale=tf.ones([1, 3, 8]))
    with pytest.raises(ValueError, match="num_layers=0"):
        CrossTaskTransformer(num_layers=0)


# ------------------------------- TaskFusionMLP -------------------------------- #
def test_task_fusion_mlp_matches_numpy_and_keeps_tasks_apart():
    layer = TaskFusionMLP(num_layers=3)
    m = x_input([B, K, D])
    rescale = np.random.default_rng(2).uniform(0.1, 1.9, [B, 3, D]).astype(np.float32)
    layer(m)
    randomize(layer)
    out = layer(m, rescale=rescale).numpy()
    np.testing.assert_allclose(out, np_fusion_mlp(m, layer, rescale), rtol=1e-4, atol=1e-4)
    assert layer.dense[0].kernel.shape == (K, D, D)
    changed = m.copy()
    changed[:, 1] += x_input([B, D], seed=9)
    assert not np.allclose(layer(changed, rescale=rescale).numpy()[:, 1], out[:, 1])
    # no path between tasks (the LayerNorm normalises each row on its own)
    np.testing.assert_allclose(layer(changed, rescale=rescale).numpy()[:, 0], out[:, 0])


# ---------------------------- DomainAwareRescaling ---------------------------- #
def test_domain_aware_rescaling_matches_numpy_and_lies_in_0_2():
    layer = DomainAwareRescaling(output_dim=D, bottleneck_dim=3)
    e = x_input([B, 6]) * 5
    layer(e)
    randomize(layer, scale=2.0)
    out = layer(e).numpy()
    np.testing.assert_allclose(out, np_dar(e, layer), rtol=1e-5, atol=1e-6)
    assert out.shape == (B, D) and (out > 0).all() and (out < 2).all()
    assert out.min() < 0.5 and out.max() > 1.5            # the range is used
    assert layer.bottleneck.kernel.shape == (6, 3) and layer.expand.kernel.shape == (3, D)


def test_domain_aware_rescaling_rejects_a_wide_bottleneck():
    with pytest.raises(ValueError, match=r"bottleneck_dim=8, input_dim=None, output_dim=8"):
        DomainAwareRescaling(output_dim=8, bottleneck_dim=8)
    with pytest.raises(ValueError, match=r"bottleneck_dim=4, input_dim=4, output_dim=16"):
        DomainAwareRescaling(output_dim=16, bottleneck_dim=4, input_dim=4)
    with pytest.raises(ValueError, match=r"bottleneck_dim=4, input_dim=3, output_dim=16"):
        DomainAwareRescaling(output_dim=16, bottleneck_dim=4)(tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="input_dim=5 but the input"):
        DomainAwareRescaling(output_dim=16, bottleneck_dim=2, input_dim=5)(tf.zeros([2, 3]))


# ------------------------- config, XLA, MirroredStrategy ----------------------- #
def _layers_and_inputs():
    return [
        (TaskPromptEmbedding(K, 3, 6, 5, feature_widths=[5, 2, 0, 4]), (x_input([B, K, 5]),), {}),
        (TaskClassifierFirstLayer(K, 6), (x_input([B, D]),), {}),
        (CrossTaskTransformer(2, 2, 3, dropout=0.1), (x_input([B, K, D]),),
         {"rescale": x_input([B, 2, D]) ** 2}),
        (TaskFusionMLP(3, dropout=0.1), (x_input([B, K, D]),),
         {"rescale": x_input([B, 3, D]) ** 2}),
        (DomainAwareRescaling(D, 3, input_dim=6), (x_input([B, 6]),), {}),
    ]


@pytest.mark.parametrize("index", range(5))
def test_get_config_round_trip(index):
    layer, args, kwargs = _layers_and_inputs()[index]
    layer(*args, **kwargs)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(*args, **kwargs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(*args, **kwargs).numpy(), layer(*args, **kwargs).numpy(),
                               rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == config


@pytest.mark.parametrize("index", range(5))
def test_jit_compile_matches_eager(index):
    layer, args, kwargs = _layers_and_inputs()[index]
    eager = layer(*args, **kwargs).numpy()
    compiled = tf.function(lambda *a, **kw: layer(*a, **kw), jit_compile=True)(*args, **kwargs)
    np.testing.assert_allclose(compiled.numpy(), eager, rtol=1e-5, atol=1e-5)


def test_layers_train_in_two_replica_mirrored_strategy(mirrored):
    rng = np.random.default_rng(0)
    feats, h, e = (rng.normal(size=s).astype(np.float32) for s in ([64, K, 5], [64, D], [64, 6]))
    y = (rng.random([64, K]) < 0.3).astype(np.float32)
    with mirrored.scope():
        fi, hi, ei = keras.Input((K, 5)), keras.Input((D,)), keras.Input((6,))
        rows = tf.concat([TaskPromptEmbedding(K, 3, 6, 5)(fi),
                          TaskClassifierFirstLayer(K, 3)(hi)], axis=-1)        # [B, K, 8]
        scales = tf.stack([DomainAwareRescaling(8, 3)(ei) for _ in range(2)], axis=1)
        x = CrossTaskTransformer(2, 2)(rows, rescale=scales)
        x = TaskFusionMLP(1)(x)
        out = tf.nn.sigmoid(tf.reduce_sum(x, -1))
        model = keras.Model([fi, hi, ei], out)
        model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    hist = model.fit([feats, h, e], y, batch_size=32, epochs=2, verbose=0)
    loss = hist.history["loss"]
    assert np.isfinite(loss).all() and loss[-1] < loss[0]
