"""Heads on the encoder, and the two models the train loop applies.

  PretrainingModel  = Encoder + MLM head (+ NSP/SOP head)   pretrain, distill
  ClassificationModel = Encoder + classifier/regressor head   finetune, evaluate

Parameter names (top level): `encoder/...` (see encoder.py), `mlm_head/...`,
`pair_head/...`, `classifier_head/...`. The MLM decoder is tied to the word
embedding table, so the MLM head owns only its transform, LayerNorm and the
output bias [V].
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Dense, Encoder, activation_fn, dense_init, dtypes

Array = jax.Array


def gather_positions(hidden: Array, positions: Array) -> Array:
  """hidden [batch, seq, H], positions [batch, P] int -> [batch, P, H]."""
  return jnp.take_along_axis(hidden, positions[..., None], axis=1)


class MLMHead(nn.Module):
  """Transform H->E, activation, LayerNorm; tied decoder E->V plus bias."""

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, hidden: Array, encoder: Encoder) -> Array:
    """hidden [..., H] -> logits [..., V] (float32)."""
    cfg = self.cfg
    h = Dense(cfg.embedding_dim, kernel_init=dense_init(cfg), name="transform",
              **dtypes(cfg))(hidden)
    h = activation_fn(cfg.activation)(h)
    h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="layer_norm", **dtypes(cfg))(h)
    logits = encoder.attend(h)
    bias = self.param("output_bias", nn.initializers.zeros, (cfg.vocab_size,),
                      jnp.dtype(cfg.param_dtype))
    return logits.astype(jnp.float32) + bias


class PairHead(nn.Module):
  """NSP (BERT) or SOP (ALBERT): a 2-way linear layer on the pooled [CLS]."""

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, pooled: Array) -> Array:
    """pooled [batch, H] -> logits [batch, 2] (float32)."""
    return Dense(2, kernel_init=dense_init(self.cfg), name="classifier",
                 **dtypes(self.cfg))(pooled).astype(jnp.float32)


class PretrainingModel(nn.Module):
  """Encoder with MLM and optional NSP/SOP heads.

  `pair_head` is True for BERT (NSP) and ALBERT (SOP), False for DistilBERT.
  """

  cfg: EncoderConfig
  pair_head: bool = True

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None,
               masked_positions: Optional[Array] = None, *, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False) -> dict:
    """Runs the encoder and heads.

    Args:
      input_ids, attention_mask, token_type_ids: [batch, seq].
      masked_positions: [batch, P] int: the MLM head runs only at these
        positions, as BERT and ALBERT do; None runs it at every position
        (DistilBERT's distillation loss needs all of them).
    Returns the encoder's dict plus `mlm_logits` [batch, P or seq, V] and,
    with a pair head, `pair_logits` [batch, 2].
    """
    encoder = Encoder(self.cfg, name="encoder")
    outputs = encoder(input_ids, attention_mask, token_type_ids, deterministic=deterministic,
                      output_hidden_states=output_hidden_states,
                      output_attentions=output_attentions)
    hidden = outputs["last_hidden_state"]
    if masked_positions is not None:
      hidden = gather_positions(hidden, masked_positions)
    outputs["mlm_logits"] = MLMHead(self.cfg, name="mlm_head")(hidden, encoder)
    if self.pair_head:
      if not self.cfg.pooler:
        raise ValueError("an NSP/SOP head needs the pooler (model.pooler=True)")
      outputs["pair_logits"] = PairHead(self.cfg, name="pair_head")(outputs["pooled"])
    return outputs


class ClassificationModel(nn.Module):
  """Encoder with a sequence classification (or regression) head.

  With a pooler (BERT, ALBERT): dropout -> Dense(num_labels) on the pooled
  [CLS]. Without (DistilBERT): Dense(H) -> ReLU on the [CLS] hidden state first,
  as DistilBertForSequenceClassification does. `num_labels=1` is regression.
  """

  cfg: EncoderConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False) -> dict:
    """Returns the encoder's dict plus `logits` [batch, num_labels] (float32)."""
    cfg = self.cfg
    outputs = Encoder(cfg, name="encoder")(
        input_ids, attention_mask, token_type_ids, deterministic=deterministic,
        output_hidden_states=output_hidden_states, output_attentions=output_attentions)
    head = ClassifierHead(cfg, self.num_labels, name="classifier_head")
    features = outputs["pooled"] if cfg.pooler else outputs["last_hidden_state"][:, 0]
    outputs["logits"] = head(features, deterministic=deterministic)
    return outputs


class ClassifierHead(nn.Module):
  """[batch, H] features -> [batch, num_labels] logits."""

  cfg: EncoderConfig
  num_labels: int

  @nn.compact
  def __call__(self, features: Array, *, deterministic: bool) -> Array:
    cfg = self.cfg
    if not cfg.pooler:
      features = Dense(cfg.hidden_size, kernel_init=dense_init(cfg), name="pre_classifier",
                       **dtypes(cfg))(features)
      features = jax.nn.relu(features)
    features = nn.Dropout(cfg.dropout_rate)(features, deterministic=deterministic)
    logits = Dense(self.num_labels, kernel_init=dense_init(cfg), name="classifier",
                   **dtypes(cfg))(features)
    return logits.astype(jnp.float32)
