r"""A grid over config fields: one `launch.py` run per point, one table and one plot.

  python -m experiments.sweep --config=configs/albert.py:base --mode=summary \
      --grid=model.share=none,all,attention,ffn --grid=model.embedding_size=64,128,256,768 \
      --paper=albert --workdir=/tmp/sweep_albert
  -> 16 points in /tmp/sweep_albert/<point>/ (e.g. share-all__embedding_size-128: params_total
     11,683,584); /tmp/sweep_albert/sweep.json, sweep.md (with the ALBERT paper's column,
     Tables 3 and 4) and sweep.png. 2 to 8 s a point on 2 CPU cores.

  python -m experiments.sweep --config=configs/albert.py:tiny --mode=pretrain \
      --grid=model.share=none,all --grid=model.embedding_size=64,128 --workdir=/tmp/sweep_tiny \
      --executor=submitit_local --set=data.corpus=../shared/data/wikitext/wikitext-2-raw/wiki.test.raw \
      --set=train.num_steps=100
  -> the held-out MLM accuracy of each point (the last `eval` record of its metrics.jsonl).

Each point is the command
  python launch.py --config=CONFIG --workdir=WORKDIR/<point> --config.mode=MODE \
      [--config.<set>=v ...] --config.<grid field>=<value> ...
run in the repository root, its output in `WORKDIR/<point>/sweep.log`. When it
ends, `WORKDIR/<point>/sweep_point.json` records the command, exit status and
wall time. A point whose `sweep_point.json` holds the same command with exit
status 0, and whose result file can be read, is skipped on a rerun; any other
point is launched again (a training mode then resumes from its checkpoint).

Executors (`--executor`), one code path for the last two (submitit):
  sequential      one subprocess after the other, here.
  submitit_local  submitit's LocalExecutor: each point a job on this machine
                  (`--parallel` at a time; job logs in WORKDIR/submitit/). It
                  sets CUDA_VISIBLE_DEVICES: pass --submitit=gpus_per_node=N on a
                  GPU machine.
  slurm           submitit's AutoExecutor on Slurm; --submitit=KEY=VALUE goes to
                  `update_parameters` (e.g. slurm_partition=gpu, gpus_per_node=1,
                  cpus_per_task=8, mem_gb=64). Jobs run on the nodes and write to
                  the same WORKDIR, which (with this checkout) must be on a
                  shared filesystem.

Results are read from each point's own files, never from the job's return value:
`mode=summary` -> `<point>/summary.json` (the parameter counts); a training mode
-> the last `eval` record of `<point>/metrics.jsonl` (pretrain: held-out MLM
accuracy, loss, perplexity, SOP/NSP accuracy). They are collected into
WORKDIR/sweep.json (each point's values, source file and command),
WORKDIR/sweep.md (one table; date, machine, commit and command on top) and
WORKDIR/sweep.png (`--metric` against the last grid field, one line per
combination of the others). `--out=DIR` writes these three elsewhere.
`--paper=albert` adds the ALBERT paper's parameter counts (Lan et al., 2020,
Tables 3 and 4, ALBERT-base) next to ours. Exit status 0 when every point has a
result, 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
from typing import Optional

from experiments import jobs
from experiments import provenance
from lite_bert import files

REPO = jobs.REPO
EXECUTORS = ("sequential", "submitit_local", "slurm")

# The ALBERT paper's parameter counts for ALBERT-base (H=768, L=12, I=3072,
# V=30000), in millions, by (model.share, model.embedding_size). Table 3
# (embedding size) gives not-shared and all-shared at E = 64, 128, 256, 768;
# Table 4 (cross-layer sharing) gives all four sharing modes at E = 768 and 128.
# The paper has no shared-attention / shared-FFN model at E = 64 or 256.
ALBERT_PAPER = {
    ("none", 64): 87, ("none", 128): 89, ("none", 256): 93, ("none", 768): 108,
    ("all", 64): 10, ("all", 128): 12, ("all", 256): 16, ("all", 768): 31,
    ("attention", 128): 64, ("attention", 768): 83,
    ("ffn", 128): 38, ("ffn", 768): 57,
}
ALBERT_BASE_DIMS = dict(hidden_size=768, num_layers=12, intermediate_size=3072,
                        vocab_size=30000)
PAPERS = {"albert": ALBERT_PAPER}

SHARE_NAMES = {"none": "not-shared", "all": "all-shared", "attention": "shared-attention",
               "ffn": "shared-FFN"}

ALBERT_NOTE = """\
Paper: Lan et al., "ALBERT: A Lite BERT for Self-supervised Learning of Language
Representations" (ICLR 2020), Table 3 (not-shared and all-shared at E = 64, 128,
256, 768) and Table 4 (all four sharing modes at E = 768 and 128), ALBERT-base.
"—" where the paper has no such model: it gives no shared-attention or shared-FFN
figure at E = 64 or 256; our count is shown there all the same. `match`: ✓ when
our `params_total` rounded to the nearest million equals the paper's figure,
"✓ w/o pooler" when our count without the pooler does, ✗ otherwise.
"""
ALBERT_INCONSISTENCY = """\
No single way of counting can match all of the paper's columns: by its Table 4,
sharing everything instead of only the attention takes away 52M (83 → 31 at
E = 768, 64 → 12 at E = 128), instead of only the FFN 26M (57 → 31, 38 → 12),
together 78M; yet not-shared minus all-shared is 77M in both tables (108 − 31,
89 − 12; 87 − 10, 93 − 16 in Table 3)."""


# ------------------------------------------------------------------ the grid

def parse_assignment(text: str, what: str) -> tuple[str, str]:
  """'a.b=value' -> ('a.b', 'value'); a leading 'config.' is dropped."""
  field, sep, value = text.partition("=")
  field = field.strip().removeprefix("--").removeprefix("config.")
  if not sep or not field or not re.fullmatch(r"[A-Za-z_][\w.]*", field):
    raise ValueError(f"{what} {text!r} is not FIELD=VALUE (e.g. model.share=all)")
  return field, value


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
  """['model.share=none,all', ...] -> {'model.share': ['none', 'all'], ...}."""
  grid = {}
  for spec in specs:
    field, values = parse_assignment(spec, "--grid")
    values = [v.strip() for v in values.split(",")]
    if field in grid or not all(values) or len(set(values)) != len(values):
      raise ValueError(f"--grid {spec!r}: a field given twice, an empty or a repeated value")
    grid[field] = values
  if not grid:
    raise ValueError("at least one --grid=FIELD=V1,V2,... is needed")
  return grid


def short_names(fields: list[str]) -> dict[str, str]:
  """The last part of each dotted field, or the whole name where two would clash."""
  leaves = [f.rsplit(".", 1)[-1] for f in fields]
  return {f: (leaf if leaves.count(leaf) == 1 else f) for f, leaf in zip(fields, leaves)}


def point_name(overrides: dict[str, str]) -> str:
  """{'model.share': 'all', 'model.embedding_size': '128'} -> 'share-all__embedding_size-128'."""
  names = short_names(list(overrides))
  parts = [f"{names[f]}-{v}" for f, v in overrides.items()]
  return re.sub(r"[^\w.=-]", "_", "__".join(parts))


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
  """The product of the grid, the first field outermost."""
  fields = list(grid)
  return [dict(zip(fields, values)) for values in itertools.product(*grid.values())]


def launch_command(config: str, mode: str, workdir: str, sets: dict[str, str],
                   overrides: dict[str, str]) -> list[str]:
  """The point's launch.py command ('python' stands for this interpreter)."""
  return (["python", "launch.py", f"--config={config}", f"--workdir={workdir}",
           f"--config.mode={mode}"]
          + [f"--config.{k}={v}" for k, v in sets.items()]
          + [f"--config.{k}={v}" for k, v in overrides.items()])


