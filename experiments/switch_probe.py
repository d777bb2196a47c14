"""Why our call right after HF torch's ran slower: the library switch, or the pause?

A benchmark that interleaves implementations call by call times every one of our
calls right after a torch call. On the 2-core Xeon (2026-12-06) such a call of our
BERT-base 8x128 training step took 4.8-5.5 s with 3-4 s of kernel time, against
3.3 s / 0.3 s right after one of ours (`experiments/results/timing_bias`). This probe
runs one child process per glibc setting (`SETTINGS`: the huge-page tunable
`glibc.malloc.hugetlb=1` that `launch.py` and the benchmarks start with, or `=0`, each
alone or with `KEEP_FREED`, which keeps freed memory in the process). Each round calls
ours, ours, torch, ours, an idle sleep (`--sleep-s`), ours (`ROUND`), and each call
records its wall time, kernel and user CPU time, minor page faults, CPU time per thread
name and the deltas of the kernel's compaction and transparent-huge-page counters
(/proc/vmstat: machine-wide, so other processes' faults count too). The summary gives,
per setting, the median of each kind of call ("ours after ours", "ours after torch",
"ours after sleep", ...), the switch cost (after torch / after ours) and the pause
cost (after sleep / after ours).

  python -m experiments.switch_probe --out=experiments/results/timing_bias/switch_probe \\
      --size=base --rounds=3 --settings=hugetlb1,hugetlb1_heap

Writes `switch_probe.json` (every call) and `SWITCH_PROBE.md`. Needs torch (the
test extra); nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

# glibc's tunables in each child. `heap`: one arena (a thread's own arena mmaps blocks
# larger than its 64 MiB heaps whatever mmap_max says), no mmap for large blocks and no
# trimming, so the memory a step frees stays in the process for the next one.
KEEP_FREED = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
              "glibc.malloc.trim_threshold=68719476736")
SETTINGS = {"hugetlb1": "glibc.malloc.hugetlb=1", "hugetlb0": "glibc.malloc.hugetlb=0",
            "hugetlb1_heap": "glibc.malloc.hugetlb=1:" + KEEP_FREED,
            "hugetlb0_heap": "glibc.malloc.hugetlb=0:" + KEEP_FREED}
# One round: what each call follows is the previous call's implementation. `sleep`: an
# idle pause as long as `--sleep-s` (does the pause alone cost our next call?).
ROUND = ("ours", "ours", "torch", "ours", "sleep", "ours")
VMSTAT_FIELDS = ("compact_stall", "compact_fail", "compact_success", "thp_fault_alloc",
                 "thp_fault_fallback")


def vmstat() -> dict:
  """The kernel's counters VMSTAT_FIELDS from /proc/vmstat ({} where there is none)."""
  try:
    with open("/proc/vmstat") as f:
      pairs = (line.split() for line in f)
      return {k: int(v) for k, v in pairs if k in VMSTAT_FIELDS}
  except OSError:
    return {}


def thread_cpu() -> dict:
  """Kernel and user CPU seconds of this process's threads, summed by thread name
  (/proc/self/task/*/stat; {} where there is none)."""
  tick = os.sysconf("SC_CLK_TCK")
  out = {}
  for task in pathlib.Path("/proc/self/task").glob("*"):
    try:
      stat = (task / "stat").read_text()
    except OSError:
      continue  # the thread ended meanwhile
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    user, kernel = out.get(name, (0.0, 0.0))
    out[name] = (user + int(fields[11]) / tick, kernel + int(fields[12]) / tick)
  return out


