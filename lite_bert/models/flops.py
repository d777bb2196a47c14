"""Model FLOPs of the lite_bert encoders: the analytic matmul count, and XLA's.

What a benchmark divides by the measured time to get throughput and
utilisation (`experiments/benchmark.py`), and what a training loop needs for
its model-FLOPs utilisation:

  MFU = train_step_flops(...) / step seconds / peak FLOP/s of the device

Units: every count is in FLOPs (floating-point operations, not per second) for
a whole batch of `batch` sequences of `seq` tokens each, every position
counted (no padding is assumed). Symbols: L = cfg.num_layers, H =
cfg.hidden_size, I = cfg.intermediate_size, E = cfg.embedding_dim (== H
unless ALBERT-style factorized), V = cfg.vocab_size, P = MLM positions per
sequence (`masked_positions_per_seq`).

Model FLOPs are counted analytically (matmuls only, 2 FLOPs per
multiply-add), per sequence of length s (batch b multiplies everything):

  F_enc  = L * (s * (8 H^2 + 4 H I) + 4 s^2 H)    qkv 6H^2 + out 2H^2 + FFN 4HI
                                                   per token; QK^T and AV 2*2 s^2 H
           + s * 2 E H   if E != H (ALBERT's E->H projection)
           + 2 H^2       if the model has a pooler
  F_mlm  = P * (2 H E + 2 E V)                     transform + tied decoder at P positions
  F_pair = 2 * H * 2                               NSP / SOP classifier
  train step = 3 * (F_enc + F_mlm + F_pair)        forward + backward (2x forward)
  DistilBERT step = 3 * (F_enc_student + F_mlm_student(P=s))
                    + F_enc_teacher(no pooler) + F_mlm_teacher(P=s)

and cross-checked against XLA's `compiled.cost_analysis()['flops']`
(`xla_flops`, of a compiled jitted function). XLA counts a while loop's body
once, whatever its trip count, and scanned layers are an `nn.scan` (a while
loop); `corrected_xla_flops` adds `(L - 1) * block_flops(...)` per scanned
stack, the Block's flops taken from XLA's cost analysis of one standalone
Block (forward, or forward + backward for training) at the same shapes. XLA
also counts element-wise work (LayerNorm, softmax, GELU, optimizer), which
the analytic matmul count leaves out. `xla_memory` is XLA's own account of
the bytes one call of a compiled function allocates.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Block

# The formula above, as text (the benchmark writes it into its JSON and report).
FORMULA = __doc__[__doc__.index("  F_enc"):__doc__.index("and cross-checked")]


def masked_positions_per_seq(seq: int) -> int:
  """P: BERT's 20 MLM predictions at 128 tokens, scaled with the length (at least 1)."""
  return max(1, round(20 * seq / 128))


# ---------------------------------------------------------- analytic FLOPs

def encoder_flops(cfg: EncoderConfig, batch: int, seq: int, pooler: Optional[bool] = None
                  ) -> int:
  """F_enc * batch: forward matmul FLOPs of the encoder on [batch, seq] token ids.

  `pooler` overrides `cfg.pooler` (a distillation teacher's pooler is unused).
  """
  h, i, e = cfg.hidden_size, cfg.intermediate_size, cfg.embedding_dim
  per_seq = cfg.num_layers * (seq * (8 * h * h + 4 * h * i) + 4 * seq * seq * h)
  if e != h:
    per_seq += seq * 2 * e * h
  if cfg.pooler if pooler is None else pooler:
    per_seq += 2 * h * h
  return batch * per_seq


def mlm_head_flops(cfg: EncoderConfig, batch: int, positions: int) -> int:
  """F_mlm * batch: the MLM head (transform + tied decoder) at `positions` per sequence."""
  h, e, v = cfg.hidden_size, cfg.embedding_dim, cfg.vocab_size
  return batch * positions * (2 * h * e + 2 * e * v)


def pair_head_flops(cfg: EncoderConfig, batch: int) -> int:
  """F_pair * batch: the 2-way NSP / SOP classifier on the pooled [batch, H]."""
  return batch * 2 * cfg.hidden_size * 2


def train_step_flops(name: str, cfg: EncoderConfig, batch: int, seq: int,
                     teacher: Optional[EncoderConfig] = None) -> int:
  """Analytic model FLOPs of one training step (forward + backward = 3x forward).

  name: 'bert' / 'albert' (MLM at `masked_positions_per_seq(seq)` gathered
  positions + NSP/SOP) or 'distilbert' (MLM logits at every position, plus the
  frozen `teacher`'s forward without its pooler; `teacher` is required then).
  """
  if name == "distilbert":
    student = encoder_flops(cfg, batch, seq) + mlm_head_flops(cfg, batch, seq)
    frozen = encoder_flops(teacher, batch, seq, pooler=False) + mlm_head_flops(
        teacher, batch, seq)
    return 3 * student + frozen
  forward = (encoder_flops(cfg, batch, seq)
             + mlm_head_flops(cfg, batch, masked_positions_per_seq(seq))
             + pair_head_flops(cfg, batch))
  return 3 * forward


