"""`mode=pretrain`: MLM + NSP (BERT) or MLM + SOP (ALBERT) on a corpus.

  python launch.py --config=configs/albert.py:tiny --config.mode=pretrain --workdir=DIR

Trains (or resumes, if DIR has checkpoints) for `train.num_steps` steps;
evaluates held-out MLM accuracy / perplexity and NSP/SOP accuracy every
`train.eval_every` steps. Outputs in DIR: config.json, tokenizer/,
checkpoints/, metrics.jsonl, tensorboard/.
"""

import jax
import jax.numpy as jnp

from lite_bert.data import corpora
from lite_bert.data import pipeline
from lite_bert.errors import UserError
from lite_bert.models.heads import PretrainingModel
from lite_bert.modes import setup
from lite_bert.train import loop
from lite_bert.train import objectives

PAIR_OBJECTIVES = ("nsp", "sop", "none")
MASKINGS = ("token", "whole_word", "ngram")


def split_corpus(config):
  """(train documents, eval documents) from `data.corpus` / `data.eval_corpus`."""
  documents = corpora.open_corpus(config.data.corpus, format=config.data.format)
  if config.data.eval_corpus:
    return documents, corpora.open_corpus(config.data.eval_corpus, format=config.data.format)
  held_out = config.data.eval_documents
  if len(documents) <= held_out:
    raise UserError(
        f"corpus {config.data.corpus} has {len(documents)} documents; holding out "
        f"data.eval_documents={held_out} for evaluation leaves none to train on. Set "
        f"data.eval_corpus or lower data.eval_documents")
  split_at = len(documents) - held_out
  return documents[:split_at], documents[split_at:]


def batch_options(config) -> dict:
  """The `config.data` fields the pretraining pipeline takes."""
  data = config.data
  if data.pair_objective not in PAIR_OBJECTIVES:
    raise UserError(f"data.pair_objective must be one of {PAIR_OBJECTIVES}, "
                    f"got {data.pair_objective!r}")
  if data.pair_objective != "none" and not config.pair_head:
    raise UserError(f"data.pair_objective={data.pair_objective!r} needs a pair head "
                    f"(pair_head=True); {config.name} has none")
  if data.batch_size % jax.process_count():
    raise UserError(f"data.batch_size={data.batch_size} is not divisible by the "
                    f"{jax.process_count()} processes")
  if data.masking not in MASKINGS:
    raise UserError(f"data.masking must be one of {MASKINGS}, got {data.masking!r}")
  return dict(
      batch_size=data.batch_size // jax.process_count(),
      max_seq_length=data.max_seq_length,
      max_predictions_per_seq=data.max_predictions_per_seq,
      masked_lm_prob=data.mask_rate,
      whole_word_masking=data.masking in ("whole_word", "ngram"),
      max_ngram=data.ngram_max if data.masking == "ngram" else 1,
      short_seq_prob=data.short_seq_prob,
      pair_objective=None if data.pair_objective == "none" else data.pair_objective,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def make_evaluate(loss_fn, eval_batches):
  """(params, frozen, to_global) -> held-out MLM loss / accuracy / perplexity, pair accuracy.

  Also `mlm_unigram_accuracy`: the accuracy of always guessing the most frequent
  masked token of these batches (`pipeline.unigram_accuracy`), the plateau a
  model that has not yet learned to use context sits at.
  """
  eval_step = jax.jit(lambda params, frozen, batch: loss_fn(params, frozen, batch, None, True)[1])
  unigram = pipeline.unigram_accuracy(eval_batches)

  def evaluate(params, frozen, to_global):
    totals = {}
    for batch in eval_batches:
      metrics = jax.device_get(eval_step(params, frozen, to_global(batch)))
      for key, value in metrics.items():
        totals[key] = totals.get(key, 0.0) + float(value)
    numbers = objectives.summarize(totals)
    if "mlm_accuracy" in numbers:
      numbers["mlm_unigram_accuracy"] = unigram
    return numbers

  return evaluate


def build_job(config, workdir: str) -> loop.Job:
  cfg = setup.encoder_config(config)
  options = batch_options(config)
  train_docs, eval_docs = split_corpus(config)
  tokenizer = setup.tokenizer_for(config, workdir)  # trained on all of data.corpus
  model = PretrainingModel(cfg, pair_head=config.pair_head)
  seq = config.data.max_seq_length

  def init_params(rng):
    ids = jnp.zeros((1, seq), jnp.int32)
    return model.init(rng, ids, masked_positions=ids[:, :1])["params"]

  mlm_loss = objectives.pretraining_loss_fn(model, pair_weight=config.train.pair_weight)
  loss_fn = lambda params, frozen, batch, rng, deterministic: mlm_loss(
      params, batch, rng, deterministic)

  eval_batches = pipeline.eval_batches(
      eval_docs, tokenizer, num_batches=config.data.eval_batches, seed=config.seed + 1,
      corpus_name=config.data.eval_corpus or f"held-out part of {config.data.corpus}",
      **options)
  evaluate = make_evaluate(loss_fn, eval_batches)

  def make_train_iter(state):
    return pipeline.pretraining_batches(train_docs, tokenizer, seed=config.seed, state=state,
                                        corpus_name=config.data.corpus, **options)

  meta = setup.model_meta(cfg, pair_head=config.pair_head, job="pretrain")
  return loop.Job(name=f"pretrain {config.name}", init_params=init_params, loss_fn=loss_fn,
                  make_train_iter=make_train_iter, evaluate=evaluate, meta=meta)


def run(config, workdir: str) -> dict:
  return loop.train(config, workdir, build_job(config, workdir))
