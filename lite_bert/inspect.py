"""Look inside an encoder: hidden states, attention maps, [MASK] predictions.

The small public API for notebooks and scripts (experiments/inspect.ipynb uses
it); every function takes what `load` returns:

  from lite_bert import inspect
  m = inspect.load("workdirs/bert_tiny")          # lite_bert workdir or HF folder
  batch = inspect.encode(m, ["a sentence.", ("first", "second")])
  h = inspect.hidden_states(m, texts)            # [L+1, batch, seq, H]
  a = inspect.attentions(m, texts)               # [L, batch, heads, seq, seq]
  inspect.mask_predictions(m, "The [MASK] sat on the mat.", k=5)
  stats = inspect.layer_transition_stats(h, batch["attention_mask"])

Text may contain the literal `[MASK]`: the text is split there and the
tokenizer's mask id is inserted between the encoded pieces, which works for
WordPiece vocabularies (`[MASK]` token) and for lite_bert's sentencepiece
models (where `[MASK]` is a control symbol that text never produces).

Everything returned is numpy (float32); the forward passes are jitted once per
architecture and batch shape.
"""

import dataclasses
import functools
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from lite_bert import pretrained
from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Encoder
from lite_bert.models.heads import PretrainingModel

load = pretrained.load
Loaded = pretrained.Loaded

MASK = "[MASK]"
# One text, or a (first, second) segment pair.
Text = Union[str, tuple[str, str]]


def _tokenizer(loaded: Loaded):
  if loaded.tokenizer is None:
    raise UserError(f"{loaded.source} has no tokenizer (a lite_bert workdir keeps it in "
                    f"tokenizer/ or config.tokenizer.path; a Hugging Face folder needs "
                    f"tokenizer.json, vocab.txt or a sentencepiece .model)")
  return loaded.tokenizer


def _piece_ids(tokenizer, text: str) -> list[int]:
  """Ids of `text` with every literal [MASK] replaced by the mask id."""
  ids = []
  for i, piece in enumerate(text.split(MASK)):
    if i:
      ids.append(tokenizer.mask_id)
    if piece.strip():
      ids.extend(tokenizer.encode(piece.strip()))
  return ids


def _as_list(texts) -> list:
  if isinstance(texts, (str, tuple)):
    return [texts]
  return list(texts)


def _truncate_pair(a: list[int], b: list[int], budget: int) -> None:
  """BERT's longest-first truncation, in place, to len(a) + len(b) <= budget."""
  while len(a) + len(b) > budget:
    (a if len(a) >= len(b) else b).pop()


def encode(loaded: Loaded, texts: Union[Text, Sequence[Text]],
           max_len: Optional[int] = None) -> dict:
  """Tokenizes a batch as the models were trained on: `[CLS] a [SEP] (b [SEP])`.

  Args:
    loaded: what `load` returns (its tokenizer is used).
    texts: a string, a (first, second) pair, or a list of them.
    max_len: longest sequence, special tokens included; longer texts are cut
      (pairs longest-first, as BERT does). None: the model's
      `max_position_embeddings`. The batch is padded to its longest row.

  Returns:
    numpy int32 arrays [batch, seq]: input_ids, attention_mask (1 = token),
    token_type_ids (0 for `[CLS] a [SEP]`, 1 for `b [SEP]`).
  """
  tokenizer = _tokenizer(loaded)
  limit = loaded.cfg.max_position_embeddings
  max_len = limit if max_len is None else int(max_len)
  if not 3 <= max_len <= limit:
    raise UserError(f"max_len={max_len} must be between 3 and the model's "
                    f"max_position_embeddings={limit}")
  rows = []
  for text in _as_list(texts):
    if isinstance(text, tuple):
      if len(text) != 2:
        raise UserError(f"a text pair must have two segments, got {len(text)}")
      a, b = _piece_ids(tokenizer, text[0]), _piece_ids(tokenizer, text[1])
      _truncate_pair(a, b, max_len - 3)
      ids = [tokenizer.cls_id] + a + [tokenizer.sep_id] + b + [tokenizer.sep_id]
      types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    elif isinstance(text, str):
      a = _piece_ids(tokenizer, text)[:max_len - 2]
      ids = [tokenizer.cls_id] + a + [tokenizer.sep_id]
      types = [0] * len(ids)
    else:
      raise UserError(f"texts must be strings or (first, second) pairs, got "
                      f"{type(text).__name__}")
    rows.append((ids, types))
  if not rows:
    raise UserError("encode got no texts")
  seq = max(len(ids) for ids, _ in rows)
  batch = {k: np.zeros((len(rows), seq), np.int32)
           for k in ("input_ids", "attention_mask", "token_type_ids")}
  batch["input_ids"][:] = tokenizer.pad_id
  for i, (ids, types) in enumerate(rows):
    batch["input_ids"][i, :len(ids)] = ids
    batch["attention_mask"][i, :len(ids)] = 1
    batch["token_type_ids"][i, :len(ids)] = types
  return batch


