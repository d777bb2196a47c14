"""experiments/compare.py end to end at `tiny` scale with a few steps, as a user runs it.

The check that matters: every number in report.md equals its source. The
report names each number's source in report_numbers.json (a JSON file and key,
a folder's size on disk, a study figure, or arithmetic on those); this test
resolves every source with its own code below, formats it, and compares it with
the text, and checks that the numbers in report.md are exactly those (no number
without a source). Some tables are also read cell by cell against the files
directly (parameters, latency, fine-tuning scores, wall times), so a number
cannot sit in the wrong column either. Then `--report-only` must write the
same report without running a stage, and a rerun must skip every finished stage.
"""

import collections
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from experiments import compare_numbers
from experiments import compare_plan
from experiments import compare_plots
from experiments import compare_publish
from experiments import jobs

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
ARGS = ["--scale=tiny", "--corpus=default", "--pretrain-steps=3", "--distill-steps=3",
        "--finetune-steps=3", "--finetune-pad-multiple=128", "--eval-batches=2",
        "--batches=1", "--seqs=16", "--real-teacher=experiments/results/distill_study"]
TIMEOUT = 1800


def run_compare(root, *extra):
  return subprocess.run([sys.executable, "-m", "experiments.compare", f"--workdir={root}",
                         "--no-echo", *extra], cwd=REPO, capture_output=True, text=True,
                        timeout=TIMEOUT)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  folder = tmp_path_factory.mktemp("compare")
  out = run_compare(folder, *ARGS)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return folder


# ------------------------------------------------------------ sources, resolved here


def load(path: pathlib.Path):
  text = path.read_text()
  if path.suffix == ".jsonl":
    return [json.loads(line) for line in text.splitlines() if line.strip()]
  return json.loads(text)


def resolve(src: dict, root: pathlib.Path):
  if "const" in src:
    return src["const"]
  if "study" in src:
    return compare_plan.STUDY[src["study"]][src["field"]]
  if "dir_bytes" in src:
    return sum(p.stat().st_size for p in (root / src["dir_bytes"]).rglob("*") if p.is_file())
  if "file" in src:
    value = load(root / src["file"])
    for key in src["key"]:
      if isinstance(key, dict):
        (value,) = [x for x in value if all(x.get(k) == v for k, v in key.items())]
      else:
        value = value[key]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), src
    return value
  args = [resolve(a, root) for a in src["args"]]
  return {"div": lambda: args[0] / args[1], "mul": lambda: args[0] * args[1],
          "sub": lambda: args[0] - args[1], "add": lambda: args[0] + args[1],
          "abs": lambda: abs(args[0]), "mean": lambda: sum(args) / len(args),
          "min": lambda: min(args), "max": lambda: max(args),
          "sum": lambda: sum(args)}[src["op"]]()


def files_of(src: dict) -> set:
  if "file" in src:
    return {src["file"]}
  if "dir_bytes" in src:
    return {src["dir_bytes"]}
  return set().union(*[files_of(a) for a in src.get("args", [])])


# A number: digits with thousands commas and decimals, not glued to a word
# ("SST-2", "F1", "1x16" are names), optionally followed by M (millions) or %.
NUMBER = re.compile(r"(?<![A-Za-z0-9_.\-])\d(?:[\d,]*\d)?(?:\.\d+)?(?=M?(?![A-Za-z0-9_]))")
NAMES = re.compile(r"SST-2|F1|fp32|\b\d+x\d+\b")


def prose(text: str) -> str:
  """report.md without code spans and image links (paths, commands, dates, commits)."""
  text = re.sub(r"`[^`]*`", " ", text)
  return re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)


def tables(text: str) -> dict:
  """Markdown tables by the header line: a list of {column: cell} rows each."""
  out, lines = {}, text.splitlines()
  for i, line in enumerate(lines):
    if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
      header = [c.strip() for c in line.strip("|").split("|")]
      rows = []
      for row in lines[i + 2:]:
        if not row.startswith("| "):
          break
        rows.append(dict(zip(header, [c.strip() for c in row.strip("|").split(" | ")])))
      out[tuple(header)] = rows
  return out


def table_with(text: str, first: str, column: str) -> list:
  for header, rows in tables(text).items():
    if header[0] == first and column in header:
      return rows
  raise AssertionError(f"no table with columns {first!r}, {column!r}")


def one_class(root, m, task):
  """Whether the fine-tuned model predicted one label for the whole dev set."""
  lines = (root / f"finetune_{m}_{task}" / "predictions_validation.tsv").read_text().splitlines()
  assert lines[0] == "index\tprediction"
  return len({line.split("\t")[1] for line in lines[1:]}) == 1


