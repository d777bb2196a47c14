"""The comparison's numbers, each with its source: what makes report.md checkable.

`Num` is a value with the spec of where it comes from (a JSON file and key, a
folder's size on disk, a figure of the study, or arithmetic on those);
`Sources` reads the stage folders' files as `Num`s; `Ledger` formats them for
the report and records each one for `report_numbers.json`, which
`tests/test_compare.py` resolves number by number. `write_accuracy_stats`
writes the intervals and majority baselines the 97% verdict reads.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from experiments.compare_plan import MODELS, STUDY, TASKS
from experiments.jobs import write_record

class Num:
  """A number and where it comes from (a source spec `tests/test_compare.py` resolves)."""

  __slots__ = ("value", "src")

  def __init__(self, value, src: dict):
    self.value, self.src = value, src

  @staticmethod
  def of(x) -> "Num":
    return x if isinstance(x, Num) else Num(x, {"const": x})

  def _op(self, op, other, fn):
    other = Num.of(other)
    return Num(fn(self.value, other.value), {"op": op, "args": [self.src, other.src]})

  def __truediv__(self, other):
    return self._op("div", other, lambda a, b: a / b)

  def __mul__(self, other):
    return self._op("mul", other, lambda a, b: a * b)

  def __sub__(self, other):
    return self._op("sub", other, lambda a, b: a - b)

  def __rsub__(self, other):
    return Num.of(other)._op("sub", self, lambda a, b: a - b)

  def __add__(self, other):
    return self._op("add", other, lambda a, b: a + b)

  def __abs__(self):
    return Num(abs(self.value), {"op": "abs", "args": [self.src]})


def reduce_nums(op: str, nums: list) -> Num:
  values = [n.value for n in nums]
  fn = {"mean": lambda v: sum(v) / len(v), "min": min, "max": max, "sum": sum}[op]
  return Num(fn(values), {"op": op, "args": [n.src for n in nums]})


def select_item(items: list, match: dict):
  found = [x for x in items if all(x.get(k) == v for k, v in match.items())]
  if len(found) != 1:
    raise KeyError(f"{len(found)} items match {match}")
  return found[0]


class Sources:
  """Reads the workdirs' files; every value comes back as a `Num` with its source."""

  def __init__(self, root: str):
    self.root = root
    self._cache: dict = {}

  def path(self, rel: str) -> str:
    return os.path.join(self.root, rel)

  def exists(self, rel: str) -> bool:
    return os.path.exists(self.path(rel))

  def load(self, rel: str):
    if rel not in self._cache:
      with open(self.path(rel)) as f:
        self._cache[rel] = ([json.loads(l) for l in f if l.strip()] if rel.endswith(".jsonl")
                            else json.load(f))
    return self._cache[rel]

  def raw(self, rel: str, *keys):
    value = self.load(rel)
    for key in keys:
      value = select_item(value, key) if isinstance(key, dict) else value[key]
    return value

  def get(self, rel: str, *keys) -> Optional[Num]:
    """The number at `keys` in file `rel`, or None when the file / key / value is missing."""
    try:
      value = self.raw(rel, *keys)
    except (OSError, KeyError, IndexError, TypeError, ValueError):
      return None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
      return None
    return Num(value, {"file": rel, "key": list(keys)})

  def dir_bytes(self, rel: str) -> Optional[Num]:
    top = self.path(rel)
    if not os.path.isdir(top):  # a published copy: the sizes measured before publishing
      return self.get(SIZES_FILE, "bytes", rel)
    total = 0
    for folder, _, files in os.walk(top):
      total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return Num(total, {"dir_bytes": rel})


SIZES_FILE = "sizes.json"  # written by `publish`: the folders it leaves behind, in bytes
ACCURACY_FILE = "accuracy_stats.json"  # written by `report`: intervals and majority baselines
# `--real-teacher=DIR`: DIR/distill_numbers.json (a `python -m experiments.distill_study`
# folder) copied here, so the report's numbers resolve inside the comparison's folder.
REAL_TEACHER_FILE = os.path.join("real_teacher", "distill_numbers.json")
REAL_TEACHER_ORIGIN = os.path.join("real_teacher", "origin.json")


