"""Dynamic masked-LM masking of one padded batch, on the host, in numpy.

This module's one job: given a batch of token ids `[batch, seq]`, choose the
positions the masked-LM objective predicts, corrupt them (80% `[MASK]`, 10% a
random token, 10% unchanged) and return the targets, as BERT's and ALBERT's
`create_masked_lm_predictions` do, but per batch and vectorised over the batch.

Why dynamic masking on the host, in numpy, per batch:
  * Whole-word and n-gram spans need word boundaries (a per-vocabulary lookup)
    and spans of variable length; both are a few array operations in numpy,
    while under `jit` they would need static shapes and a scan.
  * It costs a few milliseconds per batch of 256 x 128 on one core (see
    `experiments/data_benchmark.py`), far less than a training step, so the
    device never waits for it.
  * The rng of a batch is derived from (seed, batch coordinates) by
    `batch_rng`, so masks are a pure function of the batch's position in the
    stream: a resumed run redraws exactly the masks an uninterrupted run would
    have drawn, and no mask state has to go into the checkpoint. Each epoch
    sees new masks (RoBERTa's dynamic masking; BERT's `dupe_factor` static
    copies are not needed).

Procedure for each sequence (row):
  1. Candidates: tokens with attention 1 that are not special tokens
     (`[CLS]`, `[SEP]`, `[PAD]`, ...). Nothing else is ever masked.
  2. Units: single tokens, or whole words with `whole_word=True` (a word is a
     word-start token and the non-start tokens after it; a word never extends
     across a non-candidate token).
  3. Spans: with `max_ngram = N > 1` (ALBERT), each run of consecutive
     candidate units is cut into consecutive spans of n units, n drawn with
     p(n) proportional to 1/n for n = 1..N (the last span of a run is cut short
     by the run's end). Spans never cross `[SEP]`. With N = 1 a span is a unit.
  4. Budget: `masked_lm_prob * num_candidates` tokens (a real number),
     capped at `max_predictions_per_seq`. Spans are visited in a random
     order and taken while the total stays within the budget; the span that
     crosses the budget is taken with probability (budget - total so far) /
     its length. So the expected number of masked tokens equals the budget
     exactly, whatever the span lengths (BERT rounds the budget to the
     nearest integer with a minimum of 1, which is 15% only on average over
     lengths). Where the cap binds, the rest is filled as BERT and ALBERT
     do: a span that would overflow is skipped and later, shorter spans are
     still taken. A crossing span is more often a long one, so the masked
     spans lean slightly towards short n-grams compared with p(n) (about 2
     points at 15% of 128 tokens; ALBERT, which shortens its last n-gram,
     leans the same way).
  5. Corruption of each chosen token: 80% `[MASK]`, 10% a token drawn
     uniformly from the non-special vocabulary, 10% unchanged.

Outputs (dict of numpy arrays, P = `max_predictions_per_seq`):
  `input_ids` [batch, seq] int32 (corrupted), `masked_positions` [batch, P]
  int32 (ascending; 0 in padding slots), `masked_ids` [batch, P] int32 (the
  original ids; 0 in padding slots), `masked_weights` [batch, P] float32 (1 for
  a real prediction, 0 for a padding slot).
"""

import dataclasses
from typing import Any, Optional

import numpy as np

from lite_bert.errors import UserError

