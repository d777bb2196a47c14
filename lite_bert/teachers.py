"""Teachers: loading a frozen teacher, its identity, and the resume check that pins it.

Distillation (`mode=distill`) learns from a pretraining teacher (`load_teacher`:
a lite_bert pretraining workdir or a Hugging Face BERT folder); task-specific
distillation (`finetune.teacher`) from a fine-tuned one (`load_task_teacher`).
Both are described by an identity (path, step, architecture and a sha256 of
the weights, `params_digest`) that the checkpoint meta records, and a resumed
run must name the same teacher (`check_same_teacher`).

A frozen teacher runs its layers as separately stored arrays (`model.scan_layers=False`,
`frozen_layout`): its forward then reads each layer's weights in place, where the
scanned stack copies every layer's slice out first (a forward-only model gains all of
that; `experiments/results/profile_train/teacher_layout` measures the distillation step).
The identity's digest is of the weights as stored (the stacked layout).

Sits beside `pretrained.py`, above `train/`: the loss functions in
`train/task_distillation.py` and `modes/distill.py` take the loaded teacher's
model and params, never a path.
"""

import dataclasses
import hashlib
import os
from typing import Optional

import jax
import numpy as np

from lite_bert import pretrained
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models import encoder as encoder_lib
from lite_bert.models.config import EncoderConfig
from lite_bert.models.heads import ClassificationModel
from lite_bert.train import checkpoint as checkpoint_lib
from lite_bert.train import fingerprints
from lite_bert.train import setup


def frozen_layout(cfg: EncoderConfig, params: dict) -> tuple[EncoderConfig, dict]:
  """A frozen model's (cfg, params) with its layers stored separately (`scan_layers=False`).

  `params` in the stacked layout (`pretrained.load`'s); ALBERT's one shared layer is
  returned as it is (it scans either way).
  """
  cfg = dataclasses.replace(cfg, scan_layers=False)
  return cfg, encoder_lib.unstack_layers(params, cfg)


@dataclasses.dataclass
class Teacher:
  """The frozen teacher as the step uses it."""

  cfg: EncoderConfig      # its architecture as run here (no pooler, student's dtype,
                          # separately stored layers: `frozen_layout`)
  params: dict            # numpy: `encoder` (no pooler) and `mlm_head`, in `cfg`'s layout
  full_params: dict       # numpy: everything the source had (for the student init)
  source_cfg: EncoderConfig  # its architecture as stored
  tokenizer: tokenizers.Tokenizer
  identity: dict          # JSON: what the checkpoint meta records