def task_score(root, m, task):
  """GLUE's score of a task: SST-2 accuracy, MRPC the mean of accuracy and F1."""
  dev = load(root / f"finetune_{m}_{task}" / "eval_validation.json")
  return dev["accuracy"] if task == "sst2" else (dev["accuracy"] + dev["f1"]) / 2


# ------------------------------------------------------------------------ tests


def test_every_number_equals_its_source(root):
  text = (root / "report.md").read_text()
  ledger = json.loads((root / "report_numbers.json").read_text())
  assert len(ledger) > 100
  used = set()
  for item in ledger:
    value = resolve(item["source"], root)
    assert format(value * item["scale"], item["fmt"]) == item["text"], item
    used |= files_of(item["source"])
  # The sources are the stage folders' own files.
  kinds = {f.split("/")[-1] for f in used}
  assert {"summary.json", "benchmark.json", "eval_validation.json", "config.json",
          "metrics.jsonl", "evaluate_mlm_wiki.valid.json",
          "evaluate_mlm_gutenberg_valid.json"} <= kinds
  assert any(f.startswith("stages/") for f in used)
  assert any("/checkpoints/" in f for f in used) and any(f.endswith("best/params") for f in used)
  # The numbers in the report are exactly the ledger's, and nothing else has digits.
  body = prose(text)
  found = NUMBER.findall(body)
  assert collections.Counter(found) == collections.Counter(i["text"] for i in ledger)
  leftover = NAMES.sub(" ", NUMBER.sub(" ", body))
  assert not re.findall(r".{0,20}\d.{0,20}", leftover)
  bench = load(root / "benchmark" / "benchmark.json")
  points = {f"{r['batch']}x{r['seq']}" for r in bench["inference"]}
  assert set(re.findall(r"\b\d+x\d+\b", body)) <= points


def test_tables_read_their_files(root):
  text = (root / "report.md").read_text()
  models = {"BERT": "bert", "DistilBERT": "distilbert", "ALBERT": "albert"}
  params = table_with(text, "model", "embeddings")
  assert [r["model"] for r in params] == list(models)
  for row in params:
    summary = load(root / f"summary_base_{models[row['model']]}" / "summary.json")
    assert row["total"] == f"{summary['params_total']:,}"
    assert row["embeddings"] == f"{summary['params_embeddings']:,}"
    assert row["encoder layers"] == f"{summary['params_layers']:,}"
    assert row["pooler"] == f"{summary['params_pooler']:,}"
  assert params[0]["total"] == "109,482,240" and params[2]["total"] == "11,683,584"

  bench = load(root / "benchmark" / "benchmark.json")
  latency = table_with(text, "batch x seq", "BERT (ms)")
  assert [r["batch x seq"] for r in latency] == ["1x16"]
  rows = {r["model"]: r for r in bench["inference"] if (r["batch"], r["seq"]) == (1, 16)}
  ratios = {e["model"]: e for e in bench["ratios"]["model_vs_bert"]}
  for name, m in models.items():
    ms = rows[m]["median_s"] * 1e3
    assert float(latency[0][f"{name} (ms)"]) == pytest.approx(ms, abs=0.051 if ms >= 10 else 0.006)
  assert latency[0]["DistilBERT / BERT"] == f"{ratios['distilbert']['latency_ratio']:.2f}"
  assert latency[0]["ALBERT / BERT"] == f"{ratios['albert']['latency_ratio']:.2f}"
  assert ratios["albert"]["latency_ratio"] == pytest.approx(
      rows["albert"]["median_s"] / rows["bert"]["median_s"])

  scores = table_with(text, "model", "SST-2 accuracy")
  for row in scores:
    m = models[row["model"]]
    sst2 = load(root / f"finetune_{m}_sst2" / "eval_validation.json")
    mrpc = load(root / f"finetune_{m}_mrpc" / "eval_validation.json")
    assert sst2["examples"] == 872 and mrpc["examples"] == 408
    mark = {t: " (one class)" if one_class(root, m, t) else "" for t in ("sst2", "mrpc")}
    assert row["SST-2 accuracy"] == f"{sst2['accuracy']:.4f}" + mark["sst2"]
    assert row["MRPC accuracy"] == f"{mrpc['accuracy']:.4f}" + mark["mrpc"]
    assert row["MRPC F1"] == f"{mrpc['f1']:.4f}" + mark["mrpc"]
    average = (sst2["accuracy"] + (mrpc["accuracy"] + mrpc["f1"]) / 2) / 2
    assert row["average"] == f"{average:.4f}"
    stats = load(root / compare_numbers.ACCURACY_FILE)
    for t, name in (("sst2", "SST-2"), ("mrpc", "MRPC")):
      above = stats["tasks"][t]["variants"][m]["vs_majority"] == "above"
      assert row[f"{name} vs the majority class"].startswith(
          "above: " if above else "**inconclusive**: ")

  walls = table_with(text, "stage", "wall time (s)")
  plan = [s.name for s in compare_plan.make_plan(str(root),
                                                 load(root / "run.json")["settings"])]
  assert [r["stage"].strip("`") for r in walls] == plan
  for row in walls:
    record = load(root / "stages" / f"{row['stage'].strip('`')}.json")
    assert row["wall time (s)"] == f"{record['wall_s']:.0f}" and row["status"] == "done"
    assert row["command"].strip("`") == record["command"]
    assert record["wall_s"] == sum(a["wall_s"] for a in record["attempts"])


