"""`mode=finetune`: a GLUE-format task on top of any encoder the project can load.

  python launch.py --config=configs/finetune.py:sst2 --workdir=DIR \
      --config.finetune.init=PRETRAINED_WORKDIR_OR_HF_FOLDER

The same loop as pretraining (sharding, Optax, Orbax, metrics, resume); the
objective is classification (cross-entropy) or regression (MSE). Dev splits
are scored with the official metrics every epoch (or `train.eval_every`
steps) and at the end. Outputs in DIR besides the loop's: `eval_<split>.json`
(metrics of the latest evaluation), `predictions_<split>.tsv` (GLUE
submission layout: index, prediction), and `best/` (params, metrics and
predictions of the best evaluation by the task's first metric; the params as a
one-step checkpoint, written and verified like the run's own).
"""

import functools
import json
import math
import os
import shutil
from typing import Optional

import jax
import jax.numpy as jnp

from lite_bert import pretrained
from lite_bert import teachers
from lite_bert.data import classification
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models import flops
from lite_bert.models import convert
from lite_bert.models.heads import ClassificationModel
from lite_bert.train import checkpoint as checkpoint_lib
from lite_bert.train import fingerprints
from lite_bert.train import loop
from lite_bert.train import objectives
from lite_bert.train import setup
from lite_bert.train import task_distillation
from lite_bert.train import task_eval


def model_and_tokenizer(config, workdir: str):
  """(EncoderConfig, tokenizer, Loaded source or None) for this run.

  With `finetune.init` the architecture and tokenizer are the source's, and
  `config.model` is updated to match (so the run's config.json describes the
  model that was trained); otherwise `config.model` with `tokenizer.path`.
  """
  source = None
  if config.finetune.init:
    source = pretrained.adopt_init(config, "finetune")
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
    # The same writer as the run's checkpoints: sha256 per array, verified on read.
    writer = checkpoint_lib.Checkpointer(os.path.join(tmp, "params"), async_save=False)
    try:
      writer.save(step, {"params": params}, {}, fingerprints.make_meta(config.model, params),
                  force=True)
    finally:
      writer.close()
    if jax.process_index() == 0:
      for split in config.finetune.eval_splits:
        for name in (pattern.format(split=split) for pattern in task_eval.EVAL_FILES):
          shutil.copy(os.path.join(workdir, name), os.path.join(tmp, name))
      task_eval.write_json(os.path.join(tmp, "best.json"), {"step": step, "metric": key,
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
  """Refuses a bad padding / length-grouping / epochs / eval-splits field, or steps set twice."""
  epochs = config.finetune.epochs
  if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 <= epochs < 1e6:
    raise UserError(f"finetune.epochs must be a number >= 0 (0: train.num_steps decides), "
                    f"got {epochs!r}")
  splits = config.finetune.eval_splits
  if isinstance(splits, str) or not splits or not all(isinstance(x, str) for x in splits):
    raise UserError(f"finetune.eval_splits must be a non-empty list of split names (the "
                    f"first one picks the best checkpoint), got {splits!r}")
  if config.finetune.epochs > 0 and setup.set_on_command_line("train.num_steps"):
    raise UserError(f"--config.train.num_steps={config.train.num_steps} conflicts with "
                    f"finetune.epochs={config.finetune.epochs}, which sets the steps: pass "
                    f"--config.finetune.epochs=0 to train for train.num_steps")
  for name in ("pad_multiple", "bucket_batches", "eval_batch_size"):
    value = config.finetune.get(name, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserError(f"finetune.{name} must be an integer >= 1, got {value!r}")


def build_job(config, workdir: str) -> loop.Job:
  check_batching(config)
  spec = task_eval.task_spec(config)
  cfg, tokenizer, source = model_and_tokenizer(config, workdir)
  data = task_eval.load_task_data(config, spec, tokenizer)
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
    teacher = teachers.load_task_teacher(
        config.finetune.teacher, num_labels=spec.num_labels, tokenizer=tokenizer, dtype=cfg.dtype,
        step=int(config.finetune.teacher_step) or None)
    teachers.check_same_teacher(workdir, teacher.identity, field="finetune.teacher")
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
                  evaluate=task_eval.make_scorer(config, spec, data, model, workdir),
                  on_eval=keep_best(config, spec, workdir),
                  max_shapes=math.ceil(config.data.max_seq_length / config.finetune.pad_multiple),
                  step_flops=functools.partial(
                      flops.step_flops, cfg, num_labels=spec.num_labels,
                      teacher=None if frozen is None else teacher.cfg))


def run(config, workdir: str) -> dict:
  return loop.train(config, workdir, build_job(config, workdir))