def load_teacher(config, student_cfg: EncoderConfig, *, needs_logits: bool) -> Teacher:
  """Loads `distill.teacher` and checks it can teach `student_cfg`.

  needs_logits: the loss reads the teacher's MLM logits (it must have an MLM head).
  """
  source = config.distill.teacher
  if not source:
    raise UserError("distill mode needs a teacher: set --config.distill.teacher to a lite_bert "
                    "pretraining workdir or a Hugging Face BERT folder")
  if not os.path.exists(source):
    raise UserError(f"--config.distill.teacher={source} does not exist (expected a lite_bert "
                    f"pretraining workdir or a Hugging Face BERT folder)")
  step = int(config.distill.teacher_step) or None
  if jax.process_index() == 0:
    print(f"distill: loading the teacher {source}", flush=True)
  loaded = pretrained.load(source, step=step,
                           choose_with="--config.distill.teacher_step={step}")
  where = f"teacher {source}"
  if step is not None and loaded.kind != "workdir":
    raise UserError(f"distill.teacher_step={step} is for lite_bert workdirs; {source} is a "
                    f"{loaded.kind} folder with one set of weights")
  if "mlm_head" not in loaded.params and needs_logits:
    raise UserError(f"{where} has no MLM head weights (a fine-tuned or encoder-only "
                    f"checkpoint?); distill.alpha_ce / alpha_mse need the teacher's masked-LM "
                    f"predictions (set both to 0 to distil through hidden states only)")
  t_cfg = loaded.cfg
  for field in ("vocab_size", "hidden_size"):
    if getattr(t_cfg, field) != getattr(student_cfg, field):
      raise UserError(
          f"teacher and student differ in {field}: teacher {getattr(t_cfg, field)} "
          f"({source}), student {getattr(student_cfg, field)} (config.model.{field}); the "
          f"KL needs one vocabulary and the cosine loss one width")
  max_len = config.data.max_seq_length
  if max_len > t_cfg.max_position_embeddings:
    raise UserError(f"data.max_seq_length={max_len} is longer than the teacher's position "
                    f"table ({t_cfg.max_position_embeddings}, {source})")

  # The tokenizer: the teacher's, or (for a teacher folder without one) tokenizer.path.
  tokenizer = loaded.tokenizer
  if config.tokenizer.path:
    tokenizer = tokenizers.load_tokenizer(config.tokenizer.path)
  elif tokenizer is None:
    raise UserError(f"{where} has no tokenizer the student could share; set "
                    f"--config.tokenizer.path to the teacher's vocabulary")
  tokenizers.check_vocab_matches(tokenizer, t_cfg.vocab_size, where)

  encoder = {k: v for k, v in loaded.params["encoder"].items() if k != "pooler"}
  params = {"encoder": encoder}
  if "mlm_head" in loaded.params:
    params["mlm_head"] = loaded.params["mlm_head"]
  run_cfg, params = frozen_layout(
      dataclasses.replace(t_cfg, pooler=False, dtype=student_cfg.dtype), params)
  arch = {k: v for k, v in t_cfg.to_dict().items() if k not in setup.RUNTIME_FIELDS}
  identity = dict(path=os.path.realpath(source), kind=loaded.kind, arch=loaded.arch,
                  step=loaded.step, model=arch,
                  params_sha256=params_digest(loaded.params))
  return Teacher(cfg=run_cfg, params=params, full_params=loaded.params, source_cfg=t_cfg,
                 tokenizer=tokenizer, identity=identity)


def check_same_teacher(workdir: str, identity: dict, *, field: str = "distill.teacher",
                       hint: str = "") -> None:
  """Refuses to resume a workdir whose checkpoints were trained with another teacher.

  Compares the newest readable checkpoint meta's `teacher` entry with
  `identity` (both with `model`, the architecture, and `params_sha256`); the
  teacher's path may differ (a moved copy is the same teacher). `field` names
  the config field in the message; `hint` is appended to "resume with the same
  teacher" ({step} in it becomes the saved teacher's step). Fine-tuning with a
  task teacher can call it too.
  """
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return
  checkpointer = checkpoint_lib.Checkpointer(directory, read_only=True)
  try:
    for step in reversed(checkpointer.all_steps()):
      try:
        saved = checkpointer.read_meta(step).get("teacher")
      except checkpoint_lib.CorruptCheckpointError:
        continue  # the loop walks past it too
      if saved is None:
        raise UserError(f"checkpoint step {step} in {directory} was written without a "
                        f"teacher; use a new --workdir")
      differences = [k for k in ("model", "params_sha256") if saved.get(k) != identity[k]]
      if differences:
        why = ("a different architecture" if "model" in differences else
               "different weights")
        raise UserError(
            f"{directory} was trained with teacher {saved.get('path')} (step "
            f"{saved.get('step')}); --config.{field}={identity['path']} (step "
            f"{identity['step']}) has {why}. Resume with the same teacher"
            f"{hint.format(step=saved.get('step'))} or use a "
            f"new --workdir")
      return
  finally:
    checkpointer.close()


@dataclasses.dataclass
class TaskTeacher:
  """A frozen fine-tuned teacher.

  Attributes:
    model: its ClassificationModel (apply with {'params': params}), its layers stored
      separately (`frozen_layout`).
    params: numpy params: `encoder` and `classifier_head` (put in Job.frozen), in the
      model's layout.
    cfg: its encoder architecture (as stored).
    identity: JSON for the checkpoint meta (path, step, architecture, weights digest);
      `check_same_teacher` compares it on resume.
  """

  model: ClassificationModel
  params: dict
  cfg: EncoderConfig
  identity: dict