def real_teacher_problem(folder: str) -> Optional[str]:
  """Why `folder` cannot be `--real-teacher` (None when it can): it must hold the
  distill study's distill_numbers.json with the teacher and a distilled student."""
  path = os.path.join(folder, "distill_numbers.json")
  try:
    with open(path) as f:
      numbers = json.load(f)
  except OSError:
    return (f"--real-teacher={folder}: no {path} (a `python -m experiments.distill_study` "
            f"workdir or its --publish folder has one)")
  except ValueError as e:
    return f"--real-teacher={folder}: {path} is not valid JSON ({e})"
  variants = numbers.get("variants") if isinstance(numbers, dict) else None
  if not isinstance(variants, dict) or "teacher" not in variants or not (
      {"task", "general"} & set(variants)):
    return (f"--real-teacher={folder}: {path} has no teacher and distilled student "
            f"('variants' needs 'teacher' and 'task' or 'general')")
  return None


def real_teacher_variant(numbers: dict) -> str:
  """The distilled student the real-teacher row shows: DistilBERT's whole recipe (general +
  task distillation) when the study ran it, else general distillation alone."""
  return "task" if "task" in numbers["variants"] else "general"


def take_real_teacher(folder: str, root: str) -> None:
  """Copies `folder`'s distill_numbers.json to root/REAL_TEACHER_FILE (a folder
  `real_teacher_problem` accepted) and records where it came from."""
  from lite_bert import files  # pylint: disable=import-outside-toplevel
  target = os.path.join(root, REAL_TEACHER_FILE)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  files.atomic_copy(os.path.join(folder, "distill_numbers.json"), target)
  write_record(os.path.join(root, REAL_TEACHER_ORIGIN), {"folder": folder})


def finetune_runs(root: str, task: str) -> dict:
  """{model: [(seed, folder)]} of the fine-tuning stages with dev predictions."""
  return {m: [(0, f"finetune_{m}_{task}")] for m in MODELS
          if os.path.exists(os.path.join(root, f"finetune_{m}_{task}",
                                         "predictions_validation.tsv"))}


def write_accuracy_stats(root: str) -> None:
  """ACCURACY_FILE: each task's majority-class score and, when every model's dev
  predictions are there, `accuracy_stats.analyse` against BERT (intervals, verdicts)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from experiments import accuracy_stats  # pylint: disable=import-outside-toplevel
  if not all(os.path.exists(os.path.join(root, f"finetune_{m}_{t}", "eval_validation.json"))
             for m in MODELS for t in TASKS):
    return
  if all(len(finetune_runs(root, t)) == len(MODELS) for t in TASKS):
    data = accuracy_stats.collect(root, list(TASKS), lambda t: finetune_runs(root, t))
    numbers = accuracy_stats.analyse(data, reference="bert", control="", order=MODELS)
    numbers["intervals"] = True
  else:  # runs published before their predictions were: no interval can be drawn
    numbers = {"intervals": False, "tasks": {}}
    for t in TASKS:
      data = accuracy_stats.task_data(t)
      majority = np.full_like(data["labels"], data["majority"])
      numbers["tasks"][t] = {"majority_score": accuracy_stats.task_score(
          data["spec"], majority, data["labels"])}
  write_record(os.path.join(root, ACCURACY_FILE), numbers)


def study(key: str, field: str = "value") -> Num:
  return Num(STUDY[key][field], {"study": key, "field": field})


class Ledger:
  """Formats numbers for the report and records each with its source."""

  def __init__(self):
    self.items: list = []

  def __call__(self, num: Optional[Num], fmt: str, scale: float = 1, missing: str = "n/a"
               ) -> str:
    if num is None:
      return missing
    text = format(num.value * scale, fmt)
    self.items.append({"text": text, "fmt": fmt, "scale": scale, "source": num.src})
    return text

  def study_claim(self, key: str) -> str:
    entry = STUDY[key]
    return entry["claim"].format(self(study(key), entry["fmt"], entry["scale"]))


def ms_fmt(seconds: float) -> str:
  ms = seconds * 1e3
  return ".1f" if ms >= 10 else ".2f" if ms >= 1 else ".3f"