def measured_call(run) -> dict:
  """Runs `run()` once: wall seconds, kernel and user CPU seconds, minor faults, vmstat
  deltas, and `threads`: {thread name: [user s, kernel s]} spent during the call."""
  v0, r0, c0 = vmstat(), resource.getrusage(resource.RUSAGE_SELF), thread_cpu()
  t0 = time.perf_counter()
  run()
  wall = time.perf_counter() - t0
  r1, v1, c1 = resource.getrusage(resource.RUSAGE_SELF), vmstat(), thread_cpu()
  threads = {name: [round(u - c0.get(name, (0, 0))[0], 2), round(k - c0.get(name, (0, 0))[1], 2)]
             for name, (u, k) in c1.items()}
  return {"wall_s": wall, "sys_s": r1.ru_stime - r0.ru_stime,
          "user_s": r1.ru_utime - r0.ru_utime, "minflt": r1.ru_minflt - r0.ru_minflt,
          **{k: v1[k] - v0[k] for k in v0 if k in v1},
          "threads": {n: v for n, v in threads.items() if v[0] or v[1]}}


def label_calls(impls: list) -> list:
  """'<impl> after <previous impl>' for each call of a sequence (the first: 'first')."""
  return ["first"] + [f"{cur} after {prev}" for prev, cur in zip(impls, impls[1:])]


def summarize(calls: list) -> dict:
  """Per setting and call label: the number of calls and the median of every measured
  field; per setting, `switch_cost` and `pause_cost`: the median wall of 'ours after
  torch' and of 'ours after sleep' over that of 'ours after ours' (None where a kind is
  missing). `calls`: dicts with 'setting', 'label' and the measured fields."""
  out = {}
  for setting in dict.fromkeys(c["setting"] for c in calls):
    rows = {}
    for label in dict.fromkeys(c["label"] for c in calls if c["setting"] == setting):
      group = [c for c in calls if c["setting"] == setting and c["label"] == label]
      fields = [k for k, v in group[0].items()
                if k not in ("setting", "label", "round") and isinstance(v, (int, float))]
      rows[label] = {"calls": len(group),
                     **{k: statistics.median(c[k] for c in group) for k in fields}}
    after_ours = rows.get("ours after ours", {}).get("wall_s")
    cost = {k: rows[f"ours after {k}"]["wall_s"] / after_ours
            for k in ("torch", "sleep") if after_ours and f"ours after {k}" in rows}
    out[setting] = {"by_label": rows, "switch_cost": cost.get("torch"),
                    "pause_cost": cost.get("sleep")}
  return out


