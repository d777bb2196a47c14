"""The distillation study's report: seeds, bootstrap intervals, majority baselines, verdicts.

  python -m experiments.distill_study --workdir=DIR --report-only [--publish=experiments/results/distill_study]

Reads the finished fine-tuning runs of `experiments/distill_study.py` in DIR
(each run's final dev predictions, `predictions_validation.tsv`, and the
task's gold labels), and writes DIR/report.md, DIR/distill_numbers.json (every
number of the report, with the files it was computed from) and two plots.

The statistics (GLUE scores over seeds, bootstrap intervals over dev
examples, majority-class baselines) are `accuracy_stats.py`'s; the verdict
words `verdicts.py`'s.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import numpy as np

from experiments import accuracy_stats
from experiments import verdicts
from lite_bert import files

VARIANT_TEXT = {
    "teacher": "MiniLM-L6 teacher (6 x 384), fine-tuned",
    "init": "3-layer student, teacher layers 0/2/4, no distillation",
    "general": "3-layer student + general distillation",
    "task": "3-layer student + general + task distillation",
    "random": "3-layer student shape, random init",
}
ORDER = ("teacher", "init", "general", "task", "random")
SMALL_FILES = ("config.json", "done.json", "eval_validation.json", "predictions_validation.tsv",
               "metrics.jsonl")


# ------------------------------------------------------------------ output


def pct(x: Optional[float]) -> str:
  return "-" if x is None else f"{100 * x:.1f}"


def latency_lines(root: str) -> tuple[list[str], dict]:
  path = os.path.join(root, "latency", "latency.json")
  if not os.path.exists(path):
    return ["Latency: not measured yet (stage `latency`)."], {}
  with open(path) as f:
    latency = json.load(f)
  lines = ["| batch x length | teacher ms | student ms | student / teacher |", "|---|---|---|---|"]
  for point in latency["points"]:
    lines.append(f"| {point['batch']} x {point['seq']} | {1000 * point['teacher_s']:.1f} | "
                 f"{1000 * point['student_s']:.1f} | {point['ratio']:.2f} |")
  lines.append("")
  lines.append(f"Medians of {latency['repeats']} interleaved calls each, one process, "
               f"{latency['cpu']} ({latency['cpu_count']} cores), encoder + classifier head "
               f"forward, unrolled layers.")
  return lines, latency


def recipe(root: str, data: dict) -> dict:
  """The levers this study ran with, read from its runs' config.json, and the stages
  linked from another study (`--reuse`)."""
  def cfg(folder, *keys):
    path = os.path.join(root, folder, "config.json")
    if not os.path.exists(path):
      return None
    with open(path) as f:
      value = json.load(f)
    for key in keys:
      value = value.get(key, {}) if isinstance(value, dict) else None
    return value if value != {} else None
  task_runs = sorted({folder for task in data.values()
                      for _, _, folder in task["runs"].get("task", [])})
  levers = {(cfg(f, "finetune", "temperature"), cfg(f, "finetune", "alpha_soft"))
            for f in task_runs}
  reused = sorted(name for name in os.listdir(root)
                  if os.path.islink(os.path.join(root, name)))
  return dict(general_steps=cfg("general_distillation", "train", "num_steps"),
              general_batch=cfg("general_distillation", "data", "batch_size"),
              task_levers=[dict(temperature=t, alpha_soft=a) for t, a in sorted(levers)],
              reused={name: os.path.realpath(os.path.join(root, name)) for name in reused})


def recipe_lines(rec: dict) -> list[str]:
  levers = "; ".join(f"temperature {l['temperature']}, soft-label weight {l['alpha_soft']}"
                     for l in rec["task_levers"])
  task = (f"task distillation {levers} (`task_<task>_s<seed>/config.json`)" if levers
          else "no task distillation in this run")
  lines = [f"Levers: general distillation {rec['general_steps']} steps of batch "
           f"{rec['general_batch']} (`general_distillation/config.json`); {task}."]
  if rec["reused"]:
    lines.append("Linked from another run of the study (same command, `--reuse`): " + ", ".join(
        f"`{name}`" for name in rec["reused"]) + ".")
  return lines + [""]


def markdown(numbers: dict, latency_md: list[str], latency: dict) -> str:
  tasks = numbers["tasks_order"]
  names = {t: numbers["tasks"][t] for t in tasks}
  out = ["# Distillation with a real teacher: all-MiniLM-L6-v2 -> 3-layer student", "",
         "Written by `python -m experiments.distill_study` (`experiments/distill_report.py`); "
         "every number below is in `distill_numbers.json` with the runs it was computed "
         "from. Scores are GLUE's (SST-2 accuracy; MRPC mean of F1 and accuracy), from the "
         "final dev predictions of each run (not the best-dev checkpoint); intervals are 95% "
         "bootstrap intervals over dev examples; the majority class is the training set's "
         "most frequent label.", ""] + recipe_lines(numbers["recipe"])
  verdict_rows = []
  for v, entry in numbers["variants"].items():
    if "retention_verdict" not in entry:
      continue
    ratio = latency.get("mean_ratio")
    speed = f" at {ratio:.2f}x the teacher's latency" if ratio and v != "random" else ""
    verdict_rows.append(
        f"- **{entry['text']}** keeps {pct(entry['retention'])}% "
        f"(95% CI {verdicts.describe(entry['retention_ci'])}) of the teacher's macro score"
        f"{speed}: **{entry['retention_verdict']}** with the study's 97% (DistilBERT on "
        f"GLUE; ours is MiniLM-L6 -> 3 layers on {' + '.join(names[t]['name'] for t in tasks)})"
        + ("" if entry["above_majority_on_every_task"] else
           f": it is not above the majority class on "
           f"{', '.join(names[t]['name'] for t in tasks if names[t]['variants'][v]['vs_majority'] != verdicts.ABOVE)}"
           f" (the interval alone: {verdicts.retention(entry['retention_ci'])})"))
    if "vs_init" in entry:
      verdict_rows.append(
          f"  - vs the no-distillation student: {entry['minus_init'] * 100:+.1f} points "
          f"(95% CI {verdicts.describe(entry['minus_init_ci'])}): **{entry['vs_init']}**")
  out += ["## Verdicts", ""] + verdict_rows + [""]
  out += ["## Dev scores", "",
          "| variant | " + " | ".join(
              f"{names[t]['name']} mean +- std (seeds) | minus majority, 95% CI" for t in tasks)
          + " | macro |",
          "|---|" + "---|---|" * len(tasks) + "---|"]
  for v in ORDER:
    if v not in numbers["variants"]:
      continue
    cells = []
    for t in tasks:
      e = names[t]["variants"][v]
      std = "-" if e["std"] is None else pct(e["std"])
      cells.append(f"{pct(e['mean'])} +- {std} ({len(e['seeds'])})")
      cells.append(f"{verdicts.describe(e['minus_majority_ci'])} {e['vs_majority']}")
    out.append(f"| {numbers['variants'][v]['text']} | " + " | ".join(cells)
               + f" | {pct(numbers['variants'][v]['macro'])} |")
  out.append("| majority class | " + " | ".join(
      f"{pct(names[t]['majority_score'])} (always '{names[t]['majority_label']}') | -"
      for t in tasks)
      + " | " + pct(float(np.mean([names[t]["majority_score"] for t in tasks]))) + " |")
  out += ["", "Per-task retention (student / teacher, 95% CI):", ""]
  for t in tasks:
    parts = [f"{v} {pct(e['retention'])}% {verdicts.describe(e['retention_ci'])}"
             for v, e in names[t]["variants"].items() if "retention" in e]
    out.append(f"- {names[t]['name']}: " + "; ".join(parts))
  out += ["", "## Latency (same run)", ""] + latency_md
  out += ["", "![scores](scores.png)", "", "![retention](retention.png)", ""]
  return "\n".join(out) + "\n"


def plots(numbers: dict, folder: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  tasks = numbers["tasks_order"]
  fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
  for ax, t in zip(axes[0], tasks):
    entry = numbers["tasks"][t]
    names = [v for v in ORDER if v in entry["variants"]]
    for x, v in enumerate(names):
      seeds = [s["score"] for s in entry["variants"][v]["seeds"]]
      ax.scatter([x] * len(seeds), [100 * s for s in seeds], color="C0", s=18)
      ax.hlines(100 * entry["variants"][v]["mean"], x - 0.3, x + 0.3, color="C0")
    ax.axhline(100 * entry["majority_score"], color="C3", ls="--", label="majority class")
    ax.set_xticks(range(len(names)), names)
    ax.set_title(f"{entry['name']} dev score (dots: seeds)")
    ax.legend(loc="best")
  fig.tight_layout()
  fig.savefig(os.path.join(folder, "scores.png"), dpi=110)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 3.8))
  students = [v for v, e in numbers["variants"].items() if "retention_ci" in e]
  for x, v in enumerate(students):
    e = numbers["variants"][v]
    low, high = e["retention_ci"]
    ax.errorbar(x, 100 * e["retention"], yerr=[[100 * (e["retention"] - low)],
                                               [100 * (high - e["retention"])]],
                fmt="o", capsize=5, color="C0")
  ax.axhline(97, color="C3", ls="--", label="study: 97%")
  ax.set_xticks(range(len(students)), students)
  ax.set_ylabel("macro retention, % of teacher (95% CI)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(folder, "retention.png"), dpi=110)
  plt.close(fig)


def finished_runs(root: str, task: str) -> dict:
  """{variant: [(seed, folder)]} of the study's finished fine-tuning runs of `task`."""
  runs = {}
  for name in sorted(os.listdir(root)):
    variant, _, seed = name.partition(f"_{task}_s")
    if seed.isdigit() and os.path.exists(os.path.join(root, name, "done.json")):
      runs.setdefault(variant, []).append((int(seed), name))
  return runs