# Stream tag mixed into every masking rng, so masks never share a stream with
# other draws made from the same user seed.
_MASKING_STREAM = 0x6D61736B  # "mask"


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  """What to mask and how to corrupt it.

  Attributes:
    max_predictions_per_seq: P, the most masked tokens in one sequence (the
      width of the `masked_*` outputs).
    masked_lm_prob: fraction of candidate tokens to mask (0.15 in BERT).
    whole_word: mask all pieces of a word together (BERT's whole-word masking).
    max_ngram: N; spans of n <= N units with p(n) proportional to 1/n (ALBERT
      uses 3 with `whole_word=True`); 1 turns n-gram masking off.
    mask_token_prob: fraction of chosen tokens replaced by `[MASK]` (0.8).
    random_token_prob: fraction replaced by a random token (0.1); the rest
      stays unchanged.
  """

  max_predictions_per_seq: int
  masked_lm_prob: float = 0.15
  whole_word: bool = False
  max_ngram: int = 1
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1

  def __post_init__(self):
    if (not isinstance(self.max_predictions_per_seq, (int, np.integer))
        or self.max_predictions_per_seq < 1):
      raise UserError(
          "max_predictions_per_seq must be a positive integer, got "
          f"{self.max_predictions_per_seq!r}")
    if not 0.0 < self.masked_lm_prob <= 1.0:
      raise UserError(
          f"masked_lm_prob must be in (0, 1], got {self.masked_lm_prob!r}")
    if not isinstance(self.max_ngram, (int, np.integer)) or self.max_ngram < 1:
      raise UserError(
          f"max_ngram must be an integer >= 1, got {self.max_ngram!r}")
    if (self.mask_token_prob < 0 or self.random_token_prob < 0
        or self.mask_token_prob + self.random_token_prob > 1.0):
      raise UserError(
          "mask_token_prob and random_token_prob must be >= 0 with a sum <= 1, "
          f"got {self.mask_token_prob!r} and {self.random_token_prob!r}")

  def ngram_probabilities(self) -> np.ndarray:
    """p(n) for n = 1..max_ngram, proportional to 1/n. Shape [max_ngram]."""
    weights = 1.0 / np.arange(1, self.max_ngram + 1)
    return weights / weights.sum()


@dataclasses.dataclass(frozen=True)
class MaskingVocab:
  """The facts about a vocabulary that masking needs, as lookup arrays.

  Attributes:
    mask_id: id of `[MASK]`.
    is_special: [vocab_size] bool, True for ids never masked (`[CLS]`,
      `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]`, ...).
    is_word_start: [vocab_size] bool, True for ids that start a word.
    replacement_ids: [num_replacements] int32, the ids a "random token" is
      drawn from (every non-special id).
  """

  mask_id: int
  is_special: np.ndarray
  is_word_start: np.ndarray
  replacement_ids: np.ndarray


def masking_vocab(tokenizer: Any) -> MaskingVocab:
  """Lookup arrays from a `lite_bert.data.tokenizers.Tokenizer`.

  Uses `vocab_size`, `mask_id`, `pad_id`, `special_ids` and
  `word_start_mask(ids)`, called once on every id (word starts are a property
  of the id alone for WordPiece `##` and SentencePiece `▁` vocabularies).
  """
  vocab_size = int(tokenizer.vocab_size)
  all_ids = np.arange(vocab_size, dtype=np.int32)
  is_special = np.zeros(vocab_size, bool)
  special_ids = np.asarray(tokenizer.special_ids, np.int64)
  is_special[special_ids] = True
  is_special[int(tokenizer.pad_id)] = True
  is_special[int(tokenizer.mask_id)] = True
  is_word_start = np.asarray(tokenizer.word_start_mask(all_ids), bool)
  if is_word_start.shape != (vocab_size,):
    raise ValueError(
        f"word_start_mask returned shape {is_word_start.shape} for "
        f"{vocab_size} ids")
  return MaskingVocab(
      mask_id=int(tokenizer.mask_id),
      is_special=is_special,
      is_word_start=is_word_start | is_special,
      replacement_ids=all_ids[~is_special])


def batch_rng(seed: int, *coordinates: int) -> np.random.Generator:
  """The masking rng of one batch: a pure function of its coordinates.

  Args:
    seed: the run's data seed.
    *coordinates: non-negative ints that locate the batch in the stream, e.g.
      (process_index, epoch, batch_in_epoch).
  """
  entropy = [_MASKING_STREAM, int(seed), *(int(c) for c in coordinates)]
  return np.random.default_rng(np.random.SeedSequence(entropy))


def _units(candidate: np.ndarray, is_unit_start: np.ndarray):
  """Unit (token or word) index of each token, per row.

  Returns (unit_start [B, S] bool: the token starts a unit; unit_index [B, S]
  int64: index of the token's unit within its row, -1 before the first unit;
  run_start [B, S] bool: the token starts a run of consecutive candidates).
  """
  previous_candidate = np.zeros_like(candidate)
  previous_candidate[:, 1:] = candidate[:, :-1]
  run_start = candidate & ~previous_candidate
  unit_start = candidate & (is_unit_start | run_start)
  unit_index = np.cumsum(unit_start, axis=1) - 1
  return unit_start, unit_index, run_start


