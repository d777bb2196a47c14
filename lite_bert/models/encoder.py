"""One Transformer encoder that is BERT, ALBERT or DistilBERT by configuration.

Parameter layout (what the converter, the distillation init and the summary
rely on):

  embeddings/word_embeddings/embedding       [V, E]
  embeddings/position_embeddings/embedding   [P, E]
  embeddings/token_type_embeddings/embedding [T, E]   (absent if T == 0)
  embeddings/layer_norm/{scale,bias}         [E]
  embeddings/projection/{kernel [E, H], bias [H]}     (only if E != H)
  layers/attention/...   self-attention + its post-LayerNorm
  layers/ffn/...         feed-forward + its post-LayerNorm
  shared_attention/... or shared_ffn/...     (partial sharing only)
  pooler/{kernel [H, H], bias [H]}           (only if config.pooler)

The layer stack is `nn.scan` over one `Block`. With share='none' every leaf
under `layers/` carries a leading [num_layers] axis (`variable_axes`); with
share='all' the block's params are broadcast to every step
(`variable_broadcast`) and carry no layer axis. Partial sharing ('attention' or
'ffn') keeps the shared sub-module's params in the parent, outside the scanned
axis, and passes them into every step as a broadcast argument; the block then
applies that sub-module functionally. flax's scan filters act on whole
collections, so this is how one half of a block can be shared and the other
not.

With `scan_layers=False` (share='none' or partial sharing) the same blocks
run in a Python loop instead, each layer under its own name
`layers_0 ... layers_{L-1}` (no layer axis). share='all' always scans: its
one block is broadcast and read in place, and unrolled, XLA:CPU kept twice
the temporaries at 8x512 and ran slower. `unstack_layers` / `stack_layers` convert params between the
two layouts, so a checkpoint trained scanned can be served unrolled.
"""

import functools
import os
import re
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig

Array = jax.Array


def activation_fn(name: str):
  """Maps a config name to the function the reference implementation uses."""
  return {
      "gelu": functools.partial(jax.nn.gelu, approximate=False),
      "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
      "relu": jax.nn.relu,
  }[name]


def dense_init(cfg: EncoderConfig):
  return nn.initializers.normal(stddev=cfg.initializer_range)


def dtypes(cfg: EncoderConfig) -> dict:
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


# (forward, input gradient, weight gradient) einsums of x [M, K] times w [K, N], or times
# w [N, K] transposed: every one a plain 2-D GEMM.
_MATMUL_SPECS = {False: ("mk,kn->mn", "mn,kn->mk", "mn,mk->kn"),
                 True: ("mk,nk->mn", "mn,nk->mk", "mn,mk->nk")}


