"""`mode=distill`: a DistilBERT student learns from a frozen BERT teacher (Sanh et al., 2019).

  python launch.py --config=configs/distilbert.py:tiny --config.mode=distill \
      --config.distill.teacher=TEACHER --workdir=DIR

TEACHER is a lite_bert pretraining workdir or a Hugging Face BERT folder with
MLM head weights (`pretrained.load`). The student is `config.model`; it uses
the teacher's tokenizer (copied to DIR/tokenizer/, so DIR later loads like any
workdir) and, with `distill.init_from_teacher`, starts as the teacher's layers
`distill.layers` (`models/student.py`) plus its embeddings and MLM head; with
`distill.fold_token_type` the teacher's token-type-0 row is added to the
position table, so the initialised student computes exactly the teacher's
layer subset on single-segment input.

One jitted step runs the teacher (deterministic, params in `Job.frozen`, never
trained) and the student (with dropout) on the same masked batch and trains
the student on `objectives.distillation_loss`: alpha_ce * T^2 KL + alpha_mlm *
MLM + alpha_cos * (1 - cos) + alpha_mse * logit MSE + alpha_hidden * the
TinyBERT-style MSE between student layer i and teacher layer (i + 1) *
teacher_layers / student_layers - 1 (each student layer stands in for that many
teacher layers; the last pair is the two last hidden states).

A teacher without an MLM head (a sentence encoder such as all-MiniLM-L6-v2)
can teach through the hidden-state terms alone (alpha_ce = alpha_mse = 0):
the teacher then runs as a bare encoder and the student's MLM head only at
the masked positions, so no [batch, seq, vocab] logits are computed.

The held-out evaluation gives the student's MLM loss / accuracy / perplexity, the KL and cosine terms,
the weighted total, and (once, for reference) the teacher's own MLM numbers on
the same batches.

Checkpoints, metrics and resume are the train loop's. The checkpoint meta
records the teacher (path, step, architecture, a sha256 of its weights); a
resume with a different teacher is refused before anything is restored.
"""

import functools
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lite_bert import files
from lite_bert import teachers
from lite_bert.data import pipeline
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models import flops
from lite_bert.models import student as student_lib
from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Encoder
from lite_bert.models.heads import PretrainingModel
from lite_bert.train import evaluation
from lite_bert.train import loop
from lite_bert.train import objectives
from lite_bert.train import setup

WEIGHTS = ("alpha_ce", "alpha_mlm", "alpha_cos", "alpha_mse", "alpha_hidden")
# Terms that need the teacher's MLM logits at every position.
LOGIT_WEIGHTS = ("alpha_ce", "alpha_mse")


# --------------------------------------------------------------------- config


def loss_options(config) -> dict:
  """The `distillation_loss` keyword arguments from `config.distill`, checked."""
  d = config.distill
  options = {name: float(d.get(name, 0.0)) for name in WEIGHTS}
  for name, value in options.items():
    if not value >= 0.0:  # also refuses NaN
      raise UserError(f"distill.{name} must be >= 0, got {value!r}")
  if not any(options.values()):
    raise UserError("distill.alpha_ce, alpha_mlm, alpha_cos, alpha_mse and alpha_hidden are "
                    "all 0: the student would have nothing to learn")
  if not float(d.temperature) > 0.0:
    raise UserError(f"distill.temperature must be > 0, got {d.temperature!r}")
  options["temperature"] = float(d.temperature)
  options["kl_on_masked_only"] = bool(d.kl_on_masked_only)
  return options


def needs_teacher_logits(options: dict) -> bool:
  return any(options[name] for name in LOGIT_WEIGHTS)


