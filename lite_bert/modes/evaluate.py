"""`mode=evaluate`: scores a finished workdir; a fine-tuning run on its task, a
pretraining or distillation run on held-out text (masked LM).

  python launch.py --config=configs/finetune.py:sst2 --config.mode=evaluate \
      --workdir=FINETUNED_DIR --config.evaluate.split=validation

Reads the run's own `config.json` (task, model, tokenizer) from the workdir,
restores the best-dev params (or the latest checkpoint with
`--config.evaluate.checkpoint=latest`), and writes `evaluate_<split>.json`
and `evaluate_predictions_<split>.tsv` next to the run's outputs. The command's
own config only supplies `evaluate.*`.

  python launch.py --config=configs/bert.py:tiny --config.mode=evaluate \
      --workdir=PRETRAINED_DIR \
      --config.data.eval_corpus=../shared/data/wikitext/wikitext-2-raw/wiki.valid.raw

On a pretraining or distillation workdir: masked-LM loss, accuracy (with its
95% interval) and perplexity of its latest checkpoint on `data.eval_corpus`,
written to `evaluate_mlm_<corpus name>.json` (e.g. `evaluate_mlm_wiki.valid.json`)
or, with `--config.data.eval_batches=0`, on every full batch of the corpus's
first epoch (the whole held-out split) to `evaluate_mlm_<corpus name>_all.json`,
beside the sampled one. The command supplies `data.eval_corpus`,
`data.eval_batches`, `data.masking` and `data.format`; the tokenizer, sequence
length, batch size, predictions per sequence and seed are the run's. The
examples are single segments (no NSP/SOP pairs), so BERT, ALBERT and DistilBERT
runs sharing a tokenizer, length, batch and seed are scored on exactly the same
masked tokens.
"""

import functools
import os
import re

import jax
import jax.numpy as jnp

from lite_bert import files
from lite_bert import pretrained
from lite_bert.data import corpora
from lite_bert.data import pipeline
from lite_bert.errors import UserError
from lite_bert.models.heads import ClassificationModel
from lite_bert.models.heads import PretrainingModel
from lite_bert.train import fingerprints
from lite_bert.train import evaluation
from lite_bert.train import mesh as mesh_lib
from lite_bert.train import objectives
from lite_bert.train import setup
from lite_bert.train import task_eval


def check_params_fit(model, params, run_config, workdir: str, choice: str) -> None:
  """Refuses params whose tree differs from the model its config.json describes."""
  ids = jax.ShapeDtypeStruct((1, run_config.data.max_seq_length), jnp.int32)
  expected = jax.eval_shape(lambda i: model.init(jax.random.key(0), i)["params"], ids)
  difference = fingerprints.first_tree_difference(fingerprints.tree_fingerprint(params),
                                                    fingerprints.tree_fingerprint(expected))
  if difference:
    raise UserError(f"the {choice} params in {workdir} do not fit the model its config.json "
                    f"describes: parameter {difference}")


def run(config, workdir: str) -> dict:
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} has no config.json: not a fine-tuning workdir")
  run_config = pretrained.read_run_config(workdir)
  if run_config.get("mode") in MLM_MODES:
    return evaluate_mlm(config, run_config, workdir)
  if run_config.get("mode") != "finetune":
    raise UserError(f"{workdir} holds a {run_config.get('mode')!r} run, not a fine-tuning, "
                    f"pretraining or distillation run")
  # A model config (configs/bert.py ...) has no evaluate.split: the dev split then.
  split = config.evaluate.get("split", "validation")
  choice = config.evaluate.checkpoint
  params, _ = pretrained.restore_chosen(workdir, choice, "evaluate.checkpoint")
  spec = task_eval.task_spec(run_config)
  if split not in spec.splits:
    raise UserError(f"task {spec.name} has no split {split!r}; it has {sorted(spec.splits)}")
  with run_config.unlocked():
    run_config.finetune.init = ""  # the params come from this workdir
    run_config.finetune.eval_splits = (split,)
  cfg = setup.encoder_config(run_config)
  tokenizer = task_eval.tokenizer_of_run(run_config, workdir)
  data = task_eval.load_task_data(run_config, spec, tokenizer, with_train=False)
  model = ClassificationModel(cfg, num_labels=spec.num_labels)
  check_params_fit(model, params, run_config, workdir, choice)
  score = task_eval.make_scorer(run_config, spec, data, model, workdir,
                               files=("evaluate_{split}.json",
                                      "evaluate_predictions_{split}.tsv"))
  mesh = mesh_lib.make_mesh(config.mesh)
  numbers = score(params, None, functools.partial(mesh_lib.host_batch_to_global, mesh=mesh))
  if jax.process_index() == 0:
    print(f"{spec.name} {split} ({choice} checkpoint): " +
          " ".join(f"{k}={v:.4f}" for k, v in numbers.items()))
  return numbers


# ------------------------------------------------- pretraining / distillation

MLM_MODES = ("pretrain", "distill")
_COMPRESSED = (".xz", ".gz", ".bz2")
_TEXT = (".txt", ".raw", ".tokens")


