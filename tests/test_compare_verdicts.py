"""The comparison report's accuracy verdicts, rendered from synthetic numbers (fast).

The fine-tuning table marks a model **inconclusive** on a task unless its
interval over the majority class lies above 0. The real-teacher row: the
distill study's retention beside the 97%.

`python -m experiments.compare --real-teacher=DIR` copies DIR/distill_numbers.json
(a `python -m experiments.distill_study` folder) into the comparison's folder;
the report's claims table then shows that retention with its interval, the
majority classes and the latency ratio, and a verdict word decided from the
interval (`verdicts.retention`). Fed synthetic numbers: below the majority
class, an interval straddling 97%, clearly above, clearly below. Fast: no stage
runs, the report is rendered from a folder holding only run.json.
"""

import copy
import json
import os
import pathlib
import re

import pytest

from experiments import compare
from experiments import compare_numbers
from experiments import compare_plan
from experiments.compare_report import Report
from tests.test_compare import NAMES, NUMBER, prose, resolve

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMITTED = REPO / "experiments" / "results" / "distill_study"
CLAIM = compare_plan.STUDY["distilbert_glue_real_teacher"]["claim"].format("97")


def real_teacher_row(tmp_path, numbers: dict):
  """(measured, verdict, ledger, comparison folder) of the real-teacher row, for a study
  folder holding `numbers`."""
  study = tmp_path / "study"
  study.mkdir()
  (study / "distill_numbers.json").write_text(json.dumps(numbers))
  root = tmp_path / "compare"
  root.mkdir()
  (root / "run.json").write_text(json.dumps({"settings": {}, "invocations": []}))
  assert compare_numbers.real_teacher_problem(str(study)) is None
  compare_numbers.take_real_teacher(str(study), str(root))
  report = Report(str(root))
  (row,) = [line for line in report.claims() if line.startswith(f"| {CLAIM} |")]
  _, measured, verdict = [cell.strip() for cell in row.strip("|").split(" | ")]
  return measured, verdict, report.n.items, root


def committed() -> dict:
  return json.loads((COMMITTED / "distill_numbers.json").read_text())


def with_interval(low: float, high: float, *, above: bool) -> dict:
  numbers = copy.deepcopy(committed())
  for task in numbers["tasks"].values():
    for entry in task["variants"].values():
      entry["vs_majority"] = "above" if above else "not above"
  for entry in numbers["variants"].values():
    entry["above_majority_on_every_task"] = above
  numbers["variants"]["task"]["retention"] = (low + high) / 2
  numbers["variants"]["task"]["retention_ci"] = [low, high]
  return numbers


def test_the_committed_study_row_traces_every_number_and_keeps_its_own_verdict(tmp_path):
  numbers = committed()
  measured, verdict, ledger, root = real_teacher_row(tmp_path, numbers)
  task = numbers["variants"]["task"]
  assert verdict.startswith(task["retention_verdict"] + ": ")  # the study report's own word
  assert f"{task['retention'] * 100:.1f}% of the teacher's" in measured
  low, high = task["retention_ci"]
  assert f"95% CI {low * 100:.1f} to {high * 100:.1f}%" in measured
  assert f"latency ratio of {numbers['latency']['mean_ratio']:.2f}" in measured
  assert "not above the majority class: the student on MRPC" in verdict
  assert "Majority class: MRPC" in verdict and "`all-MiniLM-L6-v2`" in verdict
  # Every number shown resolves to its source in the comparison's folder, and no
  # digit in the row is without one.
  for item in ledger:
    assert format(resolve(item["source"], root) * item["scale"], item["fmt"]) == item["text"]
  body = prose(f"{measured} {verdict}")
  assert sorted(NUMBER.findall(body)) == sorted(
      i["text"] for i in ledger if i["source"].get("study") is None)
  assert not re.findall(r"\d", NAMES.sub(" ", NUMBER.sub(" ", body)))


