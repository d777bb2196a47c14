"""Task-specific distillation: fine-tuning on hard labels and a fine-tuned teacher's soft ones.

  teacher = task_distillation.load_task_teacher(config.finetune.teacher,
                                                num_labels=spec.num_labels,
                                                tokenizer=tokenizer)
  loss_fn = task_distillation.make_loss_fn(
      student_model, teacher.model, alpha_soft=config.finetune.alpha_soft,
      temperature=config.finetune.temperature, regression=spec.is_regression)
  job = loop.Job(..., loss_fn=loss_fn, frozen=teacher.params,
                 meta=dict(meta, teacher=teacher.identity))

The teacher is a fine-tuned `ClassificationModel` of any architecture (BERT
teaching DistilBERT) with the student's vocabulary; its params are the loop's
`frozen` tree and it runs deterministic inside the student's jitted step.

Classification: (1 - alpha_soft) * CE(hard labels) + alpha_soft * T^2
KL(softmax(teacher / T) || softmax(student / T))
(`objectives.soft_label_classification_loss`). Regression (STS-B), where
there is no distribution to soften: (1 - alpha_soft) * MSE(labels) +
alpha_soft * MSE(teacher prediction); `temperature` is not used.
"""

import dataclasses
import hashlib
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lite_bert import pretrained
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig
from lite_bert.models.heads import ClassificationModel
from lite_bert.modes import setup
from lite_bert.train import checkpoint as checkpoint_lib
from lite_bert.train import objectives


@dataclasses.dataclass
class TaskTeacher:
  """A frozen fine-tuned teacher.

  Attributes:
    model: its ClassificationModel (apply with {'params': params}).
    params: numpy params: `encoder` and `classifier_head` (put in Job.frozen).
    cfg: its encoder architecture.
    identity: JSON for the checkpoint meta (path, step, architecture, weights digest);
      `distill.check_same_teacher` compares it on resume.
  """

  model: ClassificationModel
  params: dict
  cfg: EncoderConfig
  identity: dict


