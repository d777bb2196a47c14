"""What machine this is, without importing jax: the CPU's model name and matmul ISA."""

import platform


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# The instruction sets that decide a CPU's matmul rate (VMs of one model name differ in them).
MATMUL_ISA = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_matmul_isa() -> str:
  """Which of MATMUL_ISA /proc/cpuinfo lists, e.g. 'avx2 avx512f amx_bf16' ('' if unknown)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          return " ".join(isa for isa in MATMUL_ISA if isa in flags)
  except OSError:
    pass
  return ""
