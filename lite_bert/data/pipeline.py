"""Pretraining batches: a resumable per-host stream, and a fixed eval set.

This module's one job: turn a corpus (a sequence of document strings) into
the numpy batches the pretraining step consumes, on each host process.

    it = pretraining_batches(documents, tokenizer, batch_size=32,
                             max_seq_length=128, max_predictions_per_seq=20,
                             pair_objective="sop", seed=0,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
    batch = next(it)
    state = it.get_state()      # small JSON-serialisable dict (checkpoint it)
    ...
    it = pretraining_batches(..., state=state)   # or it.set_state(state)

Batch contract (numpy, B = per-host `batch_size`, S = `max_seq_length`,
P = `max_predictions_per_seq`):
  input_ids       [B, S] int32   `[CLS] A [SEP] B [SEP] [PAD]...`, masked
  attention_mask  [B, S] int32   1 on tokens, 0 on padding
  token_type_ids  [B, S] int32   0 for `[CLS] A [SEP]`, 1 for `B [SEP]`
  masked_positions [B, P] int32  positions of the predictions (0 in padding)
  masked_ids      [B, P] int32   original ids there (0 in padding)
  masked_weights  [B, P] float32 1 for a prediction, 0 for a padding slot
  pair_labels     [B] int32      only with a pair objective: 0 = A, B in true
                                 order / true next, 1 = swapped (SOP) /
                                 random next (NSP)
With `with_provenance=True` (tests, debugging) also `a_document`,
`b_document` [B] int32 (each segment's document index in `documents`) and
`a_offset`, `b_offset` [B] int32 (where the segment starts in its document's
token stream, `pretraining.TokenizedDocuments.document_tokens`).

How the stream is made (all of it a pure function of the options and the
position, which is why a 2-number state is enough to resume):
  * One global stream: every host tokenizes the whole corpus once, up front
    (`pretraining.tokenize_documents`), and makes the same global batches of
    `batch_size * process_count` sequences; host `process_index` keeps rows
    [process_index * batch_size, (process_index + 1) * batch_size). So a run
    on N processes trains on exactly the batches of a one-process run with the
    same global batch (same losses, within float tolerance), and a state
    saved on one process count resumes on another. The price: each host
    tokenizes every document and masks the whole global batch (cheap next to
    a training step; the corpus must fit in each host's memory, as it must
    anyway for `open_corpus`).
  * Or, for pods (`shards=N`): the corpus in N fixed shards, document i in
    shard i % N, each shard a stream of its own (its epochs, examples and
    masks keyed by the shard) giving G / N rows of every global batch. A host
    tokenizes only its N / process_count shards and its rows are theirs,
    concatenated; the global batch is every shard's rows in shard order, so it
    does not depend on the process count either, and the state is the global
    batch count. N is fixed for the run (a multiple of every process count it
    will run on); NSP needs 2 documents in every shard.
  * Epoch e: the documents in a new order, examples created from them
    with a new rng (new A/B splits, random nexts and swaps every epoch; no
    BERT `dupe_factor` copies needed), then all the epoch's examples shuffled
    together (BERT shuffles its instances globally too: with book-sized
    documents, a batch must not come from one book). The last partial batch
    of an epoch is dropped.
  * Batch k of epoch e: examples [k G, (k + 1) G) of that order (G the
    global batch), laid out and padded (`pretraining.assemble`), masked with
    the rng `masking.batch_rng(seed, 0, e, k)`, then cut to this host's rows.
  * State: {epoch, batch_in_epoch} of the next batch, plus the options and
    corpus size that define the stream, which `set_state` checks: restoring a
    state into a differently configured stream is refused (the process count
    is not part of it: the global batch is).

Why grain is only the frame: `PretrainingDataset` is a `grain.IterDataset`
and its iterator a `grain.DatasetIterator` (so it composes with grain
transformations such as `grain.experimental.ThreadPrefetchIterDataset`, and
grain's Orbax checkpoint support of `get_state`/`set_state` applies), but the
inside is plain numpy. grain's `MapDataset` needs a fixed number of elements
known up front, while the number of examples of an epoch depends on that
epoch's random A/B packing; and the work per batch is best done vectorised on
a whole batch (a few gathers and the masking), not per element. The epoch's
shuffle and batching are two numpy lines on index arrays.

`eval_batches` gives the evaluation variant: the first epoch's batches of a
held-out corpus, in order, with fixed masks, as a list.
"""

