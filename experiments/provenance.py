"""Where and from what a result was measured: the machine, CPU model and flags, git commit.

The one copy of these for every experiment (compare, sweep, glue_runs, the
benchmarks, the distillation study). Importing it pulls no jax; `machine(jax=True)`
imports it to name the devices.
"""

import os
import platform
import subprocess

from lite_bert.host import cpu_flags, cpu_model  # noqa: F401  # provenance's API too

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_info() -> dict:
  """{'commit': HEAD sha or '', 'dirty': uncommitted changes present}."""
  def run(*args):
    try:
      return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return ""
  status = run("status", "--porcelain")
  return {"commit": run("rev-parse", "HEAD"), "dirty": bool(status)}


def machine(jax: bool = False) -> dict:
  """The machine a result was measured on: CPU model and count, OS, Python.

  {'cpu', 'cpu_count', 'platform' (platform.platform()), 'python', 'system',
  'release'}; with `jax`, also {'jax': version, 'jax_devices': [device kinds]}.
  """
  found = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "python": platform.python_version(), "system": platform.system(),
           "release": platform.release()}
  if jax:
    import jax as jax_lib  # pylint: disable=import-outside-toplevel
    found.update(jax=jax_lib.__version__,
                 jax_devices=[str(d.device_kind) for d in jax_lib.devices()])
  return found


def machine_line(found: dict) -> str:
  """`machine()` in one line: 'AMD EPYC, 2 cores, Linux 6.1.0'."""
  return f"{found['cpu']}, {found['cpu_count']} cores, {found['system']} {found['release']}"
