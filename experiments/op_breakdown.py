"""Where a compiled call's time goes, by XLA:CPU op kind, from XLA's own trace.

`trace_env()` is the XLA flag that makes XLA:CPU record each op it runs (set it
before jax starts its backend); `op_breakdown(call)` runs `call` under
`jax.profiler.trace` and sums the recorded ops' durations by kind: the op's
name without its number (`ynn_fusion.16` -> `ynn_fusion`: YNNPACK's GEMM
fusions; `wrapped_broadcast`: buffer fills; `bitcast_dynamic-update-slice_fusion`:
writes into the scan's stacked buffers; ...). Used by
`experiments/profile_train_step.py --op-breakdown`.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile

import jax

TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def trace_env() -> None:
  """Adds TRACE_FLAG to XLA_FLAGS (before the backend starts: the first jax computation)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if TRACE_FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {TRACE_FLAG}".strip()


def op_breakdown(call, calls: int = 2) -> dict:
  """{op kind: ms per call} over `calls` traced calls of `call` (run once untraced first),
  XLA's executor threads only, most expensive first; 'total' is their sum."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  call()
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder):
      for _ in range(calls):
        call()
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True))
    if not paths:
      return {}
    data = ProfileData.from_file(paths[-1])
    kinds = collections.Counter()
    for plane in data.planes:
      for line in plane.lines:
        if "XLAEigen" not in line.name:  # XLA:CPU's worker threads
          continue
        for event in line.events:
          if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
            continue  # containers and waits, not ops
          kinds[re.sub(r"[.\d]+$", "", event.name)] += event.duration_ns
  out = {kind: round(ns / calls / 1e6, 1) for kind, ns in kinds.most_common()}
  out["total"] = round(sum(kinds.values()) / calls / 1e6, 1)
  return out


def breakdown_markdown(title: str, by_variant: dict, top: int = 15) -> str:
  """One table, ms per call: the `top` op kinds by their largest time in any variant."""
  variants = list(by_variant)
  every = {k for ops in by_variant.values() for k in ops if k != "total"}
  kinds = sorted(every, key=lambda k: -max(ops.get(k, 0.0) for ops in by_variant.values()))[:top]
  lines = [title, "", "| op kind | " + " | ".join(variants) + " |",
           "|---|" + "---|" * len(variants)]
  for kind in kinds + ["total"]:
    lines.append(f"| {kind} | " + " | ".join(
        f"{by_variant[v].get(kind, 0.0):,.1f}" for v in variants) + " |")
  return "\n".join(lines) + "\n"