import dataclasses
from typing import Any, Optional, Sequence

import grain
import numpy as np

from lite_bert.data import masking
from lite_bert.data import pretraining
from lite_bert.errors import UserError

# Stream tag of the per-epoch example shuffle.
_SHUFFLE_STREAM = 0x73687566  # "shuf"
# Version of the state layout returned by `get_state`: the global stream's
# (epoch, batch in epoch), and a sharded stream's global batch count.
_STATE_VERSION = 1
_SHARDED_STATE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class PretrainingOptions:
  """Everything that defines a host's stream of pretraining batches.

  Attributes:
    batch_size: B, sequences per batch on this host (global batch / hosts).
    max_seq_length: S, padded sequence length, special tokens included.
    max_predictions_per_seq: P, the most masked tokens per sequence.
    pair_objective: 'nsp' (BERT), 'sop' (ALBERT) or None (DistilBERT: single
      segments, no `pair_labels`).
    masked_lm_prob: fraction of non-special tokens masked (0.15).
    whole_word_masking: mask all pieces of a word together.
    max_ngram: ALBERT n-gram masking, spans of n <= max_ngram units with
      p(n) proportional to 1/n; 1 = off.
    short_seq_prob: probability of a shorter target length (0.1).
    seed: the data seed (document orders, examples, shuffles, masks).
    process_index: this host's index, in [0, process_count): which rows of
      each global batch it keeps.
    process_count: number of host processes; the global batch is
      batch_size * process_count.
    shards: 0 = one global stream (every host tokenizes the whole corpus and
      keeps its rows of each batch); N > 0 = the corpus in N fixed shards
      (document i in shard i % N), each giving global_batch / N rows of every
      batch, and each host reading only its N / process_count shards. Either
      way the global batches do not depend on the process count.
    with_provenance: add the debug fields `a_document`, `b_document`,
      `a_offset`, `b_offset` to every batch.
  """

  batch_size: int
  max_seq_length: int
  max_predictions_per_seq: int
  pair_objective: Optional[str]
  masked_lm_prob: float = 0.15
  whole_word_masking: bool = False
  max_ngram: int = 1
  short_seq_prob: float = 0.1
  seed: int = 0
  process_index: int = 0
  process_count: int = 1
  shards: int = 0
  with_provenance: bool = False

  def masking_spec(self) -> masking.MaskingSpec:
    return masking.MaskingSpec(
        max_predictions_per_seq=self.max_predictions_per_seq,
        masked_lm_prob=self.masked_lm_prob,
        whole_word=self.whole_word_masking,
        max_ngram=self.max_ngram)

  @property
  def global_batch_size(self) -> int:
    return self.batch_size * self.process_count

  def stream_fields(self) -> dict[str, Any]:
    """The options a saved state must agree with (JSON types only).

    The global stream's: the global batch, not how it is split over hosts
    (written as one host of one, the fields a one-process run always saved).
    """
    fields = dataclasses.asdict(self)
    del fields["with_provenance"]
    if not self.shards:
      del fields["shards"]  # as states saved before shards existed
    fields.update(batch_size=self.global_batch_size, process_index=0, process_count=1)
    return {name: value.item() if isinstance(value, np.generic) else value
            for name, value in fields.items()}


def check_shards(shards: Any, *, global_batch_size: int, process_count: int,
                 documents: Optional[dict[str, int]] = None,
                 pair_objective: Optional[str] = None) -> None:
  """UserError unless `shards` (`PretrainingOptions.shards`) can cut these batches and corpora.

  documents: {corpus name: document count}, each needing a document per shard
  (two for NSP's random next) or, with no shards, 2 for NSP.
  """
  if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 0:
    raise UserError(f"data.shards must be an integer >= 0, got {shards!r}")
  if shards and shards % process_count:
    raise UserError(f"data.shards={shards} is not a multiple of the {process_count} "
                    f"processes: each process reads the same number of shards")
  if shards and global_batch_size % shards:
    raise UserError(f"the global batch_size={global_batch_size} is not divisible by "
                    f"data.shards={shards}: each shard gives the same rows of every batch")
  per_shard = 2 if pair_objective == "nsp" else 1
  for name, count in (documents or {}).items():
    if shards and count < per_shard * shards:
      raise UserError(
          f"corpus {name} has {count} document(s), too few for data.shards={shards}: each "
          f"shard needs {'2 (NSP draws a random next from another document)' if per_shard == 2 else '1'}"
          f"; give it more documents or use fewer shards")
    if count < per_shard:
      raise UserError(
          f"corpus {name} has {count} document(s), so data.pair_objective='nsp' has no other "
          f"document to draw a random next segment from; give it at least 2 documents, or use "
          f"--config.data.pair_objective=none")


