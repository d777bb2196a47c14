"""Parameter counts of a model, from `jax.eval_shape` (no weights allocated)."""

import math
from typing import Any

import jax
import jax.numpy as jnp

from lite_bert.models.config import EncoderConfig
from lite_bert.models.heads import PretrainingModel


def count(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def abstract_pretraining_params(cfg: EncoderConfig, pair_head: bool, seq_len: int = 8) -> dict:
  """Shapes and dtypes of a PretrainingModel's params, computed without allocating."""
  model = PretrainingModel(cfg, pair_head=pair_head)
  ids = jnp.zeros((1, seq_len), jnp.int32)
  variables = jax.eval_shape(lambda rng: model.init(rng, ids, masked_positions=ids[:, :1]),
                             jax.random.key(0))
  return variables["params"]


def parameter_counts(params: dict) -> dict:
  """Breaks a PretrainingModel/ClassificationModel params tree into named counts.

  `params_total` is the encoder (embeddings + layers + pooler), without the
  pretraining or task heads: the number the papers and `BertModel` report.
  `params_embeddings` is the embedding tables, their LayerNorm and ALBERT's
  E->H projection.
  """
  encoder = params["encoder"]
  embeddings = count(encoder["embeddings"])
  pooler = count(encoder.get("pooler", {}))
  total = count(encoder)
  counts = {
      "params_total": total,
      "params_embeddings": embeddings,
      "params_layers": total - embeddings - pooler,
      "params_pooler": pooler,
  }
  for head in ("mlm_head", "pair_head", "classifier_head"):
    if head in params:
      counts[f"params_{head}"] = count(params[head])
  counts["params_with_heads"] = count(params)
  return counts


def format_table(name: str, counts: dict) -> str:
  """A printable table: one row per count, in millions and exact."""
  rows = [f"{name}", f"  {'part':<26}{'params':>16}{'millions':>10}"]
  for key, value in counts.items():
    rows.append(f"  {key.removeprefix('params_'):<26}{value:>16,}{value / 1e6:>10.2f}")
  return "\n".join(rows)