def child(args) -> None:
  """One setting: prepares ours and torch's training step, runs the rounds, prints one
  JSON line per call."""
  from experiments.benchmark_candidates import init_params, our_training, torch_training  # pylint: disable=import-outside-toplevel
  from experiments.benchmark_inputs import model_config  # pylint: disable=import-outside-toplevel
  batch, seq = (int(x) for x in args.point.split("x"))
  cfgs = {m: model_config(m, args.size, "float32") for m in ("bert", "distilbert", "albert")}
  params = init_params({"bert": cfgs["bert"]})["bert"]
  impls = {
      "ours": our_training("bert", cfgs, params, batch, seq, size=args.size,
                           teacher_params=None, deterministic_loss=False, layout="unrolled"),
      "torch": torch_training("bert", cfgs, params, batch, seq, size=args.size,
                              dtype="float32", teacher_params=None)}
  for c in impls.values():
    c.prepare()
  impls["sleep"] = argparse.Namespace(run=lambda: time.sleep(args.sleep_s))
  sequence = list(ROUND) * args.rounds
  for i, (impl, label) in enumerate(zip(sequence, label_calls(sequence))):
    row = {"round": i // len(ROUND), "label": label, **measured_call(impls[impl].run)}
    print(json.dumps(row), flush=True)


def run_setting(args, name: str) -> list:
  """Runs the child for one setting (its GLIBC_TUNABLES fixed at start-up) and returns
  its calls, each tagged with the setting."""
  env = dict(os.environ, GLIBC_TUNABLES=SETTINGS[name])
  cmd = [sys.executable, "-m", "experiments.switch_probe", "--child", f"--size={args.size}",
         f"--point={args.point}", f"--rounds={args.rounds}", f"--sleep-s={args.sleep_s}"]
  print(f"switch_probe: {name} ({SETTINGS[name]}): preparing ours and torch, "
        f"then {args.rounds} rounds of {', '.join(ROUND)}", flush=True)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
  calls = []
  for line in proc.stdout:
    if line.startswith("{"):
      row = dict(json.loads(line), setting=name)
      calls.append(row)
      print(f"  {name} round {row['round']} {row['label']:17s} {row['wall_s'] * 1e3:7.0f} ms"
            f"  sys {row['sys_s']:5.2f} s  minflt {row['minflt']:7d}"
            f"  compact_stall {row.get('compact_stall', 'n/a')}  threads {row['threads']}",
            flush=True)
  if proc.wait():
    raise SystemExit(f"error: the {name} child exited with status {proc.returncode}")
  return calls


def _count(x) -> str:
  """A median count for the table ('n/a' where the kernel has no such counter)."""
  return "n/a" if x is None else f"{x:,.0f}"


def markdown(summary: dict, meta: dict) -> str:
  """SWITCH_PROBE.md: per setting, the median of each kind of call and the switch cost."""
  lines = ["# The cost of a library switch between timed calls", "",
           f"BERT training step, size `{meta['size']}`, {meta['point']}, fp32, separate "
           f"layers; {meta['rounds']} rounds of {', '.join(ROUND)} per setting, one child "
           f"process each. {meta['cpu']}, {meta['date']}. Medians per kind of call.", "",
           "| setting | call | calls | wall ms | kernel s | user s | minor faults | "
           "compact_stall | thp_fault_alloc |",
           "|---|---|---|---|---|---|---|---|---|"]
  for setting, s in summary.items():
    for label, r in s["by_label"].items():
      lines.append(f"| {SETTINGS[setting]} | {label} | {r['calls']} | {r['wall_s'] * 1e3:,.0f} | "
                   f"{r['sys_s']:.2f} | {r['user_s']:.2f} | {r['minflt']:,.0f} | "
                   f"{_count(r.get('compact_stall'))} | {_count(r.get('thp_fault_alloc'))} |")
  lines += ["", "Median wall of ours after torch (switch) and after the idle pause (pause), "
            "over ours after ours:", ""]
  for setting, s in summary.items():
    costs = [f"{k} {'n/a' if s[k + '_cost'] is None else format(s[k + '_cost'], '.2f') + 'x'}"
             for k in ("switch", "pause")]
    lines.append(f"- {SETTINGS[setting]}: {', '.join(costs)}")
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", type=pathlib.Path)
  p.add_argument("--size", default="base", help="configs' size of the models (tiny: a quick check)")
  p.add_argument("--point", default="8x128", help="batch x sequence length")
  p.add_argument("--rounds", type=int, default=4)
  p.add_argument("--sleep-s", type=float, default=3.0, help="the idle pause in each round")
  p.add_argument("--settings", default=",".join(SETTINGS))
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    return child(args)
  if args.out is None:
    p.error("--out is required")
  names = args.settings.split(",")
  unknown = [n for n in names if n not in SETTINGS]
  if unknown:
    p.error(f"--settings: unknown {unknown}; known: {list(SETTINGS)}")
  from lite_bert import host  # pylint: disable=import-outside-toplevel
  calls = [c for name in names for c in run_setting(args, name)]
  summary = summarize(calls)
  meta = {"size": args.size, "point": args.point, "rounds": args.rounds,
          "cpu": host.cpu_model(), "date": time.strftime("%Y-%m-%d"),
          "command": "python -m experiments.switch_probe "
                     + " ".join(sys.argv[1:] if argv is None else argv)}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "switch_probe.json").write_text(
      json.dumps({"meta": meta, "summary": summary, "calls": calls}, indent=1))
  (args.out / "SWITCH_PROBE.md").write_text(markdown(summary, meta))
  print(markdown(summary, meta))


if __name__ == "__main__":
  main()
