"""experiments/sweep.py: the grid, skip-on-rerun, executors, and every table number traced to its source.

The parameter grid of ALBERT-base (share x E, 16 points) is checked against the
ALBERT paper (Lan et al., 2020, Tables 3 and 4) rounded to the nearest
million; the report's numbers are read back from sweep.md and compared with
sweep.json, and those with each point's own files (summary.json,
metrics.jsonl), never with a copy typed here.
"""

import json
import os
import pathlib
import re

import pytest

from configs import albert
from experiments import sweep
from lite_bert import paths
from lite_bert.data import corpora
from lite_bert.data import tokenizers
from lite_bert.models import summary
from lite_bert.models.config import EncoderConfig
from lite_bert.train import metrics as metrics_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMITTED = REPO / "experiments" / "results" / "sweep_albert"
COMMITTED_TINY = REPO / "experiments" / "results" / "sweep_albert_tiny"
WIKI_VALID = paths.data_dir() / "wikitext" / "wikitext-2-raw" / "wiki.valid.raw"
SHARES = ("none", "all", "attention", "ffn")
SIZES = (64, 128, 256, 768)
BASE_GRID = ["--grid=model.share=" + ",".join(SHARES),
             "--grid=model.embedding_size=" + ",".join(map(str, SIZES))]

# The paper's ALBERT-base parameter counts in millions (Table 3: not-shared and
# all-shared at every E; Table 4: all four modes at E = 768 and 128).
PAPER = {
    ("none", 64): 87, ("none", 128): 89, ("none", 256): 93, ("none", 768): 108,
    ("all", 64): 10, ("all", 128): 12, ("all", 256): 16, ("all", 768): 31,
    ("attention", 128): 64, ("attention", 768): 83,
    ("ffn", 128): 38, ("ffn", 768): 57,
}


def base_counts():
  """{(share, E): counts} from the code `mode=summary` runs, in this process."""
  counts = {}
  for share in SHARES:
    for size in SIZES:
      config = albert.get_config("base")
      config.model.share = share
      config.model.embedding_size = size
      params = summary.abstract_pretraining_params(EncoderConfig.from_dict(config.model),
                                                   pair_head=True)
      counts[share, size] = summary.parameter_counts(params)
  return counts


def table(md: str) -> list[dict]:
  """The rows of the report's table, as {header: cell}."""
  lines = [line for line in md.splitlines() if line.startswith("|")]
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  assert set(lines[1]) <= {"|", "-"}
  return [dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
          for line in lines[2:]]


def number(cell: str) -> float:
  return float(cell.replace(",", ""))


def decimals(cell: str) -> int:
  return len(cell.split(".")[1]) if "." in cell else 0


def assert_cell(cell: str, value) -> None:
  """A table cell is `value` as written (ints exact, floats to the digits shown)."""
  if isinstance(value, int):
    assert number(cell) == value and "." not in cell, (cell, value)
  else:
    assert abs(number(cell) - value) <= 0.5 * 10 ** -decimals(cell) + 1e-12, (cell, value)


def assert_report_matches_json(out: pathlib.Path) -> dict:
  """Every number in sweep.md equals the sweep.json value it shows; returns sweep.json."""
  result = json.loads((out / "sweep.json").read_text())
  rows = table((out / "sweep.md").read_text())
  names = sweep.short_names(list(result["grid"]))
  assert len(rows) == len(result["points"])
  for row, point in zip(rows, result["points"]):
    for field, value in point["overrides"].items():
      assert row[names[field]] == value
    values = point["values"]
    assert values is not None, point
    if result["mode"] == "summary":
      for key in sweep.SUMMARY_COLUMNS:
        assert_cell(row[key], values[key])
      assert_cell(row["params (M)"], values["params_total"] / 1e6)
      assert decimals(row["params (M)"]) == 2
      if result["paper"]:
        assert_cell(row["w/o pooler (M)"],
                    (values["params_total"] - values["params_pooler"]) / 1e6)
        paper = point["paper_millions"]
        assert row["paper (M)"] == ("—" if paper is None else str(paper))
    else:
      for key, value in values.items():
        assert_cell(row[key], value)
    assert_cell(row["wall s"], point["wall_s"])
  assert (out / "sweep.png").stat().st_size > 10_000
  return result


