"""The distillation study's verdicts and report statistics, on synthetic predictions.

The verdict code (experiments/verdicts.py) is fed intervals that must give
each word; the report's analysis (experiments/distill_report.py) is fed
synthetic dev predictions of known quality on a two-class task, so the
verdict it reaches is known in advance, and its numbers are checked against
scikit-learn.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import sklearn.metrics

from experiments import accuracy_stats
from experiments import distill_report
from experiments import distill_study
from experiments import verdicts
from lite_bert import files
from lite_bert.data import glue

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ci, above, word", [
    ((0.99, 1.02), (True, True), verdicts.AGREES),        # clearly at or above 97%
    ((0.966, 0.99), (True, True), verdicts.AGREES),       # low end within the rounding
    ((0.80, 0.90), (True, True), verdicts.DISAGREES),     # clearly below
    ((0.93, 1.01), (True, True), verdicts.INCONCLUSIVE),  # straddles 97%
    ((0.99, 1.02), (False, True), verdicts.INCONCLUSIVE), # student at the majority class
    ((0.80, 0.90), (True, False), verdicts.INCONCLUSIVE), # teacher at the majority class
])
def test_retention_verdict_words(ci, above, word):
  assert verdicts.retention(ci, student_above=above[0], teacher_above=above[1]) == word


def test_baseline_and_comparison_words():
  assert verdicts.versus_baseline((0.01, 0.05)) == verdicts.ABOVE
  assert verdicts.versus_baseline((-0.01, 0.05)) == verdicts.NOT_ABOVE
  assert verdicts.comparison((0.01, 0.03)) == verdicts.BETTER
  assert verdicts.comparison((-0.03, -0.01)) == verdicts.WORSE
  assert verdicts.comparison((-0.01, 0.02)) == verdicts.INCONCLUSIVE


def flip(labels, fraction, rng):
  """labels with `fraction` of them (chosen at random) flipped."""
  out = labels.copy()
  idx = rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)
  out[idx] = 1 - out[idx]
  return out


def synthetic(variants: dict, n=800, seeds=3):
  """A two-class 'MRPC-like' task (F1 + accuracy, 65% positives) with the given error rates."""
  rng = np.random.default_rng(0)
  labels = (rng.random(n) < 0.65).astype(np.int64)
  runs = {v: [(s, maker(labels, rng), f"{v}_s{s}") for s in range(seeds)]
          for v, maker in variants.items()}
  return {"mrpc": dict(spec=glue.get_task("mrpc"), labels=labels, majority=1, runs=runs)}


def errors(fraction):
  return lambda labels, rng: flip(labels, fraction, rng)


def test_analysis_reaches_the_known_verdicts():
  data = synthetic({
      "teacher": errors(0.05),
      "init": errors(0.20),                                  # worse than distilled
      "general": errors(0.05),                               # the teacher's quality
      "task": lambda labels, rng: np.ones_like(labels),     # always the majority class
      "random": errors(0.50),                                # a coin
  })
  numbers = accuracy_stats.analyse(data)
  task = numbers["tasks"]["mrpc"]
  # The numbers are scikit-learn's, mean over seeds.
  seeds = data["mrpc"]["runs"]["init"]
  labels = data["mrpc"]["labels"]
  expected = np.mean([(sklearn.metrics.f1_score(labels, p) + sklearn.metrics.accuracy_score(labels, p)) / 2
                      for _, p, _ in seeds])
  assert task["variants"]["init"]["mean"] == pytest.approx(expected)
  assert task["majority_score"] == pytest.approx(
      (sklearn.metrics.f1_score(labels, np.ones_like(labels)) + labels.mean()) / 2)
  # Verdicts follow from the known quality.
  v = numbers["variants"]
  assert task["variants"]["teacher"]["vs_majority"] == verdicts.ABOVE
  assert task["variants"]["task"]["vs_majority"] == verdicts.NOT_ABOVE
  assert task["variants"]["random"]["vs_majority"] == verdicts.NOT_ABOVE
  assert v["task"]["retention_verdict"] == verdicts.INCONCLUSIVE   # majority-class student
  assert v["init"]["retention_verdict"] == verdicts.DISAGREES      # 80% vs 95% correct
  assert v["general"]["vs_init"] == verdicts.BETTER
  low, high = v["general"]["retention_ci"]
  assert low < v["general"]["retention"] < high and high - low < 0.1
  # Same quality as the teacher but other errors: the interval decides, not the point.
  assert v["general"]["retention_verdict"] in (verdicts.AGREES, verdicts.INCONCLUSIVE)
  assert (v["general"]["retention_verdict"] == verdicts.AGREES) == (low >= 0.965)


def test_resampled_scores_are_scikit_learns():
  rng = np.random.default_rng(1)
  labels = (rng.random(300) < 0.6).astype(np.int64)
  predictions = flip(labels, 0.25, rng)
  score = accuracy_stats.scorer(glue.get_task("mrpc"), predictions, labels)
  index = rng.integers(0, 300, (5, 300))
  got = score(index)
  for row, i in zip(got, index):
    expected = (sklearn.metrics.f1_score(labels[i], predictions[i])
                + sklearn.metrics.accuracy_score(labels[i], predictions[i])) / 2
    assert row == pytest.approx(expected, rel=1e-12)


def test_identical_student_agrees_and_report_renders(tmp_path):
  same = lambda labels, rng: flip(labels, 0.1, np.random.default_rng(7))
  data = synthetic({"teacher": same, "init": errors(0.2), "general": same, "task": same,
                    "random": errors(0.5)})
  numbers = accuracy_stats.analyse(data)
  assert numbers["variants"]["general"]["retention_ci"] == (1.0, 1.0)
  assert numbers["variants"]["general"]["retention_verdict"] == verdicts.AGREES
  numbers["recipe"] = dict(general_steps=900, general_batch=32, reused={"teacher_mrpc_s0": "x"},
                           task_levers=[dict(temperature=4.0, alpha_soft=0.9)])
  text = distill_report.markdown(numbers, ["(latency)"], {"mean_ratio": 0.5})
  assert "**agrees**" in text
  assert ("general distillation 900 steps" in text and "temperature 4.0, soft-label weight 0.9"
          in text and "`teacher_mrpc_s0`" in text)
  assert "majority class" in text and "0.50x the teacher's latency" in text
  distill_report.plots(numbers, str(tmp_path))
  assert os.path.getsize(tmp_path / "retention.png") > 1000


def write_rte(folder, rows, seed):
  """A GLUE-format RTE folder (index, sentence1, sentence2, label) of `rows` pairs."""
  rng = np.random.default_rng(seed)
  words = "the a cat dog sat ran on under mat tree house river".split()
  os.makedirs(folder, exist_ok=True)
  for split, n in (("train", rows), ("dev", rows // 2)):
    lines = ["index\tsentence1\tsentence2\tlabel"]
    for i in range(n):
      a = " ".join(rng.choice(words, 6))
      label = "entailment" if i % 3 else "not_entailment"
      lines.append(f"{i}\t{a}\t{a if label == 'entailment' else a[::-1]}\t{label}")
    with open(os.path.join(folder, f"{split}.tsv"), "w") as f:
      f.write("\n".join(lines) + "\n")


@pytest.mark.slow
def test_any_glue_format_task_runs_by_name(tmp_path):
  """RTE from a folder of RTE TSVs: a study stage runs through launch.py, the report reads it."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  rte = tmp_path / "RTE"
  write_rte(rte, 64, 0)
  root = tmp_path / "study"
  argv = [sys.executable, "-m", "experiments.distill_study", f"--workdir={root}", "--tasks=rte",
          f"--data-dir=rte:{rte}", "--seeds=rte:0"]
  listed = subprocess.run(argv + ["--list"], capture_output=True, text=True, check=True,
                          cwd=distill_study.ROOT).stdout
  assert f"--config.finetune.data_dir={rte}" in listed and "teacher_rte_s0" in listed
  out = subprocess.run(argv + ["--stages=random_rte_s0"], capture_output=True, text=True,
                       cwd=distill_study.ROOT, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  report = (root / "report.md").read_text()
  data = accuracy_stats.task_data("rte", str(rte))
  assert data["majority"] == 0 and len(data["labels"]) == 32  # 2 of 3 rows entail
  assert "RTE" in report and "random" in report and "majority class" in report


def test_levers_reach_the_commands_and_reuse_links_only_unchanged_stages(tmp_path, capsys):
  """--general-steps / --temperature / --alpha-soft change exactly the general and task
  stages; --reuse links a finished study's stage only when its command is the same, and a
  stage done with another command is refused."""
  first, second = str(tmp_path / "first"), str(tmp_path / "second")
  seeds = {"mrpc": (0,)}
  default = dict(distill_study.stages(first, ["mrpc"], seeds))
  levers = dict(general_steps=900, temperature=4.0, alpha_soft=0.9)
  plan = dict(distill_study.stages(second, ["mrpc"], seeds, levers=levers))
  assert "--config.train.num_steps=900" in plan["general_distillation"]
  assert {"--config.finetune.temperature=4.0", "--config.finetune.alpha_soft=0.9"} <= set(
      plan["task_mrpc_s0"])
  assert "--config.finetune.temperature=2.0" in default["task_mrpc_s0"]
  for name, argv in default.items():  # the first study, finished
    job = distill_study.stage_job(first, name, argv)
    os.makedirs(job.workdir)
    files.atomic_write(os.path.join(job.workdir, "done.json"),
                       json.dumps({"command": job.command}))
  assert plan["general_mrpc_s0"] == [a.replace(first, second)  # same command text ...
                                     for a in default["general_mrpc_s0"]]
  for name, argv in plan.items():  # ... but it reads a general distillation of 900 steps
    distill_study.link_reused(second, distill_study.stage_job(second, name, argv), first)
  linked = sorted(n for n in os.listdir(second) if os.path.islink(os.path.join(second, n)))
  assert linked == ["init_mrpc_s0", "random_mrpc_s0", "student_init", "teacher_mrpc_s0"]
  # a stage done with another command than the plan's is refused, not reused or mixed
  capsys.readouterr()
  with pytest.raises(SystemExit) as refused:
    distill_study.run_stage(first, "task_mrpc_s0", plan["task_mrpc_s0"])
  err = capsys.readouterr().err.strip().splitlines()
  assert refused.value.code == 2 and len(err) == 1
  assert err[0].startswith("error: ") and "another command" in err[0]


@pytest.mark.parametrize("flag", ["--general-steps=0", "--temperature=0", "--tasks=cola",
                                  "--stages=no_such_stage"])
def test_bad_flags_are_one_error_line_with_status_2_and_nothing_made(tmp_path, flag):
  workdir = tmp_path / "study"
  out = subprocess.run([sys.executable, "-m", "experiments.distill_study",
                        f"--workdir={workdir}", flag], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --"), out.stderr
  assert not workdir.exists()
