"""Held-out evaluation, the one place every job's evaluation runs, multi-process-ready.

Two ways over a fixed list of batches, both counting every example once
however the batches are split over devices and processes:
  summed    a jitted step returns metric *sums and counts* (as the objectives
            do), added up on the host and only then turned into means
            (`objectives.summarize`): MLM loss/accuracy, distillation losses;
  gathered  per-example outputs gathered to every process by example id, for
            metrics that are not sums (F1, MCC, Spearman) and prediction files.
"""

from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from lite_bert.data import pipeline
from lite_bert.train import objectives


def summed(step: Callable, batches, to_global: Callable) -> dict:
  """{name: total} of step(global batch) -> {name: sum or count}, over `batches`."""
  totals: dict = {}
  for batch in batches:
    for key, value in jax.device_get(step(to_global(batch))).items():
      totals[key] = totals.get(key, 0.0) + float(value)
  return totals


def masked_token_counts(batches) -> np.ndarray:
  """`pipeline.masked_token_counts` of the global batches: every process's rows added."""
  local = pipeline.masked_token_counts(batches)
  if jax.process_count() == 1:
    return local
  size = int(np.max(multihost_utils.process_allgather(np.asarray([local.size]))))
  return np.sum(multihost_utils.process_allgather(pipeline.masked_token_counts(batches, size)),
                axis=0)


def make_mlm_evaluate(loss_fn, eval_batches):
  """(params, frozen, to_global) -> held-out MLM loss / accuracy / perplexity, pair accuracy.

  loss_fn(params, frozen, batch, rng, deterministic) -> (loss, sums and counts).
  Also `mlm_unigram_accuracy`: the accuracy of always guessing the most frequent
  masked token of these batches (of every process), the plateau a model that
  has not yet learned to use context sits at.
  """
  eval_step = jax.jit(lambda params, frozen, batch: loss_fn(params, frozen, batch, None, True)[1])
  unigram = pipeline.unigram_accuracy_of(masked_token_counts(eval_batches))

  def evaluate(params, frozen, to_global):
    numbers = objectives.summarize(
        summed(lambda batch: eval_step(params, frozen, batch), eval_batches, to_global))
    if "mlm_accuracy" in numbers:
      numbers["mlm_unigram_accuracy"] = unigram
    return numbers

  return evaluate


def gathered(apply_fn, params, batches, to_global, num_examples: int) -> np.ndarray:
  """Per-example outputs (logits [examples, num_labels]) in the original row order, on every process.

  For metrics that are not sums (F1, MCC, Spearman) and for prediction files.

  Each process feeds its part of every global batch (`classification.eval_batches`);
  the global logits and example ids are gathered to every process (small:
  batch x labels), so each example is counted exactly once however the rows
  are split over processes and devices.
  """
  outputs = {}
  for batch in batches:
    global_batch = to_global(batch)
    logits, example_ids = (np.asarray(multihost_utils.process_allgather(x, tiled=True))
                           for x in (apply_fn(params, global_batch),
                                     global_batch["example_ids"]))
    for row, example in enumerate(example_ids):
      if example >= 0:
        if int(example) in outputs:
          raise RuntimeError(f"eval example {int(example)} was scored twice")
        outputs[int(example)] = logits[row]
  if len(outputs) != num_examples:
    raise RuntimeError(f"{len(outputs)} of {num_examples} eval examples were scored")
  return np.stack([outputs[i] for i in range(num_examples)])
