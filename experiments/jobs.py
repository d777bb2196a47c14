"""The one job runner of the experiments: a command in its own folder, skipped when done.

A `Job` is one plain command (a `python launch.py ...` run, a benchmark) with
the folder it works in and a done-check (`done()`: its final outputs exist).
What every tool that runs jobs shares is here:

  run_command       runs the command: its output to ours, or appended to a log
                    file (straight from the process, or line by line and echoed)
  pending / select  skip the jobs that are done; pick jobs by name or group
  check_needs       refuse a job whose inputs (other jobs) are missing
  run_stage         one job with a record of every attempt: `stages/<name>.json`
                    (command, status, wall time of each attempt, an interrupted
                    one closed at its log's last write) and `logs/<name>.log`;
                    a rerun resumes it (the command picks up its checkpoint)
  write_record      a JSON record, written atomically

`experiments/compare.py` runs its stages with `run_stage`; `sweep.py` (its
`run_point`, in a submitit job too), `glue_runs.py` and `distill_study.py`
keep their own record files (`sweep_point.json`, the result JSON, `done.json`)
and run their commands with `run_command`. No jax import.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, NoReturn, Optional

from lite_bert import files  # no jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def now_iso() -> str:
  """The current UTC time to the second, e.g. '2026-11-24T13:04:11+00:00'."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def shown_path(path: str) -> str:
  """A path as commands show it: relative to the repository when close to it."""
  path = os.path.abspath(path)
  rel = os.path.relpath(path, REPO)
  return rel if not rel.startswith(os.pardir + os.sep + os.pardir) else path


def shown_command(argv: list) -> str:
  """An argv as a user types it: 'python' for the interpreter, shell-quoted."""
  return " ".join(shlex.quote(a) for a in ["python"] + list(argv[1:]))


class Job:
  """One command in its own folder; `done()` says whether its final outputs exist.

  `group` names a set of jobs (`select`), `needs` the jobs whose outputs it
  reads (`check_needs`); it runs in `cwd` with the environment `env` (None: ours).
  """

  def __init__(self, name: str, group: str, argv: list, workdir: str,
               done: Callable[[], bool], needs: tuple = (), cwd: str = REPO,
               env: Optional[dict] = None):
    self.name, self.group, self.argv, self.workdir = name, group, argv, workdir
    self.done, self.needs, self.cwd, self.env = done, needs, cwd, env

  @property
  def command(self) -> str:
    return shown_command(self.argv)


# ------------------------------------------------------------------- one command


def run_command(argv: list, *, cwd: str = REPO, env: Optional[dict] = None,
                log: Optional[str] = None, header: str = "", stream: bool = False,
                echo: Optional[str] = None, stdin=None, check: bool = False) -> int:
  """Runs `argv` in `cwd`; returns its exit status.

  Without `log` its output goes where ours goes. With `log`, `header` and then
  its output (stdout and stderr) are appended to that file: straight from the
  process, or with `stream` line by line through a pipe, each line also printed
  after the prefix `echo` when one is given. `check`: a non-zero exit status
  raises subprocess.CalledProcessError.
  """
  if log is None:
    rc = subprocess.call(argv, cwd=cwd, env=env, stdin=stdin)
  elif not stream:
    with open(log, "a") as f:
      f.write(header)
      f.flush()
      rc = subprocess.call(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                           stdin=stdin)
  else:
    with open(log, "a") as f:
      f.write(header)
      proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=stdin, text=True, bufsize=1)
      for line in proc.stdout:
        f.write(line)
        f.flush()
        if echo is not None:
          print(f"{echo}{line}", end="", flush=True)
      rc = proc.wait()
  if check and rc:
    raise subprocess.CalledProcessError(rc, argv)
  return rc


def log_tail(log: str, lines: int) -> list:
  """The last `lines` lines of the file `log`."""
  with open(log) as f:
    return f.readlines()[-lines:]


def refuse(message: str) -> NoReturn:
  """Bad input: one `error:` line on stderr and exit status 2 (the stages' folders untouched)."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(2)


def write_record(path: str, value, sort_keys: bool = True) -> None:
  """`value` as indented JSON (no trailing newline), written atomically; makes the folder."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  files.atomic_write(path, json.dumps(value, indent=2, sort_keys=sort_keys))


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


# ----------------------------------------------------------------- which to run


def pending(jobs: list) -> tuple:
  """(the jobs not done yet, the names of those done), in plan order."""
  todo = [j for j in jobs if not j.done()]
  return todo, [j.name for j in jobs if j not in todo]


