"""Pieces every training mode needs: the encoder config, the tokenizer, the corpus split and
batch options, the model's fingerprint, the resolved config file."""

import contextvars
import json
import os
from typing import Optional

import jax
from jax.experimental import multihost_utils
from ml_collections import config_dict
import numpy as np

from lite_bert import __version__
from lite_bert import files
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig


def _corpora():
  """lite_bert.data.corpora, imported when a corpus is read (it pulls in tensorflow-datasets,
  which the training step alone, e.g. on a benchmark machine, does not need)."""
  from lite_bert.data import corpora  # pylint: disable=import-outside-toplevel
  return corpora


def _pipeline():
  """lite_bert.data.pipeline, imported when batches are checked or made (it pulls in grain)."""
  from lite_bert.data import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline


OFF_WORDS = ("off", "false", "no", "none", "0")


def use_compilation_cache(config) -> Optional[str]:
  """Turns on JAX's persistent compilation cache for this process; returns its folder.

  `config.compilation_cache` wins, then $LITE_BERT_COMPILE_CACHE, then a folder
  already given to JAX (JAX_COMPILATION_CACHE_DIR), then
  ~/.cache/lite_bert/jax; 'off' (in either place; or false / no / none / 0, which
  would otherwise name a folder) turns it off. Compiles shorter than JAX's
  threshold (1 s) are not stored.
  """
  folder = config.get("compilation_cache", "") or os.environ.get("LITE_BERT_COMPILE_CACHE", "")
  if folder.strip().lower() in OFF_WORDS:
    return None
  folder = folder or jax.config.jax_compilation_cache_dir or os.path.join(
      os.path.expanduser("~"), ".cache", "lite_bert", "jax")
  jax.config.update("jax_compilation_cache_dir", folder)
  return folder


def encoder_config(config) -> EncoderConfig:
  """The validated encoder config, checked against the data's sequence length."""
  cfg = EncoderConfig.from_dict(config.model)
  max_len = config.get("data", {}).get("max_seq_length", 0)
  if max_len > cfg.max_position_embeddings:
    raise UserError(
        f"data.max_seq_length={max_len} is longer than the position table "
        f"(model.max_position_embeddings={cfg.max_position_embeddings})")
  return cfg


def tokenizer_for(config, workdir: str, documents=None) -> tokenizers.Tokenizer:
  """The run's tokenizer: `config.tokenizer.path`, or one trained into the workdir.

  A sentencepiece model trained here (first run only) has exactly
  `model.vocab_size` pieces. A given tokenizer's vocabulary must equal
  `model.vocab_size`. In a job of several processes (one shared workdir),
  process 0 decides and trains; the others wait for it, then read its file.
  """
  path = config.tokenizer.path
  where = f"--config.tokenizer.path={path}"
  if not path:
    path = os.path.join(workdir, "tokenizer", "spm.model")
    where = path
    missing = not os.path.exists(path)
    if jax.process_count() > 1:  # process 0's answer, so every process takes the same path
      missing = bool(multihost_utils.broadcast_one_to_all(np.asarray(missing, np.int32)))
    if missing and jax.process_index() == 0:
      if documents is None:
        documents = _corpora().open_corpus(config.data.corpus, format=config.data.format)
      folder = os.path.dirname(path)
      created = not os.path.isdir(folder)
      os.makedirs(folder, exist_ok=True)
      print(f"training a sentencepiece tokenizer of {config.model.vocab_size} pieces "
            f"on {config.data.corpus} -> {path}", flush=True)
      # Trained under a temporary name and renamed (.vocab first, .model last):
      # a run killed meanwhile leaves no half-written spm.model for the restart,
      # and a failed training leaves nothing.
      partial = os.path.join(folder, "spm.incomplete.model")
      partial_vocab = partial[:-len(".model")] + ".vocab"
      try:
        tokenizers.train_sentencepiece_on_documents(
            documents, vocab_size=config.model.vocab_size, model_path=partial,
            lower_case=config.tokenizer.lower_case,
            max_sentences=config.tokenizer.max_sentences, seed=config.seed)
      except BaseException:
        for leftover in (partial, partial_vocab):
          if os.path.exists(leftover):
            os.remove(leftover)
        if created and not os.listdir(folder):
          os.rmdir(folder)
        raise
      os.replace(partial_vocab, path[:-len(".model")] + ".vocab")
      os.replace(partial, path)
    if missing and jax.process_count() > 1:
      multihost_utils.sync_global_devices("lite_bert_tokenizer_trained")
  tokenizer = tokenizers.load_tokenizer(path)
  tokenizers.check_vocab_matches(tokenizer, config.model.vocab_size, where)
  return tokenizer


# Fields that change how a model computes but not what its params are: a
# checkpoint restores across them (e.g. bf16 fine-tuning of an fp32 run).
RUNTIME_FIELDS = ("dtype", "remat", "scan_unroll", "dropout_rate", "attention_dropout_rate")
# How a run stores its layers: its own choice (not taken from an init), but part
# of its checkpoints' meta, since their trees differ.
LAYOUT_FIELDS = ("scan_layers",)


def model_meta(cfg: EncoderConfig, **extra) -> dict:
  """What a checkpoint must agree with to be restored into this run."""
  arch = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
  return dict(lite_bert_version=__version__, model=arch, **extra)


# Modes that own their workdir write `config.json`; the others (which read a
# workdir, like evaluate, or only describe a model) write `config_<mode>.json`
# so they never overwrite the config of the run they look at.
TRAINING_MODES = ("tokenizer", "pretrain", "distill", "finetune")


