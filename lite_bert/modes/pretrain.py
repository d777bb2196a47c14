"""`mode=pretrain`: MLM + NSP (BERT) or MLM + SOP (ALBERT) on a corpus.

  python launch.py --config=configs/albert.py:tiny --config.mode=pretrain --workdir=DIR

Trains (or resumes, if DIR has checkpoints) for `train.num_steps` steps;
evaluates held-out MLM accuracy / perplexity and NSP/SOP accuracy every
`train.eval_every` steps. Outputs in DIR: config.json, tokenizer/,
checkpoints/, metrics.jsonl, tensorboard/.

`--config.pretrain.init=OTHER` starts from another run's params (a lite_bert
workdir or a Hugging Face folder; its architecture and tokenizer become this
run's, heads it lacks start fresh) with a new optimizer and schedule, as BERT's
second phase does at a longer sequence length:

  python launch.py --config=configs/bert.py:tiny --config.mode=pretrain --workdir=DIR128 \
      --config.pretrain.init=DIR32 --config.data.max_seq_length=128
"""

import functools

import jax.numpy as jnp

from lite_bert import pretrained
from lite_bert.data import pipeline
from lite_bert.models import convert
from lite_bert.models import flops
from lite_bert.models.heads import PretrainingModel
from lite_bert.train import evaluation
from lite_bert.train import loop
from lite_bert.train import objectives
from lite_bert.train import setup

def build_job(config, workdir: str) -> loop.Job:
  options = setup.batch_options(config)
  train_docs, eval_docs = setup.split_corpus(config)
  setup.check_document_counts(config, options, train_docs, eval_docs)  # before any work
  source = pretrained.adopt_init(config, "pretrain") if config.pretrain.init else None
  cfg = setup.encoder_config(config)
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
  evaluate = evaluation.make_mlm_evaluate(loss_fn, eval_batches)

  def make_train_iter(state):
    return pipeline.pretraining_batches(train_docs, tokenizer, seed=config.seed, state=state,
                                        corpus_name=config.data.corpus, **options)

  load_params = None
  if source is not None:  # on a fresh start: every param the source has, the rest fresh
    load_params = lambda fresh: convert.fill_missing(source.params, fresh)

  meta = setup.model_meta(cfg, pair_head=config.pair_head, job="pretrain")
  return loop.Job(name=f"pretrain {config.name}", init_params=init_params, loss_fn=loss_fn,
                  make_train_iter=make_train_iter, evaluate=evaluate, meta=meta,
                  load_params=load_params,
                  step_flops=functools.partial(flops.step_flops, cfg,
                                               pair_head=bool(config.pair_head)))


def run(config, workdir: str) -> dict:
  return loop.train(config, workdir, build_job(config, workdir))