def hidden_pairs(teacher_layers: int, student_layers: int) -> tuple[tuple[int, int], ...]:
  """(student, teacher) `hidden_states` indices for the intermediate-layer MSE.

  TinyBERT's uniform map: student layer m (1-based) learns teacher layer
  m * teacher_layers / student_layers, so the last layers pair up. Index 0
  (the embeddings) is left out. 6 -> 3: ((1, 2), (2, 4), (3, 6)).
  """
  if teacher_layers % student_layers:
    raise UserError(f"the intermediate-layer loss (distill.alpha_hidden) needs a teacher "
                    f"depth that is a multiple of the student's: {teacher_layers} teacher "
                    f"layers, {student_layers} student layers")
  k = teacher_layers // student_layers
  return tuple((m, m * k) for m in range(1, student_layers + 1))


def layer_ids(config) -> Optional[tuple[int, ...]]:
  """`distill.layers` as a tuple of ints, or None (= `default_layer_ids`)."""
  layers = config.distill.layers
  if layers is None or len(layers) == 0:
    return None
  if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in layers):
    raise UserError(f"distill.layers must be teacher layer indices (ints), got {list(layers)}")
  return tuple(int(i) for i in layers)


# -------------------------------------------------------------------- teacher


def keep_tokenizer(tokenizer: tokenizers.Tokenizer, workdir: str) -> str:
  """Copies the shared tokenizer into DIR/tokenizer/ so the student's workdir is self-contained.

  A SentencePiece model becomes DIR/tokenizer/spm.model (where `pretrained.load`
  looks); a WordPiece file keeps its name. The tokenizer_config.json /
  special_tokens_map.json next to it come along (they hold do_lower_case and the
  special tokens). A resumed run must find the same files. Returns the path of
  the copied tokenizer file.
  """
  src = tokenizer.source
  folder = os.path.join(workdir, "tokenizer")
  name = "spm.model" if src.endswith(".model") else os.path.basename(src)
  copies = [(src, name)] + [
      (os.path.join(os.path.dirname(src), extra), extra)
      for extra in ("tokenizer_config.json", "special_tokens_map.json")
      if os.path.isfile(os.path.join(os.path.dirname(src), extra))]
  os.makedirs(folder, exist_ok=True)
  for path, target_name in copies:
    target = os.path.join(folder, target_name)
    if os.path.realpath(path) == os.path.realpath(target):
      continue
    with open(path, "rb") as f:
      data = f.read()
    if os.path.exists(target):
      with open(target, "rb") as f:
        if f.read() != data:
          raise UserError(f"{target} differs from the teacher's tokenizer file {path}: "
                          f"this workdir was made with another vocabulary; use a new --workdir")
      continue
    files.atomic_copy(path, target)
  return os.path.join(folder, name)


def record_tokenizer(config, copied: str) -> None:
  """Points `config.tokenizer.path` at a copied tokenizer `pretrained.load` would not find.

  Loading a workdir looks for tokenizer.path, else tokenizer/spm.model; a
  WordPiece teacher's vocabulary (tokenizer.json / vocab.txt) needs the path.
  The loop writes the config (config.json) once the run is accepted.
  """
  if os.path.basename(copied) != "spm.model" and not config.tokenizer.path:
    config.tokenizer.path = os.path.abspath(copied)


# ------------------------------------------------------------------- student


def fold_token_type_row(student_params: dict, teacher_params: dict) -> dict:
  """Adds the teacher's token-type-0 embedding to the student's position table.

  The teacher embeds LN(word + position + type[0]) for a single segment; a
  student without token types embeds LN(word + position'). With position' =
  position + type[0] the two are the same function, so the initialised
  student is exactly the teacher's layer subset (up to float rounding of the
  sum). A new array: the teacher's tables are not modified.
  """
  t_emb = teacher_params["encoder"]["embeddings"]
  if "token_type_embeddings" not in t_emb:
    return student_params
  s_emb = student_params["encoder"]["embeddings"]
  if "token_type_embeddings" in s_emb:
    return student_params  # the student has token types: copied as they are
  row = np.asarray(t_emb["token_type_embeddings"]["embedding"])[0]
  table = np.asarray(s_emb["position_embeddings"]["embedding"])
  s_emb["position_embeddings"] = {"embedding": (table + row[None, :]).astype(table.dtype)}
  return student_params