def test_claims_and_verdicts(root):
  text = (root / "report.md").read_text()
  claims = {r["the study says"]: r for r in table_with(text, "the study says", "verdict")}
  assert len(claims) == len(compare_plan.STUDY)
  for key, entry in compare_plan.STUDY.items():
    shown = entry["claim"].format(format(entry["value"] * entry["scale"], entry["fmt"]))
    assert shown in claims, shown
  study = compare_plan.STUDY
  verdict = lambda key: claims[study[key]["claim"].format(format(
      study[key]["value"] * study[key]["scale"], study[key]["fmt"]))]["verdict"]
  for key in ("bert_params", "distilbert_params", "albert_params", "distilbert_fewer",
              "albert_fewer", "bert_embeddings"):
    assert verdict(key).startswith("agrees: "), verdict(key)
  assert verdict("albert_embeddings").startswith("disagrees: ")  # 4.0M with the projection
  bench = load(root / "benchmark" / "benchmark.json")
  ratio = {e["model"]: e["latency_ratio"] for e in bench["ratios"]["model_vs_bert"]}
  assert verdict("distilbert_faster").startswith(
      "agrees: " if ratio["distilbert"] <= 0.6 else "disagrees: ")
  assert verdict("albert_not_faster").startswith(
      "agrees: " if 0.9 <= ratio["albert"] <= 1.1 else "disagrees: ")
  # Retention with its bootstrap interval (accuracy_stats.json, computed from the runs'
  # dev predictions); the word follows the interval and the majority-class check.
  stats = load(root / compare_numbers.ACCURACY_FILE)
  assert stats["intervals"]
  entry = stats["variants"]["distilbert"]
  low, high = entry["retention_ci"]
  assert low <= entry["retention"] <= high
  above = {m: all(stats["tasks"][t]["variants"][m]["vs_majority"] == "above"
                  for t in ("sst2", "mrpc")) for m in ("bert", "distilbert")}
  word = ("inconclusive" if not all(above.values()) else "agrees" if low >= 0.965 else
          "disagrees" if high < 0.965 else "inconclusive")
  assert verdict("distilbert_glue").startswith(word + ": "), verdict("distilbert_glue")
  assert f"keeps {entry['retention'] * 100:.1f}%" in verdict("distilbert_glue")
  assert "Majority class: SST-2" in verdict("distilbert_glue")
  kept = (sum(task_score(root, "distilbert", t) for t in ("sst2", "mrpc"))) / (
      sum(task_score(root, "bert", t) for t in ("sst2", "mrpc")))
  assert entry["retention"] == pytest.approx(kept)
  # The real teacher's row: the committed distill study's numbers, copied in.
  real = load(root / compare_numbers.REAL_TEACHER_FILE)
  assert real == load(REPO / "experiments" / "results" / "distill_study" / "distill_numbers.json")
  assert verdict("distilbert_glue_real_teacher").startswith(
      real["variants"]["task"]["retention_verdict"] + ": ")


def test_header_names_date_commit_machine_and_command(root):
  text = (root / "report.md").read_text()
  run = load(root / "run.json")
  (invocation,) = run["invocations"]
  assert invocation["command"] == "python -m experiments.compare " + " ".join(
      [f"--workdir={root}", "--no-echo", *ARGS])
  assert len(invocation["git"]["commit"]) == 40
  for shown in (invocation["date"], invocation["git"]["commit"][:12], invocation["command"],
                invocation["machine"]["cpu"]):
    assert f"`{shown}`" in text.split("## ")[0]
  for name, _ in compare_plots.PLOTS:
    assert (root / name).stat().st_size > 10_000 and f"]({name})" in text