def params_digest(params) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes, leaves sorted by path.

  A teacher's identity in checkpoint meta: the same weights give the same
  digest wherever they are loaded from (a workdir, its copy, its HF export).
  """
  digest = hashlib.sha256()
  for path, leaf in sorted(checkpoint_lib.leaf_paths(params), key=lambda item: item[0]):
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{path}:{value.dtype}:{value.shape};".encode())
    digest.update(checkpoint_lib.array_sha256(value).encode())
  return digest.hexdigest()


def check_options(alpha_soft: float, temperature: float) -> None:
  if not 0.0 <= alpha_soft <= 1.0:
    raise UserError(f"finetune.alpha_soft must be in [0, 1], got {alpha_soft!r}")
  if not temperature > 0.0:
    raise UserError(f"finetune.temperature must be > 0, got {temperature!r}")


def check_same_vocabulary(student: tokenizers.Tokenizer, teacher: tokenizers.Tokenizer,
                          where: str) -> None:
  """UserError unless both map every id to the same token (the teacher reads the student's ids)."""
  if student.vocab_size != teacher.vocab_size:
    raise UserError(f"{where} has a vocabulary of {teacher.vocab_size} tokens "
                    f"({teacher.source}), the student's has {student.vocab_size} "
                    f"({student.source}); teacher and student must share one tokenizer")
  if list(student.special_ids) != list(teacher.special_ids):
    raise UserError(f"{where}: the teacher's special ids {list(teacher.special_ids)} differ "
                    f"from the student's {list(student.special_ids)}")
  for i in range(student.vocab_size):
    if student.id_to_token(i) != teacher.id_to_token(i):
      raise UserError(f"{where}: token id {i} is {teacher.id_to_token(i)!r} for the teacher "
                      f"({teacher.source}) but {student.id_to_token(i)!r} for the student "
                      f"({student.source}); they must share one tokenizer")


def load_task_teacher(source: str, *, num_labels: int,
                      tokenizer: Optional[tokenizers.Tokenizer] = None,
                      dtype: Optional[str] = None) -> TaskTeacher:
  """Loads a fine-tuned teacher (a lite_bert finetune workdir, or an HF folder with a classifier).

  Args:
    source: the teacher's workdir / folder.
    num_labels: the task's; the teacher's classifier must have as many.
    tokenizer: the student's tokenizer; when given, the teacher's must be the
      same vocabulary.
    dtype: compute dtype to run the teacher in (None: its own).
  """
  loaded = pretrained.load(source)
  where = f"teacher {source}"
  head = loaded.params.get("classifier_head")
  if head is None:
    raise UserError(f"{where} has no classifier head: task-specific distillation needs a "
                    f"teacher fine-tuned on the task (finetune.teacher)")
  teacher_labels = int(head["classifier"]["kernel"].shape[-1])
  if teacher_labels != num_labels:
    raise UserError(f"{where} predicts {teacher_labels} labels; this task has {num_labels}")
  if tokenizer is not None:
    if loaded.tokenizer is None:
      tokenizers.check_vocab_matches(tokenizer, loaded.cfg.vocab_size, where)
    else:
      check_same_vocabulary(tokenizer, loaded.tokenizer, where)
  cfg = loaded.cfg if dtype is None else dataclasses.replace(loaded.cfg, dtype=dtype)
  params = {"encoder": loaded.params["encoder"], "classifier_head": head}
  arch = {k: v for k, v in loaded.cfg.to_dict().items() if k not in setup.RUNTIME_FIELDS}
  identity = dict(path=os.path.realpath(source), kind=loaded.kind, step=loaded.step,
                  model=arch, num_labels=teacher_labels, params_sha256=params_digest(params))
  return TaskTeacher(model=ClassificationModel(cfg, num_labels=num_labels), params=params,
                     cfg=loaded.cfg, identity=identity)


def soft_regression_loss(predictions, teacher_predictions, labels, weights, *, alpha_soft: float):
  """(1 - a) * MSE(labels) + a * MSE(teacher predictions); metrics as `classification_loss`."""
  hard, metrics = objectives.classification_loss(predictions, labels, weights, regression=True)
  target = jax.lax.stop_gradient(teacher_predictions[:, 0].astype(jnp.float32))
  errors = (predictions[:, 0].astype(jnp.float32) - target) ** 2
  soft = objectives.mean_or_zero(jnp.sum(errors * weights), jnp.sum(weights))
  return (1.0 - alpha_soft) * hard + alpha_soft * soft, metrics


def make_loss_fn(student_model: Any, teacher_model: Any, *, alpha_soft: float,
                 temperature: float, regression: bool = False):
  """loss_fn(params, frozen, batch, rng, deterministic) -> (loss, metrics).

  `params` are the student's, `frozen` the teacher's (both ClassificationModel
  trees). batch: input_ids, attention_mask, token_type_ids [batch, seq];
  labels, weights [batch] (`data/classification.py`). The student runs with
  dropout unless `deterministic`; the teacher always deterministic, and no
  gradient reaches it. Metrics: the hard-label `loss_sum`/`count`/`correct`
  (so evaluation reads as plain fine-tuning) plus `kl_sum` (classification).
  """
  alpha_soft, temperature = float(alpha_soft), float(temperature)
  check_options(alpha_soft, temperature)

  def loss_fn(params, frozen, batch, rng, deterministic):
    inputs = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    teacher_logits = jax.lax.stop_gradient(
        teacher_model.apply({"params": frozen}, *inputs, deterministic=True)["logits"])
    logits = student_model.apply({"params": params}, *inputs, deterministic=deterministic,
                                 rngs=None if rng is None else {"dropout": rng})["logits"]
    if regression:
      return soft_regression_loss(logits, teacher_logits, batch["labels"], batch["weights"],
                                  alpha_soft=alpha_soft)
    return objectives.soft_label_classification_loss(
        logits, teacher_logits, batch["labels"], batch["weights"], alpha_soft=alpha_soft,
        temperature=temperature)

  return loss_fn
