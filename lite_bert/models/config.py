"""`EncoderConfig`: the numbers that make an encoder BERT, ALBERT or DistilBERT.

The config files hold these fields under `config.model`; `EncoderConfig.from_dict`
turns them into a frozen, hashable dataclass (what flax modules need as an
attribute) and refuses unknown fields and inconsistent shapes with a
`UserError` that names the field.
"""

import dataclasses
from typing import Any, Mapping, Optional

from lite_bert.errors import UserError

SHARE_MODES = ("none", "all", "attention", "ffn")
ACTIVATIONS = ("gelu", "gelu_new", "relu")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Architecture of one encoder (and of its pretraining heads).

  Attributes:
    vocab_size: V, rows of the word-embedding table (also the MLM output size).
    hidden_size: H, width of the Transformer layers.
    num_layers: L, Transformer blocks applied in sequence.
    num_heads: attention heads; must divide `hidden_size`.
    intermediate_size: width of the FFN's inner layer (4H in all three papers).
    embedding_size: E, width of the embedding tables. None means E = H; E != H
      adds ALBERT's E->H projection after the embedding LayerNorm.
    max_position_embeddings: rows of the learned absolute position table; the
      longest sequence the model accepts.
    type_vocab_size: segment (token type) embeddings; 0 turns them off
      (DistilBERT).
    activation: FFN (and MLM transform) activation: 'gelu' exact (BERT,
      DistilBERT), 'gelu_new' tanh approximation (ALBERT), or 'relu'.
    share: cross-layer parameter sharing: 'none' (BERT), 'all' (ALBERT),
      'attention' or 'ffn' (ALBERT paper, Table 4).
    pooler: a dense+tanh layer on [CLS] (BERT, ALBERT); DistilBERT has none.
    dropout_rate: dropout on embeddings, attention output and FFN output.
    attention_dropout_rate: dropout on attention probabilities.
    layer_norm_eps: LayerNorm epsilon.
    initializer_range: stddev of the truncated-free normal init of kernels and
      embeddings (0.02 in all three papers).
    remat: recompute each block's activations in the backward pass (memory for
      compute).
    scan_layers: True runs the layers as one `nn.scan` over stacked params
      (`layers/...` with a leading [num_layers] axis: one block to compile,
      the training layout). False unrolls them into a Python loop over
      separately named blocks `layers_0 ... layers_{L-1}`, each holding its
      own arrays: the same function, and the faster inference layout on
      XLA:CPU, which copies each layer's slice out of the stacked arrays
      before its matmuls. Convert between the two with
      `lite_bert.models.encoder.unstack_layers` / `stack_layers`. share='all'
      always scans (its one block is broadcast and read in place; unrolled,
      XLA:CPU kept twice the temporaries at batch 8 x 512 and ran slower).
    scan_unroll: layers per iteration of the scanned loop (`nn.scan`'s
      `unroll`); 0 runs all of them in one iteration (no loop). Same params,
      same results; a longer compile. 0 is the faster training step on
      XLA:CPU (see experiments/profile_train_step.py).
    dtype: compute dtype ('float32' or 'bfloat16').
    param_dtype: storage dtype of the parameters (keep 'float32').
  """

  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  embedding_size: Optional[int] = None
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  activation: str = "gelu"
  share: str = "none"
  pooler: bool = True
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  remat: bool = False
  scan_layers: bool = True
  scan_unroll: int = 1
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise UserError(f"model.{name} must be a positive integer, got {value!r}")
    if self.hidden_size % self.num_heads:
      raise UserError(
          f"model.hidden_size={self.hidden_size} is not divisible by "
          f"model.num_heads={self.num_heads}")
    if self.embedding_size is not None and (
        not isinstance(self.embedding_size, int) or self.embedding_size <= 0):
      raise UserError(
          f"model.embedding_size must be a positive integer or None, got "
          f"{self.embedding_size!r}")
    if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
      raise UserError(
          f"model.type_vocab_size must be >= 0, got {self.type_vocab_size!r}")
    if self.share not in SHARE_MODES:
      raise UserError(f"model.share must be one of {SHARE_MODES}, got {self.share!r}")
    if self.activation not in ACTIVATIONS:
      raise UserError(
          f"model.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise UserError(f"model.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise UserError(f"model.{name} must be in [0, 1), got {getattr(self, name)!r}")
    if (isinstance(self.scan_unroll, bool) or not isinstance(self.scan_unroll, int)
        or self.scan_unroll < 0):
      raise UserError(f"model.scan_unroll must be an integer >= 0 (0: all layers), "
                      f"got {self.scan_unroll!r}")
    eps = self.layer_norm_eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
      raise UserError(f"model.layer_norm_eps must be a number in (0, 1), got {eps!r}")

  @property
  def embedding_dim(self) -> int:
    """E: the embedding width actually used."""
    return self.embedding_size or self.hidden_size

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def from_dict(cls, fields: Mapping[str, Any]) -> "EncoderConfig":
    """Builds a config from `config.model`, naming any unknown field."""
    fields = dict(fields)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise UserError(
          f"unknown model field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**fields)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)
