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


# glibc's malloc hands XLA:CPU its per-step temporary buffers (1.8 GB for a BERT-base
# 8x128 training step) as fresh mmaps, and every 4 KiB page of them faults on first touch:
# 440k minor faults and ~0.9 s of kernel time per step. With this tunable glibc asks for
# transparent huge pages on them (madvise), 512x fewer faults; measured in
# experiments/results/malloc_probe.
HUGE_PAGE_TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_huge_pages() -> str:
  """The kernel's THP mode, the bracketed word of THP_SETTING ('always', 'madvise',
  'never'); '' where there is no such file (not Linux)."""
  try:
    with open(THP_SETTING) as f:
      text = f.read()
  except OSError:
    return ""
  return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else ""


def tunables_with_huge_pages(env, thp: str, libc: str):
  """The GLIBC_TUNABLES value that adds HUGE_PAGE_TUNABLE to `env`'s, or None where there
  is nothing to add: glibc.malloc.hugetlb set already (the caller's choice wins),
  LITE_BERT_HUGE_PAGES=0 in env, a libc other than glibc, or THP mode 'never' / unknown."""
  tunables = env.get("GLIBC_TUNABLES", "")
  if (env.get("LITE_BERT_HUGE_PAGES", "1") == "0" or libc != "glibc"
      or thp not in ("always", "madvise") or "glibc.malloc.hugetlb" in tunables):
    return None
  return ":".join(filter(None, [tunables, HUGE_PAGE_TUNABLE]))


def reexec_with_huge_pages() -> None:
  """Starts this program again (same interpreter options and arguments, `sys.orig_argv`)
  with HUGE_PAGE_TUNABLE in GLIBC_TUNABLES, which glibc reads only at start-up; returns
  when there is nothing to add (see `tunables_with_huge_pages`), so at most once.
  Call it first thing in a __main__ block, before heavy imports."""
  import os  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  value = tunables_with_huge_pages(os.environ, transparent_huge_pages(), platform.libc_ver()[0])
  if value is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, dict(os.environ, GLIBC_TUNABLES=value))
