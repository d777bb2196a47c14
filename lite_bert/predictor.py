"""A fine-tuned workdir as a function from texts to labels and probabilities.

  from lite_bert import predictor
  rows = predictor.predict("workdirs/sst2", ["a gripping film", "dull and long"])
  rows[0] == {"index": 0, "label": "1", "prob_0": 0.03, "prob_1": 0.97}

`Predictor(workdir)` loads the best-dev params (`checkpoint="best"`, or
"latest", or a step number) through the verified loader, the run's tokenizer
and task; calling it on examples (strings, or (a, b) pairs for a pair task)
returns one dict per example: its index, the label (as the task's files write
it) and each class's probability, or `value` for a regression task.
`read_examples` reads what `mode=predict` takes: a TSV with a header naming
the task's text columns, or plain text with one example per line (a pair task:
the two texts separated by a tab); '-' is stdin.
"""

import dataclasses
import os
import sys
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from lite_bert import pretrained
from lite_bert.data import classification
from lite_bert.errors import UserError, clip
from lite_bert.models.config import EncoderConfig
from lite_bert.models.heads import ClassificationModel
from lite_bert.train import task_eval

Example = Union[str, Sequence[str]]


@dataclasses.dataclass
class Predictions:
  """What `Predictor.__call__` returns besides the rows: how many inputs were cut short."""
  rows: list
  truncated: int


class Predictor:
  """Loads a fine-tuning workdir once; call it on examples."""

  def __init__(self, workdir: str, checkpoint: str = "best", batch_size: int = 64):
    if not os.path.isfile(os.path.join(workdir, "config.json")):
      raise UserError(f"{workdir} has no config.json: not a fine-tuning workdir")
    self.run_config = pretrained.read_run_config(workdir)
    if self.run_config.get("mode") != "finetune":
      raise UserError(f"{workdir} holds a {self.run_config.get('mode')!r} run; predict needs a "
                      f"fine-tuning workdir (mode=finetune)")
    self.spec = task_eval.task_spec(self.run_config)
    self.tokenizer = task_eval.tokenizer_of_run(self.run_config, workdir)
    self.params, self.step = pretrained.restore_chosen(workdir, checkpoint, "predict.checkpoint")
    cfg = EncoderConfig.from_dict(self.run_config.model.to_dict())
    model = ClassificationModel(cfg, num_labels=self.spec.num_labels)
    self._apply = jax.jit(lambda params, batch: model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"],
        batch["token_type_ids"])["logits"])
    self.batch_size = batch_size
    self.max_seq_length = int(self.run_config.data.max_seq_length)

  def __call__(self, examples: Sequence[Example]) -> Predictions:
    fields = self.spec.text_fields
    rows = []
    for i, example in enumerate(examples):
      texts = (example,) if isinstance(example, str) else tuple(example)
      if len(texts) != len(fields):
        raise UserError(f"example {i} has {len(texts)} text(s); task {self.spec.name} reads "
                        f"{len(fields)} ({', '.join(fields)})")
      rows.append(dict(zip(fields, texts)))
    if not rows:
      raise UserError("no examples to predict")
    encoded, truncated = classification.encode_rows(rows, fields, self.tokenizer,
                                                    self.max_seq_length)
    labels = np.zeros(len(encoded), np.float32 if self.spec.is_regression else np.int32)
    batches = classification.eval_batches(
        encoded, labels, batch_size=self.batch_size, pad_id=self.tokenizer.pad_id,
        pad_multiple=8, max_seq_length=self.max_seq_length, regression=self.spec.is_regression)
    logits = np.zeros((len(encoded), self.spec.num_labels), np.float32)
    for batch in batches:
      out = np.asarray(self._apply(self.params, {k: jnp.asarray(v) for k, v in batch.items()}))
      keep = batch["example_ids"] >= 0
      logits[batch["example_ids"][keep]] = out[keep]
    return Predictions(rows=[self._row(i, row) for i, row in enumerate(logits)],
                       truncated=truncated)

  def _row(self, index: int, logits: np.ndarray) -> dict:
    if self.spec.is_regression:
      return {"index": index, "value": float(logits[0])}
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    row = {"index": index, "label": self.spec.labels[int(np.argmax(logits))]}
    row.update({f"prob_{label}": float(p) for label, p in zip(self.spec.labels, probs)})
    return row


def predict(workdir: str, examples: Sequence[Example], checkpoint: str = "best") -> list:
  """One call for notebooks: the rows of `Predictor(workdir, checkpoint)(examples)`."""
  return Predictor(workdir, checkpoint)(examples).rows


def read_examples(path: str, text_fields: Sequence[str]) -> list:
  """Examples from a TSV with a header naming `text_fields`, or plain text ('-': stdin).

  A file whose first line holds every text field's name (tab-separated) is a
  TSV; anything else is one example per line (a pair task: two tab-separated
  texts). Empty lines are skipped. A first line with more tab-separated
  columns than the task has texts is a header, and must name them.

  Raises:
    UserError: unreadable or empty input, a TSV row without the needed
      columns, a plain line with the wrong number of texts (naming the line).
  """
  where = "stdin" if path == "-" else path
  try:
    if path == "-":
      if sys.stdin is None:
        raise UserError("predict.input=- but stdin is closed; name a file")
      # Bytes, decoded strictly: the text layer's surrogateescape would let
      # undecodable bytes through to the tokenizer.
      stream = getattr(sys.stdin, "buffer", None)
      text = stream.read().decode("utf-8") if stream is not None else sys.stdin.read()
    else:
      with open(path, encoding="utf-8") as f:
        text = f.read()
  except OSError as e:
    raise UserError(f"cannot read predict.input {where}: {e.strerror or e}") from e
  except UnicodeDecodeError as e:
    raise UserError(f"predict.input {where} is not valid UTF-8 (byte {e.start})") from e
  lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
  numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
  if not numbered:
    raise UserError(f"predict.input {where} is empty: nothing to predict")
  header = numbered[0][1].split("\t")
  if len(header) > len(text_fields) and not all(field in header for field in text_fields):
    missing = [field for field in text_fields if field not in header]
    raise UserError(f"{where} line {numbered[0][0]}: {len(header)} tab-separated columns, a "
                    f"TSV header without the column(s) {missing} this task reads "
                    f"(plain text: one example per line)")
  if all(field in header for field in text_fields):
    columns = [header.index(field) for field in text_fields]
    examples = []
    for n, line in numbered[1:]:
      cells = line.split("\t")
      if len(cells) <= max(columns):
        raise UserError(f"{where} line {n}: {len(cells)} column(s), the header names "
                        f"{len(header)}: {clip(line, 80)!r}")
      examples.append(tuple(cells[c] for c in columns))
    if not examples:
      raise UserError(f"predict.input {where} has a header and no rows")
    return [e[0] if len(e) == 1 else e for e in examples]
  examples = []
  for n, line in numbered:
    cells = line.split("\t") if len(text_fields) == 2 else [line]
    if len(cells) != len(text_fields):
      raise UserError(f"{where} line {n}: expected {len(text_fields)} tab-separated texts "
                      f"({', '.join(text_fields)}) or a header naming them, got "
                      f"{len(cells)}: {clip(line, 80)!r}")
    examples.append(cells[0] if len(cells) == 1 else tuple(cells))
  return examples
