import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl import models
from tfmdl.benchmark import matmul_floor
from tfmdl.benchmark import peer
from tfmdl.layers.per_token_ffn import PerTokenDense
from tfmdl.pipelines import spec as spec_lib
from tfmdl.benchmark.matmul_floor import Product


def test_products_of_a_small_model_have_their_shapes_and_flops():
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(8, activation="relu")(x)
    h = keras.layers.Reshape((2, 4))(h)
    y = PerTokenDense(3)(h)       # one batched [2, B, 4] x [2, 4, 3] product, narrow:
    model = keras.Model(x, y)     # run as [2, B, 4] x [2, 3, 4]^T (per_token_ffn.kernel_product)
    products = matmul_floor.model_products(model, 16)
    shapes = sorted((p.a_shape, p.b_shape, p.transpose_b) for p in products)
    assert shapes == [((2, 16, 4), (2, 3, 4), True), ((16, 5), (5, 8), False)]
    assert sum(p.flops for p in products) == 2 * 16 * (5 * 8 + 2 * 4 * 3)
    assert matmul_floor.step_flops(products) == 3 * 2 * 16 * (5 * 8 + 2 * 4 * 3)


@pytest.mark.parametrize("product,expected", [
    (Product((7, 3), (3, 5)), 2 * 7 * 3 * 5),
    (Product((3, 7), (3, 5), transpose_a=True), 2 * 7 * 3 * 5),
    (Product((7, 3), (5, 3), transpose_b=True), 2 * 7 * 3 * 5),
    (Product((4, 7, 3), (4, 3, 5)), 4 * 2 * 7 * 3 * 5),
    (Product((4, 1, 7, 3), (6, 3, 5)), 4 * 6 * 2 * 7 * 3 * 5),   # broadcast batch dims
])
def test_product_flops(product, expected):
    assert product.flops == expected


@pytest.mark.parametrize("model", ["mmoe", "ple", "shared_bottom"])
def test_products_of_the_race_models_are_their_kernels(feed_dir, model):
    # two independent counts of the same arithmetic: the traced products and
    # 6 x the kernel sizes (every product of these models multiplies by a kernel)
    spec = peer.peer_spec(spec_lib.load_spec(feed_dir))
    built = models.build(model, spec, peer.tfmdl_params(model, peer.Arch()))
    products = matmul_floor.model_products(built.core, 64)
    assert matmul_floor.step_flops(products) == 64 * peer.matmul_flops_per_example(built.core)


def test_timed_step_runs_every_product_and_both_gradients():
    products = [Product((6, 4), (4, 3)), Product((2, 4, 6), (2, 5, 4), True, True)]
    operands = matmul_floor._operands(products)  # pylint: disable=protected-access
    for jit in (False, True):
        outs = matmul_floor._step_function(products, jit)(operands)  # pylint: disable=protected-access
        assert len(outs) == 3 * len(products)
        (a, b, dc), (a2, b2, dc2) = [[t.numpy() for t in ops] for ops in operands]
        want = [a @ b, dc @ b.T, a.T @ dc]
        # C = A^T B^T: dA = (dC B)^T = B^T dC^T, dB = (A dC)^T = dC^T A^T
        t = lambda m: np.swapaxes(m, 1, 2)  # noqa: E731
        c2, da2, db2 = t(a2) @ t(b2), t(b2) @ t(dc2), t(dc2) @ t(a2)
        want += [c2, da2, db2]
        for got, expected in zip(outs, want):
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_floor_measures_both_engines():
    floor = matmul_floor.Floor([Product((64, 32), (32, 16))])
    seconds = floor.measure(repeats=2)
    assert set(seconds) == {"tensorflow", "xla"}
    assert all(0 < s < 10 and math.isfinite(s) for s in seconds.values())


def test_a_model_without_products_is_named():
    x = keras.Input((3,))
    model = keras.Model(x, tf.nn.relu(x))
    with pytest.raises(ValueError, match="no matrix products"):
        matmul_floor.Floor(matmul_floor.model_products(model, 4))
