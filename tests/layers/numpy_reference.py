"""NumPy reference implementations shared by the layer tests.

These are straightforward, loop-based re-computations of the docs/design.md equations,
read directly from a built layer's weights. They are deliberately simple rather
than fast and serve as the ground truth that the TensorFlow layers are compared
against.
"""

import math

import numpy as np

_erf = np.vectorize(math.erf)


def np_gelu(x):
    """Exact (erf) GELU."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_layer_norm(x, norm):
    """LayerNorm over the last axis with a keras LayerNormalization's gamma, beta, epsilon."""
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()


def np_per_token_dense_weights(x, kernel, bias):
    """Token n of x [B, N, d] times its own kernel[n]; ``bias=None`` adds no bias."""
    out = np.stack([x[:, n] @ kernel[n] for n in range(x.shape[1])], axis=1)
    return out if bias is None else out + bias


def np_per_token_dense(x, dense):
    """`np_per_token_dense_weights` with a PerTokenDense layer's kernel and bias."""
    return np_per_token_dense_weights(x, dense.kernel.numpy(), dense.bias.numpy())


def np_pffn(x, ffn):
    """Per-token FFN: per-token dense, GELU, per-token dense (a PerTokenFFN's weights)."""
    return np_per_token_dense(np_gelu(np_per_token_dense(x, ffn.hidden)), ffn.out)


def np_token_mixing(x):
    """Token mixing: slice h of token t becomes slice t of token h."""
    _, tokens, width = x.shape
    w = width // tokens
    out = np.zeros_like(x)
    for t in range(tokens):
        for h in range(tokens):
            out[:, h, t * w:(t + 1) * w] = x[:, t, h * w:(h + 1) * w]
    return out


def np_self_attention(x, mha):
    """keras MultiHeadAttention(x, x) from its EinsumDense weights."""
    def proj(dense, t):  # kernel [d, H, c]
        return np.einsum("btd,dhc->bthc", t, dense.kernel.numpy()) + dense.bias.numpy()

    q, k, v = proj(mha._query_dense, x), proj(mha._key_dense, x), proj(mha._value_dense, x)
    scores = np.einsum("bqhc,bthc->bhqt", q, k) / math.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bhqt,bthc->bqhc", weights, v)
    out = mha._output_dense
    return np.einsum("bqhc,hcd->bqd", context, out.kernel.numpy()) + out.bias.numpy()


def np_rank_mixer(x, block):
    """RankMixer block: token mixing or self-attention, then Add & Norm, PFFN, Add & Norm."""
    if block.interaction == "mixing":
        mixed = np_token_mixing(x)
    else:
        mixed = np_self_attention(x, block.attention)
    s = np_layer_norm(mixed + x, block.norm1)
    return np_layer_norm(np_pffn(s, block.ffn) + s, block.norm2)


def np_daa(queries, features, layer):
    """Per-token Q/K/V projections, per-head softmax over T, shared output projection.

    Returns the output and the attention weights [B, heads, num_queries, T].
    """
    heads = layer.num_heads
    q = np_per_token_dense(queries, layer.query_projection)
    k = np_per_token_dense(features, layer.key_projection)
    v = np_per_token_dense(features, layer.value_projection)
    batch, num_q, width = q.shape
    c = width // heads
    out = np.zeros((batch, num_q, width))
    weights = np.zeros((batch, heads, num_q, features.shape[1]))
    for b in range(batch):
        for h in range(heads):
            qh, kh, vh = (t[b, :, h * c:(h + 1) * c] for t in (q, k, v))
            scores = qh @ kh.T / math.sqrt(c)
            w = np.exp(scores - scores.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            weights[b, h] = w
            out[b, :, h * c:(h + 1) * c] = w @ vh
    dense = layer.output_projection
    return out @ dense.kernel.numpy() + dense.bias.numpy(), weights


def np_fused(scenario_tokens, task_tokens, mask, use_global):
    """Python loop over instances: mean over the selected scenario tokens (+ global)."""
    num_scenarios = mask.shape[1]
    out = np.array(task_tokens, dtype=np.float64)
    for b in range(mask.shape[0]):
        chosen = [scenario_tokens[b, s] for s in range(num_scenarios) if mask[b, s]]
        if use_global:
            chosen.append(scenario_tokens[b, num_scenarios])
        pooled = np.mean(chosen, axis=0) if chosen else np.zeros(task_tokens.shape[-1])
        out[b] += pooled
    return out