def test_report_only_is_identical_and_runs_nothing(root):
  # accuracy_stats.json is the report's too (bootstrap with a fixed seed: the same bytes).
  outputs = ["report.md", "report_numbers.json", compare_numbers.ACCURACY_FILE] + [
      name for name, _ in compare_plots.PLOTS]
  before = {name: (root / name).read_bytes() for name in outputs}
  kept = {p: p.stat().st_mtime_ns for p in root.rglob("*")
          if p.is_file() and p.name not in outputs}
  (root / "report.md").unlink()
  out = run_compare(root, "--report-only")
  assert out.returncode == 0, out.stderr[-3000:]
  assert {name: (root / name).read_bytes() for name in outputs} == before
  assert {p: p.stat().st_mtime_ns for p in root.rglob("*")
          if p.is_file() and p.name not in outputs} == kept


def test_publish_copies_the_report_and_every_file_behind_it_but_no_checkpoint(root, tmp_path):
  dest = tmp_path / "published"
  copied = compare_publish.publish(str(root), str(dest))
  assert (dest / "report.md").read_bytes() == (root / "report.md").read_bytes()
  for name, _ in compare_plots.PLOTS:
    assert (dest / name).is_file()
  numbers = json.loads((root / "report_numbers.json").read_text())
  named = set().union(*(compare_publish._source_files(item["source"]) for item in numbers))
  assert named and all((dest / rel).read_bytes() == (root / rel).read_bytes() for rel in named)
  assert (dest / "pretrain_bert" / "metrics.jsonl").is_file()
  assert (dest / compare_numbers.REAL_TEACHER_ORIGIN).read_bytes() == (
      root / compare_numbers.REAL_TEACHER_ORIGIN).read_bytes()
  assert not any("checkpoints" in rel.split(os.sep) for rel in copied)
  assert not (dest / "pretrain_bert" / "checkpoints").exists()


def test_whole_heldout_split_section_reads_the_all_files(root, tmp_path):
  """`evaluate_mlm_<corpus>_all.json` (mode=evaluate, data.eval_batches=0) beside a trained
  model adds the whole-split table; each cell is its file's number (the files here are the
  sampled evaluations under the whole split's name: the section reads, it does not score)."""
  copy = tmp_path / "copy"
  shutil.copytree(root, copy)
  stage = compare_plan.TRAINED_BY
  for m in ("bert", "albert"):
    shutil.copy(copy / stage[m] / "evaluate_mlm_gutenberg_valid.json",
                copy / stage[m] / "evaluate_mlm_gutenberg_valid_all.json")
  out = run_compare(copy, *ARGS, "--report-only")
  assert out.returncode == 0, out.stderr[-3000:]
  text = (copy / "report.md").read_text()
  rows = table_with(text, "model", "95% interval")
  assert [r["model"] for r in rows] == ["BERT", "ALBERT"]  # no file for DistilBERT: no row
  for row, m in zip(rows, ("bert", "albert")):
    scored = load(copy / stage[m] / "evaluate_mlm_gutenberg_valid_all.json")
    low, high = scored["mlm_accuracy_ci95"]
    assert low <= scored["mlm_accuracy"] <= high
    assert row["masked tokens"] == f"{scored['masked_tokens']:,}"
    assert row["MLM accuracy"] == f"{scored['mlm_accuracy']:.4f}"
    assert row["95% interval"] == f"{low:.4f}-{high:.4f}"
    assert row["unigram level"] == f"{scored['mlm_unigram_accuracy']:.4f}"
    assert row["times the unigram level"] == (
        f"{scored['mlm_accuracy'] / scored['mlm_unigram_accuracy']:.1f}")
  ledger = json.loads((copy / "report_numbers.json").read_text())
  assert {"pretrain_albert/evaluate_mlm_gutenberg_valid_all.json"} <= set().union(
      *(files_of(item["source"]) for item in ledger))
  for item in ledger:
    assert format(resolve(item["source"], copy) * item["scale"], item["fmt"]) == item["text"]


def test_rerun_skips_finished_stages_and_refuses_other_settings(root):
  stages = {p: p.read_bytes() for p in (root / "stages").iterdir()}
  out = run_compare(root, *ARGS)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "done already" in out.stdout and "[1/" not in out.stdout
  assert {p: p.read_bytes() for p in (root / "stages").iterdir()} == stages
  other = run_compare(root, *[a for a in ARGS if not a.startswith("--pretrain-steps")],
                      "--pretrain-steps=5")
  assert other.returncode == 2
  assert other.stderr.startswith("error: ") and len(other.stderr.strip().splitlines()) == 1
  assert "other settings (['pretrain_steps'] differ" in other.stderr