def step_flops(cfg: EncoderConfig, batch: dict, *, pair_head: bool = False,
               num_labels: int = 0, teacher: Optional[EncoderConfig] = None,
               teacher_mlm: bool = False) -> int:
  """Analytic model FLOPs of one training step on `batch` (its shapes decide).

  batch: input_ids [rows, seq], and masked_positions [rows, P] when the step
  has an MLM head (pretraining, distillation). The trained model counts 3x its
  forward (forward + backward): encoder, MLM head at the P gathered positions,
  NSP/SOP head (`pair_head`) or classifier (`num_labels`); a frozen `teacher`
  counts its forward once (encoder without pooler, plus its MLM head at the
  same positions when `teacher_mlm`).
  """
  rows, seq = batch["input_ids"].shape
  positions = batch["masked_positions"].shape[1] if "masked_positions" in batch else 0
  forward = encoder_flops(cfg, rows, seq, pooler=pair_head or num_labels > 0)
  forward += mlm_head_flops(cfg, rows, positions) if positions else 0
  forward += pair_head_flops(cfg, rows) if pair_head else 0
  forward += rows * 2 * cfg.hidden_size * num_labels
  total = 3 * forward
  if teacher is not None:
    total += encoder_flops(teacher, rows, seq, pooler=False)
    total += mlm_head_flops(teacher, rows, positions) if teacher_mlm and positions else 0
  return total


# ------------------------------------------------------------- XLA's count

def xla_flops(compiled) -> Optional[float]:
  """FLOPs XLA's cost analysis counts for a compiled function (None if unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost["flops"]) if cost and "flops" in cost else None


def xla_memory(compiled) -> dict:
  """Bytes XLA allocates for one call: arguments, outputs, temporaries.

  {'argument_size', 'output_size', 'alias_size', 'temp_size', 'peak_estimate'
  (arguments + outputs + temporaries - aliased)}, or {} if unavailable.
  """
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  out = {k: int(getattr(m, k + "_in_bytes")) for k in
         ("argument_size", "output_size", "alias_size", "temp_size")}
  out["peak_estimate"] = (out["argument_size"] + out["output_size"] + out["temp_size"]
                          - out["alias_size"])
  return out


_BLOCK_FLOPS: dict = {}


def block_flops(cfg: EncoderConfig, batch: int, seq: int, train: bool) -> Optional[float]:
  """XLA-counted FLOPs of ONE Block (forward, or forward+backward) at these shapes."""
  key = (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.activation, cfg.dtype,
         cfg.dropout_rate if train else 0.0, cfg.attention_dropout_rate if train else 0.0,
         batch, seq, train)
  if key in _BLOCK_FLOPS:
    return _BLOCK_FLOPS[key]
  dtype = jnp.dtype(cfg.dtype)
  x = jax.ShapeDtypeStruct((batch, seq, cfg.hidden_size), dtype)
  mask = jax.ShapeDtypeStruct((batch, 1, 1, seq), jnp.bool_)
  params = jax.eval_shape(
      lambda: Block(cfg, None, True).init(jax.random.key(0), jnp.zeros(x.shape, dtype),
                                          jnp.ones(mask.shape, bool), None))["params"]
  if not train:
    block = Block(cfg, None, True)
    fn = jax.jit(lambda p, x, m: block.apply({"params": p}, x, m, None)[0])
    args = (params, x, mask)
  else:
    block = Block(cfg, None, False)

    def loss(p, x, m, rng):
      y = block.apply({"params": p}, x, m, None, rngs={"dropout": rng})[0]
      return jnp.sum(y.astype(jnp.float32))

    fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    args = (params, x, mask, jax.random.key(0))
  flops = xla_flops(fn.lower(*args).compile())
  _BLOCK_FLOPS[key] = flops
  return flops


def corrected_xla_flops(counted: Optional[float], stacks) -> Optional[float]:
  """counted + (L - 1) * block flops for each scanned stack (cfg, batch, seq, train)."""
  if counted is None:
    return None
  total = counted
  for cfg, batch, seq, train in stacks:
    if cfg.num_layers > 1:
      one = block_flops(cfg, batch, seq, train)
      if one is None:
        return None
      total += (cfg.num_layers - 1) * one
  return total
