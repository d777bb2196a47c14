"""Objectives: pure functions from (params, batch, rng) to (loss, metrics).

What a job trains is decided here and nowhere else; the train loop only sees
`loss_fn(params, batch, rng) -> (scalar loss, metrics)`.

Metrics are returned as *sums and counts* (`mlm_correct`, `mlm_count`, ...),
never as per-step means, so that averaging over steps, devices and hosts is
exact: the loop divides totals by totals. Every loss is a mean over the real
(weight 1) targets of the whole global batch, so the gradient of one global
batch is the same whatever the number of devices.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def weighted_cross_entropy(logits: Array, labels: Array, weights: Array):
  """Cross-entropy summed over weighted targets.

  Args:
    logits: [..., num_classes] float.
    labels: [...] int class ids.
    weights: [...] float, 1 for a real target, 0 for padding.
  Returns:
    (sum of weighted losses, sum of weights, number of weighted correct argmax).
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(weights), jnp.sum(correct * weights)


def mean_or_zero(total: Array, count: Array) -> Array:
  return total / jnp.maximum(count, 1.0)


def mlm_and_pair_loss(outputs: dict, batch: dict, *, pair_weight: float = 1.0):
  """BERT/ALBERT pretraining loss: masked-LM cross-entropy + NSP/SOP cross-entropy.

  outputs: `mlm_logits` [batch, P, V] at `batch['masked_positions']`, and
    `pair_logits` [batch, 2] when the model has a pair head.
  batch: `masked_ids` [batch, P], `masked_weights` [batch, P],
    `pair_labels` [batch] (0 = true order / true next, 1 = swapped / random).
  Returns (loss, metrics) where loss = mean MLM loss over masked tokens
    + pair_weight * mean pair loss over sequences.
  """
  mlm_sum, mlm_count, mlm_correct = weighted_cross_entropy(
      outputs["mlm_logits"], batch["masked_ids"], batch["masked_weights"])
  mlm_loss = mean_or_zero(mlm_sum, mlm_count)
  loss = mlm_loss
  metrics = {"mlm_loss_sum": mlm_sum, "mlm_count": mlm_count, "mlm_correct": mlm_correct}
  if "pair_logits" in outputs and "pair_labels" in batch:
    ones = jnp.ones_like(batch["pair_labels"], jnp.float32)
    pair_sum, pair_count, pair_correct = weighted_cross_entropy(
        outputs["pair_logits"], batch["pair_labels"], ones)
    loss = loss + pair_weight * mean_or_zero(pair_sum, pair_count)
    metrics.update(pair_loss_sum=pair_sum, pair_count=pair_count, pair_correct=pair_correct)
  return loss, metrics


def pretraining_loss_fn(model, *, pair_weight: float = 1.0) -> Callable:
  """loss_fn(params, batch, rng, deterministic) for a PretrainingModel."""

  def loss_fn(params, batch, rng, deterministic=False):
    outputs = model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"],
        batch.get("token_type_ids"), batch["masked_positions"],
        deterministic=deterministic, rngs={"dropout": rng})
    return mlm_and_pair_loss(outputs, batch, pair_weight=pair_weight)

  return loss_fn


def classification_loss(logits: Array, labels: Array, weights: Array, *, regression: bool):
  """Sequence classification (cross-entropy) or regression (MSE).

  logits [batch, num_labels] (num_labels == 1 for regression); labels [batch]
  int (classification) or float (regression); weights [batch] (0 = padding
  example added to fill the last batch). Returns (mean loss, metrics).
  """
  if regression:
    errors = (logits[:, 0].astype(jnp.float32) - labels.astype(jnp.float32)) ** 2
    loss_sum, count = jnp.sum(errors * weights), jnp.sum(weights)
    return mean_or_zero(loss_sum, count), {"loss_sum": loss_sum, "count": count}
  loss_sum, count, correct = weighted_cross_entropy(logits, labels, weights)
  return mean_or_zero(loss_sum, count), {"loss_sum": loss_sum, "count": count,
                                         "correct": correct}


def summarize(totals: dict) -> dict:
  """Turns summed metrics into the numbers people read (means, accuracies, perplexity)."""
  out = {}
  if "mlm_count" in totals:
    count = max(float(totals["mlm_count"]), 1.0)
    out["mlm_loss"] = float(totals["mlm_loss_sum"]) / count
    out["mlm_accuracy"] = float(totals["mlm_correct"]) / count
    out["mlm_perplexity"] = float(jnp.exp(jnp.minimum(out["mlm_loss"], 50.0)))
  if "pair_count" in totals:
    count = max(float(totals["pair_count"]), 1.0)
    out["pair_loss"] = float(totals["pair_loss_sum"]) / count
    out["pair_accuracy"] = float(totals["pair_correct"]) / count
  if "count" in totals:
    count = max(float(totals["count"]), 1.0)
    out["task_loss"] = float(totals["loss_sum"]) / count
    if "correct" in totals:
      out["accuracy"] = float(totals["correct"]) / count
  return out