def flat_matmul(x: Array, w: Array, out_dtype=None, w_transposed: bool = False) -> Array:
  """x [..., K] @ w [K, N] (w_transposed: w [N, K], x @ w^T) -> [..., N], as one 2-D GEMM
  of x flattened to [M, K]; `out_dtype` (default: the operands') is the result's dtype.

  Reduced-precision operands (bf16/fp16) accumulate in fp32, bf16 ones in the
  backward GEMMs too (`_reduced_matmul`): XLA:CPU widens bf16 operands to fp32
  before an fp32 GEMM, while a bf16 matmul that asks for an fp32 result runs a
  native bf16 kernel (avx512_bf16: 1.9x the fp32 GEMM rate on the 2-core EPYC; AMX: 4.5x on an Intel
  Xeon; `experiments/benchmark.py --xla-flag-probe`, `bf16_2048_f32acc`); GPUs
  accumulate in fp32 anyway. The flattening is what the backward needs on XLA:CPU:
  the weight gradient of an N-D matmul contracts two axes; flat, the BERT-base 8x128
  fp32 training step ran 1.18x, 1.13x and 1.06x faster in three interleaved runs on a
  2-core Xeon (`experiments/results/profile_train/flat_matmul` holds the last).
  """
  out_dtype = jnp.result_type(x, w) if out_dtype is None else out_dtype
  x2 = x.reshape(-1, x.shape[-1])
  if x.dtype == jnp.bfloat16 and w.dtype == jnp.bfloat16:
    y = _reduced_matmul(x2, w, w_transposed)
  elif x.dtype == jnp.float32 and w.dtype == jnp.float32:
    y = jnp.einsum(_MATMUL_SPECS[w_transposed][0], x2, w)
  else:  # fp16 (GPUs, where JAX's own backward is as fast), mixed operands
    y = jnp.einsum(_MATMUL_SPECS[w_transposed][0], x2, w, preferred_element_type=jnp.float32)
  return y.astype(out_dtype).reshape(*x.shape[:-1], y.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _reduced_matmul(x: Array, w: Array, w_transposed: bool) -> Array:
  """x [M, K] @ w (bf16) -> fp32 [M, N]; its backward casts the cotangent to x's
  dtype and runs both GEMMs the same way (reduced-precision operands, fp32 result), as
  torch's autocast does. JAX's own backward takes the fp32 cotangent, which makes both
  backward GEMMs widened fp32 ones on XLA:CPU: with this one the BERT-base 8x128 bf16
  step (separately stored layers) ran 1.60x our fp32 step, with JAX's 1.31x, on a
  2-core Xeon with AMX (`experiments/results/profile_train/bf16_backward`)."""
  return jnp.einsum(_MATMUL_SPECS[w_transposed][0], x, w, preferred_element_type=jnp.float32)


def _reduced_matmul_fwd(x, w, w_transposed):
  return _reduced_matmul(x, w, w_transposed), (x, w)


def _reduced_matmul_bwd(w_transposed, residuals, ct):
  x, w = residuals
  _, dx_spec, dw_spec = _MATMUL_SPECS[w_transposed]
  ct = ct.astype(x.dtype)
  dx = jnp.einsum(dx_spec, ct, w, preferred_element_type=jnp.float32)
  dw = jnp.einsum(dw_spec, ct, x, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_reduced_matmul.defvjp(_reduced_matmul_fwd, _reduced_matmul_bwd)


def is_reduced_precision(cfg: EncoderConfig) -> bool:
  """True when activations are computed in fewer than 32 bits (bfloat16, float16)."""
  return jnp.dtype(cfg.dtype).itemsize < 4


@jax.custom_vjp
def _add_bias_reduced(y: Array, bias: Array) -> Array:
  """y [..., N] + bias [N], both bf16/fp16. Its backward sums the cotangent over the
  leading axes as a GEMV (ones [M] @ ct [M, N], fp32 accumulation): XLA:CPU runs JAX's
  own sum of a bf16 cotangent as an fp32 reduce-window (Eigen) over a widened copy, one
  per layer's Dense, where the GEMV takes the native bf16 kernel
  (`experiments/results/profile_train/bias_gemv`)."""
  return y + bias


def _add_bias_reduced_fwd(y, bias):
  return y + bias, None


def _add_bias_reduced_bwd(_, ct):
  ct2 = ct.reshape(-1, ct.shape[-1])
  ones = jnp.ones((ct2.shape[0],), ct.dtype)
  bias_ct = jnp.einsum("m,mn->n", ones, ct2, preferred_element_type=jnp.float32)
  return ct, bias_ct.astype(ct.dtype)


_add_bias_reduced.defvjp(_add_bias_reduced_fwd, _add_bias_reduced_bwd)


class Dense(nn.Dense):
  """nn.Dense (the same params and names) as the models compute it: the matmul is
  `flat_matmul` (one 2-D GEMM; fp32 accumulation in bf16/fp16), and a reduced-precision
  bias takes `_add_bias_reduced` (its gradient a GEMV). Contracts the input's last axis."""

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = flat_matmul(inputs, kernel)
    if bias is None:
      return y
    if jnp.dtype(y.dtype).itemsize < 4:
      return _add_bias_reduced(y, bias)
    return y + bias


class Embeddings(nn.Module):
  """Word + position (+ token type) embeddings, LayerNorm, dropout, E->H."""

  cfg: EncoderConfig

  def setup(self):
    cfg = self.cfg
    init = dense_init(cfg)
    self.word_embeddings = nn.Embed(cfg.vocab_size, cfg.embedding_dim, embedding_init=init,
                                    **dtypes(cfg))
    self.position_embeddings = nn.Embed(cfg.max_position_embeddings, cfg.embedding_dim,
                                        embedding_init=init, **dtypes(cfg))
    if cfg.type_vocab_size:
      self.token_type_embeddings = nn.Embed(cfg.type_vocab_size, cfg.embedding_dim,
                                            embedding_init=init, **dtypes(cfg))
    self.layer_norm = nn.LayerNorm(epsilon=cfg.layer_norm_eps, **dtypes(cfg))
    self.dropout = nn.Dropout(cfg.dropout_rate)
    if cfg.embedding_dim != cfg.hidden_size:
      self.projection = Dense(cfg.hidden_size, kernel_init=init, **dtypes(cfg))

  def __call__(self, input_ids: Array, token_type_ids: Optional[Array],
               deterministic: bool) -> Array:
    """[batch, seq] int ids -> [batch, seq, hidden] embeddings."""
    seq_len = input_ids.shape[-1]
    if seq_len > self.cfg.max_position_embeddings:  # jnp.take would give NaNs, not an error
      raise UserError(f"sequence length {seq_len} exceeds model.max_position_embeddings="
                      f"{self.cfg.max_position_embeddings}")
    x = self.word_embeddings(input_ids)
    x = x + self.position_embeddings(jnp.arange(seq_len))[None]
    if self.cfg.type_vocab_size:
      if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
      x = x + self.token_type_embeddings(token_type_ids)
    x = self.layer_norm(x)
    x = self.dropout(x, deterministic=deterministic)
    if self.cfg.embedding_dim != self.cfg.hidden_size:
      x = self.projection(x)
    return x

  def attend(self, x: Array) -> Array:
    """[..., E] -> [..., V] float32 logits: the tied MLM decoder (x @ word_embeddings^T).

    Accumulates in float32 (see `flat_matmul`)."""
    dtype = jnp.dtype(self.cfg.dtype)
    table = self.word_embeddings.embedding.astype(dtype)
    return flat_matmul(x.astype(dtype), table, jnp.float32, w_transposed=True)


def attention_weights_and_output(q, k, v, mask, dropout, deterministic):
  """Explicit softmax attention, used when weights or attention dropout are needed.

  q, k, v: [batch, seq, heads, head_dim]; mask: [batch, 1, 1, seq] bool.
  Returns (output [batch, seq, heads, head_dim], probs [batch, heads, seq, seq]).
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  dropped = dropout(probs, deterministic=deterministic).astype(v.dtype)
  context = jnp.einsum("bnqk,bknd->bqnd", dropped, v, preferred_element_type=jnp.float32)
  return context.astype(v.dtype), probs


def fused_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """softmax(q k^T / sqrt(d)) v in one fused kernel: [batch, seq, heads, head_dim].

  On a GPU in bf16/fp16, cuDNN's flash attention (`implementation="cudnn"`)
  when it takes these shapes and this mask (it has no attention dropout: the
  callers take this path only without it); otherwise, or with
  LITE_BERT_ATTENTION=xla, the implementation XLA chooses. (LITE_BERT_ATTENTION=explicit
  sends every call to `attention_weights_and_output` instead, for profiling.)
  """
  if (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
      and os.environ.get("LITE_BERT_ATTENTION", "") != "xla"):
    try:
      return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
    except (NotImplementedError, ValueError, TypeError, RuntimeError):
      pass  # shapes, a mask or a cuDNN version it does not take
  return jax.nn.dot_product_attention(q, k, v, mask=mask)


class SelfAttention(nn.Module):
  """Multi-head self-attention, output projection, dropout, residual, post-LN.

  Input x [batch, seq, hidden], key mask [batch, 1, 1, seq] (True = attend).
  Returns (y [batch, seq, hidden], probs [batch, heads, seq, seq] or None).
  """

  cfg: EncoderConfig
  deterministic: bool = True
  output_attentions: bool = False

  @nn.compact
  def __call__(self, x: Array, mask: Array):
    cfg = self.cfg
    batch, seq, _ = x.shape
    # One fused [H, 3H] projection: a single GEMM instead of three.
    qkv = Dense(3 * cfg.hidden_size, kernel_init=dense_init(cfg), name="qkv",
                **dtypes(cfg))(x)
    q, k, v = jnp.split(qkv.reshape(batch, seq, 3 * cfg.num_heads, cfg.head_dim), 3, axis=2)
    attention_dropout = nn.Dropout(cfg.attention_dropout_rate)
    needs_dropout = cfg.attention_dropout_rate > 0 and not self.deterministic
    probs = None
    # XLA:CPU's fused attention runs bf16 matmuls without fp32 accumulation, i.e. widened
    # to fp32 (see `flat_matmul`); the explicit path is faster there.
    reduced_on_cpu = is_reduced_precision(cfg) and jax.default_backend() == "cpu"
    explicit = os.environ.get("LITE_BERT_ATTENTION", "") == "explicit"  # profiling: this path
    if self.output_attentions or needs_dropout or reduced_on_cpu or explicit:
      context, probs = attention_weights_and_output(q, k, v, mask, attention_dropout,
                                                    self.deterministic)
    else:
      context = fused_attention(q, k, v, mask)
    context = context.reshape(batch, seq, cfg.hidden_size)
    y = Dense(cfg.hidden_size, kernel_init=dense_init(cfg), name="output",
              **dtypes(cfg))(context)
    y = nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)
    y = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="layer_norm", **dtypes(cfg))(x + y)
    return y, probs


class FeedForward(nn.Module):
  """Dense H->I, activation, dense I->H, dropout, residual, post-LayerNorm."""

  cfg: EncoderConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    h = Dense(cfg.intermediate_size, kernel_init=dense_init(cfg), name="intermediate",
              **dtypes(cfg))(x)
    h = activation_fn(cfg.activation)(h)
    h = Dense(cfg.hidden_size, kernel_init=dense_init(cfg), name="output",
              **dtypes(cfg))(h)
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="layer_norm", **dtypes(cfg))(x + h)


class Block(nn.Module):
  """One post-LayerNorm Transformer block, written as a scan body.

  `shared_part` names the sub-module whose params arrive from outside the scan
  (`shared_params`, identical at every layer); the other sub-module's params are
  this step's slice of the stacked params.
  """

  cfg: EncoderConfig
  shared_part: Optional[str] = None  # None, 'attention' or 'ffn'
  deterministic: bool = True
  output_attentions: bool = False

  def _apply_shared(self, module: nn.Module, shared_params: Any, *args):
    rngs = {} if self.deterministic else {"dropout": self.make_rng("dropout")}
    return module.apply({"params": shared_params}, *args, rngs=rngs)

  @nn.compact
  def __call__(self, x: Array, mask: Array, shared_params: Any):
    """x [batch, seq, hidden] -> (x', per-layer outputs for the scan's ys)."""
    attention = SelfAttention(self.cfg, self.deterministic, self.output_attentions,
                              name=None if self.shared_part == "attention" else "attention")
    if self.shared_part == "attention":
      x, probs = self._apply_shared(attention, shared_params, x, mask)
    else:
      x, probs = attention(x, mask)
    ffn = FeedForward(self.cfg, self.deterministic,
                      name=None if self.shared_part == "ffn" else "ffn")
    if self.shared_part == "ffn":
      x = self._apply_shared(ffn, shared_params, x)
    else:
      x = ffn(x)
    ys = {"hidden_states": x}
    if self.output_attentions:
      ys["attentions"] = probs
    return x, ys


class Encoder(nn.Module):
  """Embeddings, `num_layers` scanned blocks, optional pooler.

  Call with input_ids [batch, seq] int32, attention_mask [batch, seq] (1 =
  token, 0 = padding), token_type_ids [batch, seq] or None. Returns a dict:
    last_hidden_state [batch, seq, hidden]
    pooled            [batch, hidden]  (if cfg.pooler)
    hidden_states     [num_layers + 1, batch, seq, hidden]  (if asked; index 0
                      is the embedding output)
    attentions        [num_layers, batch, heads, seq, seq]  (if asked)
  """

  cfg: EncoderConfig

  def setup(self):
    cfg = self.cfg
    self.embeddings = Embeddings(cfg)
    if cfg.share in ("attention", "ffn"):
      dummy_x = jnp.zeros((1, 1, cfg.hidden_size), jnp.dtype(cfg.dtype))
      dummy_mask = jnp.ones((1, 1, 1, 1), bool)
      if cfg.share == "attention":
        init = lambda rng: SelfAttention(cfg).init(rng, dummy_x, dummy_mask)["params"]
      else:
        init = lambda rng: FeedForward(cfg).init(rng, dummy_x)["params"]
      self.shared_params = self.param(f"shared_{cfg.share}", init)
    if cfg.pooler:
      self.pooler = Dense(cfg.hidden_size, kernel_init=dense_init(cfg), **dtypes(cfg))

  def _layer_stack(self, deterministic: bool, output_attentions: bool) -> nn.Module:
    cfg = self.cfg
    block_cls = Block
    if cfg.remat:
      block_cls = nn.remat(Block, prevent_cse=False)
    if cfg.share == "all":
      scan_kwargs = dict(variable_broadcast="params",
                         split_rngs={"params": False, "dropout": True})
    else:
      scan_kwargs = dict(variable_axes={"params": 0},
                         split_rngs={"params": True, "dropout": True})
    scanned = nn.scan(block_cls, in_axes=(nn.broadcast, nn.broadcast),
                      length=cfg.num_layers, unroll=cfg.scan_unroll or cfg.num_layers,
                      **scan_kwargs)
    shared_part = cfg.share if cfg.share in ("attention", "ffn") else None
    return scanned(cfg, shared_part, deterministic, output_attentions, name="layers")

  def _unrolled_layers(self, x: Array, key_mask: Array, shared: Any, deterministic: bool,
                       output_attentions: bool) -> tuple[Array, dict]:
    """The layer loop without `nn.scan`: same outputs as the scanned stack."""
    cfg = self.cfg
    block_cls = nn.remat(Block) if cfg.remat else Block
    shared_part = cfg.share if cfg.share in ("attention", "ffn") else None
    blocks = [block_cls(cfg, shared_part, deterministic, output_attentions,
                        name=f"layers_{i}") for i in range(cfg.num_layers)]
    per_layer = []
    for block in blocks:
      x, ys = block(x, key_mask, shared)
      per_layer.append(ys)
    return x, jax.tree.map(lambda *ys: jnp.stack(ys), *per_layer)

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False) -> dict:
    cfg = self.cfg
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids, deterministic)
    key_mask = attention_mask.astype(bool)[:, None, None, :]
    shared = self.shared_params if cfg.share in ("attention", "ffn") else None
    if cfg.scan_layers or cfg.share == "all":  # one broadcast block: nothing to unroll
      layers = self._layer_stack(deterministic, output_attentions)
      last, ys = layers(x, key_mask, shared)
    else:
      last, ys = self._unrolled_layers(x, key_mask, shared, deterministic, output_attentions)
    outputs = {"last_hidden_state": last}
    if cfg.pooler:
      outputs["pooled"] = jnp.tanh(self.pooler(last[:, 0]))
    if output_hidden_states:
      outputs["hidden_states"] = jnp.concatenate([x[None], ys["hidden_states"]], axis=0)
    if output_attentions:
      outputs["attentions"] = ys["attentions"]
    return outputs

  def attend(self, x: Array) -> Array:
    """[..., E] -> [..., V] logits through the tied word-embedding table."""
    return self.embeddings.attend(x)


_UNROLLED_NAME = re.compile(r"layers_(\d+)$")


def _map_encoder_trees(params: Any, fn) -> Any:
  """Applies fn to every dict holding an encoder's layer params (any nesting)."""
  if not isinstance(params, Mapping):
    return params
  if "layers" in params or any(_UNROLLED_NAME.match(str(k)) for k in params):
    return fn(dict(params))
  return {k: _map_encoder_trees(v, fn) for k, v in params.items()}


def unstack_layers(params: Any, cfg: EncoderConfig) -> Any:
  """Scanned layout -> unrolled: `layers` leaves [L, ...] -> `layers_0 ... layers_{L-1}`.

  `params` may be an encoder's params or any tree containing them (e.g. a
  model with heads). share='all' has no layer axis: returned unchanged.
  """
  if cfg.share == "all":
    return params

  def unstack(tree: dict) -> dict:
    if "layers" not in tree:
      raise UserError("unstack_layers: these params have no stacked 'layers' "
                      f"(keys {sorted(tree)}); are they already unrolled?")
    stacked = tree.pop("layers")
    for leaf in jax.tree.leaves(stacked):
      if leaf.shape[:1] != (cfg.num_layers,):
        raise UserError(f"unstack_layers: a stacked layer param has shape {leaf.shape}, "
                        f"expected a leading axis of model.num_layers={cfg.num_layers}")
    for i in range(cfg.num_layers):
      tree[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    return tree

  return _map_encoder_trees(params, unstack)


def stack_layers(params: Any, cfg: EncoderConfig) -> Any:
  """Unrolled layout -> scanned: the inverse of `unstack_layers`."""
  if cfg.share == "all":
    return params

  def stack(tree: dict) -> dict:
    names = [f"layers_{i}" for i in range(cfg.num_layers)]
    found = sorted(k for k in tree if _UNROLLED_NAME.match(str(k)))
    if sorted(names) != found:
      raise UserError(f"stack_layers: expected params {names[0]} ... {names[-1]} "
                      f"(model.num_layers={cfg.num_layers}), found {found}")
    tree["layers"] = jax.tree.map(lambda *a: jnp.stack(a), *[tree.pop(n) for n in names])
    return tree

  return _map_encoder_trees(params, stack)