def assert_json_matches_sources(result: dict) -> None:
  """sweep.json's values equal each point's own output files."""
  for point in result["points"]:
    workdir = pathlib.Path(point["workdir"])
    if result["mode"] == "summary":
      source = json.loads((workdir / "summary.json").read_text())
      assert point["values"] == {k: v for k, v in source.items() if k.startswith("params_")}
      assert point["source"] == f"{point['name']}/summary.json"
    else:
      last_eval = metrics_lib.read_metrics(str(workdir), "eval")[-1]
      assert point["values"] == {k: v for k, v in last_eval.items() if k != "split"}
    record = json.loads((workdir / "sweep_point.json").read_text())
    assert record["rc"] == 0 and record["command"] == point["command"]
    assert point["wall_s"] == record["wall_s"]


def test_paper_figures_and_their_inconsistency():
  """The module's figures are the paper's; its columns differ by 1M from additivity."""
  assert sweep.ALBERT_PAPER == PAPER
  for size in (128, 768):
    attention_only = PAPER["attention", size] - PAPER["all", size]  # 11 FFNs
    ffn_only = PAPER["ffn", size] - PAPER["all", size]  # 11 attentions
    assert (attention_only, ffn_only) == (52, 26)
    assert PAPER["none", size] - PAPER["all", size] == 77 == attention_only + ffn_only - 1


def test_base_grid_equals_paper_within_rounding():
  """16 points at ALBERT-base: the 8 shared figures round to the paper's; not-shared w/o pooler.

  Ours (millions): not-shared 87.65 / 89.65 / 93.65 / 109.08 at E = 64 / 128 /
  256 / 768 (paper 87 / 89 / 93 / 108: equal without the 590,592-parameter
  pooler: 87.06 / 89.06 / 93.06 / 108.49); all-shared 9.68 / 11.68 / 15.69 /
  31.11 (paper 10 / 12 / 16 / 31); shared-attention 63.65 and 83.08 (64, 83);
  shared-FFN 37.69 and 57.12 (38, 57).
  """
  counts = base_counts()
  assert counts["all", 128]["params_total"] == 11_683_584  # ALBERT-base, as published
  for (share, size), figure in PAPER.items():
    total, pooler = counts[share, size]["params_total"], counts[share, size]["params_pooler"]
    if share == "none":
      assert round((total - pooler) / 1e6) == figure, (share, size, total)
      assert round(total / 1e6) == figure + 1
    else:
      assert round(total / 1e6) == figure, (share, size, total)
  # The parts add up in our counts (11 blocks stop being shared).
  for size in SIZES:
    total = {s: counts[s, size]["params_total"] for s in SHARES}
    assert total["none"] - total["all"] == (
        (total["attention"] - total["all"]) + (total["ffn"] - total["all"]))


def test_committed_table_equals_fresh_counts():
  """experiments/results/sweep_albert: its table = its sweep.json = today's counts."""
  result = assert_report_matches_json(COMMITTED)
  counts = base_counts()
  assert [(p["overrides"]["model.share"], int(p["overrides"]["model.embedding_size"]))
          for p in result["points"]] == [(s, e) for s in SHARES for e in SIZES]
  for point in result["points"]:
    key = (point["overrides"]["model.share"], int(point["overrides"]["model.embedding_size"]))
    assert point["values"] == counts[key]
    assert point["paper_millions"] == PAPER.get(key)
  rows = table((COMMITTED / "sweep.md").read_text())
  assert [r["match"] for r in rows].count("✓") == 8
  assert [r["match"] for r in rows].count("✓ w/o pooler") == 4
  assert [r["match"] for r in rows].count("—") == 4