# ------------------------------------------------------------------ running one point

def _write_json(path: str, data) -> None:
  files.atomic_write(path, json.dumps(data, indent=2))


def run_point(command: list[str], workdir: str, cwd: str = REPO) -> dict:
  """Runs one point's command; what every executor runs (in a submitit job too).

  Output goes to `<workdir>/sweep.log` (appended); `<workdir>/sweep_point.json`
  records the command, exit status, wall time, host and commit. Raises RuntimeError
  with the log's last lines when the command fails.
  """
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, "sweep.log")
  started = jobs.now_iso()
  start = time.perf_counter()
  rc = jobs.run_command([sys.executable] + command[1:], cwd=cwd, log=log_path,
                        header=f"=== {started} {shlex.join(command)}\n",
                        stdin=subprocess.DEVNULL)
  record = dict(command=command, rc=rc, wall_s=round(time.perf_counter() - start, 1),
                started=started, host=socket.gethostname(), git=provenance.git_info())
  _write_json(os.path.join(workdir, "sweep_point.json"), record)
  if rc:
    tail = "".join(jobs.log_tail(log_path, 8))
    raise RuntimeError(f"exit status {rc}; the end of {log_path}:\n{tail}")
  return record


def read_result(workdir: str, mode: str) -> Optional[dict]:
  """{'source': file, 'values': {...}} from the point's own output, or None."""
  if mode == "summary":
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
      return None
    with open(path) as f:
      summary = json.load(f)
    values = {k: v for k, v in summary.items() if k.startswith("params_")}
    return {"source": "summary.json", "values": values, "model": summary.get("model", {})}
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    lines = [(n, json.loads(line)) for n, line in enumerate(f, 1) if line.strip()]
  evals = [(n, r) for n, r in lines if r.get("split") == "eval"]
  if not evals:
    return None
  n, record = evals[-1]
  values = {k: v for k, v in record.items() if k != "split"}
  return {"source": f"metrics.jsonl:{n}", "values": values}