def _check_options(options: PretrainingOptions, corpus_name: str) -> None:
  """UserError naming the first option that cannot work."""
  pretraining.check_pair_objective(options.pair_objective)
  for name in ("batch_size", "max_seq_length", "process_count"):
    value = getattr(options, name)
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise UserError(f"{name} must be a positive integer, got {value!r}")
  if not 0 <= options.process_index < options.process_count:
    raise UserError(
        f"process_index={options.process_index} is not in [0, "
        f"process_count={options.process_count})")
  check_shards(options.shards, global_batch_size=options.global_batch_size,
               process_count=options.process_count)
  if not 0.0 <= options.short_seq_prob <= 1.0:
    raise UserError(
        f"short_seq_prob must be in [0, 1], got {options.short_seq_prob!r}")
  if not isinstance(options.seed, (int, np.integer)) or options.seed < 0:
    raise UserError(f"seed must be a non-negative integer, got "
                    f"{options.seed!r}")
  specials = pretraining.special_token_count(options.pair_objective)
  if options.max_seq_length < specials + (2 if specials == 3 else 1):
    layout = ("[CLS] A [SEP] B [SEP]" if specials == 3 else "[CLS] A [SEP]")
    raise UserError(
        f"max_seq_length={options.max_seq_length} is too small for "
        f"{layout} with at least one token per segment (corpus "
        f"{corpus_name}, pair_objective={options.pair_objective!r})")
  spec = options.masking_spec()  # Checks the masking fields.
  masking.validate_spec_for_length(spec, options.max_seq_length)


def _read_documents(documents: Sequence[str],
                    indices: Sequence[int]) -> list[str]:
  """`[documents[i] for i in indices]`, in one call when the source can."""
  get_many = getattr(documents, "__getitems__", None)
  if get_many is not None:
    return list(get_many(list(indices)))
  return [documents[i] for i in indices]


