"""Sentence(-pair) task rows -> padded numpy batches, with a resumable position.

Encoding: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, token types 0/1, the
pair truncated longest-first to `max_seq_length` (as BERT's run_classifier).

Padding: each batch is padded only to its longest row, rounded up to a
multiple of `pad_multiple` (a few shapes, so few compilations). With
`bucket_batches` > 1 the training order is also grouped by length (as Hugging
Face's `group_by_length`): each epoch's permutation is cut into chunks of
`bucket_batches` batches, each chunk sorted by length and cut into batches, and
the batches shuffled, so a batch holds rows of similar length and pads little.
SST-2 sentences average ~13 WordPiece tokens; `experiments/padding_benchmark.py`
measures what each policy saves.
"""

from typing import Iterator, Optional, Sequence

import numpy as np

from lite_bert.data.tokenizers import Tokenizer
from lite_bert.errors import UserError


def truncate_pair(a: list, b: list, max_tokens: int) -> None:
  """Shortens the longer of a, b one token at a time until both fit (in place)."""
  while len(a) + len(b) > max_tokens:
    (a if len(a) >= len(b) else b).pop()


def encode_rows(rows: Sequence[dict], text_fields: Sequence[str], tokenizer: Tokenizer,
                max_seq_length: int) -> tuple[list[tuple[list[int], list[int]]], int]:
  """Rows -> ([(input ids, token type ids)], how many rows were cut to max_seq_length)."""
  columns = [tokenizer.encode_batch([row[field] for row in rows]) for field in text_fields]
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  encoded, truncated = [], 0
  for parts in zip(*columns):
    truncated += sum(len(ids) for ids in parts) + len(parts) + 1 > max_seq_length
    if len(parts) == 1:
      a = list(parts[0])[:max_seq_length - 2]
      encoded.append(([cls, *a, sep], [0] * (len(a) + 2)))
    else:
      a, b = list(parts[0]), list(parts[1])
      truncate_pair(a, b, max_seq_length - 3)
      encoded.append(([cls, *a, sep, *b, sep], [0] * (len(a) + 2) + [1] * (len(b) + 1)))
  return encoded, truncated


def collate(encoded: Sequence[tuple[list[int], list[int]]], labels: Sequence, indices,
            *, batch_size: int, pad_id: int, pad_multiple: int, max_seq_length: int,
            regression: bool, global_indices=None, longest: Optional[int] = None) -> dict:
  """Pads `encoded[indices]` to one batch; rows past the data get weight 0.

  The padded length is `longest` rounded up to `pad_multiple`; by default the
  longest row of `global_indices`, the rows of the whole global batch (every
  process's, so that every process's part has the same shape), or of `indices`.

  Returns input_ids, attention_mask, token_type_ids [batch, seq] int32,
  labels [batch] (int32 or float32), weights [batch] float32, example_ids
  [batch] int32 (-1 for padding rows).
  """
  if longest is None:
    rows = indices if global_indices is None else global_indices
    longest = max(len(encoded[i][0]) for i in rows)
  seq = min(max_seq_length, -(-longest // pad_multiple) * pad_multiple)
  input_ids = np.full((batch_size, seq), pad_id, np.int32)
  token_types = np.zeros((batch_size, seq), np.int32)
  mask = np.zeros((batch_size, seq), np.int32)
  label_array = np.zeros((batch_size,), np.float32 if regression else np.int32)
  weights = np.zeros((batch_size,), np.float32)
  example_ids = np.full((batch_size,), -1, np.int32)
  for row, i in enumerate(indices):
    ids, types = encoded[i]
    input_ids[row, :len(ids)] = ids
    token_types[row, :len(ids)] = types
    mask[row, :len(ids)] = 1
    label_array[row] = labels[i]
    weights[row] = 1.0
    example_ids[row] = i
  return dict(input_ids=input_ids, attention_mask=mask, token_type_ids=token_types,
              labels=label_array, weights=weights, example_ids=example_ids)


class TaskBatches:
  """Endless shuffled training batches over a task's rows, resumable.

  The order of epoch e is a permutation drawn from (seed, e); `get_state()`
  is {'epoch', 'position'}, so a restored iterator yields exactly the batches
  an uninterrupted one would. With several processes, process p takes the
  p-th contiguous slice of batch_size rows of each global batch, so the global
  batch on the devices is row for row the one-process batch (and each row
  draws the same dropout mask).
  """

  def __init__(self, encoded, labels, *, batch_size: int, seed: int, pad_id: int,
               pad_multiple: int, max_seq_length: int, regression: bool,
               bucket_batches: int = 1, process_index: int = 0, process_count: int = 1,
               state: Optional[dict] = None):
    if not encoded:
      raise UserError("the training split has no rows")
    self.encoded, self.labels = encoded, labels
    self.batch_size, self.seed = batch_size, seed
    self.options = dict(pad_id=pad_id, pad_multiple=pad_multiple,
                        max_seq_length=max_seq_length, regression=regression)
    self.process_index, self.process_count = process_index, process_count
    self.bucket_batches = bucket_batches
    self._lengths = np.array([len(ids) for ids, _ in encoded])
    self._cached_order: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))
    state = state or {"epoch": 0, "position": 0}
    self.epoch, self.position = int(state["epoch"]), int(state["position"])

  def get_state(self) -> dict:
    return {"epoch": self.epoch, "position": self.position}

  def _order(self, epoch: int) -> np.ndarray:
    """Row indices of epoch `epoch`; consecutive global batches are slices of it."""
    if self._cached_order[0] == epoch:
      return self._cached_order[1]
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(len(self.encoded))
    if self.bucket_batches > 1:
      global_batch = self.batch_size * self.process_count
      usable = len(order) // global_batch * global_batch  # the ragged tail is dropped anyway
      chunk = global_batch * self.bucket_batches
      batches = []
      for start in range(0, usable, chunk):
        rows = order[start:min(start + chunk, usable)]
        rows = rows[np.argsort(self._lengths[rows], kind="stable")]
        batches.extend(rows.reshape(-1, global_batch))
      batches = [batches[i] for i in rng.permutation(len(batches))]
      order = np.concatenate(batches + [order[usable:]])
    self._cached_order = (epoch, order)
    return order

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    global_batch = self.batch_size * self.process_count
    order = self._order(self.epoch)
    if self.position + global_batch > len(order):  # drop the ragged tail, next epoch
      self.epoch, self.position = self.epoch + 1, 0
      order = self._order(self.epoch)
    chosen = order[self.position:self.position + global_batch]
    self.position += global_batch
    mine = chosen[self.process_index * self.batch_size:(self.process_index + 1) * self.batch_size]
    return collate(self.encoded, self.labels, mine, batch_size=self.batch_size,
                   global_indices=chosen, **self.options)