def init_student_from_teacher(teacher_params: dict, teacher_cfg: EncoderConfig,
                              student_cfg: EncoderConfig, layers: Optional[tuple[int, ...]],
                              student_params: dict, *, fold_token_type: bool) -> dict:
  """`student_params_from_teacher`, then (optionally) `fold_token_type_row`."""
  params = student_lib.student_params_from_teacher(teacher_params, teacher_cfg, student_cfg,
                                                   layers, student_params)
  if fold_token_type:
    params = fold_token_type_row(params, teacher_params)
  return params


# ---------------------------------------------------------------------- job


def make_loss_fn(student_model: PretrainingModel, teacher_model: PretrainingModel,
                 options: dict, pairs: tuple[tuple[int, int], ...] = ()):
  """loss_fn(params, frozen, batch, rng, deterministic) -> (loss, metric sums).

  With teacher logits (alpha_ce / alpha_mse > 0) both models' MLM heads run at
  every position; otherwise the teacher runs as a bare encoder and the
  student's head only at the masked positions. `pairs`: `hidden_pairs`, used
  when alpha_hidden > 0.
  """
  with_logits = needs_teacher_logits(options)
  with_hidden = bool(options.get("alpha_hidden")) and bool(pairs)
  teacher_encoder = Encoder(teacher_model.cfg)
  keep = ("last_hidden_state",) + (("hidden_states",) if with_hidden else ())

  def loss_fn(params, frozen, batch, rng, deterministic):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    token_types = batch.get("token_type_ids")
    if token_types is None:
      token_types = jnp.zeros_like(ids)
    if with_logits:
      teacher_out = teacher_model.apply({"params": frozen}, ids, mask, token_types, None,
                                        deterministic=True, output_hidden_states=with_hidden)
    else:
      teacher_out = teacher_encoder.apply({"params": frozen["encoder"]}, ids, mask, token_types,
                                          deterministic=True, output_hidden_states=with_hidden)
    teacher_out = jax.lax.stop_gradient(
        {k: teacher_out[k] for k in keep + (("mlm_logits",) if with_logits else ())})
    student_out = student_model.apply(
        {"params": params}, ids, mask, None, None if with_logits else batch["masked_positions"],
        deterministic=deterministic, output_hidden_states=with_hidden,
        rngs=None if rng is None else {"dropout": rng})
    return objectives.distillation_loss(student_out, teacher_out, batch,
                                        hidden_pairs=pairs if with_hidden else (), **options)

  return loss_fn


def make_evaluate(loss_fn, teacher_model: PretrainingModel, eval_batches, options: dict,
                  *, teacher_has_head: bool = True):
  """(params, frozen, to_global) -> the student's held-out numbers (+ the teacher's, once)."""
  student_eval = evaluation.make_mlm_evaluate(loss_fn, eval_batches)
  teacher_mlm = objectives.pretraining_loss_fn(teacher_model, pair_weight=0.0)

  @jax.jit
  def teacher_step(frozen, batch):
    batch = dict(batch)
    if "token_type_ids" not in batch:
      batch["token_type_ids"] = jnp.zeros_like(batch["input_ids"])
    return teacher_mlm(frozen, batch, None, True)[1]

  teacher_numbers = {}

  def evaluate(params, frozen, to_global):
    numbers = student_eval(params, frozen, to_global)
    numbers["distill_loss"] = (
        options["alpha_ce"] * numbers["kl"] + options["alpha_mlm"] * numbers["mlm_loss"]
        + options["alpha_cos"] * numbers["cosine_loss"]
        + options["alpha_mse"] * numbers["logit_mse"]
        + options["alpha_hidden"] * numbers.get("hidden_mse", 0.0))
    if not teacher_numbers and teacher_has_head:  # frozen teacher: its numbers never change
      summary = objectives.summarize(evaluation.summed(
          lambda batch: teacher_step(frozen, batch), eval_batches, to_global))
      teacher_numbers.update({f"teacher_{k}": summary[k]
                              for k in ("mlm_loss", "mlm_accuracy", "mlm_perplexity")})
    numbers.update(teacher_numbers)
    return numbers

  return evaluate