def test_committed_tiny_table_equals_its_json():
  """experiments/results/sweep_albert_tiny: 16 points, each table number = its sweep.json value.

  (Its sources, the points' metrics.jsonl, stay in the workdir named there.)
  """
  result = assert_report_matches_json(COMMITTED_TINY)
  assert result["mode"] == "pretrain" and len(result["points"]) == 16
  assert {p["values"]["step"] for p in result["points"]} == {60}
  for point in result["points"]:
    assert re.fullmatch(rf"{point['name']}/metrics\.jsonl:\d+", point["source"])


def test_grid_names_and_commands():
  grid = sweep.parse_grid(["model.share=none,all", "config.model.embedding_size=64"])
  assert grid == {"model.share": ["none", "all"], "model.embedding_size": ["64"]}
  points = sweep.grid_points(grid)
  assert [sweep.point_name(p) for p in points] == [
      "share-none__embedding_size-64", "share-all__embedding_size-64"]
  assert sweep.short_names(["data.seed", "train.seed", "model.share"]) == {
      "data.seed": "data.seed", "train.seed": "train.seed", "model.share": "share"}
  assert sweep.launch_command("configs/albert.py:base", "summary", "/w/p", {"seed": "1"},
                              points[1]) == [
      "python", "launch.py", "--config=configs/albert.py:base", "--workdir=/w/p",
      "--config.mode=summary", "--config.seed=1", "--config.model.share=all",
      "--config.model.embedding_size=64"]
  for bad in (["model.share"], ["model.share=a,a"], ["model.share=a,,b"], []):
    with pytest.raises(ValueError):
      sweep.parse_grid(bad)


def test_slurm_executor_takes_scheduler_parameters(tmp_path, monkeypatch):
  """The Slurm executor is built with --submitit's parameters (a stand-in `srun` on PATH)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
  (bin_dir / "srun").chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  params = sweep.submitit_params(["slurm_partition=gpu", "gpus_per_node=1", "cpus_per_task=8"])
  assert params == {"slurm_partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8}
  executor = sweep.make_submitit_executor("slurm", str(tmp_path), params, timeout_min=90)
  assert executor.cluster == "slurm"
  slurm = executor._executor.parameters  # pylint: disable=protected-access
  assert (slurm["partition"], slurm["gpus_per_node"], slurm["cpus_per_task"],
          slurm["time"], slurm["job_name"]) == ("gpu", 1, 8, 90, "lite_bert_sweep")
  script = executor._executor._make_submission_file_text("CMD", "uid")  # pylint: disable=protected-access
  for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90"):
    assert line in script.splitlines()
  local = sweep.make_submitit_executor("submitit_local", str(tmp_path), {}, timeout_min=90)
  assert local.parameters["timeout_min"] == 90


def test_failed_point_is_reported_and_rerun(tmp_path, capsys):
  """A point that fails: exit status 1, 'failed' in its row; a rerun launches only it."""
  args = ["--config=configs/albert.py:tiny", "--mode=summary", "--grid=model.share=all,bogus",
          f"--workdir={tmp_path}"]
  assert sweep.main(args) == 1
  result = json.loads((tmp_path / "sweep.json").read_text())
  assert [p["status"] for p in result["points"]] == ["done", "failed"]
  assert "model.share" in result["meta"]["failures"]["share-bogus"]
  rows = table((tmp_path / "sweep.md").read_text())
  assert rows[1]["params_total"] == "failed"
  assert_cell(rows[0]["params_total"], result["points"][0]["values"]["params_total"])
  assert sweep.main(args) == 1
  meta = json.loads((tmp_path / "sweep.json").read_text())["meta"]
  assert (meta["launched"], meta["skipped"]) == (["share-bogus"], ["share-all"])


@pytest.mark.slow
def test_base_summary_sweep_end_to_end(tmp_path):
  """The 16-point ALBERT-base grid through launch.py (sequential): report = json = sources.

  About 2 minutes on the 2-core machine (16 launch.py processes).
  """
  args = ["--config=configs/albert.py:base", "--mode=summary", *BASE_GRID, "--paper=albert",
          f"--workdir={tmp_path}"]
  assert sweep.main(args) == 0
  result = assert_report_matches_json(tmp_path)
  assert_json_matches_sources(result)
  assert len(result["meta"]["launched"]) == 16
  counts = base_counts()
  for point in result["points"]:
    key = (point["overrides"]["model.share"], int(point["overrides"]["model.embedding_size"]))
    assert point["values"] == counts[key]
  # The committed table holds the same numbers.
  committed = json.loads((COMMITTED / "sweep.json").read_text())
  assert [p["values"] for p in committed["points"]] == [p["values"] for p in result["points"]]
  assert sweep.main(args) == 0
  assert json.loads((tmp_path / "sweep.json").read_text())["meta"]["launched"] == []


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
  """A 1,000-piece sentencepiece model of WikiText valid, shared by the tiny sweep's points."""
  path = tmp_path_factory.mktemp("tok") / "spm.model"
  tokenizers.train_sentencepiece_on_documents(
      corpora.open_corpus(str(WIKI_VALID)), vocab_size=1000, model_path=path,
      max_sentences=20_000)
  return str(path)