def point_done(workdir: str, command: list[str], mode: str) -> bool:
  """True when this exact command finished there and its result can be read."""
  path = os.path.join(workdir, "sweep_point.json")
  if not os.path.exists(path):
    return False
  record = jobs.read_json(path)
  return (record.get("command") == command and record.get("rc") == 0
          and read_result(workdir, mode) is not None)


def point_job(point: dict, mode: str) -> jobs.Job:
  """The point as a `jobs.Job`: its command, folder and done-check (`point_done`)."""
  return jobs.Job(point["name"], "point", point["command"], point["workdir"],
                  lambda: point_done(point["workdir"], point["command"], mode))


# ------------------------------------------------------------------ executors

def run_sequential(points: list[dict]) -> dict[str, str]:
  """Runs the points one after the other; {name: error} of those that failed."""
  failures = {}
  for k, point in enumerate(points, 1):
    print(f"[{k}/{len(points)}] {point['name']}", flush=True)
    try:
      record = run_point(point["command"], point["workdir"])
      print(f"  done in {record['wall_s']:.0f} s", flush=True)
    except RuntimeError as e:
      failures[point["name"]] = str(e)
      print(f"  failed: {e}", flush=True)
  return failures


def make_submitit_executor(kind: str, folder: str, params: dict, timeout_min: int):
  """submitit's LocalExecutor or its AutoExecutor on Slurm, with `params` applied."""
  import cloudpickle  # pylint: disable=import-outside-toplevel  # comes with submitit
  import submitit  # pylint: disable=import-outside-toplevel

  # The job unpickles `run_point` by value, with the modules it calls: it needs
  # neither this checkout on its sys.path nor the sweep's working directory.
  for module in (sys.modules[__name__], jobs, provenance, files):
    cloudpickle.register_pickle_by_value(module)
  if kind == "submitit_local":
    executor = submitit.LocalExecutor(folder=folder)
  else:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = dict({"name": "lite_bert_sweep"}, **params)
  executor.update_parameters(timeout_min=timeout_min, **params)
  return executor


