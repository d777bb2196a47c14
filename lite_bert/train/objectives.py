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
        deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})
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
    if "kl_sum" in totals:
      out["soft_kl"] = float(totals["kl_sum"]) / count
  if "kl_count" in totals:
    count = max(float(totals["kl_count"]), 1.0)
    out["kl"] = float(totals["kl_sum"]) / count
    out["logit_mse"] = float(totals["mse_sum"]) / count
  if "cos_count" in totals:
    out["cosine_loss"] = float(totals["cos_sum"]) / max(float(totals["cos_count"]), 1.0)
  if "hid_count" in totals:
    out["hidden_mse"] = float(totals["hid_sum"]) / max(float(totals["hid_count"]), 1.0)
  return out


def distillation_terms(student: dict, teacher: dict, batch: dict, *, temperature: float,
                       kl_on_masked_only: bool = False,
                       hidden_pairs: tuple[tuple[int, int], ...] = ()):
  """The DistilBERT loss terms, each as (sum, count) so they average exactly.

  student, teacher: model outputs with `last_hidden_state` [batch, seq, H]
    (same H). `mlm_logits`: [batch, seq, V] at EVERY position in both for the
    KL and logit-MSE terms; when the teacher has none (an encoder-only
    teacher, or a run whose KL/MSE weights are 0), the student's are at the
    masked positions only [batch, P, V] and the KL/MSE sums are 0.
    `hidden_states` [layers + 1, batch, seq, H] in both when `hidden_pairs`.
  batch: `attention_mask` [batch, seq]; `masked_positions`, `masked_ids`,
    `masked_weights` [batch, P].
  hidden_pairs: (student index, teacher index) into `hidden_states` for the
    TinyBERT-style intermediate-layer MSE.
  Returns a dict of sums and counts:
    kl_sum / kl_count: T^2 * KL(softmax(teacher/T) || softmax(student/T)),
      summed over vocab, over the selected tokens (non-padding tokens, or only
      the masked ones with `kl_on_masked_only`), as DistilBERT's
      `KLDivLoss(reduction='batchmean')` over the selected rows;
    mse_sum / kl_count: squared logit difference summed over vocab, per
      selected token (DistilBERT's alpha_mse term);
    mlm_loss_sum / mlm_count / mlm_correct: the student's masked-LM
      cross-entropy at the masked positions;
    cos_sum / cos_count: 1 - cos(student hidden, teacher hidden) over
      non-padding tokens (CosineEmbeddingLoss with target 1);
    hid_sum / hid_count (with `hidden_pairs`): squared difference of the
      paired hidden states, mean over H, summed over non-padding tokens and
      pairs (TinyBERT's hidden-state loss, Jiao et al. 2020).
  """
  t = temperature
  s_logits = student["mlm_logits"].astype(jnp.float32)
  token_weights = batch["attention_mask"].astype(jnp.float32)  # [batch, seq]
  if kl_on_masked_only:
    masked = jnp.zeros_like(token_weights)
    rows = jnp.arange(masked.shape[0])[:, None]
    kl_weights = masked.at[rows, batch["masked_positions"]].max(batch["masked_weights"])
  else:
    kl_weights = token_weights
  kl_count = jnp.sum(kl_weights)
  if teacher.get("mlm_logits") is not None:
    t_logits = jax.lax.stop_gradient(teacher["mlm_logits"].astype(jnp.float32))
    s_log_probs = jax.nn.log_softmax(s_logits / t, axis=-1)
    t_log_probs = jax.nn.log_softmax(t_logits / t, axis=-1)
    kl_per_token = jnp.sum(jnp.exp(t_log_probs) * (t_log_probs - s_log_probs), axis=-1)
    mse_per_token = jnp.sum((s_logits - t_logits) ** 2, axis=-1)
    kl_sum = t * t * jnp.sum(kl_per_token * kl_weights)
    mse_sum = jnp.sum(mse_per_token * kl_weights)
    masked_logits = jnp.take_along_axis(s_logits, batch["masked_positions"][..., None], axis=1)
  else:  # no teacher logits: the student's are at the masked positions already
    kl_sum = mse_sum = jnp.zeros((), jnp.float32)
    masked_logits = s_logits
  mlm_sum, mlm_count, mlm_correct = weighted_cross_entropy(
      masked_logits, batch["masked_ids"], batch["masked_weights"])

  s_hidden = student["last_hidden_state"].astype(jnp.float32)
  t_hidden = jax.lax.stop_gradient(teacher["last_hidden_state"].astype(jnp.float32))
  cosine = jnp.sum(s_hidden * t_hidden, -1) / jnp.maximum(
      jnp.linalg.norm(s_hidden, axis=-1) * jnp.linalg.norm(t_hidden, axis=-1), 1e-8)
  terms = {
      "kl_sum": kl_sum, "kl_count": kl_count, "mse_sum": mse_sum,
      "mlm_loss_sum": mlm_sum, "mlm_count": mlm_count, "mlm_correct": mlm_correct,
      "cos_sum": jnp.sum((1.0 - cosine) * token_weights), "cos_count": jnp.sum(token_weights),
  }
  if hidden_pairs:
    hid_sum = jnp.zeros((), jnp.float32)
    for s_index, t_index in hidden_pairs:
      s_h = student["hidden_states"][s_index].astype(jnp.float32)
      t_h = jax.lax.stop_gradient(teacher["hidden_states"][t_index].astype(jnp.float32))
      hid_sum = hid_sum + jnp.sum(jnp.mean((s_h - t_h) ** 2, axis=-1) * token_weights)
    terms.update(hid_sum=hid_sum, hid_count=len(hidden_pairs) * jnp.sum(token_weights))
  return terms


