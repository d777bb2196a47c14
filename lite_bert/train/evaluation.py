"""Held-out evaluation as sums and counts: the one loop every job's evaluation runs.

A jitted step returns metric *sums and counts* (as the objectives do); they
are added up over a fixed list of batches on the host and only then turned
into means (`objectives.summarize`), so every example counts once however the
batches are split over devices or hosts.
"""

from typing import Callable

import jax

from lite_bert.data import pipeline
from lite_bert.train import objectives


def summed(step: Callable, batches, to_global: Callable) -> dict:
  """{name: total} of step(global batch) -> {name: sum or count}, over `batches`."""
  totals: dict = {}
  for batch in batches:
    for key, value in jax.device_get(step(to_global(batch))).items():
      totals[key] = totals.get(key, 0.0) + float(value)
  return totals


def make_mlm_evaluate(loss_fn, eval_batches):
  """(params, frozen, to_global) -> held-out MLM loss / accuracy / perplexity, pair accuracy.

  loss_fn(params, frozen, batch, rng, deterministic) -> (loss, sums and counts).
  Also `mlm_unigram_accuracy`: the accuracy of always guessing the most frequent
  masked token of these batches (`pipeline.unigram_accuracy`), the plateau a
  model that has not yet learned to use context sits at.
  """
  eval_step = jax.jit(lambda params, frozen, batch: loss_fn(params, frozen, batch, None, True)[1])
  unigram = pipeline.unigram_accuracy(eval_batches)

  def evaluate(params, frozen, to_global):
    numbers = objectives.summarize(
        summed(lambda batch: eval_step(params, frozen, batch), eval_batches, to_global))
    if "mlm_accuracy" in numbers:
      numbers["mlm_unigram_accuracy"] = unigram
    return numbers

  return evaluate
