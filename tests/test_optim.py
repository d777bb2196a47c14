"""Tests of lite_bert.train.optim: schedules, weight-decay mask, AdamW/LAMB updates."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Encoder
from lite_bert.train import optim


def config(**overrides):
  return ml_collections.ConfigDict(
      {**optim.default_optim_config().to_dict(), **overrides})


def tiny_params():
  return {
      "dense": {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]]),
                "bias": jnp.array([0.1, -0.2])},
      "layer_norm": {"scale": jnp.array([1.0, 1.0]), "bias": jnp.array([0.0, 0.0])},
  }


def tiny_grads():
  return {
      "dense": {"kernel": jnp.array([[0.3, -0.1], [0.2, 0.4]]),
                "bias": jnp.array([0.05, -0.5])},
      "layer_norm": {"scale": jnp.array([0.2, -0.3]), "bias": jnp.array([0.1, 0.1])},
  }


def test_decay_mask_of_the_encoder_excludes_layer_norm_and_biases():
  cfg = EncoderConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                      intermediate_size=32, embedding_size=8,
                      max_position_embeddings=16)
  ids = jnp.zeros((1, 4), jnp.int32)
  abstract = jax.eval_shape(Encoder(cfg).init, jax.random.key(0), ids)["params"]
  mask = optim.decay_mask(abstract)
  flat = {"/".join(optim._path_names(path)): value
          for path, value in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["embeddings/word_embeddings/embedding"] is True
  assert flat["embeddings/projection/kernel"] is True
  assert flat["embeddings/projection/bias"] is False
  assert flat["embeddings/layer_norm/scale"] is False
  assert flat["embeddings/layer_norm/bias"] is False
  assert flat["pooler/kernel"] is True
  assert flat["pooler/bias"] is False
  layer_entries = {k: v for k, v in flat.items() if k.startswith("layers/")}
  for path, value in layer_entries.items():
    expected = path.endswith("kernel") and "layer_norm" not in path
    assert value is expected, path
  assert any(layer_entries.values()) and not all(layer_entries.values())


def test_decay_mask_excludes_tf_style_layer_norm_names():
  params = {"LayerNorm": {"gamma": 1.0, "beta": 0.0}, "dense": {"kernel": 1.0}}
  assert optim.decay_mask(params) == {
      "LayerNorm": {"gamma": False, "beta": False}, "dense": {"kernel": True}}


def test_linear_schedule_warms_up_then_decays_to_the_end_value():
  _, schedule = optim.make_optimizer(
      config(learning_rate=1e-3, warmup_steps=10, end_learning_rate=1e-4), 110)
  values = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)]
  np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5.5e-4, 1e-4, 1e-4], rtol=1e-6)


def test_cosine_schedule_is_halfway_at_the_middle_of_decay():
  _, schedule = optim.make_optimizer(
      config(decay="cosine", learning_rate=2.0, warmup_steps=0,
             end_learning_rate=0.0), 100)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 50, 100)],
                             [2.0, 1.0, 0.0], atol=1e-6)


def test_constant_schedule_with_warmup_fraction():
  _, schedule = optim.make_optimizer(
      config(decay="constant", learning_rate=1.0, warmup_steps=None,
             warmup_fraction=0.25), 40)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10, 39)],
                             [0.0, 0.5, 1.0, 1.0], rtol=1e-6)
  _, schedule_minus_one = optim.make_optimizer(
      config(decay="constant", learning_rate=1.0, warmup_steps=-1,
             warmup_fraction=0.25), 40)
  assert float(schedule_minus_one(5)) == pytest.approx(0.5)


def adam_direction(grad, eps):
  # First Adam step with bias correction: m_hat = g, v_hat = g^2 (up to the
  # float32 rounding of 1 - b2, hence rtol=1e-4 below; weight decay changes
  # the kernel update by ~1e-2 relative, the trust ratio by far more).
  return grad / (jnp.abs(grad) + eps)


def test_adamw_first_update_decays_only_kernels():
  lr, wd, eps = 0.1, 0.01, 1e-6
  optimizer, _ = optim.make_optimizer(
      config(learning_rate=lr, warmup_steps=0, decay="constant",
             weight_decay=wd, eps=eps, clip_norm=0.0), 10)
  params, grads = tiny_params(), tiny_grads()
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  expected = jax.tree.map(lambda g: -lr * adam_direction(g, eps), grads)
  expected["dense"]["kernel"] = -lr * (adam_direction(grads["dense"]["kernel"], eps)
                                       + wd * params["dense"]["kernel"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4),
               updates, expected)


def test_lamb_applies_the_trust_ratio_only_where_decay_applies():
  lr, wd, eps = 0.1, 0.01, 1e-6
  optimizer, _ = optim.make_optimizer(
      config(name="lamb", learning_rate=lr, warmup_steps=0, decay="constant",
             weight_decay=wd, eps=eps, clip_norm=0.0), 10)
  params, grads = tiny_params(), tiny_grads()
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  kernel, kernel_grad = params["dense"]["kernel"], grads["dense"]["kernel"]
  direction = adam_direction(kernel_grad, eps) + wd * kernel
  trust = jnp.linalg.norm(kernel) / jnp.linalg.norm(direction)
  np.testing.assert_allclose(updates["dense"]["kernel"], -lr * trust * direction,
                             rtol=1e-4)
  for group, leaf in (("dense", "bias"), ("layer_norm", "scale"), ("layer_norm", "bias")):
    np.testing.assert_allclose(updates[group][leaf],
                               -lr * adam_direction(grads[group][leaf], eps),
                               rtol=1e-4)


def apply_steps(optimizer, params, grads_sequence):
  state = optimizer.init(params)
  for grads in grads_sequence:
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_clip_norm_clips_the_global_gradient_norm_before_adam():
  params = tiny_params()
  big = jax.tree.map(lambda g: 100.0 * g, tiny_grads())
  small = tiny_grads()
  clipped_cfg = config(learning_rate=0.1, warmup_steps=0, decay="constant",
                       clip_norm=1.0)
  clipped, _ = optim.make_optimizer(clipped_cfg, 10)
  unclipped, _ = optim.make_optimizer(config(**{**clipped_cfg.to_dict(),
                                                "clip_norm": 0.0}), 10)

  def clip(grads):
    norm = optax.tree.norm(grads)
    return jax.tree.map(lambda g: g * jnp.minimum(1.0, 1.0 / norm), grads)

  got = apply_steps(clipped, params, [big, small])
  want = apply_steps(unclipped, params, [clip(big), clip(small)])
  unclipped_result = apply_steps(unclipped, params, [big, small])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
  assert not np.allclose(got["dense"]["kernel"], unclipped_result["dense"]["kernel"],
                         rtol=1e-4)


def test_accumulation_averages_micro_batches_into_one_update():
  params = tiny_params()
  g1 = tiny_grads()
  g2 = jax.tree.map(lambda g: -0.5 * g + 0.1, tiny_grads())
  base = config(learning_rate=0.1, warmup_steps=2, decay="linear", clip_norm=1.0)
  accumulated, _ = optim.make_optimizer(config(**{**base.to_dict(),
                                                  "accumulation_steps": 2}), 10)
  single, _ = optim.make_optimizer(base, 10)

  state = accumulated.init(params)
  first, state = accumulated.update(g1, state, params)
  assert all(np.all(u == 0) for u in jax.tree.leaves(first))
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  # Two updates: the schedule must be at its second value (update index 1).
  got = apply_steps(accumulated, params, [g1, g2, g1, g2])
  want = apply_steps(single, params, [mean, mean])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)


def test_optimizer_state_is_float32():
  optimizer, _ = optim.make_optimizer(
      config(name="lamb", warmup_steps=10, accumulation_steps=4), 100)
  state = optimizer.init(tiny_params())
  float_dtypes = {leaf.dtype for leaf in jax.tree.leaves(state)
                  if jnp.issubdtype(leaf.dtype, jnp.floating)}
  assert float_dtypes == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("overrides, field", [
    (dict(name="sgd"), "optim.name"),
    (dict(decay="step"), "optim.decay"),
    (dict(learning_rate=0.0), "optim.learning_rate"),
    (dict(learning_rate=float("inf")), "optim.learning_rate"),
    (dict(weight_decay=float("inf")), "optim.weight_decay"),
    (dict(clip_norm=float("nan")), "optim.clip_norm"),
    (dict(learning_rate="1e-4"), "optim.learning_rate"),
    (dict(warmup_steps=1000), "optim.warmup_steps"),
    (dict(warmup_steps=2.5), "optim.warmup_steps"),
    (dict(warmup_steps=None, warmup_fraction=1.5), "optim.warmup_fraction"),
    (dict(b2=1.0), "optim.b2"),
    (dict(eps=0.0), "optim.eps"),
    (dict(weight_decay=-0.1), "optim.weight_decay"),
    (dict(clip_norm=-1.0), "optim.clip_norm"),
    (dict(accumulation_steps=0), "optim.accumulation_steps"),
    (dict(end_learning_rate=1.0), "optim.end_learning_rate"),
])
def test_bad_values_are_refused_naming_the_field(overrides, field):
  with pytest.raises(UserError, match=field.replace(".", r"\.")):
    optim.make_optimizer(config(**{"warmup_steps": 10, **overrides}), 100)


def test_unknown_field_is_refused():
  cfg = config()
  cfg.momentum = 0.9
  with pytest.raises(UserError, match=r"optim\.momentum"):
    optim.make_optimizer(cfg, 100)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_all_finite_finds_one_bad_value_in_any_float_leaf(bad):
  # The guard's check (`loop.all_finite`): the largest finite values pass, one
  # inf/NaN anywhere fails, integer leaves are not checked.
  from lite_bert.train import loop  # pylint: disable=import-outside-toplevel
  big = np.finfo(np.float32).max
  big16 = float(jnp.finfo(jnp.bfloat16).max)
  tree = {"w": jnp.full((3, 4), big), "b": jnp.array([-big16, 1.0], jnp.bfloat16),
          "step": jnp.array([2**31 - 1], jnp.int32), "mu": [jnp.zeros((5,))]}
  check = jax.jit(loop.all_finite)
  assert bool(check(tree)) and bool(check({})) and bool(check({"step": tree["step"]}))
  for path in (("w",), ("b",), ("mu", 0)):
    broken = jax.tree_util.tree_map(lambda x: x, tree)
    leaf = broken[path[0]] if len(path) == 1 else broken[path[0]][path[1]]
    leaf = leaf.at[(-1,) * leaf.ndim].set(bad)
    if len(path) == 1:
      broken[path[0]] = leaf
    else:
      broken[path[0]][path[1]] = leaf
    assert not bool(check(broken)), (path, bad)