def build_job(config, workdir: str) -> loop.Job:
  if "distill" not in config:
    raise UserError(f"{config.name} has no distill section; distill mode needs a student "
                    f"config such as configs/distilbert.py")
  options = loss_options(config)
  layers = layer_ids(config)
  cfg = setup.encoder_config(config)
  if config.pair_head or config.data.pair_objective != "none":
    raise UserError("the distilled student has no pair head: set pair_head=False and "
                    "data.pair_objective=none (configs/distilbert.py does)")
  teacher = teachers.load_teacher(config, cfg, needs_logits=needs_teacher_logits(options))
  tokenizers.check_vocab_matches(teacher.tokenizer, cfg.vocab_size, "config.model.vocab_size")
  if config.distill.init_from_teacher:  # refuse a misfit before any data work
    student_lib.check_student_fits(
        teacher.source_cfg, cfg,
        layers or student_lib.default_layer_ids(teacher.source_cfg.num_layers, cfg.num_layers))
  teachers.check_same_teacher(workdir, teacher.identity,
                     hint=" (e.g. --config.distill.teacher_step={step})")

  batch_options = setup.batch_options(config)
  train_docs, eval_docs = setup.split_corpus(config)
  student_model = PretrainingModel(cfg, pair_head=False)
  teacher_model = PretrainingModel(teacher.cfg, pair_head=False)
  seq = config.data.max_seq_length

  def init_params(rng):
    ids = jnp.zeros((1, seq), jnp.int32)
    return student_model.init(rng, ids, masked_positions=ids[:, :1])["params"]

  load_params = None
  if config.distill.init_from_teacher:
    load_params = lambda random_params: init_student_from_teacher(
        teacher.full_params, teacher.source_cfg, cfg, layers, random_params,
        fold_token_type=bool(config.distill.fold_token_type))

  pairs = ()
  if options["alpha_hidden"]:
    pairs = hidden_pairs(teacher.source_cfg.num_layers, cfg.num_layers)
  loss_fn = make_loss_fn(student_model, teacher_model, options, pairs)
  eval_batches = pipeline.eval_batches(
      eval_docs, teacher.tokenizer, num_batches=config.data.eval_batches, seed=config.seed + 1,
      corpus_name=config.data.eval_corpus or f"held-out part of {config.data.corpus}",
      **batch_options)
  evaluate = make_evaluate(loss_fn, teacher_model, eval_batches, options,
                           teacher_has_head="mlm_head" in teacher.params)

  def make_train_iter(state):
    return pipeline.pretraining_batches(train_docs, teacher.tokenizer, seed=config.seed,
                                        state=state, corpus_name=config.data.corpus,
                                        **batch_options)

  # Everything is validated: only now write into the workdir.
  if jax.process_index() == 0:
    record_tokenizer(config, keep_tokenizer(teacher.tokenizer, workdir))
  meta = setup.model_meta(cfg, pair_head=False, job="distill", teacher=teacher.identity)
  return loop.Job(name=f"distill {config.name}", init_params=init_params, loss_fn=loss_fn,
                  make_train_iter=make_train_iter, evaluate=evaluate, meta=meta,
                  load_params=load_params, frozen=teacher.params,
                  step_flops=functools.partial(flops.step_flops, cfg, teacher=teacher.cfg,
                                               teacher_mlm="mlm_head" in teacher.params))


def run(config, workdir: str) -> dict:
  return loop.train(config, workdir, build_job(config, workdir))
