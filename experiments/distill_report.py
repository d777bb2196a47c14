"""The distillation study's report: seeds, bootstrap intervals, majority baselines, verdicts.

  python -m experiments.distill_study --workdir=DIR --report-only [--publish=experiments/results/distill_study]

Reads the finished fine-tuning runs of `experiments/distill_study.py` in DIR
(each run's final dev predictions, `predictions_validation.tsv`, and the
task's gold labels), and writes DIR/report.md, DIR/distill_numbers.json (every
number of the report, with the files it was computed from) and two plots.

Scores are GLUE's: a task's score is the mean of its official metrics (SST-2
accuracy; MRPC F1 and accuracy), the macro score their mean over tasks. A
variant's score on a task is the mean over its seeds. Intervals are 95%
percentile bootstraps over dev examples (`scipy.stats.bootstrap`, 2,000
resamples): one resample of a task's dev set is scored for every seed of every
model being compared, so the interval holds the dev-set sampling noise of the
comparison; the seed-to-seed spread is shown beside it (std). The macro
interval resamples each task's dev set independently.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from typing import Callable, Optional

import numpy as np
import scipy.stats

from experiments import verdicts
from lite_bert.data import glue
from lite_bert.train import task_metrics

N_RESAMPLES = 2000
CONFIDENCE = 0.95
VARIANT_TEXT = {
    "teacher": "MiniLM-L6 teacher (6 x 384), fine-tuned",
    "init": "3-layer student, teacher layers 0/2/4, no distillation",
    "general": "3-layer student + general distillation",
    "task": "3-layer student + general + task distillation",
    "random": "3-layer student shape, random init",
}
SMALL_FILES = ("config.json", "done.json", "eval_validation.json", "predictions_validation.tsv",
               "metrics.jsonl")


# ------------------------------------------------------------------ inputs


def task_score(spec: glue.TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
  """GLUE's score of one task: the mean of its official metrics."""
  values = task_metrics.compute(spec.metrics, predictions, labels)
  return float(np.mean([values[m] for m in spec.metrics]))


def read_predictions(path: str, spec: glue.TaskSpec, n: int) -> np.ndarray:
  """Label ids in dev order from a `predictions_<split>.tsv` (index, label name)."""
  ids = {label: i for i, label in enumerate(spec.labels)}
  out = np.full((n,), -1, np.int64)
  with open(path) as f:
    next(f)  # header
    for position, line in enumerate(f):
      _, label = line.rstrip("\n").split("\t")
      out[position] = ids[label]
  if position + 1 != n or (out < 0).any():
    raise ValueError(f"{path}: {position + 1} predictions for {n} dev examples")
  return out


def collect(root: str, tasks: list[str]) -> dict:
  """{task: {'spec', 'labels', 'majority', 'runs': {variant: [(seed, predictions, folder)]}}}."""
  out = {}
  for task in tasks:
    spec = glue.get_task(task)
    dev = glue.read_task(spec, "validation")
    labels = np.asarray([row["label"] for row in dev], np.int64)
    train_labels = [row["label"] for row in glue.read_task(spec, "train")]
    majority = max(set(train_labels), key=train_labels.count)
    runs = {}
    for name in sorted(os.listdir(root)):
      variant, _, rest = name.partition(f"_{task}_s")
      folder = os.path.join(root, name)
      if not rest.isdigit() or not os.path.exists(os.path.join(folder, "done.json")):
        continue
      predictions = read_predictions(os.path.join(folder, "predictions_validation.tsv"), spec,
                                     len(labels))
      runs.setdefault(variant, []).append((int(rest), predictions, name))
    out[task] = dict(spec=spec, labels=labels, majority=int(majority), runs=runs)
  return out


# -------------------------------------------------------------- statistics


