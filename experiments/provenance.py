"""Where and from what a result was measured: CPU model and flags, git commit (no jax import)."""

import os
import platform
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def cpu_flags() -> list:
  """The SIMD / matrix-unit flags that decide GEMM speed (AVX-512, AMX, VNNI, FMA)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = line.split(":", 1)[1].split()
          return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "fma")))
  except OSError:
    pass
  return []


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