def write(root: str, tasks: list[str], publish: Optional[str] = None,
          data_dirs: Optional[dict] = None) -> dict:
  """Analyses the finished runs in `root`, writes the report (and a copy to `publish`)."""
  data = accuracy_stats.collect(root, tasks, lambda task: finished_runs(root, task),
                                data_dirs=data_dirs)
  missing = [t for t in tasks if not data[t]["runs"]]
  if missing:
    print(f"report: no finished runs for {missing} yet in {root}", flush=True)
    return {}
  numbers = accuracy_stats.analyse(data, texts=VARIANT_TEXT)
  latency_md, latency = latency_lines(root)
  numbers["latency"] = latency
  numbers["recipe"] = recipe(root, data)
  files.atomic_write(os.path.join(root, "distill_numbers.json"),
                     json.dumps(numbers, indent=2, sort_keys=True))
  files.atomic_write(os.path.join(root, "report.md"), markdown(numbers, latency_md, latency))
  plots(numbers, root)
  print(f"report: {os.path.join(root, 'report.md')}", flush=True)
  if publish:
    copy_sources(root, publish, data)
  return numbers


def copy_sources(root: str, publish: str, data: dict) -> None:
  """The report, its plots and the small files behind its numbers (no checkpoints)."""
  os.makedirs(publish, exist_ok=True)
  for name in ("report.md", "distill_numbers.json", "scores.png", "retention.png"):
    shutil.copy(os.path.join(root, name), os.path.join(publish, name))
  folders = {"general_distillation", "student_init", "latency"}
  for task in data.values():
    folders.update(folder for runs in task["runs"].values() for _, _, folder in runs)
  for folder in sorted(folders):
    for name in SMALL_FILES + ("latency.json",):
      src = os.path.join(root, folder, name)
      if os.path.exists(src):
        os.makedirs(os.path.join(publish, folder), exist_ok=True)
        shutil.copy(src, os.path.join(publish, folder, name))
