"""The client of the HF Flax reference worker (`experiments/reference_flax.py`).

`FlaxReference` starts the worker with the python of the reference
virtualenv (`experiments/reference_env.sh`, `REFERENCE_VENV_PYTHON`) and sends
it one JSON request a line (load, prepare, time, output, drop, quit); the
worker times HF's Flax models in its own process and replies with JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Optional

from experiments.provenance import REPO

REFERENCE_VENV_PYTHON = os.path.join(REPO, "experiments", ".venv-reference", "bin", "python")


class FlaxReference:
  """The `reference_flax.py` worker, run by the reference virtualenv's python."""

  def __init__(self, python: str, log_path: str):
    self.log = open(log_path, "w")
    self.proc = subprocess.Popen(
        [python, os.path.join(REPO, "experiments", "reference_flax.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        cwd=tempfile.gettempdir(), env=dict(os.environ, PYTHONPATH=""))

  def pid(self) -> Optional[int]:
    return self.proc.pid if self.proc.poll() is None else None

  def call(self, **req) -> dict:
    self.proc.stdin.write(json.dumps(req) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"reference_flax worker died (see {self.log.name})")
    reply = json.loads(line)
    if not reply.get("ok"):
      raise RuntimeError(f"reference_flax {req['cmd']}: {reply.get('error')}\n"
                         f"{reply.get('traceback', '')}")
    return reply

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=30)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()
    self.log.close()