def select(jobs: list, names: str) -> list:
  """The jobs named in the comma list `names` (a job's name or group); all when empty."""
  if not names:
    return jobs
  wanted = [n.strip() for n in names.split(",") if n.strip()]
  known = {s.name for s in jobs} | {s.group for s in jobs}
  unknown = [n for n in wanted if n not in known]
  if unknown:
    refuse(f"unknown stage(s) {unknown}; stages: "
           f"{[s.name for s in jobs]}, groups: {sorted({s.group for s in jobs})}")
  return [s for s in jobs if s.name in wanted or s.group in wanted]


def check_needs(todo: list, jobs: list) -> None:
  """Exits when a job to run needs one that is neither done nor about to run."""
  by_name = {s.name: s for s in jobs}
  for job in todo:
    missing = [n for n in job.needs if not by_name[n].done() and by_name[n] not in todo]
    if missing:
      refuse(f"stage {job.name} needs {missing} first (run without --stages, or add them)")


# ------------------------------------------------------- a job with its attempts


def record_path(root: str, name: str) -> str:
  return os.path.join(root, "stages", f"{name}.json")


def log_path(root: str, name: str) -> str:
  return os.path.join(root, "logs", f"{name}.log")


def close_interrupted(record: dict, log: str) -> None:
  """An attempt without a wall time was interrupted: it lasted until its log's last write."""
  for attempt in record["attempts"]:
    if "wall_s" not in attempt:
      end = os.path.getmtime(log) if os.path.exists(log) else attempt["started_ts"]
      attempt.update(wall_s=max(0.0, end - attempt["started_ts"]), interrupted=True)


def run_stage(stage: Job, root: str, position: str, echo: bool) -> None:
  """Runs `stage` once more, its output in `root/logs/<name>.log`, each attempt recorded
  in `root/stages/<name>.json`; exits with the log's end when it fails."""
  record_file = record_path(root, stage.name)
  log = log_path(root, stage.name)
  os.makedirs(os.path.dirname(log), exist_ok=True)
  record = read_json(record_file) if os.path.exists(record_file) else None
  if record is None or record.get("status") == "done":  # new, or redone after a deletion
    record = {"stage": stage.name, "attempts": []}
    if os.path.exists(log):
      os.replace(log, log + ".previous")
  close_interrupted(record, log)
  record.update(command=stage.command, workdir=shown_path(stage.workdir), status="running")
  attempt = {"started": now_iso(), "started_ts": time.time()}
  record["attempts"].append(attempt)
  record["wall_s"] = sum(a.get("wall_s", 0.0) for a in record["attempts"])
  write_record(record_file, record)
  resumed = " (resuming)" if len(record["attempts"]) > 1 else ""
  print(f"[{position}] {stage.name}{resumed}: {stage.command}\n  log: {log}", flush=True)
  env = dict(stage.env if stage.env is not None else os.environ, PYTHONUNBUFFERED="1")
  rc = None
  try:
    rc = run_command(stage.argv, cwd=stage.cwd, env=env, log=log,
                     header=f"\n# {attempt['started']} {stage.command}\n", stream=True,
                     echo=f"  {stage.name} | " if echo else None)
  finally:
    attempt.update(finished=now_iso(), wall_s=time.time() - attempt["started_ts"], rc=rc)
    record["wall_s"] = sum(a["wall_s"] for a in record["attempts"])
    # Exit status 0 before the stage's end: stopped (SIGTERM), its state saved.
    record["status"] = ("done" if stage.done() else "stopped") if rc == 0 else "failed"
    write_record(record_file, record)
  if record["status"] == "stopped":
    raise SystemExit(f"stage {stage.name} stopped before its end (exit status 0, e.g. by "
                     f"SIGTERM); rerun the same command to resume it; log: {log}")
  if record["status"] != "done":
    sys.stdout.write("".join("  " + l for l in log_tail(log, 15)))
    raise SystemExit(f"error: stage {stage.name} failed (exit status {rc}); log: {log}")
  print(f"[{position}] {stage.name} done in {attempt['wall_s'] / 60:.1f} min "
        f"(stage total {record['wall_s'] / 60:.1f} min)", flush=True)


def run_stages(todo: list, root: str, echo: bool) -> None:
  """`run_stage` of each job in turn, then their wall time in all."""
  start = time.time()
  for i, stage in enumerate(todo):
    run_stage(stage, root, f"{i + 1}/{len(todo)}", echo=echo)
  if todo:
    print(f"{len(todo)} stage(s) in {(time.time() - start) / 60:.1f} min", flush=True)
