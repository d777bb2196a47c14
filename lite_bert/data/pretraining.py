"""Pretraining examples from documents, as BERT's create_pretraining_data.py.

This module's one job: turn documents into the (unmasked) sequences BERT,
ALBERT and DistilBERT pretrain on. Masking is `masking.py`'s job, batching and
epochs are `pipeline.py`'s.

1. `tokenize_documents`: each document (paragraphs joined by "\\n") is split
   into sentences (`corpora.split_sentences`, per paragraph) and tokenized
   with `encode_batch`; a sentence too long for one sequence is cut into
   near-equal pieces (<= half of a pair's token room, so two pieces fit one
   pair; <= the whole room for single segments). All token ids go into one
   flat array, so a run of consecutive sentences is one slice of it.
2. `create_examples`: BERT's `create_instances_from_document`, on those
   slices. Sentences are gathered into a chunk until it reaches a target
   length (`max_num_tokens`, or with probability `short_seq_prob` a random
   length in [2, max_num_tokens]); a random split point makes segment A
   (the first sentences) and segment B (the rest), then
     * 'nsp': half of the time B is replaced by sentences from a random
       other document of the shard (label 1, "random next"), and the chunk's
       unused sentences are put back for the next example, as BERT does;
     * 'sop': half of the time A and B are swapped (label 1), as ALBERT does;
     * None (DistilBERT): no B; sentences are packed greedily into one
       segment of at most max_seq_length - 2 tokens.
   Pairs are cut to `max_seq_length - 3` tokens by `truncate_seq_pair`'s
   rule: drop tokens from the longer segment (B on a tie), from its front or
   its back with probability 1/2 each.
3. `assemble`: `[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]`) for a set of
   examples, padded to `max_seq_length`, in a few vectorised gathers.

Label convention (as Hugging Face): `pair_labels` 0 = A then B in their true
order (true next), 1 = B from another document (NSP) or swapped (SOP).

Differences from BERT's script, on purpose:
  * The short-target draw happens for every example; BERT draws it once per
    document, which makes every example of 10% of the documents short (with
    book-sized documents, 10% of the books).
  * A chunk is cut only once it holds >= 2 sentences and never leaves a lone
    last sentence behind, so a pair always has a true B. BERT forces a random
    next for one-sentence chunks, which pushes the NSP labels away from 50/50
    and makes SOP's label 1 ambiguous. Documents of a single sentence give no
    pair examples (they can still be the random next of another document).
  * NSP draws the random document among the other documents of the shard
    (never the same one); BERT retries 10 times and may give up.
  * Overlong sentences are cut into pieces instead of being truncated away.

Everything is deterministic for a given seed (`random.Random`, seeded from
`np.random.SeedSequence`), and works on whatever documents it is given: the
caller (`pipeline.py`) passes each host process its own shard.
"""

import dataclasses
import itertools
import random
from typing import Any, Callable, Optional, Sequence

import numpy as np

from lite_bert.data import corpora
from lite_bert.errors import UserError

PAIR_OBJECTIVES = ("nsp", "sop")
# Stream tag mixed into the example-creation rng.
_EXAMPLES_STREAM = 0x65786D70  # "exmp"


def check_pair_objective(pair_objective: Optional[str]) -> None:
  """UserError unless `pair_objective` is 'nsp', 'sop' or None."""
  if pair_objective is not None and pair_objective not in PAIR_OBJECTIVES:
    raise UserError(
        f"pair_objective must be 'nsp', 'sop' or None, got {pair_objective!r}")


def special_token_count(pair_objective: Optional[str]) -> int:
  """Special tokens per sequence: 3 (`[CLS] A [SEP] B [SEP]`) or 2 (no B)."""
  return 2 if pair_objective is None else 3