def run_submitit(points: list[dict], executor, parallel: int, poll_s: float) -> dict[str, str]:
  """Submits every point (at most `parallel` in flight; 0 = all) and waits for them."""
  failures, queue, running = {}, list(points), []
  while queue or running:
    while queue and (parallel <= 0 or len(running) < parallel):
      point = queue.pop(0)
      job = executor.submit(run_point, point["command"], point["workdir"])
      print(f"submitted {point['name']}: job {job.job_id}", flush=True)
      running.append((point, job))
    time.sleep(poll_s)
    for point, job in [(p, j) for p, j in running if j.done()]:
      running.remove((point, job))
      try:
        record = job.result()
        print(f"done {point['name']} in {record['wall_s']:.0f} s", flush=True)
      except Exception as e:  # pylint: disable=broad-except  # submitit's FailedJobError, ...
        failures[point["name"]] = str(e)
        print(f"failed {point['name']}: {e}", flush=True)
  return failures


# ------------------------------------------------------------------ report

def paper_figure(paper: str, point: dict) -> Optional[int]:
  """The paper's count (millions) for this point, or None where it gives none."""
  if paper != "albert" or point.get("model") is None:
    return None
  model = point["model"]
  if any(model.get(k) != v for k, v in ALBERT_BASE_DIMS.items()):
    return None
  embedding = model.get("embedding_size") or model.get("hidden_size")
  return ALBERT_PAPER.get((model.get("share"), embedding))


def paper_match(point: dict) -> str:
  values, figure = point["values"], point["paper_millions"]
  if figure is None:
    return "—"
  if round(values["params_total"] / 1e6) == figure:
    return "✓"
  if round((values["params_total"] - values["params_pooler"]) / 1e6) == figure:
    return "✓ w/o pooler"
  return "✗"


def fmt(value) -> str:
  """How a number is written in the table (the test reads it back)."""
  if value is None:
    return "—"
  if isinstance(value, int):
    return f"{value:,}"
  return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"


SUMMARY_COLUMNS = ("params_total", "params_embeddings", "params_layers", "params_pooler")


def table_columns(result: dict) -> list[tuple[str, callable]]:
  """(header, point -> cell text) for the metric columns of this sweep's table."""
  points = [p for p in result["points"] if p["values"] is not None]
  if result["mode"] == "summary":
    columns = [(k, lambda p, k=k: fmt(p["values"][k])) for k in SUMMARY_COLUMNS]
    columns.append(("params (M)", lambda p: f"{p['values']['params_total'] / 1e6:.2f}"))
    if result.get("paper"):
      columns += [("w/o pooler (M)", lambda p: f"{(p['values']['params_total'] - p['values']['params_pooler']) / 1e6:.2f}"),
                  ("paper (M)", lambda p: fmt(p["paper_millions"])),
                  ("match", paper_match)]
  else:
    keys = []
    for p in points:
      keys += [k for k in p["values"] if k not in keys]
    columns = [(k, lambda p, k=k: fmt(p["values"].get(k))) for k in keys]
  columns.append(("wall s", lambda p: f"{p['wall_s']:.0f}" if p.get("wall_s") is not None else "—"))
  return columns


