"""Accuracy with its uncertainty: GLUE scores over seeds, bootstrap intervals, majority baselines.

Used by the distillation study (`distill_report.py`) and the from-scratch
comparison (`compare.py`). Scores are GLUE's: a task's score is the mean of its
official metrics (SST-2 accuracy; MRPC F1 and accuracy), the macro score their
mean over tasks; a variant's score is the mean over its seeds. Intervals are
95% percentile bootstraps over dev examples (`scipy.stats.bootstrap`, 2,000
resamples): one resample of a task's dev set is scored for every seed of every
model being compared, so an interval holds the dev-set sampling noise of the
comparison; the seed-to-seed spread is reported beside it (std). A macro
interval resamples each task's dev set independently. Verdict words come from
`verdicts.py`.
"""

from __future__ import annotations

import os
import statistics
from typing import Callable, Optional

import numpy as np
import scipy.stats

from experiments import verdicts
from lite_bert.data import glue
from lite_bert.train import task_metrics

N_RESAMPLES = 2000
CONFIDENCE = 0.95


# ------------------------------------------------------------------ inputs


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


def task_data(task: str, data_dir: Optional[str] = None) -> dict:
  """{'spec', 'labels' (dev label ids), 'majority' (the training set's most frequent label)}.

  data_dir: the task's TSV folder (default `<data>/glue/<task folder>`).
  """
  spec = glue.get_task(task)
  labels = np.asarray([row["label"] for row in glue.read_task(spec, "validation", data_dir)],
                      np.int64)
  train_labels = [row["label"] for row in glue.read_task(spec, "train", data_dir)]
  return dict(spec=spec, labels=labels, majority=int(max(set(train_labels),
                                                         key=train_labels.count)))


def collect(root: str, tasks: list[str], runs_of: Callable[[str], dict],
            data_dirs: Optional[dict] = None) -> dict:
  """{task: task_data + 'runs': {variant: [(seed, dev predictions, folder)]}}.

  runs_of(task) -> {variant: [(seed, folder relative to root)]}: the finished
  runs; each folder's final `predictions_validation.tsv` is read.
  """
  out = {}
  for task in tasks:
    entry = task_data(task, (data_dirs or {}).get(task) or None)
    runs = {}
    for variant, folders in runs_of(task).items():
      for seed, folder in folders:
        predictions = read_predictions(os.path.join(root, folder, "predictions_validation.tsv"),
                                       entry["spec"], len(entry["labels"]))
        runs.setdefault(variant, []).append((seed, predictions, folder))
    out[task] = dict(entry, runs=runs)
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


def analyse(data: dict, *, reference: str = "teacher", control: str = "init",
            order: tuple = ("teacher", "init", "general", "task", "random"),
            texts: Optional[dict] = None) -> dict:
  """Every number of a report on `data` (see `collect`), JSON-able.

  reference: the variant retention is relative to (the teacher; BERT in the
    from-scratch comparison). control: the variant the distilled ones are
    compared with (the no-distillation student); skipped when absent.
  Per task and variant: per-seed metrics, mean, std, the interval of (score -
  majority-class score) and its word; retention (and interval) against the
  reference. Per variant over all tasks (macro): retention, its interval and
  verdict, and the difference from `control` with its interval and word.
  """
  texts = texts or {}
  tasks = list(data)
  full = {t: np.arange(len(data[t]["labels"])) for t in tasks}
  samples = tuple(full[t] for t in tasks)
  variants = [v for v in order if all(v in data[t]["runs"] for t in tasks)]
  numbers = {"tasks": {}, "variants": {}, "tasks_order": tasks}
  fns = scorers(data)
  for t in tasks:
    task = data[t]
    entry = {"name": task["spec"].name, "majority_label": task["spec"].labels[task["majority"]],
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
      if v != reference and reference in task["runs"]:
        entry["variants"][v]["retention"] = float(
            mean_score(fns[t][v], full[t]) / mean_score(fns[t][reference], full[t]))
        entry["variants"][v]["retention_ci"] = interval(
            lambda i, t=t, v=v: mean_score(fns[t][v], i) / mean_score(fns[t][reference], i),
            (full[t],))
    numbers["tasks"][t] = entry

  def macro(variant):
    return lambda *index: np.mean([mean_score(fns[t][variant], i)
                                   for t, i in zip(tasks, index)], axis=0)

  for v in variants:
    above_all = all(numbers["tasks"][t]["variants"][v]["vs_majority"] == verdicts.ABOVE
                    for t in tasks)
    entry = {"text": texts.get(v, v), "macro": float(macro(v)(*samples)),
             "above_majority_on_every_task": above_all}
    if v != reference and reference in variants:
      teacher_ok = all(numbers["tasks"][t]["variants"][reference]["vs_majority"]
                       == verdicts.ABOVE for t in tasks)
      entry["retention"] = entry["macro"] / float(macro(reference)(*samples))
      entry["retention_ci"] = interval(lambda *i, v=v: macro(v)(*i) / macro(reference)(*i),
                                       samples)
      entry["retention_verdict"] = verdicts.retention(
          entry["retention_ci"], student_above=above_all, teacher_above=teacher_ok)
    if v not in (reference, control, "random") and control in variants:
      entry["minus_init"] = entry["macro"] - float(macro(control)(*samples))
      entry["minus_init_ci"] = interval(lambda *i, v=v: macro(v)(*i) - macro(control)(*i),
                                        samples)
      entry["vs_init"] = verdicts.comparison(entry["minus_init_ci"])
    numbers["variants"][v] = entry
  return numbers


def verdicts_order() -> tuple[str, ...]:
  return ("teacher", "init", "general", "task", "random")
