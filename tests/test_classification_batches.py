"""Training batches for tasks: shuffling, length grouping, padding, resume."""

import numpy as np
import pytest

from lite_bert.data import classification


def rows(n, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, 60, size=n)
  encoded = [([101] + [7] * (int(k) - 2) + [102], [0] * int(k)) for k in lengths]
  return encoded, list(rng.integers(0, 2, size=n))


def batches(encoded, labels, count, **kw):
  options = dict(batch_size=8, seed=3, pad_id=0, pad_multiple=8, max_seq_length=64,
                 regression=False)
  options.update(kw)
  it = classification.TaskBatches(encoded, labels, **options)
  return [next(it) for _ in range(count)], it


@pytest.mark.parametrize("bucket_batches", [1, 5])
def test_each_epoch_visits_every_row_once(bucket_batches):
  encoded, labels = rows(203)
  per_epoch = 203 // 8
  out, _ = batches(encoded, labels, 2 * per_epoch, bucket_batches=bucket_batches)
  for epoch in range(2):
    ids = np.concatenate([b["example_ids"] for b in out[epoch * per_epoch:(epoch + 1) * per_epoch]])
    assert len(set(ids.tolist())) == len(ids) == per_epoch * 8
  for b in out:  # labels and ids travel together
    assert [labels[i] for i in b["example_ids"]] == b["labels"].tolist()


def test_length_grouping_pads_less_and_is_shuffled():
  encoded, labels = rows(2000)
  plain, _ = batches(encoded, labels, 200, bucket_batches=1)
  grouped, _ = batches(encoded, labels, 200, bucket_batches=25)
  padded = lambda bs: sum(b["input_ids"].size for b in bs)
  real = lambda bs: sum(int(b["attention_mask"].sum()) for b in bs)
  assert real(plain) > 0.9 * real(grouped)  # same kind of rows
  assert padded(grouped) < 0.75 * padded(plain)
  # Not simply sorted: consecutive batch lengths go up and down.
  seqs = [b["input_ids"].shape[1] for b in grouped]
  assert any(a > b for a, b in zip(seqs, seqs[1:])) and any(a < b for a, b in zip(seqs, seqs[1:]))
  # Within a grouped batch the rows have similar lengths.
  spread = np.mean([np.ptp(b["attention_mask"].sum(1)) for b in grouped])
  assert spread < 0.5 * np.mean([np.ptp(b["attention_mask"].sum(1)) for b in plain])


def test_restored_iterator_continues_exactly():
  encoded, labels = rows(300)
  full, _ = batches(encoded, labels, 90, bucket_batches=4)
  _, it = batches(encoded, labels, 40, bucket_batches=4)
  resumed = classification.TaskBatches(
      encoded, labels, batch_size=8, seed=3, pad_id=0, pad_multiple=8, max_seq_length=64,
      regression=False, bucket_batches=4, state=it.get_state())
  for expected in full[40:]:
    got = next(resumed)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key])


def test_processes_share_every_batch_shape_and_together_cover_each_row_once():
  """2 processes: the same number of batches, equal shapes per batch, disjoint rows,
  and together the one-process training batches."""
  encoded, labels = rows(203)
  options = dict(pad_id=0, pad_multiple=8, max_seq_length=64, regression=False)
  parts = [classification.eval_batches(encoded, labels, batch_size=16, process_index=p,
                                       process_count=2, **options) for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == -(-203 // 16)
  for a, b in zip(*parts):
    assert a["input_ids"].shape == b["input_ids"].shape and a["input_ids"].shape[0] == 8
  ids = np.concatenate([b["example_ids"] for part in parts for b in part])
  ids = ids[ids >= 0]
  assert sorted(ids.tolist()) == list(range(203))
  one = classification.eval_batches(encoded, labels, batch_size=16, **options)
  assert [sorted(b["example_ids"][b["example_ids"] >= 0].tolist()) for b in one] == [
      sorted(np.concatenate([p0["example_ids"], p1["example_ids"]])[
          np.concatenate([p0["example_ids"], p1["example_ids"]]) >= 0].tolist())
      for p0, p1 in zip(*parts)]  # the same global batches as one process reads
  train = [batches(encoded, labels, 30, batch_size=4, process_index=p, process_count=2,
                   bucket_batches=5)[0] for p in range(2)]
  for a, b in zip(*train):  # training batches too: padded to the global batch's longest row
    assert a["input_ids"].shape == b["input_ids"].shape
  # Row for row the one-process global batch (so each row draws the same dropout mask).
  whole = batches(encoded, labels, 30, batch_size=8, bucket_batches=5)[0]
  for a, b, expected in zip(*train, whole):
    for key in ("input_ids", "example_ids", "labels"):
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), expected[key])


def test_encode_rows_counts_the_rows_it_cuts():
  """A row is counted when [CLS] a [SEP] (b [SEP]) is longer than max_seq_length, at the edge too."""
  class Words:  # one id per word
    cls_id, sep_id = 1, 2

    def encode_batch(self, texts):
      return [[5] * len(t.split()) for t in texts]

  single = [{"s": "w " * n} for n in (6, 7, 8)]  # 8, 9, 10 tokens with [CLS] [SEP]
  encoded, cut = classification.encode_rows(single, ("s",), Words(), 9)
  assert cut == 1 and [len(ids) for ids, _ in encoded] == [8, 9, 9]
  pairs = [{"a": "w " * 3, "b": "w " * 3}, {"a": "w " * 3, "b": "w " * 4}]  # 9 and 10 tokens
  encoded, cut = classification.encode_rows(pairs, ("a", "b"), Words(), 9)
  assert cut == 1 and [len(ids) for ids, _ in encoded] == [9, 9]


def test_a_process_makes_its_eval_batches_from_its_own_rows_alone():
  """With sort keys known before encoding (e.g. character counts) and each batch's longest
  row over all processes, a process needs only its rows: the same batches as from every row."""
  encoded, labels = rows(203)
  keys = np.random.default_rng(1).integers(0, 500, size=203)  # not the token counts
  options = dict(batch_size=16, pad_id=0, pad_multiple=8, max_seq_length=64, regression=False,
                 sort_keys=keys, process_count=2)
  everyone = classification.eval_layout(keys, batch_size=16)
  longest = [max(len(encoded[i][0]) for i in rows) for rows in everyone]
  for p in range(2):
    layout = classification.eval_layout(keys, batch_size=16, process_index=p, process_count=2)
    own = {int(i): encoded[i] for i in np.concatenate(layout)}
    assert len(own) == (104, 99)[p]  # 12 batches of 8 each, then 8 and 3 of the last 11
    alone = classification.eval_batches(own, labels, process_index=p, longest=longest, **options)
    full = classification.eval_batches(encoded, labels, process_index=p, **options)
    assert len(alone) == len(full) == 13
    for a, b in zip(alone, full):
      for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