def markdown(result: dict) -> str:
  meta, grid = result["meta"], result["grid"]
  names = short_names(list(grid))
  title = " × ".join(names[f] for f in grid)
  lines = [f"# Sweep: {title} ({meta['config']}, mode={result['mode']})", "",
           f"- command: `{meta['command']}`",
           f"- date: {meta['date']}; git commit {meta['git']['commit'][:12]}"
           f"{' (dirty tree)' if meta['git']['dirty'] else ''}; machine: {meta['machine']}",
           f"- executor: {meta['executor']}; {len(result['points'])} points, launched "
           f"{len(meta['launched'])} this run, {len(meta['skipped'])} skipped as finished; "
           f"this run {meta['wall_s'] / 60:.1f} min, the points' launch.py runs "
           f"{sum(p['wall_s'] or 0 for p in result['points']) / 60:.1f} min in all",
           f"- every point: `{shlex.join(result['points'][0]['command_template'])}` "
           f"with its grid values",
           "- numbers read from each point's "
           + ("`summary.json` (params_total: encoder incl. pooler, no pretraining heads)"
              if result["mode"] == "summary" else
              "last `eval` record in `metrics.jsonl` (held-out data)")
           + "; `wall s`: the point's launch.py run, from `sweep_point.json`"]
  ran_at = sorted({(p["git"]["commit"][:12], p["git"]["dirty"]) for p in result["points"]
                   if p.get("git")})
  if ran_at and ran_at != [(meta["git"]["commit"][:12], meta["git"]["dirty"])]:
    lines.append("- the points ran at commit " + ", ".join(
        f"{c}{' (dirty tree)' if d else ''}" for c, d in ran_at))
  if meta.get("notes"):
    lines += [f"- {note}" for note in meta["notes"]]
  columns = table_columns(result)
  header = [names[f] for f in grid] + [h for h, _ in columns]
  lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for p in result["points"]:
    cells = [p["overrides"][f] for f in grid]
    if p["values"] is None:
      cells += [p["status"]] + [""] * (len(columns) - 1)
    else:
      cells += [cell(p) for _, cell in columns]
    lines.append("| " + " | ".join(cells) + " |")
  if result.get("paper") == "albert":
    lines += ["", ALBERT_NOTE, albert_findings(result["points"])]
  lines += ["", f"![{result['metric']}](sweep.png)", ""]
  return "\n".join(lines)


def albert_findings(points: list[dict]) -> str:
  """What the comparison with the ALBERT paper shows, counted from the rows."""
  compared = [p for p in points if p["values"] is not None and p["paper_millions"] is not None]
  if not compared:
    return "No point of this sweep has a figure in the paper."
  matches = [paper_match(p) for p in compared]
  pooler = compared[0]["values"]["params_pooler"]
  text = (f"Of the paper's {len(compared)} figures in this grid, {matches.count('✓')} equal "
          f"our count rounded to the nearest million")
  without = [p for p, m in zip(compared, matches) if m == "✓ w/o pooler"]
  if without:
    shares = sorted({SHARE_NAMES.get(p["model"].get("share"), "?") for p in without})
    text += (f"; {len(without)} ({', '.join(shares)}) equal our count without the pooler "
             f"({pooler:,} parameters: the dense H×H layer on [CLS] and its bias)")
  if matches.count("✗"):
    text += f"; {matches.count('✗')} equal neither"
  text += ".\n\n" + ALBERT_INCONSISTENCY
  by = {(p["model"].get("share"), p["model"].get("embedding_size")): p["values"]["params_total"]
        for p in points if p["values"] is not None and p.get("model")}
  sizes = sorted({e for (_, e) in by if all((s, e) in by for s in SHARE_NAMES)})
  if sizes:
    e, layers = sizes[0], 11  # the blocks that stop being shared (L = 12)
    ffn = by[("attention", e)] - by[("all", e)]
    attention = by[("ffn", e)] - by[("all", e)]
    total = by[("none", e)] - by[("all", e)]
    text += (f" Our counts add up (E = {e}): not-shared − all-shared = {total:,} = "
             f"{ffn:,} + {attention:,}, the FFN ({ffn // layers:,}) and attention "
             f"({attention // layers:,}) sublayers, each with its LayerNorm, of the {layers} "
             f"blocks that stop being shared.")
  return text


def metric_value(point: dict, metric: str) -> Optional[float]:
  values = point["values"]
  if values is None or metric not in values:
    return None
  return values[metric] / 1e6 if metric.startswith("params_") else values[metric]


