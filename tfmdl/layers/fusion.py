"""Scenario-task token fusion: the domain-fused module (docs/design.md 2.2 step 5).

* `scenario_mask`: scenario ids (single- or multi-valued) -> float multi-hot ``[B, S]``.
* `scenario_share`: that mask -> each scenario's share ``m_s / max(Σ_s m_s, 1)``.
* `DomainFused`: ``Ũ_k = Û_k + z̄`` with ``z̄`` the masked mean of the instance's
  scenario tokens and the global token.
"""

from __future__ import annotations

import numbers

import tensorflow as tf
import tf_keras as keras


def scenario_mask(ids, num_scenarios: int, validate: bool = True,
                  dtype=tf.float32) -> tf.Tensor:
    """Scenario ids -> multi-hot membership mask ``m`` of shape ``[batch, S]``.

    ``m_s = 1`` iff the instance belongs to scenario ``s``. Single-valued ids
    ``[batch]`` must lie in ``[0, S)``; padded multi-valued ids ``[batch, L]`` lie
    in ``[0, S)`` or are the pad ``-1``, which contributes nothing (a sum of
    one-hots, clipped at 1 so a repeated id counts once).

    Out-of-range ids are an error, never a silent zero (docs/design.md 1): with
    ``validate`` the mask passes through ``tf.debugging.check_numerics``, made NaN
    when any id is out of range, so eager, graph and Keras functional execution
    raise ``InvalidArgumentError`` naming the range. XLA cannot raise, so under
    ``jit_compile`` the whole batch's mask becomes NaN instead (the loss turns NaN).

    Args:
      ids: int tensor ``[batch]`` or ``[batch, L]`` (pad ``-1``).
      num_scenarios: the number of scenarios ``S``.
      validate: check the id range (default True).
      dtype: float dtype of the mask (default float32).

    Returns:
      ``[batch, S]`` float mask.
    """
    if isinstance(num_scenarios, bool) or not isinstance(num_scenarios, numbers.Integral) \
            or num_scenarios < 1:
        raise ValueError("num_scenarios should be a positive integer. "
                         f"Received: num_scenarios={num_scenarios!r}")
    num_scenarios = int(num_scenarios)
    ids = tf.convert_to_tensor(ids)
    if ids.shape.rank not in (1, 2):
        raise ValueError("scenario ids must be [batch] (single-valued) or [batch, L] "
                         f"(multi-valued, pad -1). Received: shape {ids.shape}")
    mask = tf.one_hot(ids, num_scenarios, dtype=dtype)
    lowest = 0
    if ids.shape.rank == 2:
        lowest = -1
        mask = tf.minimum(tf.reduce_sum(mask, axis=1), 1.0)
    if validate:
        bad = tf.reduce_any((ids < lowest) | (ids >= num_scenarios))
        mask = tf.debugging.check_numerics(
            mask + tf.where(bad, tf.constant(float("nan"), dtype), tf.constant(0, dtype)),
            f"scenario id out of range: expected ids in [{lowest}, {num_scenarios})")
    return mask


def scenario_share(mask, dtype=None) -> tf.Tensor:
    """``w_s = m_s / max(Σ_s m_s, 1)``: the weight of each of an instance's scenarios
    ``[batch, S]`` (1 on its scenario for a single-valued field, an equal split over
    a multi-valued one, all 0 for an instance in none). ``dtype``: cast ``mask`` to
    it first (default: keep ``mask``'s)."""
    mask = tf.convert_to_tensor(mask)
    if dtype is not None:
        mask = tf.cast(mask, dtype)
    return mask / tf.maximum(tf.reduce_sum(mask, axis=-1, keepdims=True), 1.0)


@keras.utils.register_keras_serializable(package="tfmdl")
class DomainFused(keras.layers.Layer):
    """Domain-fused module: add the instance's pooled scenario tokens to every task token.

    MDL 3.2.3 (Eq. 9, 10); docs/design.md 2.2 step 5. With the multi-hot scenario mask
    ``m ∈ {0,1}^S`` of an instance:

    ``z̄ = (Σ_s m_s Z_s + Z_g) / (Σ_s m_s + 1)`` (``use_global=True``), i.e.
    ``mean({Z_s : s ∈ scen(x)} ∪ {Z_g})``; or
    ``z̄ = Σ_s m_s Z_s / max(Σ_s m_s, 1)`` (``use_global=False``, the
    ``no_global_token`` ablation; an instance in no scenario gets ``z̄ = 0``).
    Then ``Ũ_k = Û_k + z̄`` for every task ``k``.

    A masked mean (one ``einsum``), no gather and no data-dependent branching,
    so it compiles under XLA; an instance's output depends only on its own
    scenarios' tokens and the global token, so only those receive gradients.

    Shapes: ``call(scenario_tokens [batch, S + 1, d]`` (global token LAST),
    ``task_tokens [batch, K, d]``, ``scenario_mask [batch, S]`` float or bool) ->
    ``[batch, K, d]``. With ``use_global=False`` the scenario tokens may also be
    ``[batch, S, d]``; a global token, if present, is ignored.

    Example:
      >>> fused = DomainFused()
      >>> fused(tf.zeros([2, 4, 8]), tf.zeros([2, 3, 8]), tf.ones([2, 3])).shape
      TensorShape([2, 3, 8])

    Args:
      use_global: include the global token in the mean (default True).
    """

    def __init__(self, use_global: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(use_global, bool):
            raise ValueError(f"use_global should be a bool. Received: use_global={use_global!r}")
        self.use_global = use_global

    def _check_shapes(self, scenario_tokens, task_tokens, mask):
        num_scenarios = mask.shape[-1]
        num_tokens = scenario_tokens.shape[1]
        allowed = (num_scenarios + 1,) if self.use_global else (num_scenarios,
                                                                 num_scenarios + 1)
        if mask.shape.rank != 2 or num_scenarios is None or num_tokens not in allowed:
            raise ValueError(
                f"{self.name}: scenario_tokens must be [batch, S + 1, d] (global token "
                f"last{'' if self.use_global else ', or [batch, S, d] without it'}) "
                f"for a scenario_mask [batch, S]. Received: scenario_tokens shape "
                f"{scenario_tokens.shape}, scenario_mask shape {mask.shape}, "
                f"use_global={self.use_global}")
        if task_tokens.shape.rank != 3 or task_tokens.shape[-1] != scenario_tokens.shape[-1]:
            raise ValueError(
                f"{self.name}: task_tokens must be [batch, K, d] with the scenario "
                f"tokens' width. Received: task_tokens shape {task_tokens.shape}, "
                f"scenario_tokens shape {scenario_tokens.shape}")

    def call(self, scenario_tokens, task_tokens,
             scenario_mask):  # pylint: disable=redefined-outer-name
        task_tokens = tf.convert_to_tensor(task_tokens, dtype=scenario_tokens.dtype)
        mask = tf.convert_to_tensor(scenario_mask)
        self._check_shapes(scenario_tokens, task_tokens, mask)
        num_scenarios = mask.shape[-1]
        mask = tf.cast(mask, scenario_tokens.dtype)
        total = tf.einsum("bs,bsd->bd", mask, scenario_tokens[:, :num_scenarios])
        count = tf.reduce_sum(mask, axis=-1, keepdims=True)           # [B, 1]
        if self.use_global:
            pooled = (total + scenario_tokens[:, num_scenarios]) / (count + 1.0)
        else:
            pooled = total / tf.maximum(count, 1.0)
        return task_tokens + pooled[:, None, :]

    def get_config(self):
        config = super().get_config()
        config.update(use_global=self.use_global)
        return config