def test_an_interrupted_attempt_counts_until_its_last_log_line(tmp_path):
  log = tmp_path / "stage.log"
  log.write_text("step 1/4\n")
  os.utime(log, (1000.0 + 75.0, 1000.0 + 75.0))
  record = {"attempts": [{"started_ts": 1000.0, "wall_s": 10.0},
                         {"started_ts": 1000.0}]}
  jobs.close_interrupted(record, str(log))
  assert record["attempts"][0] == {"started_ts": 1000.0, "wall_s": 10.0}
  assert record["attempts"][1] == {"started_ts": 1000.0, "wall_s": 75.0, "interrupted": True}


def test_stage_records_count_every_attempt_of_one_run(tmp_path, capsys):
  flag = tmp_path / "ok"
  script = (f"import os, sys; print('working'); "
            f"sys.exit(0 if os.path.exists({str(flag)!r}) else 3)")
  stage = jobs.Job("probe", "probe", [sys.executable, "-c", script],
                   str(tmp_path / "probe"), done=flag.exists)
  with pytest.raises(SystemExit, match=r"stage probe failed \(exit status 3\)"):
    jobs.run_stage(stage, str(tmp_path), "1/1", echo=False)
  record = json.loads((tmp_path / "stages" / "probe.json").read_text())
  assert record["status"] == "failed" and [a["rc"] for a in record["attempts"]] == [3]
  flag.write_text("")
  jobs.run_stage(stage, str(tmp_path), "1/1", echo=False)  # the rerun resumes the stage
  record = json.loads((tmp_path / "stages" / "probe.json").read_text())
  assert record["status"] == "done" and [a["rc"] for a in record["attempts"]] == [3, 0]
  assert record["wall_s"] == sum(a["wall_s"] for a in record["attempts"])
  assert (tmp_path / "logs" / "probe.log").read_text().splitlines().count("working") == 2
  jobs.run_stage(stage, str(tmp_path), "1/1", echo=False)  # redone (its folder deleted)
  record = json.loads((tmp_path / "stages" / "probe.json").read_text())
  assert [a["rc"] for a in record["attempts"]] == [0]
  assert (tmp_path / "logs" / "probe.log.previous").exists()
  assert "(resuming)" in capsys.readouterr().out


def test_a_stage_that_exits_0_before_its_end_is_stopped_not_failed(tmp_path):
  """A SIGTERMed stage saves and exits 0 unfinished: 'stopped', rerun to resume."""
  stage = jobs.Job("probe", "probe", [sys.executable, "-c", "print('saved')"],
                   str(tmp_path / "probe"), done=lambda: False)
  with pytest.raises(SystemExit, match=r"stage probe stopped before its end \(exit status 0"):
    jobs.run_stage(stage, str(tmp_path), "1/1", echo=False)
  record = json.loads((tmp_path / "stages" / "probe.json").read_text())
  assert record["status"] == "stopped" and [a["rc"] for a in record["attempts"]] == [0]


def test_long_scale_warms_up_the_sequence_length_alike_for_bert_and_albert(tmp_path):
  """`long`: pretrain_<m>_short at 128 x 32, pretrain_<m>_128 at 32 x 128 from it, pretrain_<m> from that."""
  from experiments import compare  # pylint: disable=import-outside-toplevel
  settings = compare_plan.settings_of(compare.parse_args([f"--workdir={tmp_path}",
                                                          "--scale=long"]))
  stages = {job.name: job for job in compare_plan.make_plan(str(tmp_path), settings)}
  flags = lambda job: dict(a[len("--config."):].split("=", 1) for a in job.argv
                           if a.startswith("--config."))
  shapes = {}
  for m in ("bert", "albert"):
    names = compare_plan.pretraining_stages("long", m)
    assert names == [f"pretrain_{m}_short", f"pretrain_{m}_128", f"pretrain_{m}"]
    assert names[-1] == compare_plan.TRAINED_BY[m]
    phases = [flags(stages[name]) for name in names]
    assert [(f["data.max_seq_length"], f["data.batch_size"]) for f in phases] == [
        ("32", "128"), ("128", "32"), ("128", "32")]
    assert "pretrain.init" not in phases[0]
    for before, name, f in zip(names, names[1:], phases[1:]):  # each continues the one before
      assert f["pretrain.init"] == jobs.shown_path(str(tmp_path / before))
      assert stages[name].needs == (before,)
    shapes[m] = [(f["train.num_steps"], f["data.batch_size"], f["data.max_seq_length"])
                 for f in phases]
  assert shapes["bert"] == shapes["albert"]