def plot(result: dict, path: str) -> None:
  """`metric` against the last grid field, one line per combination of the others."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  grid, metric = result["grid"], result["metric"]
  fields = list(grid)
  names = short_names(fields)
  x_field, line_fields = fields[-1], fields[:-1]
  x_values = grid[x_field]
  numeric = all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in x_values)
  xs = [float(v) for v in x_values] if numeric else list(range(len(x_values)))
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for combo in itertools.product(*(grid[f] for f in line_fields)):
    chosen = dict(zip(line_fields, combo))
    row = [next(p for p in result["points"]
                if all(p["overrides"][f] == v for f, v in chosen.items())
                and p["overrides"][x_field] == x) for x in x_values]
    label = ", ".join(f"{names[f]}={v}" for f, v in chosen.items()) or metric
    ys = [metric_value(p, metric) for p in row]
    line = ax.plot([x for x, y in zip(xs, ys) if y is not None],
                   [y for y in ys if y is not None], "o-", label=label)[0]
    if result.get("paper") and metric == "params_total":
      paper = [(x, p["paper_millions"]) for x, p in zip(xs, row) if p.get("paper_millions")]
      if paper:
        ax.plot(*zip(*paper), "x", color=line.get_color(), markersize=10, mew=2)
  if result.get("paper") and metric == "params_total":
    ax.plot([], [], "x", color="black", markersize=10, mew=2, label=f"{result['paper']} paper")
  if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
    ax.set_xscale("log", base=2)
  ax.set_xticks(xs, x_values)
  ax.set_xlabel(names[x_field])
  ax.set_ylabel(f"{metric} (millions)" if metric.startswith("params_") else metric)
  ax.set_title(f"{result['meta']['config']}, mode={result['mode']}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def collect(points: list[dict], mode: str, paper: Optional[str]) -> list[dict]:
  """Each point's result, read from its own files."""
  rows = []
  for point in points:
    result = read_result(point["workdir"], mode)
    record_path = os.path.join(point["workdir"], "sweep_point.json")
    record = None
    if os.path.exists(record_path):
      with open(record_path) as f:
        record = json.load(f)
    finished = record is not None and record.get("command") == point["command"] \
        and record.get("rc") == 0
    row = dict(name=point["name"], overrides=point["overrides"], workdir=point["workdir"],
               command=point["command"], command_template=point["command_template"],
               status="done" if finished and result else
               ("failed" if record and record.get("rc") else "missing"),
               values=result["values"] if finished and result else None,
               source=os.path.join(point["name"], result["source"]) if result else None,
               wall_s=record.get("wall_s") if record else None,
               git=record.get("git") if record else None)
    if result and "model" in result:
      row["model"] = result["model"]
    if paper:
      row["paper_millions"] = paper_figure(paper, row) if row["values"] else None
    rows.append(row)
  return rows


# ------------------------------------------------------------------ main

def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="launch.py's --config, e.g. configs/albert.py:base")
  p.add_argument("--mode", default="summary", help="config.mode of every point")
  p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                 help="a grid axis (repeat for more; the first is outermost)")
  p.add_argument("--set", action="append", default=[], dest="sets", metavar="FIELD=VALUE",
                 help="an override for every point (repeatable)")
  p.add_argument("--workdir", required=True, help="one folder per point in here")
  p.add_argument("--out", default=None, help="where sweep.json/.md/.png go (default: --workdir)")
  p.add_argument("--executor", choices=EXECUTORS, default="sequential")
  p.add_argument("--parallel", type=int, default=1,
                 help="submitit jobs in flight at once (0: all; default 1)")
  p.add_argument("--submitit", action="append", default=[], metavar="KEY=VALUE",
                 help="a parameter of submitit's update_parameters (repeatable)")
  p.add_argument("--timeout_min", type=int, default=24 * 60, help="per submitit job")
  p.add_argument("--poll_s", type=float, default=None,
                 help="seconds between job polls (default 1 local, 30 Slurm)")
  p.add_argument("--metric", default=None,
                 help="what the plot shows (default params_total / mlm_accuracy / first metric)")
  p.add_argument("--paper", choices=sorted(PAPERS), default=None,
                 help="add a paper's figures next to ours (summary mode)")
  p.add_argument("--note", action="append", default=[], help="a line for the report's header")
  return p.parse_args(argv)


