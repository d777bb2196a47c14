"""`mode=finetune`: a GLUE-format task on top of any encoder the project can load.

  python launch.py --config=configs/finetune.py:sst2 --workdir=DIR \
      --config.finetune.init=PRETRAINED_WORKDIR_OR_HF_FOLDER

The same loop as pretraining (sharding, Optax, Orbax, metrics, resume); the
objective is classification (cross-entropy) or regression (MSE). Dev splits
are scored with the official metrics every epoch (or `train.eval_every`
steps) and at the end. Outputs in DIR besides the loop's: `eval_<split>.json`
(metrics of the latest evaluation), `predictions_<split>.tsv` (GLUE
submission layout: index, prediction), and `best/` (params, metrics and
predictions of the best evaluation by the task's first metric).
"""

import dataclasses
import json
import math
import os
import shutil
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lite_bert import pretrained
from lite_bert.data import classification
from lite_bert.data import glue
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models import convert
from lite_bert.models.config import EncoderConfig
from lite_bert.models.heads import ClassificationModel
from lite_bert.modes import distill
from lite_bert.modes import setup
from lite_bert.train import loop
from lite_bert.train import objectives
from lite_bert.train import task_distillation
from lite_bert.train import task_metrics


@dataclasses.dataclass
class TaskData:
  """A task's encoded splits: what the loss and the evaluation read."""

  spec: glue.TaskSpec
  train: list  # [(input ids, token types)]
  train_labels: np.ndarray
  eval_splits: dict  # split -> (rows, encoded, labels)


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


def encode_split(config, spec, tokenizer, split: str):
  rows = read_split(config, spec, split)
  encoded = classification.encode_rows(rows, spec.text_fields, tokenizer,
                                       config.data.max_seq_length)
  labels = np.asarray([row["label"] for row in rows],
                      np.float32 if spec.is_regression else np.int32)
  return rows, encoded, labels


def load_task_data(config, spec, tokenizer, *, with_train: bool = True) -> TaskData:
  train, train_labels = [], np.zeros((0,))
  if with_train:
    _, train, train_labels = encode_split(config, spec, tokenizer, "train")
  splits = {split: encode_split(config, spec, tokenizer, split)
            for split in config.finetune.eval_splits}
  return TaskData(spec, train, train_labels, splits)


def model_and_tokenizer(config, workdir: str):
  """(EncoderConfig, tokenizer, Loaded source or None) for this run.

  With `finetune.init` the architecture and tokenizer are the source's, and
  `config.model` is updated to match (so the run's config.json describes the
  model that was trained); otherwise `config.model` with `tokenizer.path`.
  """
  source = None
  if config.finetune.init:
    source = pretrained.load(config.finetune.init)
    with config.unlocked():
      for key, value in source.cfg.to_dict().items():
        if key not in setup.RUNTIME_FIELDS:
          config.model[key] = value
    if source.tokenizer is None:
      raise UserError(f"{config.finetune.init} has no tokenizer (expected "
                      f"tokenizer/spm.model, vocab.txt or tokenizer.json)")
    tokenizer = source.tokenizer
    where = f"the tokenizer of {config.finetune.init}"
  else:
    if not config.tokenizer.path:
      raise UserError("random-init fine-tuning needs --config.tokenizer.path (a "
                      "sentencepiece .model, vocab.txt or tokenizer.json)")
    tokenizer = tokenizers.load_tokenizer(config.tokenizer.path)
    where = f"--config.tokenizer.path={config.tokenizer.path}"
  cfg = setup.encoder_config(config)
  tokenizers.check_vocab_matches(tokenizer, cfg.vocab_size, where)
  config.tokenizer.path = tokenizer.source  # so evaluate can find it from config.json
  return cfg, tokenizer, source


def tokenizer_of_run(run_config, workdir: str):
  """The tokenizer a finished fine-tuning run used (recorded in its config.json)."""
  if not run_config.tokenizer.path:
    raise UserError(f"{workdir}/config.json names no tokenizer.path")
  return tokenizers.load_tokenizer(run_config.tokenizer.path)


def predict(apply_fn, params, batches, to_global) -> np.ndarray:
  """Logits [examples, num_labels] in the original row order."""
  outputs = {}
  for batch in batches:
    logits = np.asarray(jax.device_get(apply_fn(params, to_global(batch))))
    for row, example in enumerate(batch["example_ids"]):
      if example >= 0:
        outputs[int(example)] = logits[row]
  return np.stack([outputs[i] for i in range(len(outputs))])


def predictions_from_logits(spec: glue.TaskSpec, logits: np.ndarray) -> np.ndarray:
  return logits[:, 0] if spec.is_regression else np.argmax(logits, axis=-1)


def write_predictions(path: str, spec: glue.TaskSpec, rows, predictions) -> None:
  """GLUE submission layout: a header `index<TAB>prediction`, one row per example."""
  with open(path + ".tmp", "w") as f:
    f.write("index\tprediction\n")
    for row, prediction in zip(rows, predictions):
      value = f"{prediction:.6f}" if spec.is_regression else spec.labels[int(prediction)]
      f.write(f"{row['idx']}\t{value}\n")
  os.replace(path + ".tmp", path)


def write_json(path: str, value: dict) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


EVAL_FILES = ("eval_{split}.json", "predictions_{split}.tsv")