def tokens(loaded: Loaded, text: Text, max_len: Optional[int] = None) -> list[str]:
  """The vocabulary entries of `encode(loaded, text)`'s one row (plot labels)."""
  batch = encode(loaded, text, max_len)
  tokenizer = _tokenizer(loaded)
  return [tokenizer.id_to_token(int(i)) for i in batch["input_ids"][0]]


@functools.lru_cache(maxsize=32)
def _encoder_fn(cfg: EncoderConfig, output_hidden_states: bool, output_attentions: bool):
  model = Encoder(cfg)

  @jax.jit
  def run(params, input_ids, attention_mask, token_type_ids):
    out = model.apply({"params": params}, input_ids, attention_mask, token_type_ids,
                      output_hidden_states=output_hidden_states,
                      output_attentions=output_attentions)
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), out)

  return run


@functools.lru_cache(maxsize=32)
def _mlm_fn(cfg: EncoderConfig):
  model = PretrainingModel(cfg, pair_head=False)

  @jax.jit
  def run(params, input_ids, attention_mask, token_type_ids, masked_positions):
    out = model.apply({"params": params}, input_ids, attention_mask, token_type_ids,
                      masked_positions)
    return jax.nn.softmax(out["mlm_logits"], axis=-1)

  return run


def _model_cfg(loaded: Loaded) -> EncoderConfig:
  """The config to run: without the pooler when the source has none (BertForMaskedLM)."""
  cfg = loaded.cfg
  if cfg.pooler and "pooler" not in loaded.params["encoder"]:
    cfg = dataclasses.replace(cfg, pooler=False)
  return cfg


def _token_types(loaded: Loaded, batch: dict):
  return batch["token_type_ids"] if loaded.cfg.type_vocab_size else None


def forward(loaded: Loaded, batch: dict, *, output_hidden_states: bool = False,
            output_attentions: bool = False) -> dict:
  """Runs the encoder (no heads, no dropout) on an `encode` batch; numpy float32 out.

  Returns the Encoder's dict: last_hidden_state, pooled (if the source has a
  pooler), hidden_states [L+1, batch, seq, H] and attentions
  [L, batch, heads, seq, seq] when asked.
  """
  fn = _encoder_fn(_model_cfg(loaded), output_hidden_states, output_attentions)
  out = fn(loaded.params["encoder"], batch["input_ids"], batch["attention_mask"],
           _token_types(loaded, batch))
  return jax.tree_util.tree_map(np.asarray, out)


def hidden_states(loaded: Loaded, texts: Union[Text, Sequence[Text]],
                  max_len: Optional[int] = None) -> np.ndarray:
  """[L+1, batch, seq, H] float32: the embedding output (index 0), then every layer's.

  With ALBERT's factorized embeddings, index 0 is after the E->H projection.
  Padding positions are included (mask them with `encode`'s attention_mask).
  """
  batch = encode(loaded, texts, max_len)
  return forward(loaded, batch, output_hidden_states=True)["hidden_states"]


def attentions(loaded: Loaded, texts: Union[Text, Sequence[Text]],
               max_len: Optional[int] = None) -> np.ndarray:
  """[L, batch, heads, seq, seq] float32 attention probabilities (query, key).

  Every row sums to 1 over the keys; padding keys get probability 0.
  """
  batch = encode(loaded, texts, max_len)
  return forward(loaded, batch, output_attentions=True)["attentions"]