def write_config(config: config_dict.ConfigDict, workdir: str) -> str:
  """Writes the resolved config atomically; returns the path."""
  mode = config.get("mode")
  name = "config.json" if mode in TRAINING_MODES else f"config_{mode}.json"
  path = os.path.join(workdir, name)
  return files.atomic_write(path, config.to_json_best_effort(indent=2, sort_keys=True))


# The config fields set on the command line (`--config.a.b=...`), as launch.py
# parsed them: a mode that overrides a field itself (fine-tuning's architecture
# from `finetune.init`, its steps from `finetune.epochs`) refuses when the user
# set that field explicitly to something else. Empty for programmatic runs.
COMMAND_LINE_FIELDS: contextvars.ContextVar = contextvars.ContextVar(
    "lite_bert_command_line_fields", default=frozenset())


# The --config argument launch.py was given ('configs/bert.py:tiny'), for the
# next commands a run's summary suggests; '' for programmatic runs.
CONFIG_ARGUMENT: contextvars.ContextVar = contextvars.ContextVar(
    "lite_bert_config_argument", default="")


def set_on_command_line(field: str) -> bool:
  """Whether `field` (e.g. 'model.num_heads') was given as --config.<field>."""
  return field in COMMAND_LINE_FIELDS.get()


# Fields a rerun of a workdir may change and still be the same run: how long it
# runs, how often it logs, evaluates and saves, and on what devices; where a
# teacher is (its weights are checked by digest, `teachers.check_same_teacher`)
# and where the init came from (read on a fresh start only).
RERUN_MAY_CHANGE = ("name", "compilation_cache", "train.num_steps", "train.log_every",
                    "train.eval_every", "train.sync_every", "train.stop_after",
                    "train.on_nonfinite", "checkpoint.", "mesh.", "distributed.", "evaluate.",
                    "predict.", "data.eval_batches", "finetune.eval_batch_size",
                    "distill.teacher", "finetune.teacher", "finetune.init", "pretrain.init")


def _flatten(tree, prefix: str = "") -> dict:
  if isinstance(tree, dict):
    flat = {}
    for key, value in tree.items():
      flat.update(_flatten(value, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: tree}


def check_same_run(config: config_dict.ConfigDict, workdir: str) -> None:
  """Refuses to resume a workdir's run with settings that would make it another run.

  Compares the config with the workdir's config.json (which describes the
  checkpoints beside it) field by field, except `RERUN_MAY_CHANGE` and fields
  config.json does not have (added by a later lite_bert); a refused
  rerun leaves config.json as it was.

  Raises:
    UserError: naming the differing fields, their values in config.json and here.
  """
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      saved = _flatten(json.load(f))
  except (OSError, ValueError):
    return  # no readable record to hold the run to
  now = _flatten(json.loads(config.to_json_best_effort()))
  # A field config.json lacks was added to lite_bert after the run began: not a change.
  differ = [key for key in sorted(saved)
            if not key.startswith(RERUN_MAY_CHANGE) and key not in RERUN_MAY_CHANGE
            and saved[key] != now.get(key, "<absent>")]
  if differ:
    shown = lambda values: ", ".join(f"{k}={values.get(k, '<absent>')!r}" for k in differ[:4])
    more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
    raise UserError(f"{workdir} holds a run made with {shown(saved)}; this config has "
                    f"{shown(now)}{more}. Resuming needs the run's own settings "
                    f"(config.json left as it was); use a new --workdir for another run")


PAIR_OBJECTIVES = ("nsp", "sop", "none")
MASKINGS = ("token", "whole_word", "ngram")


def split_corpus(config):
  """(train documents, eval documents) from `data.corpus` / `data.eval_corpus`."""
  documents = _corpora().open_corpus(config.data.corpus, format=config.data.format)
  if config.data.eval_corpus:
    return documents, _corpora().open_corpus(config.data.eval_corpus, format=config.data.format)
  held_out = config.data.eval_documents
  if len(documents) <= held_out:
    raise UserError(
        f"corpus {config.data.corpus} has {len(documents)} documents; holding out "
        f"data.eval_documents={held_out} for evaluation leaves none to train on. Set "
        f"data.eval_corpus or lower data.eval_documents")
  split_at = len(documents) - held_out
  return documents[:split_at], documents[split_at:]


def check_document_counts(config, options: dict, train_docs, eval_docs) -> None:
  """UserError, before a tokenizer is trained, when a corpus has too few documents for
  `data.shards` (one per shard) or for NSP (a random next from another document)."""
  _pipeline().check_shards(
      options["shards"], global_batch_size=options["batch_size"] * options["process_count"],
      process_count=options["process_count"], pair_objective=options["pair_objective"],
      documents={config.data.corpus: len(train_docs),
                 config.data.eval_corpus or f"held-out part of {config.data.corpus}":
                     len(eval_docs)})


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
  for name, low in (("max_predictions_per_seq", 1), ("ngram_max", 1)):
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise UserError(f"data.{name} must be an integer >= {low}, got {value!r}")
  for name, low_open in (("mask_rate", True), ("short_seq_prob", False)):
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        (0.0 < value if low_open else 0.0 <= value) and value <= 1.0):
      raise UserError(f"data.{name} must be a number in {'(' if low_open else '['}0, 1], "
                      f"got {value!r}")
  options = dict(
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
      shards=data.get("shards", 0),  # runs saved before data.shards read everything
  )
  _pipeline().check_shards(options["shards"], global_batch_size=data.batch_size,
                           process_count=jax.process_count())
  return options
