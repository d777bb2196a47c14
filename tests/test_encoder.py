"""Encoder structure and parameter counts: the papers' sizes and the scanned layer stack.

Counts come from `jax.eval_shape` (no weights allocated); one of them goes
through `launch.py --config.mode=summary` to check the CLI and `summary.json`.
"""

import importlib
import json
import math
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_bert import paths
from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Dense
from lite_bert.models.heads import PretrainingModel
from lite_bert.models.summary import abstract_pretraining_params, parameter_counts

# A small config whose dimensions are all different, so that a leading axis of
# size num_layers cannot be confused with any other.
SMALL = dict(vocab_size=50, hidden_size=8, num_layers=3, num_heads=2, intermediate_size=16,
             max_position_embeddings=32)


def _config(file: str, size: str, **overrides):
  config = importlib.import_module(f"configs.{file}").get_config(size)
  fields = dict(config.model)
  fields.update(overrides)
  return EncoderConfig.from_dict(fields), config.pair_head


def _counts(cfg: EncoderConfig, pair_head: bool = True) -> dict:
  return parameter_counts(abstract_pretraining_params(cfg, pair_head=pair_head))


def _shapes(tree) -> dict:
  return jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)


def _size(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def test_summary_cli_bert_base(tmp_path):
  result = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/bert.py:base", "--config.mode=summary",
       f"--workdir={tmp_path}"],
      cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert summary["params_total"] == 109_482_240
  # HF BertModel.embeddings: word, position and token-type tables plus LayerNorm.
  model = summary["model"]
  vocab, hidden = model["vocab_size"], model["hidden_size"]
  positions, types = model["max_position_embeddings"], model["type_vocab_size"]
  assert summary["params_embeddings"] == (vocab * hidden + positions * hidden
                                          + types * hidden + 2 * hidden)


@pytest.mark.parametrize("file, size, total", [
    ("bert", "large", 335_141_888),
    ("distilbert", "base", 66_362_880),
    ("albert", "base", 11_683_584),
    ("albert", "large", 17_683_968),
    ("albert", "xlarge", 58_724_864),
    ("albert", "xxlarge", 222_595_584),
])
def test_params_total_matches_the_papers_models(file, size, total):
  cfg, pair_head = _config(file, size)
  assert _counts(cfg, pair_head)["params_total"] == total


def test_albert_shared_count_does_not_depend_on_depth():
  cfg12, _ = _config("albert", "base", num_layers=12)
  cfg24, _ = _config("albert", "base", num_layers=24)
  assert _counts(cfg12)["params_total"] == _counts(cfg24)["params_total"] == 11_683_584


def test_unshared_layers_carry_a_leading_layer_axis():
  params = abstract_pretraining_params(EncoderConfig(**SMALL), pair_head=True)
  layers = params["encoder"]["layers"]
  assert set(layers) == {"attention", "ffn"}
  leaves = jax.tree_util.tree_leaves(layers)
  assert len(leaves) == 12  # 3 Dense + 1 LayerNorm per half, 2 leaves each
  assert all(leaf.shape[0] == SMALL["num_layers"] for leaf in leaves)
  assert layers["attention"]["qkv"]["kernel"].shape == (3, 8, 24)
  assert layers["ffn"]["output"]["kernel"].shape == (3, 16, 8)
  assert "shared_attention" not in params["encoder"] and "shared_ffn" not in params["encoder"]


def test_share_all_layers_carry_no_layer_axis():
  none = _shapes(abstract_pretraining_params(EncoderConfig(**SMALL), True)["encoder"]["layers"])
  shared = abstract_pretraining_params(EncoderConfig(**SMALL, share="all"), True)
  expected = jax.tree_util.tree_map(lambda s: s[1:], none, is_leaf=lambda x: isinstance(x, tuple))
  assert _shapes(shared["encoder"]["layers"]) == expected


@pytest.mark.parametrize("share, other", [("attention", "ffn"), ("ffn", "attention")])
def test_partial_sharing_splits_the_block(share, other):
  unshared = _shapes(abstract_pretraining_params(EncoderConfig(**SMALL), True)["encoder"]["layers"])
  params = abstract_pretraining_params(EncoderConfig(**SMALL, share=share), True)
  encoder = params["encoder"]
  one_layer = jax.tree_util.tree_map(lambda s: s[1:], unshared[share],
                                     is_leaf=lambda x: isinstance(x, tuple))
  # The shared half sits outside the scan, without a layer axis ...
  assert _shapes(encoder[f"shared_{share}"]) == one_layer
  # ... and the other half is scanned, with one.
  assert set(encoder["layers"]) == {other}
  assert _shapes(encoder["layers"][other]) == unshared[other]