class _Shard:
  """One stream of examples: some documents, tokenized, and each epoch's examples.

  Everything is a pure function of (seed, `key`, epoch): the global stream is
  the shard of key 0 holding every document; with `options.shards` = N, shard
  s (key 1 + s) holds documents s, s + N, s + 2N, ...
  """

  def __init__(self, documents: Sequence[str], indices: Sequence[int], tokenizer: Any,
               options: PretrainingOptions, *, key: int, rows: int, where: str):
    self.options, self.key, self.rows, self.where = options, key, rows, where
    self.corpus = pretraining.tokenize_documents(
        _read_documents(documents, indices), tokenizer,
        max_seq_length=options.max_seq_length,
        pair_objective=options.pair_objective, document_ids=indices)
    if self.corpus.num_documents == 0:
      raise UserError(f"{where} is empty: no document has any token")
    if options.pair_objective is not None:
      longest = int(self.corpus.sentences_per_document().max())
      if longest < 2:
        raise UserError(
            f"{where} has no document of 2 or more sentences, so "
            f"pair_objective={options.pair_objective!r} cannot make sentence "
            "pairs; use pair_objective=None or a corpus with longer documents")
      if options.pair_objective == "nsp" and self.corpus.num_documents < 2:
        raise UserError(
            f"{where} has a single document, so pair_objective='nsp' has no "
            "other document to draw a random next segment from; give it at "
            "least 2 documents" + (" per shard (or fewer data.shards)" if key else ""))
    self.vocab = masking.masking_vocab(tokenizer)
    self.spec = options.masking_spec()
    self._special_ids = dict(cls_id=int(tokenizer.cls_id),
                             sep_id=int(tokenizer.sep_id),
                             pad_id=int(tokenizer.pad_id))
    self._cached_epoch = (-1, None)
    self.epoch_examples(0)  # Refuses a shard too small for one batch.

  def epoch_examples(self, epoch: int) -> pretraining.Examples:
    """All examples of `epoch`, in their shuffled order (the last epoch asked for is kept)."""
    cached_epoch, cached = self._cached_epoch
    if cached_epoch == epoch:
      return cached
    options = self.options
    rng = pretraining.example_rng(options.seed, self.key, epoch)
    document_order = list(range(self.corpus.num_documents))
    rng.shuffle(document_order)
    examples = pretraining.create_examples(
        self.corpus, max_seq_length=options.max_seq_length,
        pair_objective=options.pair_objective,
        short_seq_prob=options.short_seq_prob, rng=rng,
        document_order=document_order)
    if len(examples) < self.rows:
      raise UserError(
          f"{self.where} gives only {len(examples)} examples of max_seq_length="
          f"{options.max_seq_length} in epoch {epoch}, fewer than one batch "
          f"({self.rows} rows of the global batch_size={options.global_batch_size})")
    shuffle_rng = np.random.default_rng(np.random.SeedSequence(
        [_SHUFFLE_STREAM, options.seed, self.key, epoch]))
    examples = examples.take(shuffle_rng.permutation(len(examples)))
    self._cached_epoch = (epoch, examples)
    return examples

  def batches_in_epoch(self, epoch: int) -> int:
    return len(self.epoch_examples(epoch)) // self.rows

  def batch(self, epoch: int, batch_in_epoch: int) -> dict[str, np.ndarray]:
    """This shard's `rows` of batch `batch_in_epoch` of `epoch`, masked."""
    options = self.options
    chosen = self.epoch_examples(epoch).take(
        np.arange(batch_in_epoch * self.rows, (batch_in_epoch + 1) * self.rows))
    arrays = pretraining.assemble(
        self.corpus, chosen, max_seq_length=options.max_seq_length,
        **self._special_ids)
    rng = masking.batch_rng(options.seed, self.key, epoch, batch_in_epoch)
    masked = masking.mask_tokens(
        arrays["input_ids"], arrays["attention_mask"], spec=self.spec,
        vocab=self.vocab, rng=rng)
    batch = {
        "input_ids": masked["input_ids"],
        "attention_mask": arrays["attention_mask"],
        "token_type_ids": arrays["token_type_ids"],
        "masked_positions": masked["masked_positions"],
        "masked_ids": masked["masked_ids"],
        "masked_weights": masked["masked_weights"],
    }
    if options.pair_objective is not None:
      batch["pair_labels"] = chosen.pair_labels.astype(np.int32)
    if options.with_provenance:
      batch.update(self._provenance(chosen))
    return batch

  def position(self, batches: int) -> tuple[int, int]:
    """(epoch, batch_in_epoch) of this shard's part of global batch `batches` (0-based)."""
    epoch = 0
    while batches >= self.batches_in_epoch(epoch):
      batches -= self.batches_in_epoch(epoch)
      epoch += 1
    return epoch, batches

  def _provenance(self, chosen: pretraining.Examples) -> dict[str, np.ndarray]:
    corpus = self.corpus
    document_first_token = corpus.sentence_starts[corpus.document_starts[:-1]]
    fields = {}
    for segment in ("a", "b"):
      local = getattr(chosen, f"{segment}_document")
      start = getattr(chosen, f"{segment}_start")
      fields[f"{segment}_document"] = corpus.document_ids[local].astype(
          np.int32)
      fields[f"{segment}_offset"] = (
          start - document_first_token[local]).astype(np.int32)
    if self.options.pair_objective is None:
      fields["b_offset"] = np.zeros_like(fields["b_offset"])
    return fields