def scorer(spec: glue.TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> Callable:
  """index [..., n] (dev examples, e.g. bootstrap resamples) -> task scores [...].

  Accuracy and F1 are sums over examples, so a resample's value comes from
  per-example indicator arrays (exactly scikit-learn's, see the tests); any
  other metric is computed by `task_metrics` one resample at a time.
  """
  correct = (predictions == labels).astype(np.float64)
  tp = ((predictions == 1) & (labels == 1)).astype(np.float64)
  errors = (predictions != labels).astype(np.float64)  # fp + fn

  def metric(name, index):
    if name == "accuracy":
      return correct[index].mean(-1)
    if name == "f1":
      two_tp = 2.0 * tp[index].sum(-1)
      denominator = two_tp + errors[index].sum(-1)
      return np.where(denominator > 0, two_tp / np.maximum(denominator, 1e-12), 0.0)
    flat = index.reshape(-1, index.shape[-1])
    values = [task_metrics.compute([name], predictions[i], labels[i])[name] for i in flat]
    return np.asarray(values).reshape(index.shape[:-1])

  return lambda index: np.mean([metric(m, index) for m in spec.metrics], axis=0)


def task_score(spec: glue.TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
  """GLUE's score of one task on all of its dev examples: the mean of its official metrics."""
  values = task_metrics.compute(spec.metrics, predictions, labels)
  return float(np.mean([values[m] for m in spec.metrics]))


def scorers(data: dict) -> dict:
  """{task: {variant: [per-seed scorer], '__majority__': [scorer]}}."""
  out = {}
  for t, task in data.items():
    labels, spec = task["labels"], task["spec"]
    out[t] = {v: [scorer(spec, p, labels) for _, p, _ in runs] for v, runs in task["runs"].items()}
    out[t]["__majority__"] = [scorer(spec, np.full_like(labels, task["majority"]), labels)]
  return out


def mean_score(score_fns: list, index: np.ndarray) -> np.ndarray:
  """Mean over seeds of the scores on `index` [..., n]."""
  return np.mean([fn(index) for fn in score_fns], axis=0)


def interval(statistic: Callable, samples: tuple, seed: int = 0) -> tuple[float, float]:
  """95% percentile bootstrap interval of statistic(*index arrays) over the samples."""
  result = scipy.stats.bootstrap(samples, lambda *i, axis=-1: statistic(*i), vectorized=True,
                                 paired=False, n_resamples=N_RESAMPLES,
                                 confidence_level=CONFIDENCE, method="percentile",
                                 random_state=np.random.default_rng(seed))
  return float(result.confidence_interval.low), float(result.confidence_interval.high)


def analyse(data: dict) -> dict:
  """Every number of the report (JSON-able)."""
  tasks = list(data)
  full = {t: np.arange(len(data[t]["labels"])) for t in tasks}
  samples = tuple(full[t] for t in tasks)
  variants = [v for v in verdicts_order() if all(v in data[t]["runs"] for t in tasks)]
  numbers = {"tasks": {}, "variants": {}, "tasks_order": tasks}
  fns = scorers(data)
  for t in tasks:
    task = data[t]
    entry = {"majority_label": task["spec"].labels[task["majority"]],
             "majority_score": float(mean_score(fns[t]["__majority__"], full[t])),
             "dev_examples": int(len(task["labels"])), "metrics": list(task["spec"].metrics),
             "variants": {}}
    for v, runs in task["runs"].items():
      per_seed = [{"seed": seed, "folder": folder,
                   **task_metrics.compute(task["spec"].metrics, p, task["labels"]),
                   "score": task_score(task["spec"], p, task["labels"])}
                  for seed, p, folder in sorted(runs)]
      scores = [r["score"] for r in per_seed]
      above_ci = interval(lambda i, t=t, v=v: mean_score(fns[t][v], i)
                          - mean_score(fns[t]["__majority__"], i), (full[t],))
      entry["variants"][v] = {
          "seeds": per_seed, "mean": statistics.mean(scores),
          "std": statistics.stdev(scores) if len(scores) > 1 else None,
          "minus_majority_ci": above_ci, "vs_majority": verdicts.versus_baseline(above_ci)}
      if v != "teacher" and "teacher" in task["runs"]:
        entry["variants"][v]["retention"] = float(
            mean_score(fns[t][v], full[t]) / mean_score(fns[t]["teacher"], full[t]))
        entry["variants"][v]["retention_ci"] = interval(
            lambda i, t=t, v=v: mean_score(fns[t][v], i) / mean_score(fns[t]["teacher"], i),
            (full[t],))
    numbers["tasks"][t] = entry

  def macro(variant):
    return lambda *index: np.mean([mean_score(fns[t][variant], i)
                                   for t, i in zip(tasks, index)], axis=0)

  for v in variants:
    above_all = all(numbers["tasks"][t]["variants"][v]["vs_majority"] == verdicts.ABOVE
                    for t in tasks)
    entry = {"text": VARIANT_TEXT.get(v, v), "macro": float(macro(v)(*samples)),
             "above_majority_on_every_task": above_all}
    if v != "teacher" and "teacher" in variants:
      teacher_ok = all(numbers["tasks"][t]["variants"]["teacher"]["vs_majority"]
                       == verdicts.ABOVE for t in tasks)
      entry["retention"] = entry["macro"] / float(macro("teacher")(*samples))
      entry["retention_ci"] = interval(lambda *i, v=v: macro(v)(*i) / macro("teacher")(*i),
                                       samples)
      entry["retention_verdict"] = verdicts.retention(
          entry["retention_ci"], student_above=above_all, teacher_above=teacher_ok)
    if v in ("general", "task") and "init" in variants:
      entry["minus_init"] = entry["macro"] - float(macro("init")(*samples))
      entry["minus_init_ci"] = interval(lambda *i, v=v: macro(v)(*i) - macro("init")(*i),
                                        samples)
      entry["vs_init"] = verdicts.comparison(entry["minus_init_ci"])
    numbers["variants"][v] = entry
  return numbers


def verdicts_order() -> tuple[str, ...]:
  return ("teacher", "init", "general", "task", "random")


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


def markdown(numbers: dict, latency_md: list[str], latency: dict) -> str:
  tasks = numbers["tasks_order"]
  names = {t: numbers["tasks"][t] for t in tasks}
  out = ["# Distillation with a real teacher: all-MiniLM-L6-v2 -> 3-layer student", "",
         "Written by `python -m experiments.distill_study` (`experiments/distill_report.py`); "
         "every number below is in `distill_numbers.json` with the runs it was computed "
         "from. Scores are GLUE's (SST-2 accuracy; MRPC mean of F1 and accuracy), from the "
         "final dev predictions of each run (not the best-dev checkpoint); intervals are 95% "
         "bootstrap intervals over dev examples; the majority class is the training set's "
         "most frequent label.", ""]
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
        f"GLUE; ours is MiniLM-L6 -> 3 layers on {' + '.join(t.upper() for t in tasks)})"
        + ("" if entry["above_majority_on_every_task"] else
           " - not above the majority class on every task"))
    if "vs_init" in entry:
      verdict_rows.append(
          f"  - vs the no-distillation student: {entry['minus_init'] * 100:+.1f} points "
          f"(95% CI {verdicts.describe(entry['minus_init_ci'])}): **{entry['vs_init']}**")
  out += ["## Verdicts", ""] + verdict_rows + [""]
  out += ["## Dev scores", "",
          "| variant | " + " | ".join(
              f"{t.upper()} mean +- std (seeds) | - majority, 95% CI" for t in tasks)
          + " | macro |",
          "|---|" + "---|---|" * len(tasks) + "---|"]
  for v in verdicts_order():
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
      f"{pct(names[t]['majority_score'])} ({names[t]['majority_label']}) | -" for t in tasks)
      + " | " + pct(float(np.mean([names[t]["majority_score"] for t in tasks]))) + " |")
  out += ["", "Per-task retention (student / teacher, 95% CI):", ""]
  for t in tasks:
    parts = [f"{v} {pct(e['retention'])}% {verdicts.describe(e['retention_ci'])}"
             for v, e in names[t]["variants"].items() if "retention" in e]
    out.append(f"- {t.upper()}: " + "; ".join(parts))
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
    names = [v for v in verdicts_order() if v in entry["variants"]]
    for x, v in enumerate(names):
      seeds = [s["score"] for s in entry["variants"][v]["seeds"]]
      ax.scatter([x] * len(seeds), [100 * s for s in seeds], color="C0", s=18)
      ax.hlines(100 * entry["variants"][v]["mean"], x - 0.3, x + 0.3, color="C0")
    ax.axhline(100 * entry["majority_score"], color="C3", ls="--", label="majority class")
    ax.set_xticks(range(len(names)), names)
    ax.set_title(f"{t.upper()} dev score (dots: seeds)")
    ax.legend(loc="lower right")
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


def write(root: str, tasks: list[str], publish: Optional[str] = None) -> dict:
  """Analyses the finished runs in `root`, writes the report (and a copy to `publish`)."""
  data = collect(root, tasks)
  missing = [t for t in tasks if not data[t]["runs"]]
  if missing:
    print(f"report: no finished runs for {missing} yet in {root}", flush=True)
    return {}
  numbers = analyse(data)
  latency_md, latency = latency_lines(root)
  numbers["latency"] = latency
  with open(os.path.join(root, "distill_numbers.json"), "w") as f:
    json.dump(numbers, f, indent=2, sort_keys=True)
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write(markdown(numbers, latency_md, latency))
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
