"""A DistilBERT student initialised from a layer subset of its teacher.

The teacher's unshared layers are one stacked tree with a leading
[num_layers] axis (see encoder.py), so taking layers [0, 2, 4, 7, 9, 11] is
one index per leaf: `leaf[layer_ids]`. Word and position embeddings, the
embedding LayerNorm (and E->H projection) and the MLM head are copied; token
types and the pooler are dropped when the student has none (DistilBERT).
"""

from typing import Optional, Sequence

import numpy as np

from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig

# The list Hugging Face's DistilBERT extraction script uses for 12 -> 6.
DISTILBERT_LAYERS_12_TO_6 = (0, 2, 4, 7, 9, 11)
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_heads", "intermediate_size", "embedding_dim")


def default_layer_ids(teacher_layers: int, student_layers: int) -> tuple[int, ...]:
  """[0, 2, 4, 7, 9, 11] for 12 -> 6; otherwise evenly spread, first and last included."""
  if (teacher_layers, student_layers) == (12, 6):
    return DISTILBERT_LAYERS_12_TO_6
  if student_layers == 1:
    return (0,)
  return tuple(int(round(i * (teacher_layers - 1) / (student_layers - 1)))
               for i in range(student_layers))


def check_student_fits(teacher: EncoderConfig, student: EncoderConfig,
                       layer_ids: Sequence[int]) -> None:
  """UserError naming the first thing that stops `student` being cut from `teacher`."""
  for field in SHAPE_FIELDS:
    if getattr(teacher, field) != getattr(student, field):
      raise UserError(
          f"student and teacher differ in {field}: teacher {getattr(teacher, field)}, "
          f"student {getattr(student, field)}; a student initialised from teacher layers "
          f"must have the teacher's widths and vocabulary")
  if len(layer_ids) != student.num_layers:
    raise UserError(f"distill.layers lists {len(layer_ids)} teacher layers "
                    f"{list(layer_ids)} but the student has {student.num_layers} layers")
  bad = [i for i in layer_ids if not 0 <= i < teacher.num_layers]
  if bad:
    raise UserError(f"distill.layers {list(layer_ids)} names layer(s) {bad} that the "
                    f"{teacher.num_layers}-layer teacher does not have")
  if student.max_position_embeddings > teacher.max_position_embeddings:
    raise UserError(f"student max_position_embeddings={student.max_position_embeddings} "
                    f"exceeds the teacher's {teacher.max_position_embeddings}")
  if teacher.share not in ("none", "all") or student.share not in ("none", "all"):
    raise UserError("student init by layer subset supports share='none' or 'all' "
                    f"(teacher {teacher.share!r}, student {student.share!r})")


def _take_layers(tree, layer_ids, teacher_shared: bool, student_shared: bool):
  ids = np.asarray(layer_ids)
  def take(leaf):
    leaf = np.asarray(leaf)
    if teacher_shared:  # one block: every student layer gets it
      return leaf if student_shared else np.stack([leaf] * len(ids))
    if student_shared:
      raise UserError("a shared (ALBERT-style) student cannot take several distinct "
                      "teacher layers")
    return leaf[ids]
  return _tree_map(take, tree)


def _tree_map(fn, tree):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    return {k: _tree_map(fn, v) for k, v in tree.items()}
  return fn(tree)


def student_params_from_teacher(teacher_params: dict, teacher: EncoderConfig,
                                student: EncoderConfig, layer_ids: Optional[Sequence[int]],
                                student_params: dict) -> dict:
  """Overwrites a (randomly initialised) student params tree with teacher weights.

  Args:
    teacher_params: a PretrainingModel params tree (`encoder`, `mlm_head`, ...).
    teacher, student: their encoder configs.
    layer_ids: teacher layers for the student's layers, in order; None for
      `default_layer_ids`.
    student_params: the student's freshly initialised params (gives the tree
      structure, and keeps the init for anything the teacher lacks).
  Returns the student params (numpy), teacher layer `layer_ids[i]` at layer i.
  """
  if layer_ids is None:
    layer_ids = default_layer_ids(teacher.num_layers, student.num_layers)
  check_student_fits(teacher, student, layer_ids)
  t_enc, out = teacher_params["encoder"], _tree_map(np.asarray, student_params)
  s_emb, t_emb = out["encoder"]["embeddings"], t_enc["embeddings"]
  for name in s_emb:
    if name == "position_embeddings":
      table = np.asarray(t_emb[name]["embedding"])[:student.max_position_embeddings]
      s_emb[name] = {"embedding": table}
    elif name in t_emb:
      s_emb[name] = _tree_map(np.asarray, t_emb[name])
  out["encoder"]["layers"] = _take_layers(t_enc["layers"], layer_ids,
                                          teacher.share == "all", student.share == "all")
  if "pooler" in out["encoder"] and "pooler" in t_enc:
    out["encoder"]["pooler"] = _tree_map(np.asarray, t_enc["pooler"])
  if "mlm_head" in out and "mlm_head" in teacher_params:
    out["mlm_head"] = _tree_map(np.asarray, teacher_params["mlm_head"])
  return out