def corpus_label(spec: str) -> str:
  """A file-name-safe name for a corpus spec: 'wiki.valid' for .../wiki.valid.raw."""
  name = spec.rstrip("/")
  if name.startswith(corpora.TFDS_PREFIX):
    name = name[len(corpora.TFDS_PREFIX):]
  else:
    name = os.path.basename(name)
    for suffixes in (_COMPRESSED, _TEXT):
      for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
          name = name[:-len(suffix)]
          break
  return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "corpus"


def mlm_result_path(workdir: str, eval_corpus: str, whole: bool = False) -> str:
  """Where `evaluate_mlm` writes its numbers for `eval_corpus` (`whole`: all its batches)."""
  suffix = "_all" if whole else ""
  return os.path.join(workdir, f"evaluate_mlm_{corpus_label(eval_corpus)}{suffix}.json")


def accuracy_interval(accuracy: float, masked_tokens: int) -> list:
  """95% Wilson interval of an MLM accuracy over `masked_tokens` predictions
  (scipy.stats.binomtest), each masked token counted as an independent draw."""
  import scipy.stats  # pylint: disable=import-outside-toplevel
  correct = int(round(accuracy * masked_tokens))
  ci = scipy.stats.binomtest(correct, masked_tokens).proportion_ci(0.95, method="wilson")
  return [float(ci.low), float(ci.high)]


def evaluate_mlm(config, run_config, workdir: str) -> dict:
  """Masked-LM numbers of a pretraining / distillation workdir on `data.eval_corpus`."""
  mode = run_config.get("mode")
  data = config.get("data") or {}
  corpus = data.get("eval_corpus", "")
  if not corpus:
    raise UserError(f"{workdir} holds a {mode!r} run: scoring it needs "
                    f"--config.data.eval_corpus=FILE (held-out text for the masked LM)")
  with run_config.unlocked():
    run_config.data.eval_corpus = corpus
    run_config.data.eval_batches = data.get("eval_batches", run_config.data.eval_batches)
    run_config.data.masking = data.get("masking", run_config.data.masking)
    run_config.data.format = data.get("format", run_config.data.format)
    run_config.data.shards = data.get("shards", 0)  # how this job's hosts split the corpus
    run_config.data.pair_objective = "none"  # single segments: the same batches for every model
  options = setup.batch_options(run_config)  # checks masking; refuses before any work
  if run_config.data.eval_batches < 0:
    raise UserError(f"data.eval_batches must be a number of batches, or 0 for every full "
                    f"batch of the corpus, got {run_config.data.eval_batches}")
  # A pretraining run keeps no best-dev params: 'best' (fine-tuning's default) = the newest.
  choice = str(config.get("evaluate", {}).get("checkpoint", "latest"))
  if choice not in ("best", "latest") and not choice.isdigit():
    raise UserError(f"evaluate.checkpoint must be 'latest' or a step number for a {mode} run, "
                    f"got {choice!r}")
  loaded = pretrained.load(workdir, step=int(choice) if choice.isdigit() else None,
                           choose_with="--config.evaluate.checkpoint={step}")
  if "mlm_head" not in loaded.params:
    raise UserError(f"{workdir} has no MLM head weights to score")
  if loaded.tokenizer is None:
    raise UserError(f"{workdir} has no tokenizer (tokenizer.path in its config.json, or "
                    f"tokenizer/spm.model)")
  documents = corpora.open_corpus(corpus, format=run_config.data.format)
  whole = run_config.data.eval_batches == 0  # every full batch of the first epoch
  batches = pipeline.eval_batches(
      documents, loaded.tokenizer, num_batches=None if whole else run_config.data.eval_batches,
      seed=run_config.seed + 1, corpus_name=corpus, **options)
  model = PretrainingModel(loaded.cfg, pair_head=loaded.pair_head)
  mlm = objectives.pretraining_loss_fn(model, pair_weight=0.0)
  score = evaluation.make_mlm_evaluate(
      lambda params, frozen, batch, rng, deterministic: mlm(params, batch, rng, deterministic),
      batches)
  mesh = mesh_lib.make_mesh(config.get("mesh"))
  numbers = score(loaded.params, None,
                  functools.partial(mesh_lib.host_batch_to_global, mesh=mesh))
  numbers = {k: numbers[k] for k in ("mlm_loss", "mlm_accuracy", "mlm_perplexity",
                                    "mlm_unigram_accuracy")}
  masked = int(evaluation.masked_token_counts(batches).sum())
  result = dict(numbers, mlm_accuracy_ci95=accuracy_interval(numbers["mlm_accuracy"], masked),
                corpus=corpus, step=loaded.step, mode=mode,
                arch=run_config.get("arch"), masking=run_config.data.masking,
                # Counted over the global batches (each process holds its rows).
                batches=len(batches),
                sequences=sum(len(b["input_ids"]) for b in batches) * jax.process_count(),
                masked_tokens=masked,
                batch_size=run_config.data.batch_size,
                max_seq_length=run_config.data.max_seq_length, seed=run_config.seed + 1)
  path = mlm_result_path(workdir, corpus, whole)
  if jax.process_index() == 0:
    files.atomic_write_json(path, result)
    print(f"{run_config.get('name', mode)} step {loaded.step} on {corpus} "
          f"({result['masked_tokens']} masked tokens, {run_config.data.masking} masking): " +
          " ".join(f"{k}={v:.4f}" for k, v in numbers.items()) + f" -> {path}")
  return result