@pytest.mark.slow
def test_tiny_pretrain_sweep_submitit_local(tmp_path, small_tokenizer):
  """2 x 2 tiny ALBERT pretraining points as submitit local jobs; a rerun launches nothing.

  Each point: 6 steps of batch 8 x 32 on WikiText valid (the last document held
  out), evaluated on 2 held-out batches. About a minute on the 2-core machine.
  """
  args = ["--config=configs/albert.py:tiny", "--mode=pretrain",
          "--grid=model.share=all,none", "--grid=model.embedding_size=32,64",
          f"--workdir={tmp_path / 'sweep'}", "--executor=submitit_local", "--parallel=2",
          f"--set=data.corpus={WIKI_VALID}", f"--set=tokenizer.path={small_tokenizer}",
          "--set=model.vocab_size=1000", "--set=data.batch_size=8",
          "--set=data.max_seq_length=32", "--set=data.max_predictions_per_seq=5",
          "--set=data.eval_batches=2", "--set=train.num_steps=6", "--set=train.log_every=3",
          "--set=train.eval_every=0", "--set=checkpoint.every_steps=6",
          "--set=checkpoint.async_save=False", "--set=optim.warmup_steps=2"]
  out = tmp_path / "sweep"
  assert sweep.main(args) == 0
  result = assert_report_matches_json(out)
  assert_json_matches_sources(result)
  assert result["meta"]["executor"] == "submitit_local"
  assert sorted(result["meta"]["launched"]) == sorted(p["name"] for p in result["points"])
  for point in result["points"]:
    assert point["values"]["step"] == 6
    assert 0 <= point["values"]["mlm_accuracy"] <= 1
    assert point["values"]["mlm_perplexity"] > 1
  jobs = sorted(os.listdir(out / "submitit"))
  stamps = {p["name"]: os.stat(pathlib.Path(p["workdir"]) / "sweep_point.json").st_mtime_ns
            for p in result["points"]}

  assert sweep.main(args) == 0  # every point finished: nothing is launched
  again = assert_report_matches_json(out)
  assert again["meta"]["launched"] == [] and len(again["meta"]["skipped"]) == 4
  assert sorted(os.listdir(out / "submitit")) == jobs
  assert {p["name"]: os.stat(pathlib.Path(p["workdir"]) / "sweep_point.json").st_mtime_ns
          for p in again["points"]} == stamps
  assert [p["values"] for p in again["points"]] == [p["values"] for p in result["points"]]


@pytest.mark.parametrize("flags", [["--grid=model.hidden_size"],
                                   ["--paper=albert", "--mode=pretrain"]])
def test_bad_flags_are_one_error_line_with_status_2_and_nothing_made(tmp_path, capsys, flags):
  workdir = tmp_path / "sweep"
  with pytest.raises(SystemExit) as refused:
    sweep.main(["--config=configs/albert.py:tiny", f"--workdir={workdir}", *flags])
  err = capsys.readouterr().err.strip().splitlines()
  assert refused.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
  assert not workdir.exists()