def eval_layout(sort_keys: Sequence[int], *, batch_size: int, process_index: int = 0,
                process_count: int = 1) -> list[np.ndarray]:
  """This process's row ids in each global eval batch; each row once over all processes.

  Rows sorted by `sort_keys` (stable; a length, so a batch pads little): global
  batch b holds sorted rows [b * batch_size, (b + 1) * batch_size), and process
  p the p-th contiguous slice of batch_size / process_count of them (the last
  batch's slices may be short or empty). A pure function of the keys, so a
  process can pick its rows before it encodes any.
  """
  if not len(sort_keys):
    raise UserError("the evaluation split has no rows")
  if batch_size % process_count:
    raise UserError(f"finetune.eval_batch_size={batch_size} is not divisible by the "
                    f"{process_count} processes")
  per_process = batch_size // process_count
  order = np.argsort(np.asarray(sort_keys), kind="stable")
  return [order[start:start + batch_size][process_index * per_process:
                                          (process_index + 1) * per_process]
          for start in range(0, len(order), batch_size)]


def eval_batches(encoded, labels, *, batch_size: int, pad_id: int, pad_multiple: int,
                 max_seq_length: int, regression: bool, process_index: int = 0,
                 process_count: int = 1, sort_keys: Optional[Sequence[int]] = None,
                 longest: Optional[Sequence[int]] = None) -> list[dict]:
  """This process's part of every eval batch (`eval_layout`), padded.

  `encoded` maps a row id to its (input ids, token types); it needs only this
  process's rows when `sort_keys` (one per row; default each row's token
  count) and `longest` (each global batch's longest row, over all processes)
  are given. The last batch is filled with weight-0 rows (example id -1).
  Every process gets the same number of batches, padded to the same length.
  """
  if sort_keys is None:
    sort_keys = [len(encoded[i][0]) for i in range(len(encoded))]
  layout = eval_layout(sort_keys, batch_size=batch_size, process_index=process_index,
                       process_count=process_count)
  if longest is None:  # every row at hand: each global batch's own rows
    everyone = eval_layout(sort_keys, batch_size=batch_size)
    longest = [max(len(encoded[i][0]) for i in rows) for rows in everyone]
  return [collate(encoded, labels, mine, batch_size=batch_size // process_count, pad_id=pad_id,
                  pad_multiple=pad_multiple, max_seq_length=max_seq_length,
                  regression=regression, longest=length)
          for mine, length in zip(layout, longest)]