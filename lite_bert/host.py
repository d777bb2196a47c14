"""What machine this is, without importing jax: the CPU's model name and matmul flags."""

import platform


def _cpuinfo_field(name: str):
  """The value of the first `name` line of /proc/cpuinfo (None where there is none)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(name):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
  return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list:
  """The SIMD / matrix-unit flags that decide GEMM speed (AVX-512, AMX, VNNI, FMA)."""
  flags = (_cpuinfo_field("flags") or "").split()
  return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "fma")))
