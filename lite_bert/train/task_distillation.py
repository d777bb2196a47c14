"""Task-specific distillation: fine-tuning on hard labels and a fine-tuned teacher's soft ones.

  teacher = teachers.load_task_teacher(config.finetune.teacher,
                                       num_labels=spec.num_labels, tokenizer=tokenizer)
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

from typing import Any

import jax
import jax.numpy as jnp

from lite_bert.errors import UserError
from lite_bert.train import objectives


def check_options(alpha_soft: float, temperature: float) -> None:
  if not 0.0 <= alpha_soft <= 1.0:
    raise UserError(f"finetune.alpha_soft must be in [0, 1], got {alpha_soft!r}")
  if not temperature > 0.0:
    raise UserError(f"finetune.temperature must be > 0, got {temperature!r}")


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