def params_digest(params) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes, leaves sorted by path.

  A teacher's identity in checkpoint meta: the same weights give the same
  digest wherever they are loaded from (a workdir, its copy, its HF export).
  """
  digest = hashlib.sha256()
  for path, leaf in sorted(fingerprints.leaf_paths(params), key=lambda item: item[0]):
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{path}:{value.dtype}:{value.shape};".encode())
    digest.update(fingerprints.array_sha256(value).encode())
  return digest.hexdigest()


def check_same_vocabulary(student: tokenizers.Tokenizer, teacher: tokenizers.Tokenizer,
                          where: str) -> None:
  """UserError unless both map every id to the same token (the teacher reads the student's ids)."""
  if student.vocab_size != teacher.vocab_size:
    raise UserError(f"{where} has a vocabulary of {teacher.vocab_size} tokens "
                    f"({teacher.source}), the student's has {student.vocab_size} "
                    f"({student.source}); teacher and student must share one tokenizer")
  if list(student.special_ids) != list(teacher.special_ids):
    raise UserError(f"{where}: the teacher's special ids {list(teacher.special_ids)} differ "
                    f"from the student's {list(student.special_ids)}")
  for i in range(student.vocab_size):
    if student.id_to_token(i) != teacher.id_to_token(i):
      raise UserError(f"{where}: token id {i} is {teacher.id_to_token(i)!r} for the teacher "
                      f"({teacher.source}) but {student.id_to_token(i)!r} for the student "
                      f"({student.source}); they must share one tokenizer")


def load_task_teacher(source: str, *, num_labels: int,
                      tokenizer: Optional[tokenizers.Tokenizer] = None,
                      dtype: Optional[str] = None, step: Optional[int] = None) -> TaskTeacher:
  """Loads a fine-tuned teacher (a lite_bert finetune workdir, or an HF folder with a classifier).

  Args:
    source: the teacher's workdir / folder.
    num_labels: the task's; the teacher's classifier must have as many.
    tokenizer: the student's tokenizer; when given, the teacher's must be the
      same vocabulary.
    dtype: compute dtype to run the teacher in (None: its own).
    step: checkpoint step of a teacher workdir (None: its newest).
  """
  loaded = pretrained.load(source, step=step,
                           choose_with="--config.finetune.teacher_step={step}")
  where = f"teacher {source}"
  head = loaded.params.get("classifier_head")
  if head is None:
    raise UserError(f"{where} has no classifier head: task-specific distillation needs a "
                    f"teacher fine-tuned on the task (finetune.teacher)")
  teacher_labels = int(head["classifier"]["kernel"].shape[-1])
  if teacher_labels != num_labels:
    raise UserError(f"{where} predicts {teacher_labels} labels; this task has {num_labels}")
  if tokenizer is not None:
    if loaded.tokenizer is None:
      tokenizers.check_vocab_matches(tokenizer, loaded.cfg.vocab_size, where)
    else:
      check_same_vocabulary(tokenizer, loaded.tokenizer, where)
  cfg = loaded.cfg if dtype is None else dataclasses.replace(loaded.cfg, dtype=dtype)
  params = {"encoder": loaded.params["encoder"], "classifier_head": head}
  arch = {k: v for k, v in loaded.cfg.to_dict().items() if k not in setup.RUNTIME_FIELDS}
  identity = dict(path=os.path.realpath(source), kind=loaded.kind, step=loaded.step,
                  model=arch, num_labels=teacher_labels, params_sha256=params_digest(params))
  cfg, params = frozen_layout(cfg, params)
  return TaskTeacher(model=ClassificationModel(cfg, num_labels=num_labels), params=params,
                     cfg=loaded.cfg, identity=identity)