def _ngram_span_starts(unit_start: np.ndarray, unit_index: np.ndarray,
                       run_start: np.ndarray, probabilities: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
  """Which units begin an n-gram span: [B, S] bool over unit slots.

  Each run of consecutive candidate units is cut into consecutive spans whose
  lengths (in units) are drawn i.i.d. with `probabilities` (p(n), n = 1..N);
  a run's end cuts its last span short.
  """
  batch, seq = unit_start.shape
  rows, cols = np.nonzero(unit_start)
  unit_begins_run = np.zeros((batch, seq), bool)
  unit_begins_run[rows, unit_index[rows, cols]] = run_start[rows, cols]
  num_units = unit_start.sum(axis=1)
  max_units = int(num_units.max(initial=0))
  # Span length that a span starting at each unit slot would have.
  lengths = 1 + np.searchsorted(
      np.cumsum(probabilities)[:-1], rng.random((batch, max_units)),
      side="right")
  span_start = np.zeros((batch, seq), bool)
  next_start = np.zeros(batch, np.int64)
  for unit in range(max_units):
    starts_here = (next_start == unit) | unit_begins_run[:, unit]
    span_start[:, unit] = starts_here
    next_start = np.where(starts_here, unit + lengths[:, unit], next_start)
  return span_start


def _choose_spans(span_lengths: np.ndarray, budget: np.ndarray,
                  max_predictions: int,
                  rng: np.random.Generator) -> np.ndarray:
  """Which spans to mask: [B, K] bool, given their token lengths [B, K].

  Spans are visited in a random order. Those that keep the running total
  within `budget` [B] (float tokens) are taken; the span that crosses the
  budget is taken with probability (budget - total so far) / its length, if
  the total stays <= `max_predictions`. In rows where the cap binds
  (budget >= max_predictions) the rest is filled as BERT/ALBERT do: later
  spans are taken while they still fit under the cap.
  """
  keys = np.where(span_lengths > 0, rng.random(span_lengths.shape), 2.0)
  order = np.argsort(keys, axis=1)
  lengths = np.take_along_axis(span_lengths, order, axis=1)
  total_after = np.cumsum(lengths, axis=1)
  total_before = total_after - lengths
  limit = budget[:, None]
  crosses = (total_before < limit) & (total_after > limit)
  take_crossing = (rng.random(lengths.shape) * lengths < limit - total_before)
  chosen_sorted = (lengths > 0) & (
      (total_after <= limit)
      | (crosses & take_crossing & (total_after <= max_predictions)))
  taken = np.where(chosen_sorted, lengths, 0).sum(axis=1)
  rows = np.flatnonzero((budget >= max_predictions)
                        & (taken < max_predictions))
  if rows.size:
    num_spans = (lengths[rows] > 0).sum(axis=1)
    first_skipped = np.argmin(chosen_sorted[rows], axis=1)
    for k in range(int(first_skipped.min()), int(num_spans.max())):
      length = lengths[rows, k]
      take = ((length > 0) & ~chosen_sorted[rows, k]
              & (taken[rows] + length <= max_predictions))
      chosen_sorted[rows[take], k] = True
      taken[rows] += np.where(take, length, 0)
      rows = rows[taken[rows] < max_predictions]
      if not rows.size:
        break
  chosen = np.zeros_like(chosen_sorted)
  np.put_along_axis(chosen, order, chosen_sorted, axis=1)
  return chosen


def mask_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, *,
                spec: MaskingSpec, vocab: MaskingVocab,
                rng: np.random.Generator,
                return_span_ids: bool = False) -> dict[str, np.ndarray]:
  """Chooses and corrupts the masked-LM positions of one batch.

  Args:
    input_ids: [batch, seq] int token ids, padded.
    attention_mask: [batch, seq] int or bool, 1 for real tokens, 0 for padding.
    spec: what to mask (rate, cap P, whole words, n-grams, 80/10/10).
    vocab: lookup arrays of the tokenizer (`masking_vocab`).
    rng: this batch's generator (`batch_rng`).
    return_span_ids: also return `masked_span_ids` [batch, P] int32, the span
      (within its row) each prediction belongs to, -1 in padding slots; for
      tests and debugging.

  Returns:
    dict with `input_ids` [batch, seq] int32 (corrupted copy),
    `masked_positions` [batch, P] int32, `masked_ids` [batch, P] int32 and
    `masked_weights` [batch, P] float32; see the module docstring.
  """
  input_ids = np.asarray(input_ids)
  batch, seq = input_ids.shape
  max_predictions = spec.max_predictions_per_seq
  candidate = np.asarray(attention_mask).astype(bool) & ~vocab.is_special[
      input_ids]
  if spec.whole_word:
    is_unit_start = vocab.is_word_start[input_ids]
  else:
    is_unit_start = np.ones_like(candidate)
  unit_start, unit_index, run_start = _units(candidate, is_unit_start)
  if spec.max_ngram > 1:
    span_start = _ngram_span_starts(unit_start, unit_index, run_start,
                                    spec.ngram_probabilities(), rng)
    span_of_unit = np.cumsum(span_start, axis=1) - 1
    span_index = np.take_along_axis(
        span_of_unit, np.maximum(unit_index, 0), axis=1)
  else:
    span_index = unit_index
  span_index = np.where(candidate, span_index, -1)

  # Token length of every span: [batch, seq] over span slots.
  rows = np.broadcast_to(np.arange(batch)[:, None], (batch, seq))
  flat_span = (rows * seq + span_index)[candidate]
  span_lengths = np.bincount(flat_span, minlength=batch * seq).reshape(
      batch, seq)
  budget = np.minimum(spec.masked_lm_prob * candidate.sum(axis=1),
                      max_predictions)
  chosen_span = _choose_spans(span_lengths, budget, max_predictions, rng)
  masked = candidate & np.take_along_axis(
      chosen_span, np.maximum(span_index, 0), axis=1)

  # Masked positions first, in ascending order, then padding slots.
  num_masked = masked.sum(axis=1)
  positions = np.argsort(~masked, axis=1, kind="stable")
  if seq < max_predictions:
    positions = np.pad(positions, ((0, 0), (0, max_predictions - seq)))
  positions = positions[:, :max_predictions]
  is_real = np.arange(max_predictions)[None, :] < num_masked[:, None]
  positions = np.where(is_real, positions, 0).astype(np.int32)
  masked_ids = np.where(
      is_real, np.take_along_axis(input_ids, positions, axis=1), 0)

  # 80% [MASK], 10% random token, 10% unchanged.
  draw = rng.random((batch, max_predictions))
  random_ids = vocab.replacement_ids[
      rng.integers(len(vocab.replacement_ids), size=(batch, max_predictions))]
  new_ids = np.where(
      draw < spec.mask_token_prob, vocab.mask_id,
      np.where(draw < spec.mask_token_prob + spec.random_token_prob,
               random_ids, masked_ids))
  corrupted = input_ids.astype(np.int32, copy=True)
  slot_rows, slot_cols = np.nonzero(is_real)
  corrupted[slot_rows, positions[slot_rows, slot_cols]] = new_ids[
      slot_rows, slot_cols]

  out = {
      "input_ids": corrupted,
      "masked_positions": positions,
      "masked_ids": masked_ids.astype(np.int32),
      "masked_weights": is_real.astype(np.float32),
  }
  if return_span_ids:
    out["masked_span_ids"] = np.where(
        is_real, np.take_along_axis(span_index, positions, axis=1),
        -1).astype(np.int32)
  return out


def unmask(batch: dict[str, np.ndarray]) -> np.ndarray:
  """The uncorrupted `input_ids` [batch, seq] of a masked batch.

  Writes `masked_ids` back at `masked_positions` (real slots only).
  """
  original = np.array(batch["input_ids"], copy=True)
  rows, slots = np.nonzero(np.asarray(batch["masked_weights"]) > 0)
  original[rows, batch["masked_positions"][rows, slots]] = batch["masked_ids"][
      rows, slots]
  return original


def validate_spec_for_length(spec: MaskingSpec, max_seq_length: int,
                             where: Optional[str] = None) -> None:
  """Refuses a cap P larger than the sequence (a config mistake)."""
  if spec.max_predictions_per_seq > max_seq_length:
    suffix = f" ({where})" if where else ""
    raise UserError(
        f"max_predictions_per_seq={spec.max_predictions_per_seq} is larger "
        f"than max_seq_length={max_seq_length}{suffix}")