def submitit_params(items: list[str]) -> dict:
  params = {}
  for item in items:
    key, value = parse_assignment(item, "--submitit")
    params[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
  return params


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    grid = parse_grid(args.grid)
    sets = dict(parse_assignment(s, "--set") for s in args.sets)
    params = submitit_params(args.submitit)
  except ValueError as e:
    jobs.refuse(str(e))
  if args.paper and args.mode != "summary":
    jobs.refuse("--paper compares parameter counts: it needs --mode=summary")
  workdir = os.path.abspath(args.workdir)
  out = os.path.abspath(args.out or workdir)
  os.makedirs(workdir, exist_ok=True)
  os.makedirs(out, exist_ok=True)

  points = []
  for overrides in grid_points(grid):
    name = point_name(overrides)
    point_dir = os.path.join(workdir, name)
    points.append(dict(name=name, overrides=overrides, workdir=point_dir,
                       command=launch_command(args.config, args.mode, point_dir, sets, overrides),
                       command_template=launch_command(args.config, args.mode,
                                                       os.path.join("WORKDIR", "POINT"),
                                                       sets, {})))
  _, skipped = jobs.pending([point_job(p, args.mode) for p in points])
  pending = [p for p in points if p["name"] not in skipped]
  print(f"{len(points)} points: {len(pending)} to run, {len(skipped)} finished before",
        flush=True)

  start = time.perf_counter()
  failures = {}
  if pending and args.executor == "sequential":
    failures = run_sequential(pending)
  elif pending:
    try:
      executor = make_submitit_executor(args.executor, os.path.join(workdir, "submitit"),
                                        params, args.timeout_min)
    except (RuntimeError, ValueError) as e:  # no Slurm here, an unknown parameter
      jobs.refuse(f"--executor={args.executor}: {e}")
    poll = args.poll_s or (1.0 if args.executor == "submitit_local" else 30.0)
    failures = run_submitit(pending, executor, args.parallel, poll)

  rows = collect(points, args.mode, args.paper)
  metric = args.metric or ("params_total" if args.mode == "summary" else
                           "mlm_accuracy" if args.mode in ("pretrain", "distill") else None)
  if metric is None:
    metric = next((k for r in rows if r["values"] for k in r["values"] if k != "step"), "step")
  result = dict(
      meta=dict(command=shlex.join(["python", "-m", "experiments.sweep"] + list(argv or sys.argv[1:])),
                config=args.config, date=jobs.now_iso(), git=provenance.git_info(),
                machine=provenance.machine_line(provenance.machine()),
                python=platform.python_version(),
                executor=args.executor, workdir=workdir, launched=[p["name"] for p in pending],
                skipped=skipped, failures=failures,
                wall_s=round(time.perf_counter() - start, 1), notes=args.note),
      mode=args.mode, grid=grid, sets=sets, metric=metric, paper=args.paper, points=rows)
  _write_json(os.path.join(out, "sweep.json"), result)
  files.atomic_write(os.path.join(out, "sweep.md"), markdown(result))
  plot(result, os.path.join(out, "sweep.png"))
  missing = [r["name"] for r in rows if r["values"] is None]
  print(f"wrote {out}/sweep.json, sweep.md, sweep.png"
        + (f"; no result for {', '.join(missing)}" if missing else ""), flush=True)
  return 1 if missing else 0


if __name__ == "__main__":
  sys.exit(main())
