r"""The models experiments/inspect.ipynb looks at: the comparative study's, or a tiny fallback.

  python -m experiments.make_inspect_fallback [--out DIR] [--steps 40]

`locate_models()` (what the notebook calls) returns the BERT (teacher),
DistilBERT (student) and ALBERT workdirs to inspect:

1. From the comparative study, if it has run: the lite_bert workdirs under
   `$LITE_BERT_COMPARE_DIR` (default `experiments/results/compare/`),
   searched up to 3 folders deep. A workdir is a folder with config.json and
   a checkpoint; fine-tuning workdirs are skipped (no MLM head). The student
   is a `distill` run of arch distilbert, the teacher the workdir its
   `distill.teacher` names (else a bert `pretrain` run), ALBERT an albert
   `pretrain` run; with several candidates the first in path order is taken
   and the others are listed.
2. Otherwise a tiny fallback, made here in minutes on 2 CPU cores and reused
   on later runs: in `$LITE_BERT_INSPECT_DIR` (default
   `<system temp>/lite_bert_inspect_fallback`), `bert/` (bert.py:tiny
   pretrained for `--steps` steps on the embedded default corpus, training the
   shared sentencepiece tokenizer), `albert/` (albert.py:tiny, same steps and
   tokenizer) and `distilbert/` (distilbert.py:tiny distilled from `bert/`
   with `mode=distill`). Each is a plain `python launch.py ...` run; their
   logs are in `<dir>/<name>.log`. A few dozen steps teach these models
   little: the fallback shows that the plots work, not what the papers found.

If the distill mode is missing (an older checkout), the BERT teacher is used
as the "student" and labelled as a placeholder.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_COMPARE_DIR = REPO / "experiments" / "results" / "compare"
DEFAULT_STEPS = 40


@dataclasses.dataclass
class Models:
  """Workdirs to inspect and how to label them."""

  teacher: str  # BERT
  student: str  # DistilBERT (or the teacher itself, see student_is_placeholder)
  albert: str
  source: str  # 'compare' or 'fallback'
  root: str
  student_is_placeholder: bool = False

  @property
  def labels(self) -> dict:
    student = ("DistilBERT placeholder (= the BERT teacher; no distill mode)"
               if self.student_is_placeholder else "DistilBERT (student)")
    return {"teacher": "BERT (teacher)", "student": student, "albert": "ALBERT"}


def compare_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("LITE_BERT_COMPARE_DIR") or DEFAULT_COMPARE_DIR)


def fallback_dir() -> pathlib.Path:
  default = pathlib.Path(tempfile.gettempdir()) / "lite_bert_inspect_fallback"
  return pathlib.Path(os.environ.get("LITE_BERT_INSPECT_DIR") or default)


def has_checkpoint(workdir: pathlib.Path) -> bool:
  checkpoints = workdir / "checkpoints"
  return (workdir / "config.json").is_file() and checkpoints.is_dir() and any(
      p.name.isdigit() for p in checkpoints.iterdir())


def _read_config(workdir: pathlib.Path) -> dict:
  try:
    return json.loads((workdir / "config.json").read_text())
  except (OSError, json.JSONDecodeError):
    return {}


def find_workdirs(root: pathlib.Path, max_depth: int = 3) -> list[pathlib.Path]:
  """Workdirs with a checkpoint under `root` (root itself included), in path order."""
  found = []
  if not root.is_dir():
    return found
  stack = [(root, 0)]
  while stack:
    folder, depth = stack.pop()
    if has_checkpoint(folder):
      found.append(folder)
      continue
    if depth < max_depth:
      try:
        children = sorted(p for p in folder.iterdir() if p.is_dir())
      except OSError:
        continue
      stack.extend((c, depth + 1) for c in reversed(children))
  return sorted(found)


def from_compare_dir(root: pathlib.Path) -> Optional[Models]:
  """The study's models, or None if it lacks any of the three."""
  runs = [(w, _read_config(w)) for w in find_workdirs(root)]
  runs = [(w, c) for w, c in runs if c.get("mode") in ("pretrain", "distill")]
  students = [(w, c) for w, c in runs if c.get("arch") == "distilbert"
              and c.get("mode") == "distill"]
  alberts = [w for w, c in runs if c.get("arch") == "albert" and c.get("mode") == "pretrain"]
  berts = [w for w, c in runs if c.get("arch") == "bert" and c.get("mode") == "pretrain"]
  if not (students and alberts and berts):
    return None
  student, student_config = students[0]
  teacher = pathlib.Path(student_config.get("distill", {}).get("teacher") or berts[0])
  if not teacher.is_absolute():  # relative to where the study ran, usually the repo
    teacher = next((p for p in (REPO / teacher, root / teacher) if p.exists()), teacher)
  for name, chosen, candidates in (("student", student, [w for w, _ in students]),
                                   ("ALBERT", alberts[0], alberts),
                                   ("BERT", berts[0], berts)):
    others = [str(c) for c in candidates if c != chosen]
    if others:
      print(f"{name}: using {chosen}; also found {others}")
  return Models(teacher=str(teacher), student=str(student), albert=str(alberts[0]),
                source="compare", root=str(root))