def _check_mlm(loaded: Loaded) -> None:
  if "mlm_head" not in loaded.params:
    raise UserError(f"{loaded.source} has no MLM head (mlm_head params), so it cannot "
                    f"predict [MASK] tokens; a base-model checkpoint (a transformers "
                    f"*Model class, a sentence-embedding model) or a fine-tuned classifier "
                    f"has only the encoder")


def mask_probabilities(loaded: Loaded, text: str) -> np.ndarray:
  """[num_masks, V] float32: the MLM head's distribution at each [MASK] of `text`."""
  _check_mlm(loaded)
  if MASK not in text:
    raise UserError(f"text has no {MASK} to predict: {text!r}")
  batch = encode(loaded, text)
  ids = batch["input_ids"][0]
  positions = np.flatnonzero(ids == _tokenizer(loaded).mask_id).astype(np.int32)
  if positions.size == 0:  # every [MASK] was truncated away
    raise UserError(f"no {MASK} left in the first {ids.size} tokens of {text!r}")
  params = {"encoder": loaded.params["encoder"], "mlm_head": loaded.params["mlm_head"]}
  probs = _mlm_fn(_model_cfg(loaded))(params, batch["input_ids"], batch["attention_mask"],
                              _token_types(loaded, batch), positions[None])
  return np.asarray(probs[0])


def mask_predictions(loaded: Loaded, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
  """For each [MASK] in `text`, in order, the top-k (token, probability) of the MLM head.

  Tokens are vocabulary entries (WordPiece `##` continuations and
  sentencepiece '▁' word marks included). Raises UserError if the model has no
  MLM head or the text has no [MASK].
  """
  tokenizer = _tokenizer(loaded)
  probs = mask_probabilities(loaded, text)
  out = []
  for row in probs:
    top = np.argsort(-row, kind="stable")[:k]
    out.append([(tokenizer.id_to_token(int(i)), float(row[i])) for i in top])
  return out


def word_id(loaded: Loaded, word: str) -> Optional[int]:
  """The id of `word` if the tokenizer makes it one token (else None)."""
  ids = _tokenizer(loaded).encode(word)
  return ids[0] if len(ids) == 1 else None


def layer_transition_stats(hidden: np.ndarray,
                           attention_mask: Optional[np.ndarray] = None) -> dict:
  """How much each layer changes its input, as in the ALBERT paper's Figure 1.

  Args:
    hidden: [L+1, batch, seq, H] from `hidden_states` (index 0: embeddings).
    attention_mask: [batch, seq], 1 for tokens to average over; None: all.

  Returns numpy [L] arrays, entry l for layer l+1 (input hidden[l], output
  hidden[l+1]), each averaged over the non-padding tokens:
    l2: the L2 distance ||out - in||;
    cosine: the cosine similarity of out and in;
    angle_degrees: arccos of that cosine, in degrees (the paper plots this).
  """
  hidden = np.asarray(hidden, np.float64)
  if hidden.ndim != 4 or hidden.shape[0] < 2:
    raise ValueError(f"hidden must be [L+1, batch, seq, H] with L >= 1, got shape "
                     f"{hidden.shape}")
  if attention_mask is None:
    weights = np.ones(hidden.shape[1:3])
  else:
    weights = np.asarray(attention_mask, np.float64)
    if weights.shape != hidden.shape[1:3]:
      raise ValueError(f"attention_mask shape {weights.shape} does not match hidden's "
                       f"[batch, seq] {hidden.shape[1:3]}")
  if weights.sum() == 0:
    raise ValueError("attention_mask selects no tokens")
  x, y = hidden[:-1], hidden[1:]
  l2 = np.linalg.norm(y - x, axis=-1)
  norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
  cosine = np.clip((x * y).sum(-1) / np.maximum(norms, 1e-12), -1.0, 1.0)
  angle = np.degrees(np.arccos(cosine))

  def average(per_token):  # [L, batch, seq] -> [L]
    return (per_token * weights).sum((1, 2)) / weights.sum()

  return {"l2": average(l2), "cosine": average(cosine), "angle_degrees": average(angle)}