def max_sentence_tokens(max_seq_length: int,
                        pair_objective: Optional[str]) -> tuple[int, int]:
  """(cut threshold, piece length) for sentences, in tokens.

  A sentence longer than the threshold (the room for text in one sequence) is
  cut into near-equal pieces of at most the piece length: half the room for a
  pair objective, so two consecutive pieces make one pair without truncation;
  the whole room for single segments.
  """
  room = max_seq_length - special_token_count(pair_objective)
  piece = room if pair_objective is None else max(1, room // 2)
  return room, piece


@dataclasses.dataclass(frozen=True)
class TokenizedDocuments:
  """Documents as sentences of token ids, all in one flat array.

  Sentence `s` is `tokens[sentence_starts[s]:sentence_starts[s + 1]]`;
  document `d` holds sentences `document_starts[d]` to
  `document_starts[d + 1] - 1`. Consecutive sentences of a document are
  contiguous in `tokens`.

  Attributes:
    tokens: [num_tokens] int32, every sentence's ids, back to back.
    sentence_starts: [num_sentences + 1] int64 offsets into `tokens`.
    document_starts: [num_documents + 1] int64 offsets into sentences.
    document_ids: [num_documents] int64, each document's index in the corpus
      it came from (provenance; sharding keeps the global index). Documents
      without tokens are left out, so every document has >= 1 sentence.
  """

  tokens: np.ndarray
  sentence_starts: np.ndarray
  document_starts: np.ndarray
  document_ids: np.ndarray

  @property
  def num_documents(self) -> int:
    return len(self.document_ids)

  @property
  def num_sentences(self) -> int:
    return len(self.sentence_starts) - 1

  def document_tokens(self, document: int) -> np.ndarray:
    """[n] int32: all ids of document `document` (a local index), in order."""
    first = self.sentence_starts[self.document_starts[document]]
    end = self.sentence_starts[self.document_starts[document + 1]]
    return self.tokens[first:end]

  def sentences_per_document(self) -> np.ndarray:
    """[num_documents] int64."""
    return np.diff(self.document_starts)


def _cut_lengths(length: int, threshold: int, piece: int) -> list[int]:
  """Lengths of the pieces a sentence of `length` tokens is cut into."""
  if length <= threshold:
    return [length]
  count = -(-length // piece)
  base, extra = divmod(length, count)
  return [base + 1] * extra + [base] * (count - extra)


def tokenize_documents(
    documents: Sequence[str],
    tokenizer: Any,
    *,
    max_seq_length: int,
    pair_objective: Optional[str],
    document_ids: Optional[Sequence[int]] = None,
    sentence_splitter: Callable[[str], list[str]] = corpora.split_sentences,
) -> TokenizedDocuments:
  """Splits documents into sentences and tokenizes them.

  Args:
    documents: texts, each one document with paragraphs joined by "\\n".
    tokenizer: a `lite_bert.data.tokenizers.Tokenizer` (`encode_batch`).
    max_seq_length: S; sentences longer than one sequence's room are cut (see
      `max_sentence_tokens`).
    pair_objective: 'nsp', 'sop' or None (decides the room and piece size).
    document_ids: the corpus index of each document; default 0..n-1.
    sentence_splitter: paragraph -> sentences.

  Returns:
    `TokenizedDocuments`; sentences and documents with no tokens are left
    out (`document_ids` says which documents remain).
  """
  threshold, piece = max_sentence_tokens(max_seq_length, pair_objective)
  if document_ids is None:
    document_ids = range(len(documents))
  token_chunks = []
  sentence_lengths = []
  sentences_per_document = []
  kept_ids = []
  for document_id, document in zip(document_ids, documents):
    sentences = [s for paragraph in document.split("\n")
                 for s in sentence_splitter(paragraph)]
    ids = tokenizer.encode_batch(sentences) if sentences else []
    lengths = [len(i) for i in ids]
    total = sum(lengths)
    if not total:
      continue
    count = 0
    for length in lengths:
      if length:
        pieces = _cut_lengths(length, threshold, piece)
        sentence_lengths.extend(pieces)
        count += len(pieces)
    sentences_per_document.append(count)
    kept_ids.append(document_id)
    token_chunks.append(np.fromiter(
        itertools.chain.from_iterable(ids), np.int32, count=total))
  tokens = (np.concatenate(token_chunks) if token_chunks
            else np.zeros(0, np.int32))
  sentence_starts = np.zeros(len(sentence_lengths) + 1, np.int64)
  np.cumsum(sentence_lengths, out=sentence_starts[1:])
  document_starts = np.zeros(len(sentences_per_document) + 1, np.int64)
  np.cumsum(sentences_per_document, out=document_starts[1:])
  return TokenizedDocuments(
      tokens=tokens,
      sentence_starts=sentence_starts,
      document_starts=document_starts,
      document_ids=np.asarray(kept_ids, np.int64))


@dataclasses.dataclass(frozen=True)
class Examples:
  """Examples as slices of `TokenizedDocuments.tokens` (no ids copied).

  Example `k` is `[CLS] tokens[a_start:a_start + a_length] [SEP]` followed,
  for a pair objective, by `tokens[b_start:b_start + b_length] [SEP]`.

  Attributes:
    a_start, b_start: [num_examples] int64 offsets into the flat tokens.
    a_length, b_length: [num_examples] int64 (b_length 0 without pairs).
    pair_labels: [num_examples] int32, 0 true order / true next, 1 swapped
      (SOP) / random next (NSP); 0 without pairs.
    a_document, b_document: [num_examples] int64, the local document index of
      each segment (equal unless NSP's random next).
  """

  a_start: np.ndarray
  a_length: np.ndarray
  b_start: np.ndarray
  b_length: np.ndarray
  pair_labels: np.ndarray
  a_document: np.ndarray
  b_document: np.ndarray

  def __len__(self) -> int:
    return len(self.a_start)

  def take(self, indices: np.ndarray) -> "Examples":
    """The examples at `indices` [n], in that order."""
    return Examples(**{f.name: getattr(self, f.name)[indices]
                       for f in dataclasses.fields(self)})


def example_rng(*entropy: int) -> random.Random:
  """A `random.Random` seeded deterministically from non-negative ints."""
  state = np.random.SeedSequence(
      [_EXAMPLES_STREAM, *(int(e) for e in entropy)]).generate_state(4)
  return random.Random(int.from_bytes(state.tobytes(), "little"))


def truncate_pair(a_length: int, b_length: int, max_num_tokens: int,
                   rng: random.Random) -> tuple[int, int, int, int]:
  """BERT's `truncate_seq_pair`, in closed form.

  BERT removes one token at a time from the longer segment (B on a tie), from
  the front or the back with probability 1/2. The tokens each segment loses
  follow from the lengths alone; how many of them come off its front is then
  Binomial(lost, 1/2), drawn here directly.

  Returns:
    (tokens dropped from A's front, new A length, dropped from B's front, new
    B length).
  """
  excess = a_length + b_length - max_num_tokens
  if excess <= 0:
    return 0, a_length, 0, b_length
  gap = abs(a_length - b_length)
  from_longer = min(excess, gap)
  rest = excess - from_longer
  lose_a = (from_longer if a_length > b_length else 0) + rest // 2
  lose_b = (from_longer if a_length <= b_length else 0) + rest - rest // 2
  front_a = bin(rng.getrandbits(lose_a)).count("1") if lose_a else 0
  front_b = bin(rng.getrandbits(lose_b)).count("1") if lose_b else 0
  return front_a, a_length - lose_a, front_b, b_length - lose_b


def _draw_target(max_num_tokens: int, short_seq_prob: float,
                 rng: random.Random) -> int:
  if rng.random() < short_seq_prob:
    return rng.randint(min(2, max_num_tokens), max_num_tokens)
  return max_num_tokens


class _ExampleLists:
  """Column lists that grow one example at a time."""

  def __init__(self):
    self.columns = {f.name: [] for f in dataclasses.fields(Examples)}

  def add(self, **values):
    for name, value in values.items():
      self.columns[name].append(value)

  def finish(self) -> Examples:
    arrays = {name: np.asarray(values, np.int64)
              for name, values in self.columns.items()}
    arrays["pair_labels"] = arrays["pair_labels"].astype(np.int32)
    return Examples(**arrays)


def _pair_examples(corpus: TokenizedDocuments, document: int,
                   pair_objective: str, max_num_tokens: int,
                   short_seq_prob: float, rng: random.Random,
                   out: _ExampleLists) -> None:
  """BERT's `create_instances_from_document` for one document (see module)."""
  starts = corpus.sentence_starts
  first_sentence = int(corpus.document_starts[document])
  end_sentence = int(corpus.document_starts[document + 1])
  if end_sentence - first_sentence < 2:
    return
  num_documents = corpus.num_documents
  target = _draw_target(max_num_tokens, short_seq_prob, rng)
  chunk_first = first_sentence
  i = first_sentence
  while i < end_sentence:
    chunk_tokens = int(starts[i + 1] - starts[chunk_first])
    chunk_sentences = i + 1 - chunk_first
    is_last = i == end_sentence - 1
    leaves_one = i == end_sentence - 2
    if not (is_last or (chunk_tokens >= target and chunk_sentences >= 2
                        and not leaves_one)):
      i += 1
      continue
    next_i = i + 1
    if chunk_sentences >= 2:
      a_sentences = rng.randint(1, chunk_sentences - 1)
      a_start = int(starts[chunk_first])
      a_end = int(starts[chunk_first + a_sentences])
      b_document = document
      label = 0
      if pair_objective == "nsp" and rng.random() < 0.5:
        label = 1
        b_document = rng.randrange(num_documents - 1)
        if b_document >= document:
          b_document += 1
        b_first = int(corpus.document_starts[b_document])
        b_stop = int(corpus.document_starts[b_document + 1])
        b_target = target - (a_end - a_start)
        j = rng.randrange(b_first, b_stop)
        b_start = int(starts[j])
        while True:
          j += 1
          if j == b_stop or starts[j] - b_start >= b_target:
            break
        b_end = int(starts[j])
        # Put the chunk's unused sentences back, as BERT does.
        next_i = chunk_first + a_sentences
      else:
        b_start, b_end = a_end, int(starts[i + 1])
        if pair_objective == "sop" and rng.random() < 0.5:
          label = 1
          a_start, a_end, b_start, b_end = b_start, b_end, a_start, a_end
      front_a, a_length, front_b, b_length = truncate_pair(
          a_end - a_start, b_end - b_start, max_num_tokens, rng)
      out.add(a_start=a_start + front_a, a_length=a_length,
              b_start=b_start + front_b, b_length=b_length, pair_labels=label,
              a_document=document, b_document=b_document)
    chunk_first = i = next_i
    target = _draw_target(max_num_tokens, short_seq_prob, rng)


def _single_examples(corpus: TokenizedDocuments, document: int,
                     max_num_tokens: int, short_seq_prob: float,
                     rng: random.Random, out: _ExampleLists) -> None:
  """Greedy packing of whole sentences into single segments (DistilBERT)."""
  starts = corpus.sentence_starts
  first_sentence = int(corpus.document_starts[document])
  end_sentence = int(corpus.document_starts[document + 1])
  target = _draw_target(max_num_tokens, short_seq_prob, rng)
  chunk_first = first_sentence
  for i in range(first_sentence, end_sentence + 1):
    if i < end_sentence and (i == chunk_first
                             or starts[i + 1] - starts[chunk_first] <= target):
      continue
    if i > chunk_first:
      a_start = int(starts[chunk_first])
      out.add(a_start=a_start, a_length=int(starts[i]) - a_start, b_start=0,
              b_length=0, pair_labels=0, a_document=document,
              b_document=document)
      chunk_first = i
      target = _draw_target(max_num_tokens, short_seq_prob, rng)


def create_examples(corpus: TokenizedDocuments, *, max_seq_length: int,
                    pair_objective: Optional[str], short_seq_prob: float,
                    rng: random.Random,
                    document_order: Optional[Sequence[int]] = None
                   ) -> Examples:
  """Examples from every document of `corpus`, in document order.

  Args:
    corpus: the (shard's) tokenized documents.
    max_seq_length: S, the padded length (the layout's special tokens
      included).
    pair_objective: 'nsp', 'sop' or None.
    short_seq_prob: probability that an example's target length is drawn
      uniformly from [2, S - 3] instead of S - 3 (S - 2 without pairs).
    rng: the only source of randomness (see `example_rng`).
    document_order: local document indices in the order to visit them;
      default 0..n-1. (The order changes which random draws each document
      gets.)

  Returns:
    `Examples`, grouped by document in `document_order`.
  """
  check_pair_objective(pair_objective)
  max_num_tokens = max_seq_length - special_token_count(pair_objective)
  if document_order is None:
    document_order = range(corpus.num_documents)
  out = _ExampleLists()
  for document in document_order:
    if pair_objective is None:
      _single_examples(corpus, int(document), max_num_tokens, short_seq_prob,
                       rng, out)
    else:
      _pair_examples(corpus, int(document), pair_objective, max_num_tokens,
                     short_seq_prob, rng, out)
  return out.finish()


def assemble(corpus: TokenizedDocuments, examples: Examples, *,
             max_seq_length: int, cls_id: int, sep_id: int,
             pad_id: int) -> dict[str, np.ndarray]:
  """Token ids of examples, laid out and padded.

  Args:
    corpus: the tokens the examples point into.
    examples: n examples (e.g. one batch).
    max_seq_length: S.
    cls_id, sep_id, pad_id: the special ids.

  Returns:
    `input_ids`, `attention_mask`, `token_type_ids`, each [n, S] int32:
    `[CLS] A [SEP] B [SEP] [PAD]...` (no B and no second `[SEP]` when
    `b_length` is 0), types 0 up to the first `[SEP]` and 1 after it,
    attention 1 on every non-padding token.
  """
  position = np.arange(max_seq_length)[None, :]
  a_length = examples.a_length[:, None]
  b_length = examples.b_length[:, None]
  has_b = b_length > 0
  in_a = (position >= 1) & (position <= a_length)
  b_first = a_length + 2
  in_b = (position >= b_first) & (position < b_first + b_length)
  first_sep = position == a_length + 1
  second_sep = has_b & (position == b_first + b_length)
  source = np.where(in_a, examples.a_start[:, None] + position - 1,
                    examples.b_start[:, None] + position - b_first)
  in_text = in_a | in_b
  input_ids = np.where(in_text, corpus.tokens[np.where(in_text, source, 0)],
                       pad_id)
  input_ids = np.where(first_sep | second_sep, sep_id, input_ids)
  input_ids[:, 0] = cls_id
  length = a_length + 2 + np.where(has_b, b_length + 1, 0)
  return {
      "input_ids": input_ids.astype(np.int32),
      "attention_mask": (position < length).astype(np.int32),
      "token_type_ids": (in_b | second_sep).astype(np.int32),
  }