def _launch(args: list[str], log: pathlib.Path) -> None:
  command = [sys.executable, str(REPO / "launch.py")] + args
  print("running:", " ".join(command[1:]), f"(log: {log})", flush=True)
  with open(log, "w") as f:
    result = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                            check=False)
  if result.returncode:
    tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
    raise RuntimeError(f"{' '.join(command[1:3])} failed (exit {result.returncode}); "
                       f"end of {log}:\n{tail}")


def _small_run_flags(steps: int) -> list[str]:
  """Shrinks the `tiny` schedule to a few dozen short steps with one final evaluation."""
  return [f"--config.train.num_steps={steps}", "--config.train.log_every=10",
          "--config.train.eval_every=0", f"--config.checkpoint.every_steps={steps}",
          "--config.checkpoint.async_save=False", "--config.data.batch_size=16",
          "--config.data.max_seq_length=64", "--config.data.eval_batches=2",
          "--config.data.eval_documents=2"]


def make_fallback(out: pathlib.Path, steps: int = DEFAULT_STEPS) -> Models:
  """Creates (or reuses) the tiny BERT, ALBERT and DistilBERT workdirs under `out`."""
  out.mkdir(parents=True, exist_ok=True)
  bert, albert, student = out / "bert", out / "albert", out / "distilbert"
  flags = _small_run_flags(steps)
  if not has_checkpoint(bert):
    _launch(["--config=configs/bert.py:tiny", "--config.mode=pretrain", f"--workdir={bert}",
             "--config.tokenizer.max_sentences=20000"] + flags, out / "bert.log")
  spm = bert / "tokenizer" / "spm.model"
  if not has_checkpoint(albert):
    _launch(["--config=configs/albert.py:tiny", "--config.mode=pretrain",
             f"--workdir={albert}", f"--config.tokenizer.path={spm}"] + flags,
            out / "albert.log")
  placeholder = importlib.util.find_spec("lite_bert.modes.distill") is None
  if placeholder:
    print("lite_bert has no distill mode: the BERT teacher stands in for the student")
  elif not has_checkpoint(student):
    _launch(["--config=configs/distilbert.py:tiny", "--config.mode=distill",
             f"--workdir={student}", f"--config.distill.teacher={bert}"] + flags,
            out / "distilbert.log")
  return Models(teacher=str(bert), student=str(bert if placeholder else student),
                albert=str(albert), source="fallback", root=str(out),
                student_is_placeholder=placeholder)


def locate_models(steps: int = DEFAULT_STEPS) -> Models:
  """The comparative study's models if there are any, else the (made or reused) fallback."""
  study = from_compare_dir(compare_dir())
  if study is not None:
    print(f"Inspecting the comparative study's models in {study.root}")
    return study
  out = fallback_dir()
  print(f"No comparative-study workdirs in {compare_dir()} (set LITE_BERT_COMPARE_DIR); "
        f"using the tiny fallback in {out} (set LITE_BERT_INSPECT_DIR)")
  return make_fallback(out, steps)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.make_inspect_fallback",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=None,
                      help="fallback folder (default: $LITE_BERT_INSPECT_DIR or "
                           "<temp>/lite_bert_inspect_fallback)")
  parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
  args = parser.parse_args(argv)
  models = make_fallback(pathlib.Path(args.out) if args.out else fallback_dir(), args.steps)
  print(json.dumps(dataclasses.asdict(models), indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