def make_scorer(config, spec, data: TaskData, model, workdir: str, pad_id: int, *,
                files: tuple[str, str] = EVAL_FILES):
  """(params, frozen, to_global) -> metrics per eval split; writes metrics and predictions."""
  apply_fn = jax.jit(lambda params, batch: model.apply(
      {"params": params}, batch["input_ids"], batch["attention_mask"],
      batch["token_type_ids"])["logits"])
  batches = {
      split: classification.eval_batches(
          encoded, labels, batch_size=config.finetune.eval_batch_size,
          pad_id=pad_id, pad_multiple=config.finetune.pad_multiple,
          max_seq_length=config.data.max_seq_length, regression=spec.is_regression)
      for split, (_, encoded, labels) in data.eval_splits.items()}

  def score(params, frozen, to_global):
    del frozen
    numbers = {}
    for split, (rows, _, labels) in data.eval_splits.items():
      logits = predict(apply_fn, params, batches[split], to_global)
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


def keep_best(config, spec, workdir: str):
  """on_eval callback: saves params + eval files when the first metric improves."""
  first_split = config.finetune.eval_splits[0]
  key = f"{first_split}_{spec.metrics[0]}"
  best_dir = os.path.join(workdir, "best")
  record_path = os.path.join(best_dir, "best.json")

  def on_eval(step, params, numbers):
    previous = None
    if os.path.exists(record_path):
      with open(record_path) as f:
        previous = json.load(f)
    if previous is not None and previous["value"] >= numbers[key]:
      return
    tmp = best_dir + ".tmp"
    if jax.process_index() == 0:
      shutil.rmtree(tmp, ignore_errors=True)
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.abspath(os.path.join(tmp, "params")), params)
    if jax.process_index() == 0:
      for split in config.finetune.eval_splits:
        for name in (pattern.format(split=split) for pattern in EVAL_FILES):
          shutil.copy(os.path.join(workdir, name), os.path.join(tmp, name))
      write_json(os.path.join(tmp, "best.json"), {"step": step, "metric": key,
                                                  "value": numbers[key]})
      shutil.rmtree(best_dir, ignore_errors=True)
      os.replace(tmp, best_dir)

  return on_eval


def steps_for_epochs(config, num_train: int) -> None:
  """Sets train.num_steps (and a per-epoch eval) from finetune.epochs, if > 0."""
  steps_per_epoch = max(1, num_train // config.data.batch_size)
  if config.finetune.epochs > 0:
    config.train.num_steps = int(math.ceil(config.finetune.epochs * steps_per_epoch))
  if not config.train.eval_every:
    config.train.eval_every = steps_per_epoch


def check_batching(config) -> None:
  """Refuses a bad padding / length-grouping field before any work is done."""
  for name in ("pad_multiple", "bucket_batches", "eval_batch_size"):
    value = config.finetune.get(name, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserError(f"finetune.{name} must be an integer >= 1, got {value!r}")


def build_job(config, workdir: str) -> loop.Job:
  check_batching(config)
  spec = task_spec(config)
  cfg, tokenizer, source = model_and_tokenizer(config, workdir)
  data = load_task_data(config, spec, tokenizer)
  steps_for_epochs(config, len(data.train))
  # The loop writes config.json (now with the real model and step count) once
  # the checkpoint check passed; its own fields are checked here, before any work.
  loop.check_config(config)
  model = ClassificationModel(cfg, num_labels=spec.num_labels)

  def init_params(rng):
    ids = jnp.zeros((1, config.data.max_seq_length), jnp.int32)
    return model.init(rng, ids)["params"]

  def loss_fn(params, frozen, batch, rng, deterministic):
    del frozen
    logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                         batch["token_type_ids"], deterministic=deterministic,
                         rngs=None if rng is None else {"dropout": rng})["logits"]
    return objectives.classification_loss(logits, batch["labels"], batch["weights"],
                                          regression=spec.is_regression)

  # Task-specific distillation: a fine-tuned teacher's soft labels, frozen in the step.
  frozen, teacher_meta = None, {}
  if config.finetune.teacher:
    teacher = task_distillation.load_task_teacher(
        config.finetune.teacher, num_labels=spec.num_labels, tokenizer=tokenizer, dtype=cfg.dtype)
    distill.check_same_teacher(workdir, teacher.identity, field="finetune.teacher")
    loss_fn = task_distillation.make_loss_fn(
        model, teacher.model, alpha_soft=config.finetune.alpha_soft,
        temperature=config.finetune.temperature, regression=spec.is_regression)
    frozen, teacher_meta = teacher.params, {"teacher": teacher.identity}

  load_params = None
  if source is not None:
    load_params = lambda fresh: convert.fill_missing({"encoder": source.params["encoder"]},
                                                     fresh)

  def make_train_iter(state: Optional[dict]):
    return classification.TaskBatches(
        data.train, data.train_labels, batch_size=config.data.batch_size // jax.process_count(),
        seed=config.seed, pad_id=tokenizer.pad_id, pad_multiple=config.finetune.pad_multiple,
        max_seq_length=config.data.max_seq_length, regression=spec.is_regression,
        bucket_batches=config.finetune.get("bucket_batches", 1),
        process_index=jax.process_index(), process_count=jax.process_count(), state=state)

  meta = setup.model_meta(cfg, job="finetune", task=spec.name, num_labels=spec.num_labels,
                          **teacher_meta)
  return loop.Job(name=f"finetune {spec.name}", init_params=init_params, loss_fn=loss_fn,
                  make_train_iter=make_train_iter, meta=meta, load_params=load_params,
                  frozen=frozen,
                  evaluate=make_scorer(config, spec, data, model, workdir, tokenizer.pad_id),
                  on_eval=keep_best(config, spec, workdir))


def run(config, workdir: str) -> dict:
  return loop.train(config, workdir, build_job(config, workdir))