class PretrainingDataset(grain.IterDataset):
  """This host's rows of the endless global stream of pretraining batches (module docstring).

  Construction tokenizes this host's documents (the expensive part) and
  refuses corpora that cannot give batches; iterating is cheap.
  """

  def __init__(self, documents: Sequence[str], tokenizer: Any,
               options: PretrainingOptions, *, corpus_name: str = "corpus"):
    """Tokenizes the corpus (every host the whole of it; with `options.shards`, its shards).

    Args:
      documents: the corpus, one string per document (e.g.
        `corpora.open_corpus(spec)`).
      tokenizer: a `lite_bert.data.tokenizers.Tokenizer`.
      options: batch shape, objectives, masking, seed, host, shards.
      corpus_name: how error messages name the corpus (e.g. its spec).

    Raises:
      UserError: bad options; an empty corpus (or shard); a pair objective on
        a corpus with no document of >= 2 sentences (or, for NSP, with fewer
        than 2 documents); fewer examples than one batch.
    """
    super().__init__()
    _check_options(options, corpus_name)
    self.options = options
    self.corpus_name = corpus_name
    self.num_corpus_documents = len(documents)
    if len(documents) == 0:
      raise UserError(f"corpus {corpus_name} is empty: it has no documents")
    count = options.shards
    if not count:  # one global stream: every host reads everything, keeps its rows
      self.shards = [_Shard(documents, range(len(documents)), tokenizer, options, key=0,
                            rows=options.global_batch_size, where=f"corpus {corpus_name}")]
      return
    check_shards(count, global_batch_size=options.global_batch_size,
                 process_count=options.process_count, documents={corpus_name: len(documents)})
    per_host = count // options.process_count
    self.shards = [
        _Shard(documents, range(s, len(documents), count), tokenizer, options, key=1 + s,
               rows=options.global_batch_size // count,
               where=f"shard {s} of {count} of corpus {corpus_name}")
        for s in range(options.process_index * per_host, (options.process_index + 1) * per_host)]

  @property
  def corpus(self) -> pretraining.TokenizedDocuments:
    """The tokenized corpus of the global stream (`options.shards` = 0)."""
    (shard,) = self.shards
    return shard.corpus

  def epoch_examples(self, epoch: int) -> pretraining.Examples:
    """The global stream's examples of `epoch`, shuffled (`options.shards` = 0)."""
    (shard,) = self.shards
    return shard.epoch_examples(epoch)

  def __iter__(self) -> "PretrainingIterator":
    return PretrainingIterator(self)

  def __str__(self) -> str:
    documents = sum(shard.corpus.num_documents for shard in self.shards)
    return f"PretrainingDataset({self.corpus_name}, {documents} documents, {self.options})"

  def host_batch(self, positions: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """This host's rows of one global batch: each shard's part at its (epoch, batch_in_epoch)."""
    parts = [shard.batch(*position) for shard, position in zip(self.shards, positions)]
    if self.options.shards:  # this host's shards, in order: its contiguous rows
      return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    (batch,) = parts
    if self.options.process_count == 1:
      return batch
    rows = slice(self.options.process_index * self.options.batch_size,
                 (self.options.process_index + 1) * self.options.batch_size)
    return {name: value[rows] for name, value in batch.items()}

  def state_identity(self) -> dict[str, Any]:
    """What a saved state must match: the stream's options and the corpus size."""
    if self.options.shards:  # what every host knows, whichever shards it reads
      return {"options": self.options.stream_fields(),
              "corpus_documents": self.num_corpus_documents}
    return {
        "options": self.options.stream_fields(),
        "num_documents": self.corpus.num_documents,
        "num_tokens": int(len(self.corpus.tokens)),
    }


class PretrainingIterator(grain.DatasetIterator):
  """Endless iterator over a `PretrainingDataset`, resumable by state.

  `get_state()` is a small JSON-serialisable dict naming the next batch;
  `set_state(state)` makes the following batches exactly those an
  uninterrupted run would have produced from that point. Each shard walks its
  own epochs; the state of a sharded stream is the global batch count, the
  same on every host and for any process count.
  """

  def __init__(self, dataset: PretrainingDataset,
               state: Optional[dict[str, Any]] = None):
    super().__init__()
    self._dataset = dataset
    self._batches = 0  # global batches given so far
    self._positions = [(0, 0)] * len(dataset.shards)  # each shard's next (epoch, batch)
    if state is not None:
      self.set_state(state)

  def __next__(self) -> dict[str, np.ndarray]:
    positions = []
    for shard, (epoch, batch_in_epoch) in zip(self._dataset.shards, self._positions):
      while batch_in_epoch >= shard.batches_in_epoch(epoch):
        epoch, batch_in_epoch = epoch + 1, 0
      positions.append((epoch, batch_in_epoch))
    batch = self._dataset.host_batch(positions)
    self._positions = [self._following(shard, position)
                       for shard, position in zip(self._dataset.shards, positions)]
    self._batches += 1
    return batch

  @staticmethod
  def _following(shard: _Shard, position: tuple[int, int]) -> tuple[int, int]:
    epoch, batch_in_epoch = position[0], position[1] + 1
    if batch_in_epoch == shard.batches_in_epoch(epoch):
      return epoch + 1, 0
    return epoch, batch_in_epoch

  @property
  def dataset(self) -> PretrainingDataset:
    """The dataset this iterator walks through."""
    return self._dataset

  @property
  def epoch(self) -> int:
    """The epoch of the next batch (0-based; with shards, the first shard's)."""
    return self._positions[0][0]

  def get_state(self) -> dict[str, Any]:
    if self._dataset.options.shards:
      return {"version": _SHARDED_STATE_VERSION, "batches": self._batches,
              **self._dataset.state_identity()}
    epoch, batch_in_epoch = self._positions[0]
    return {
        "version": _STATE_VERSION,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        **self._dataset.state_identity(),
    }

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from `state` (from `get_state`, possibly through JSON).

    Raises:
      UserError: the state is malformed, or was saved by a stream with other
        options or another corpus (different corpus, tokenizer or shards).
    """
    where = self._dataset.corpus_name
    sharded = bool(self._dataset.options.shards)
    fields = ("batches",) if sharded else ("epoch", "batch_in_epoch")
    try:
      version = int(state["version"])
      numbers = [int(state[field]) for field in fields]
    except (KeyError, TypeError, ValueError):
      raise UserError(
          f"data iterator state for corpus {where} is malformed: {state!r}"
      ) from None
    if version != (_SHARDED_STATE_VERSION if sharded else _STATE_VERSION) or min(numbers) < 0:
      raise UserError(
          f"data iterator state for corpus {where} is not one this code "
          f"wrote (version {version}, "
          + ", ".join(f"{field} {n}" for field, n in zip(fields, numbers)) + ")")
    expected = self._dataset.state_identity()
    saved = {key: state.get(key) for key in expected}
    if saved != expected:
      differences = _differences(saved, expected)
      raise UserError(
          f"data iterator state for corpus {where} was saved by a different "
          f"data stream, so the run cannot resume exactly ({differences}); "
          "restore with the same data options, corpus, tokenizer and "
          + ("data.shards" if sharded else "global batch"))
    if sharded:
      self._batches = numbers[0]
      self._positions = [shard.position(numbers[0]) for shard in self._dataset.shards]
    else:
      self._positions = [tuple(numbers)]
      self._batches = 0  # not part of a global-stream state; counts from here


def _differences(saved: dict[str, Any], expected: dict[str, Any]) -> str:
  parts = []
  for key, value in expected.items():
    if isinstance(value, dict) and isinstance(saved.get(key), dict):
      for name, now in value.items():
        before = saved[key].get(name)
        if before != now:
          parts.append(f"{name}: saved {before!r}, now {now!r}")
    elif saved.get(key) != value:
      parts.append(f"{key}: saved {saved.get(key)!r}, now {value!r}")
  return "; ".join(parts)


def pretraining_dataset(documents: Sequence[str], tokenizer: Any, *,
                        batch_size: int, max_seq_length: int,
                        max_predictions_per_seq: int,
                        pair_objective: Optional[str],
                        corpus_name: str = "corpus",
                        **options: Any) -> PretrainingDataset:
  """A `PretrainingDataset` (a grain `IterDataset`); keyword options as in
  `PretrainingOptions` (masked_lm_prob, whole_word_masking, max_ngram,
  short_seq_prob, seed, process_index, process_count, with_provenance)."""
  return PretrainingDataset(
      documents, tokenizer,
      PretrainingOptions(batch_size=batch_size, max_seq_length=max_seq_length,
                         max_predictions_per_seq=max_predictions_per_seq,
                         pair_objective=pair_objective, **options),
      corpus_name=corpus_name)


def pretraining_batches(documents: Sequence[str], tokenizer: Any, *,
                        batch_size: int, max_seq_length: int,
                        max_predictions_per_seq: int,
                        pair_objective: Optional[str],
                        masked_lm_prob: float = 0.15,
                        whole_word_masking: bool = False,
                        max_ngram: int = 1,
                        short_seq_prob: float = 0.1,
                        seed: int = 0,
                        process_index: int = 0,
                        process_count: int = 1,
                        shards: int = 0,
                        state: Optional[dict[str, Any]] = None,
                        corpus_name: str = "corpus",
                        with_provenance: bool = False) -> PretrainingIterator:
  """This host's endless iterator of pretraining batches.

  Args:
    documents: the corpus, one string per document (paragraphs joined by
      "\\n"), e.g. `corpora.open_corpus(spec)`.
    tokenizer: a `lite_bert.data.tokenizers.Tokenizer`.
    batch_size: B, per-host sequences per batch.
    max_seq_length: S.
    max_predictions_per_seq: P.
    pair_objective: 'nsp', 'sop' or None.
    masked_lm_prob, whole_word_masking, max_ngram: masking (`masking.py`).
    short_seq_prob: probability of a short target length.
    seed: the data seed.
    process_index, process_count: this host and the number of hosts.
    shards: 0 = one global stream; N = N fixed shards, this host reading its own.
    state: a `get_state()` dict to resume from; None starts at epoch 0.
    corpus_name: how error messages name the corpus.
    with_provenance: add debug provenance fields to each batch.

  Returns:
    A `PretrainingIterator`: `next(it)` gives the batch dict described in the
    module docstring.
  """
  dataset = pretraining_dataset(
      documents, tokenizer, batch_size=batch_size,
      max_seq_length=max_seq_length,
      max_predictions_per_seq=max_predictions_per_seq,
      pair_objective=pair_objective, masked_lm_prob=masked_lm_prob,
      whole_word_masking=whole_word_masking, max_ngram=max_ngram,
      short_seq_prob=short_seq_prob, seed=seed, process_index=process_index,
      process_count=process_count, shards=shards, with_provenance=with_provenance,
      corpus_name=corpus_name)
  return PretrainingIterator(dataset, state)


def eval_batches(documents: Sequence[str], tokenizer: Any, *,
                 batch_size: int, max_seq_length: int,
                 max_predictions_per_seq: int,
                 pair_objective: Optional[str],
                 num_batches: Optional[int] = None,
                 corpus_name: str = "eval corpus",
                 **options: Any) -> list[dict[str, np.ndarray]]:
  """A fixed, finite list of batches of a held-out corpus.

  The same call always gives the same batches, masks included, so eval
  numbers are comparable across runs and checkpoints. They are the first
  epoch of the stream `pretraining_batches` would give for these arguments.

  Args:
    documents, tokenizer, batch_size, max_seq_length,
      max_predictions_per_seq, pair_objective: as `pretraining_batches`.
    num_batches: how many batches; None = every full batch of the first
      epoch. Each host gets its rows of the same global batches.
    corpus_name: how error messages name the corpus.
    **options: other `PretrainingOptions` fields (masking, short_seq_prob,
      seed, process_index, process_count, with_provenance).

  Returns:
    A list of batch dicts (the contract in the module docstring).

  Raises:
    UserError: as `PretrainingDataset`, or too few examples for
      `num_batches`.
  """
  dataset = pretraining_dataset(
      documents, tokenizer, batch_size=batch_size,
      max_seq_length=max_seq_length,
      max_predictions_per_seq=max_predictions_per_seq,
      pair_objective=pair_objective, corpus_name=corpus_name, **options)
  available = min(shard.batches_in_epoch(0) for shard in dataset.shards)
  if num_batches is None:
    num_batches = available
  elif num_batches < 1:
    raise UserError(f"eval num_batches must be >= 1, got {num_batches}")
  elif num_batches > available:
    raise UserError(
        f"corpus {corpus_name} gives only {available} "
        f"full batches of batch_size={batch_size}, fewer than the "
        f"num_batches={num_batches} asked for evaluation")
  return [dataset.host_batch([(0, k)] * len(dataset.shards)) for k in range(num_batches)]


def masked_token_counts(batches: Sequence[dict], size: int = 0) -> np.ndarray:
  """float64 [max(size, largest id + 1)]: the summed weight of each masked token id.

  batches: dicts with `masked_ids` and `masked_weights` [batch, P].
  """
  ids = [np.asarray(b["masked_ids"]).ravel() for b in batches]
  weights = [np.asarray(b["masked_weights"], np.float64).ravel() for b in batches]
  if not ids:
    return np.zeros(size)
  return np.bincount(np.concatenate(ids), np.concatenate(weights), minlength=size)


def unigram_accuracy_of(counts: np.ndarray) -> float:
  """The best constant guess's accuracy on targets with these `masked_token_counts`."""
  total = float(counts.sum())
  return float(counts.max()) / total if total else 0.0


def unigram_accuracy(batches: Sequence[dict]) -> float:
  """The MLM accuracy of always predicting the most frequent masked token of `batches`.

  The unigram level a masked LM reaches first, before it uses any context: the
  best constant guess for these very targets (so an upper bound on what a
  unigram model of the training text would score). batches: dicts with
  `masked_ids` and `masked_weights` [batch, P].
  """
  return unigram_accuracy_of(masked_token_counts(batches))