def distillation_loss(student: dict, teacher: dict, batch: dict, *, alpha_ce: float,
                      alpha_mlm: float, alpha_cos: float, alpha_mse: float = 0.0,
                      alpha_hidden: float = 0.0, temperature: float = 2.0,
                      kl_on_masked_only: bool = False,
                      hidden_pairs: tuple[tuple[int, int], ...] = ()):
  """DistilBERT's triple loss (plus the optional logit MSE and hidden-state MSE): (loss, metrics).

  loss = alpha_ce * T^2 KL + alpha_mlm * MLM CE + alpha_cos * (1 - cos)
         + alpha_mse * logit MSE + alpha_hidden * hidden-state MSE, each a
  mean over its tokens (see `distillation_terms`). The paper's defaults:
  alpha_ce=5, alpha_mlm=2, alpha_cos=1, T=2.
  """
  terms = distillation_terms(student, teacher, batch, temperature=temperature,
                             kl_on_masked_only=kl_on_masked_only,
                             hidden_pairs=hidden_pairs if alpha_hidden else ())
  kl = mean_or_zero(terms["kl_sum"], terms["kl_count"])
  mse = mean_or_zero(terms["mse_sum"], terms["kl_count"])
  mlm = mean_or_zero(terms["mlm_loss_sum"], terms["mlm_count"])
  cos = mean_or_zero(terms["cos_sum"], terms["cos_count"])
  loss = alpha_ce * kl + alpha_mlm * mlm + alpha_cos * cos + alpha_mse * mse
  if "hid_sum" in terms:
    loss = loss + alpha_hidden * mean_or_zero(terms["hid_sum"], terms["hid_count"])
  return loss, terms


def soft_label_classification_loss(logits: Array, teacher_logits: Array, labels: Array,
                                   weights: Array, *, alpha_soft: float, temperature: float):
  """Task-specific distillation: (1 - a) * CE(hard labels) + a * T^2 KL(teacher/T || student/T).

  logits, teacher_logits: [batch, num_labels]; labels [batch] int; weights
  [batch]. Returns (mean loss, metrics with the hard-label accuracy).
  """
  hard, metrics = classification_loss(logits, labels, weights, regression=False)
  t = temperature
  s_log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / t, axis=-1)
  t_log_probs = jax.nn.log_softmax(
      jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / t, axis=-1)
  kl = jnp.sum(jnp.exp(t_log_probs) * (t_log_probs - s_log_probs), axis=-1)
  kl_sum = t * t * jnp.sum(kl * weights)
  soft = mean_or_zero(kl_sum, jnp.sum(weights))
  return (1.0 - alpha_soft) * hard + alpha_soft * soft, dict(metrics, kl_sum=kl_sum)