def test_partial_sharing_counts_sit_between_all_and_none():
  layers = SMALL["num_layers"]
  counts = {share: _counts(EncoderConfig(**SMALL, share=share))["params_total"]
            for share in ("none", "all", "attention", "ffn")}
  block = abstract_pretraining_params(EncoderConfig(**SMALL, share="all"), True)
  attention = _size(block["encoder"]["layers"]["attention"])
  ffn = _size(block["encoder"]["layers"]["ffn"])
  assert counts["none"] - counts["all"] == (layers - 1) * (attention + ffn)
  assert counts["attention"] == counts["all"] + (layers - 1) * ffn
  assert counts["ffn"] == counts["all"] + (layers - 1) * attention
  for partial in ("attention", "ffn"):
    assert counts["all"] < counts[partial] < counts["none"]


@pytest.mark.parametrize("share", ["none", "all", "attention", "ffn"])
def test_layer_stack_is_one_scan(share):
  cfg = EncoderConfig(**SMALL, share=share, embedding_size=4)
  model = PretrainingModel(cfg)
  ids = jnp.ones((2, 5), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), ids)["params"])
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, ids))(params)
  scans = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "scan"]
  assert len(scans) == 1
  assert scans[0].params["length"] == SMALL["num_layers"]


def test_counts_split_into_their_parts():
  cfg, pair_head = _config("albert", "base")
  counts = _counts(cfg, pair_head)
  hidden, embedding = cfg.hidden_size, cfg.embedding_dim
  assert counts["params_embeddings"] == (
      (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * embedding
      + 2 * embedding + embedding * hidden + hidden)
  assert counts["params_pooler"] == hidden * hidden + hidden
  assert counts["params_total"] == (counts["params_embeddings"] + counts["params_layers"]
                                    + counts["params_pooler"])
  assert counts["params_pair_head"] == 2 * hidden + 2


def _dot_generals(jaxpr) -> list:
  """Every dot_general equation of a jaxpr, inside scans / pjits / custom calls too."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += _dot_generals(inner)
  return found


@pytest.mark.parametrize("with_dropout", [False, True])
def test_bf16_compute_accumulates_every_matmul_in_fp32(with_dropout):
  # XLA:CPU runs a bf16 GEMM natively only when asked for an fp32 result (else it widens
  # the operands to fp32 first); GPUs accumulate in fp32 anyway. Every matmul of the
  # pretraining forward must take bf16 operands and produce fp32 (then cast back).
  cfg = EncoderConfig(**SMALL, share="none", embedding_size=4, dtype="bfloat16",
                      attention_dropout_rate=0.1)
  model = PretrainingModel(cfg)
  ids = jnp.ones((2, 5), jnp.int32)
  positions = jnp.zeros((2, 3), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), ids)["params"])
  jaxpr = jax.make_jaxpr(lambda p: model.apply(
      {"params": p}, ids, None, None, positions, deterministic=not with_dropout,
      rngs={"dropout": jax.random.key(1)}))(params)
  dots = _dot_generals(jaxpr.jaxpr)
  # embedding projection, qkv, 2 attention matmuls, output, 2 FFN, pooler, MLM transform,
  # tied decoder, pair head
  assert len(dots) == 11
  for eqn in dots:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
    assert eqn.outvars[0].aval.dtype == jnp.float32, eqn


def test_bf16_weight_matmuls_are_native_2d_gemms_forward_and_backward():
  # XLA:CPU ran the bf16 step 1.15x slower with the weight matmuls on [batch, seq, K]
  # operands (the weight gradient then contracts two axes): `flat_matmul` makes each one
  # a 2-D GEMM, and so its two backward ones; and those take bf16 operands with an fp32
  # result (JAX's own backward widens them to fp32 GEMMs: the step ran 1.22x slower).
  cfg = EncoderConfig(**SMALL, share="none", embedding_size=4, dtype="bfloat16",
                      attention_dropout_rate=0.1)
  model = PretrainingModel(cfg)
  ids = jnp.ones((2, 5), jnp.int32)
  positions = jnp.zeros((2, 3), jnp.int32)
  params = model.init(jax.random.key(0), ids)["params"]

  def loss(p):
    out = model.apply({"params": p}, ids, None, None, positions, deterministic=False,
                      rngs={"dropout": jax.random.key(1)})
    return jnp.sum(out["mlm_logits"] ** 2) + jnp.sum(out["pair_logits"])

  dots = _dot_generals(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  flat = [e for e in dots if all(v.aval.ndim == 2 for v in e.invars)]
  # Each biased Dense's bias gradient is a bf16 GEMV, ones [M] @ ct [M, N], fp32 result:
  # the 9 weight matmuls but the tied decoder (its bias is added in fp32).
  gemvs = [e for e in dots if [v.aval.ndim for v in e.invars] == [1, 2]]
  assert len(gemvs) == 8
  for eqn in gemvs:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
    assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
  dots = [e for e in dots if e not in gemvs]
  # 9 weight matmuls (embedding projection, qkv, output, 2 FFN, pooler, MLM transform,
  # tied decoder, pair head), each forward and twice backward; the attention's two
  # matmuls on [b, q|k, n, d] / [b, n, q, k], forward and backward, are the others.
  assert len(flat) == 3 * 9
  for eqn in flat:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
    assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
  others = [e for e in dots if e not in flat]
  assert len(others) == 3 * 2 and all(e.outvars[0].aval.ndim == 4 for e in others), others


def test_dense_bias_gradient_in_bf16_is_the_cotangents_sum():
  # `_add_bias_reduced`'s backward: the bias gradient summed over every leading axis
  # (as a GEMV), the input's passed through; checked against numpy's sums.
  x = jax.random.normal(jax.random.key(0), (3, 5, 4)).astype(jnp.bfloat16)
  dense = Dense(6, dtype=jnp.bfloat16, param_dtype=jnp.float32,
                bias_init=nn.initializers.normal(1.0))
  params = dense.init(jax.random.key(1), x)["params"]
  weights = jax.random.normal(jax.random.key(2), (3, 5, 6))
  loss = lambda p, x: jnp.sum(dense.apply({"params": p}, x).astype(jnp.float32) * weights)
  grads, x_grad = jax.grad(loss, argnums=(0, 1))(params, x)
  w = np.asarray(weights.astype(jnp.bfloat16), np.float64)  # the cotangent, cast to bf16
  np.testing.assert_allclose(np.asarray(grads["bias"]), w.sum(axis=(0, 1)), rtol=1e-2, atol=1e-2)
  kernel = np.asarray(params["kernel"].astype(jnp.bfloat16), np.float64)
  np.testing.assert_allclose(np.asarray(x_grad, np.float64), w @ kernel.T, rtol=3e-2, atol=3e-2)
  y = dense.apply({"params": params}, x)
  expected = (np.asarray(x, np.float64) @ kernel
              + np.asarray(params["bias"].astype(jnp.bfloat16), np.float64))
  np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=3e-2, atol=3e-2)


def test_bf16_gradients_match_fp32_within_bf16_precision():
  fields = dict(SMALL, hidden_size=64, num_heads=4, intermediate_size=128)
  ids = jax.random.randint(jax.random.key(2), (2, 7), 0, SMALL["vocab_size"])
  positions = jnp.array([[1, 3], [0, 6]], jnp.int32)
  params = PretrainingModel(EncoderConfig(**fields)).init(jax.random.key(0), ids)["params"]

  def grads(dtype):
    model = PretrainingModel(EncoderConfig(**fields, dtype=dtype))
    loss = lambda p: jnp.mean(jax.nn.log_softmax(model.apply(
        {"params": p}, ids, None, None, positions)["mlm_logits"])[..., 0])
    return jax.grad(loss)(params)

  g32, g16 = grads("float32"), grads("bfloat16")
  for path, a in jax.tree_util.tree_leaves_with_path(g32):
    b = _at(g16, path)
    assert b.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(a))) + 1e-12
    assert float(jnp.max(jnp.abs(a - b))) <= 0.05 * scale, jax.tree_util.keystr(path)


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_bf16_forward_matches_fp32_within_bf16_precision():
  fields = dict(SMALL, hidden_size=64, num_heads=4, intermediate_size=128)
  cfg32 = EncoderConfig(**fields)
  cfg16 = EncoderConfig(**fields, dtype="bfloat16")
  ids = jax.random.randint(jax.random.key(2), (2, 7), 0, SMALL["vocab_size"])
  positions = jnp.array([[1, 3], [0, 6]], jnp.int32)
  params = PretrainingModel(cfg32).init(jax.random.key(0), ids)["params"]
  out32 = PretrainingModel(cfg32).apply({"params": params}, ids, None, None, positions)
  out16 = PretrainingModel(cfg16).apply({"params": params}, ids, None, None, positions)
  assert out16["mlm_logits"].dtype == jnp.float32
  for key in ("mlm_logits", "pair_logits"):
    diff = jnp.max(jnp.abs(out16[key] - out32[key]))
    scale = jnp.max(jnp.abs(out32[key]))
    assert diff <= 0.05 * scale, (key, float(diff), float(scale))


# ---- the unrolled (inference) layout: scan_layers=False


@pytest.mark.parametrize("share", ["none", "all", "attention", "ffn"])
def test_unrolled_layout_computes_the_scanned_function(share):
  import dataclasses
  from lite_bert.models.encoder import Encoder, stack_layers, unstack_layers
  cfg = EncoderConfig(**SMALL, share=share, embedding_size=4)
  unrolled_cfg = dataclasses.replace(cfg, scan_layers=False)
  ids = jax.random.randint(jax.random.key(3), (2, 7), 0, SMALL["vocab_size"])
  mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
  params = Encoder(cfg).init(jax.random.key(0), ids)["params"]
  unrolled = unstack_layers(params, cfg)
  # The unrolled layout is what an unrolled model initializes, leaf for leaf.
  fresh = jax.eval_shape(lambda: Encoder(unrolled_cfg).init(jax.random.key(0), ids)["params"])
  assert _shapes(unrolled) == _shapes(fresh)
  if share != "all":
    assert "layers" not in unrolled
    assert sorted(k for k in unrolled if k.startswith("layers_")) == [
        f"layers_{i}" for i in range(SMALL["num_layers"])]
    # layer i of the unrolled tree is slice i of the stacked one
    leaf = jax.tree.leaves(params["layers"])[0]
    assert jnp.array_equal(jax.tree.leaves(unrolled["layers_1"])[0], leaf[1])
  kwargs = dict(output_hidden_states=True, output_attentions=True)
  want = Encoder(cfg).apply({"params": params}, ids, mask, **kwargs)
  got = Encoder(unrolled_cfg).apply({"params": unrolled}, ids, mask, **kwargs)
  assert set(got) == set(want)
  for key in want:
    assert got[key].shape == want[key].shape, key
    assert jnp.allclose(got[key], want[key], atol=1e-5, rtol=1e-5), key
  # and back again, exactly
  restacked = stack_layers(unrolled, cfg)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, restacked, params))


def test_unrolled_layout_has_no_scan_and_trains_with_dropout():
  import dataclasses
  from lite_bert.models.encoder import unstack_layers
  cfg = EncoderConfig(**SMALL, share="none", embedding_size=4, remat=True)
  unrolled_cfg = dataclasses.replace(cfg, scan_layers=False)
  ids = jnp.ones((2, 5), jnp.int32)
  params = PretrainingModel(cfg).init(jax.random.key(0), ids)["params"]
  model = PretrainingModel(unrolled_cfg)
  p = unstack_layers(params, cfg)  # finds the encoder inside the heads' tree
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, ids))(p)
  assert not [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]

  def loss(p, rng):
    out = model.apply({"params": p}, ids, deterministic=False, rngs={"dropout": rng})
    return jnp.mean(out["mlm_logits"] ** 2)

  grads = jax.grad(loss)(p, jax.random.key(1))
  for i in range(SMALL["num_layers"]):
    layer = grads["encoder"][f"layers_{i}"]
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(layer["attention"]["qkv"])), i
  # dropout draws differ from layer to layer: two rngs give two different losses
  assert loss(p, jax.random.key(1)) != loss(p, jax.random.key(2))


def test_layout_conversion_errors_name_the_mismatch():
  from lite_bert.errors import UserError
  from lite_bert.models.encoder import Encoder, stack_layers, unstack_layers
  cfg = EncoderConfig(**SMALL)
  ids = jnp.ones((1, 4), jnp.int32)
  params = Encoder(cfg).init(jax.random.key(0), ids)["params"]
  deeper = EncoderConfig(**dict(SMALL, num_layers=4))
  with pytest.raises(UserError, match="num_layers=4"):
    unstack_layers(params, deeper)
  unrolled = unstack_layers(params, cfg)
  with pytest.raises(UserError, match="already unrolled"):
    unstack_layers(unrolled, cfg)
  with pytest.raises(UserError, match="num_layers=4"):
    stack_layers(unrolled, deeper)


def test_share_all_keeps_its_scan_when_unrolled():
  # One broadcast block is read in place; unrolled, XLA:CPU kept more temporaries.
  cfg = EncoderConfig(**SMALL, share="all", scan_layers=False)
  model = PretrainingModel(cfg)
  ids = jnp.ones((2, 5), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), ids)["params"])
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, ids))(params)
  assert [e.params["length"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"] == [
      SMALL["num_layers"]]
