"""A GLUE-format task's data and scoring, shared by fine-tuning and `mode=evaluate`.

`load_task_data` reads and encodes a task's splits (`data/glue.py`,
`data/classification.py`); `make_scorer` runs a `ClassificationModel` over an
eval split and scores it with the task's official metrics, writing
`eval_<split>.json` and `predictions_<split>.tsv` (GLUE submission layout).
"""

import dataclasses
import os
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from lite_bert import files
from lite_bert.data import classification
from lite_bert.data import glue
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.train import evaluation
from lite_bert.train import task_metrics


@dataclasses.dataclass
class TaskData:
  """A task's encoded splits: what the loss and the evaluation read."""

  spec: glue.TaskSpec
  train: list  # [(input ids, token types)]
  train_labels: np.ndarray
  eval_splits: dict  # split -> (rows, labels, this process's eval batches)


def task_spec(config) -> glue.TaskSpec:
  spec = config.finetune.get("task_spec")
  if spec:
    return glue.TaskSpec.from_dict(spec)
  return glue.get_task(config.finetune.task)


def read_split(config, spec: glue.TaskSpec, split: str) -> list[dict]:
  if config.finetune.source == "tfds":
    return glue.read_task_from_tfds(spec, split, config.finetune.data_dir or None)
  if config.finetune.source != "tsv":
    raise UserError(f"finetune.source must be 'tsv' or 'tfds', got {config.finetune.source!r}")
  return glue.read_task(spec, split, config.finetune.data_dir or None)


def encode_split(config, spec, tokenizer, split: str, rows: list, chosen=None) -> list:
  """[(input ids, token types)] of `rows` (or of rows `chosen`), with a progress line."""
  if chosen is not None:
    rows = [rows[i] for i in chosen]
  started = time.perf_counter()
  encoded, truncated = classification.encode_rows(rows, spec.text_fields, tokenizer,
                                                  config.data.max_seq_length)
  if jax.process_index() == 0:
    seconds = time.perf_counter() - started
    cut = f"; {truncated} cut to {config.data.max_seq_length} tokens" if truncated else ""
    mine = " (this process's share)" if chosen is not None and jax.process_count() > 1 else ""
    print(f"{spec.name} {split}: tokenized {len(rows)} examples{mine} in {seconds:.1f} s "
          f"({len(rows) / max(seconds, 1e-9):.0f}/s{cut})", flush=True)
  return encoded


def labels_of(spec, rows) -> np.ndarray:
  return np.asarray([row["label"] for row in rows], np.float32 if spec.is_regression else np.int32)


def eval_split(config, spec, tokenizer, split: str):
  """(rows, labels, this process's eval batches): each process encodes only its rows.

  Rows are ordered by character count (known before encoding, so every
  process lays out the same global batches); each global batch is padded to
  its longest row over all processes (one small all-gather).
  """
  rows = read_split(config, spec, split)
  options = dict(batch_size=config.finetune.eval_batch_size,
                 process_index=jax.process_index(), process_count=jax.process_count(),
                 sort_keys=[sum(len(row[field]) for field in spec.text_fields) for row in rows])
  layout = classification.eval_layout(**options)
  chosen = np.concatenate(layout)
  encoded = dict(zip(chosen.tolist(), encode_split(config, spec, tokenizer, split, rows, chosen)))
  longest = np.asarray([max((len(encoded[i][0]) for i in mine), default=0) for mine in layout])
  if jax.process_count() > 1:
    longest = np.max(multihost_utils.process_allgather(longest), axis=0)
  labels = labels_of(spec, rows)
  batches = classification.eval_batches(
      encoded, labels, pad_id=tokenizer.pad_id, pad_multiple=config.finetune.pad_multiple,
      max_seq_length=config.data.max_seq_length, regression=spec.is_regression,
      longest=longest.tolist(), **options)
  return rows, labels, batches


def load_task_data(config, spec, tokenizer, *, with_train: bool = True) -> TaskData:
  train, train_labels = [], np.zeros((0,))
  if with_train:
    rows = read_split(config, spec, "train")
    train, train_labels = encode_split(config, spec, tokenizer, "train", rows), labels_of(spec, rows)
  splits = {split: eval_split(config, spec, tokenizer, split)
            for split in config.finetune.eval_splits}
  return TaskData(spec, train, train_labels, splits)


def tokenizer_of_run(run_config, workdir: str):
  """The tokenizer a finished fine-tuning run used (recorded in its config.json)."""
  if not run_config.tokenizer.path:
    raise UserError(f"{workdir}/config.json names no tokenizer.path")
  return tokenizers.load_tokenizer(run_config.tokenizer.path)


def predictions_from_logits(spec: glue.TaskSpec, logits: np.ndarray) -> np.ndarray:
  return logits[:, 0] if spec.is_regression else np.argmax(logits, axis=-1)


def write_predictions(path: str, spec: glue.TaskSpec, rows, predictions) -> None:
  """GLUE submission layout: a header `index<TAB>prediction`, one row per example."""
  lines = ["index\tprediction\n"]
  for row, prediction in zip(rows, predictions):
    value = f"{prediction:.6f}" if spec.is_regression else spec.labels[int(prediction)]
    lines.append(f"{row['idx']}\t{value}\n")
  files.atomic_write(path, "".join(lines))


write_json = files.atomic_write_json


EVAL_FILES = ("eval_{split}.json", "predictions_{split}.tsv")


def make_scorer(config, spec, data: TaskData, model, workdir: str, *,
                files: tuple[str, str] = EVAL_FILES):
  """(params, frozen, to_global) -> metrics per eval split; writes metrics and predictions."""
  apply_fn = jax.jit(lambda params, batch: model.apply(
      {"params": params}, batch["input_ids"], batch["attention_mask"],
      batch["token_type_ids"])["logits"])

  def score(params, frozen, to_global):
    del frozen
    numbers = {}
    for split, (rows, labels, batches) in data.eval_splits.items():
      logits = evaluation.gathered(apply_fn, params, batches, to_global, len(rows))
      predictions = predictions_from_logits(spec, logits)
      metrics = task_metrics.compute(spec.metrics, predictions, labels)
      if jax.process_index() == 0:
        write_json(os.path.join(workdir, files[0].format(split=split)),
                   dict(metrics, task=spec.name, split=split, examples=len(rows)))
        write_predictions(os.path.join(workdir, files[1].format(split=split)),
                          spec, rows, predictions)
      numbers.update({f"{split}_{name}": value for name, value in metrics.items()})
    return numbers

  return score
