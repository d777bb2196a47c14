"""Timing and CPU monitoring for the benchmarks: one candidate's calls, interleaved.

A `Candidate` is one (model, implementation) at one grid point: prepared once
(compiled, warmed up), then timed call by call with `timed_call` (wall
seconds, peak-RSS growth through /proc/self, process CPU seconds).
`time_round_robin` interleaves the candidates so that drift and other load hit
them alike, each visit two timed calls after an untimed one (`VISIT`: our call
after a pause, such as another library's call, ran up to 1.9x slower); `time_noisy_again` gives
widely spread candidates more calls (the `REPEATS` policies); `summarize_times`
is the row a report gets. `CpuMonitor` measures how much CPU other processes used meanwhile, and
`wait_for_idle` waits for them to go quiet. Used by `experiments/benchmark.py`,
`profile_encoder.py` and `distill_latency.py`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from typing import Any, Callable, Optional

# Timed repeats after the warm-up: enough to fill `budget_s`, within [min, max];
# points whose warm-up took more than `long_s` get `min_long` repeats (two visits: with one,
# two calls of a training step 2x apart on the Xeon left no median to trust).
# A candidate whose timed calls (each under `long_s`) spread by more than `spread` of
# their median gets further calls, round-robin with the other such candidates, until it
# has `spread_max` calls: single calls on a shared VM vary by up to 20-30%.
REPEATS = {
    "full": dict(budget_s=2.0, min=3, max=10, long_s=3.0, min_long=4, spread=0.10, spread_max=7),
    "quick": dict(budget_s=0.3, min=2, max=3, long_s=1.0, min_long=1),
}


# A visit to a candidate: one untimed call, then up to `timed` timed ones. Our call after
# a pause of a few seconds runs slower than the next (2-core Xeon, `experiments/
# switch_probe.py`, results in experiments/results/timing_bias): BERT-base 8x128 training
# after HF torch's step 6.1 s, after 3 s of sleep 5.1 s, after our own 3.2 s, the extra
# being kernel time re-faulting the 1.66 GB block XLA:CPU maps fresh each step; torch
# keeps its memory and is unaffected. Timed call by call, the benchmark put ours at 0.50x
# torch where the same two steps, each repeated, ran at 0.87x. Repeated calls are what a
# user's job does.
VISIT = dict(untimed=1, timed=2)


def fixed_repeats(n: int) -> dict:
  """The repeat policy of `--repeats=n`: exactly n timed calls per candidate, never more."""
  return dict(budget_s=0.0, min=n, max=n, long_s=0.0, min_long=n, fixed=n)


# --------------------------------------------------- process measurements

def _status(field: str) -> Optional[int]:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _reset_peak_rss() -> bool:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def timed_call(fn: Callable[[], Any]) -> tuple[float, Optional[int], float]:
  """(wall s, peak-RSS growth in bytes or None, process CPU s) of one call of fn."""
  base = _status("VmRSS")
  reset = _reset_peak_rss()
  cpu = time.process_time()
  start = time.perf_counter()
  fn()
  seconds = time.perf_counter() - start
  cpu = time.process_time() - cpu
  peak = _status("VmHWM")
  if reset and base is not None and peak is not None:
    return seconds, max(0, peak - base), cpu
  return seconds, None, cpu


class CpuMonitor:
  """How much CPU other processes used while we measured (interference)."""

  def __init__(self, pids_fn: Callable[[], list]):
    self.pids_fn = pids_fn
    self.tick = os.sysconf("SC_CLK_TCK")
    self.ncpu = os.cpu_count() or 1

  @staticmethod
  def _machine_busy() -> Optional[int]:
    try:
      with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    except OSError:
      return None
    user, nice, system, idle, iowait, irq, softirq = parts[:7]
    steal = parts[7] if len(parts) > 7 else 0
    return user + nice + system + irq + softirq + steal

  @staticmethod
  def _pid_ticks(pid: int) -> int:
    try:
      with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      return sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    except (OSError, IndexError, ValueError):
      return 0

  def snapshot(self):
    return (time.monotonic(), self._machine_busy(),
            sum(self._pid_ticks(p) for p in self.pids_fn()))

  def since(self, snap) -> dict:
    t0, busy0, ours0 = snap
    t1, busy1, ours1 = self.snapshot()
    if busy0 is None or busy1 is None or t1 <= t0:
      return {}
    capacity = (t1 - t0) * self.tick * self.ncpu
    others = max(0, (busy1 - busy0) - (ours1 - ours0))
    return {"seconds": t1 - t0, "ours_cpu_fraction": (ours1 - ours0) / capacity,
            "others_cpu_fraction": others / capacity}


def wait_for_idle(monitor: "CpuMonitor", max_wait_s: float, log=print) -> dict:
  """Waits (up to max_wait_s) until other processes use < 10% of the CPUs over 2 s."""
  if max_wait_s <= 0:
    return {}
  start = time.time()
  while True:
    snap = monitor.snapshot()
    time.sleep(2.0)
    others = monitor.since(snap).get("others_cpu_fraction", 0.0)
    waited = time.time() - start
    if others < 0.10 or waited > max_wait_s:
      if waited > 5:
        log(f"waited {waited:.0f} s for other processes to go idle "
            f"(now {others:.0%} of the CPUs)")
      return {"waited_s": waited, "others_before": others}
    time.sleep(8.0)


# -------------------------------------------------------------- candidates

@dataclasses.dataclass
class Candidate:
  """One (model, implementation) at one grid point: prepare once, then run."""

  model: str
  impl: str  # 'ours' | 'hf_torch' | 'hf_flax'
  prepare: Callable[[], dict]
  run: Callable[[], tuple]  # -> (seconds, rss delta or None)
  cleanup: Callable[[], None] = lambda: None
  info: dict = dataclasses.field(default_factory=dict)
  times: list = dataclasses.field(default_factory=list)
  rss: list = dataclasses.field(default_factory=list)
  cpu: list = dataclasses.field(default_factory=list)
  target: int = 0
  untimed_calls: int = 0  # after the warm-up: one per visit (`VISIT`)

  def time_once(self) -> None:
    """One timed call, recorded."""
    seconds, rss, cpu = self.run()
    self.times.append(seconds)
    self.rss.append(rss)
    self.cpu.append(cpu)

  def visit(self, timed: int) -> None:
    """`VISIT['untimed']` untimed calls, then `timed` timed ones (see `VISIT`)."""
    for _ in range(VISIT["untimed"]):
      self.run()
      self.untimed_calls += 1
    for _ in range(timed):
      self.time_once()


def repeats_for(warm_s: float, policy: dict) -> int:
  """Timed calls for a candidate whose warm-up call took `warm_s` (see REPEATS)."""
  if warm_s > policy["long_s"]:
    return policy["min_long"]
  return int(min(policy["max"], max(policy["min"], math.ceil(policy["budget_s"] / warm_s))))


def time_round_robin(candidates: list) -> None:
  """Visits (`VISIT`: an untimed call, then up to two timed ones), one candidate after
  the other, until each has its `target` timed calls.

  Round r starts at candidate r mod n (the order rotates), so no candidate
  always comes first after a pause. A lone candidate is timed call after call.
  """
  for c in candidates:
    c.times, c.rss, c.cpu, c.untimed_calls = [], [], [], 0
  if len(candidates) == 1:
    for _ in range(candidates[0].target):
      candidates[0].time_once()
    return
  n, r = len(candidates), 0
  while todo := [c for c in candidates if len(c.times) < c.target]:
    for c in candidates[r % n:] + candidates[:r % n]:
      if c in todo:
        c.visit(min(VISIT["timed"], c.target - len(c.times)))
    r += 1


def relative_spread(times: list) -> float:
  """(slowest - fastest) / median of a candidate's timed calls."""
  return (max(times) - min(times)) / statistics.median(times)


def time_noisy_again(candidates: list, policy: dict) -> None:
  """More calls for candidates whose calls spread widely (see REPEATS), round-robin."""
  if not policy.get("spread_max"):
    return
  def noisy(c):
    return (len(c.times) < policy["spread_max"] and c.info["warmup_s"] <= policy["long_s"]
            and relative_spread(c.times) > policy["spread"])
  while todo := [c for c in candidates if noisy(c)]:
    for c in todo:
      if len(candidates) == 1:
        c.time_once()
      else:
        c.visit(min(VISIT["timed"], policy["spread_max"] - len(c.times)))


def summarize_times(c: Candidate) -> dict:
  """A candidate's timed calls as row fields: median, min, every call, CPU, peak RSS."""
  rss = [x for x in c.rss if x is not None]
  return {"median_s": statistics.median(c.times), "min_s": min(c.times),
          "times_s": c.times, "repeats": len(c.times), "warmup_runs": 1,
          "untimed_calls": c.untimed_calls,
          "median_cpu_s": statistics.median(c.cpu) if c.cpu else None,
          "rss_peak_delta_bytes": max(rss) if rss else None}