@pytest.mark.parametrize("low, high, above, word, why", [
    (0.975, 0.99, False, "inconclusive", "not above the majority class"),  # below baseline
    (0.95, 0.98, True, "inconclusive", "straddles"),                        # overlapping
    (0.97, 0.99, True, "agrees", "lies at or above"),                       # clearly above
    (0.90, 0.94, True, "disagrees", "lies below"),                          # clearly below
])
def test_the_verdict_word_follows_the_interval_and_the_majority_class(
    tmp_path, low, high, above, word, why):
  _, verdict, _, _ = real_teacher_row(tmp_path, with_interval(low, high, above=above))
  assert verdict.startswith(f"{word}: "), verdict
  assert why in verdict


def test_without_a_real_teacher_the_row_says_it_was_not_measured(tmp_path):
  root = tmp_path / "compare"
  root.mkdir()
  (root / "run.json").write_text(json.dumps({"settings": {}, "invocations": []}))
  (row,) = [r for r in Report(str(root)).claims() if r.startswith(f"| {CLAIM} |")]
  assert "| n/a | not measured in this comparison" in row


def test_a_folder_without_the_study_numbers_is_refused_before_anything_is_written(
    tmp_path, capsys):
  workdir = tmp_path / "compare"
  with pytest.raises(SystemExit) as exit_info:
    compare.main([f"--workdir={workdir}", "--report-only", f"--real-teacher={tmp_path}"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: --real-teacher=")
  assert "distill_numbers.json" in err[0]
  assert not os.path.exists(workdir)
  (tmp_path / "distill_numbers.json").write_text('{"variants": {"teacher": {}}}')
  with pytest.raises(SystemExit):
    compare.main([f"--workdir={workdir}", "--report-only", f"--real-teacher={tmp_path}"])
  assert "no teacher and distilled student" in capsys.readouterr().err
  assert not os.path.exists(workdir)


def test_the_fine_tuning_table_marks_a_model_not_above_the_majority_inconclusive(tmp_path):
  root = tmp_path / "compare"
  root.mkdir()
  (root / "run.json").write_text(json.dumps({"settings": {}, "invocations": []}))
  cis = {"bert": [0.012, 0.081], "distilbert": [-0.031, 0.024], "albert": [-0.09, -0.01]}
  stats = {"intervals": True, "tasks": {t: {"majority_score": 0.748, "variants": {
      m: {"minus_majority_ci": ci, "vs_majority": "above" if ci[0] > 0 else "not above"}
      for m, ci in cis.items()}} for t in compare_plan.TASKS}}
  (root / compare_numbers.ACCURACY_FILE).write_text(json.dumps(stats))
  report = Report(str(root))
  lines = report.finetuning()
  header = [line for line in lines if line.startswith("| model |")][0]
  columns = [c.strip() for c in header.strip("|").split("|")]
  rows = {r.split(" | ")[0].strip("| "): dict(zip(columns, [c.strip() for c in
                                                             r.strip("|").split(" | ")]))
          for r in lines if r.startswith("| ") and not r.startswith("| model")}
  mrpc = "MRPC vs the majority class"
  assert rows["BERT"][mrpc] == "above: 1.2 points above to 8.1 points above (majority 74.8)"
  assert rows["DistilBERT"][mrpc] == (
      "**inconclusive**: 3.1 points below to 2.4 points above (majority 74.8)")
  assert rows["ALBERT"][mrpc].startswith("**inconclusive**: 9.0 points below to 1.0 points below")
  for item in report.n.items:
    assert format(resolve(item["source"], root) * item["scale"], item["fmt"]) == item["text"]
  body = prose("\n".join(lines))  # every number of the section has its source
  assert sorted(NUMBER.findall(body)) == sorted(i["text"] for i in report.n.items)
  assert not re.findall(r".{0,20}\d.{0,20}", NAMES.sub(" ", NUMBER.sub(" ", body)))
