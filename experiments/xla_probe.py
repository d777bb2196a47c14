"""The XLA-flag probe: GEMM and BERT-base speed under each XLA CPU / allocator setting.

`python -m experiments.benchmark --out=DIR --xla-flag-probe` runs
`xla_flag_probe`: for each of `PROBE_VARIANTS` (XLA_FLAGS, oneDNN ISA,
glibc malloc tunables) a fresh process (`experiments/xla_probe_child.py`,
which XLA reads the setting in at start-up) times GEMMs in fp32 and bf16, the
BERT-base 8x128 forward and, for `PROBE_TRAIN_STEP`, a training step.
`probe_markdown` is its table (XLA_FLAGS_PROBE.md, and a section of
BENCHMARKS.md).
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import jax

from experiments.jobs import refuse
from experiments.provenance import REPO, cpu_flags, cpu_model, git_info
from experiments.switch_probe import KEEP_FREED
from experiments.timing import CpuMonitor, wait_for_idle

PROBE_VARIANTS = (
    # By default jax 0.10.2's XLA:CPU sends dots to YNNPACK ("__ynn_fusion");
    # a bf16 dot is first converted to f32 (FloatNormalization) in every variant
    # below, as the optimized HLO shows (`compiled.as_text()`).
    ("default", {}),
    ("use_onednn", {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}),
    ("onednn_custom_call", {"XLA_FLAGS": "--xla_cpu_experimental_onednn_custom_call=true"}),
    ("use_onednn+custom_call", {"XLA_FLAGS": "--xla_cpu_use_onednn=true "
                                             "--xla_cpu_experimental_onednn_custom_call=true"}),
    ("onednn_fusion_dot", {"XLA_FLAGS": "--xla_cpu_experimental_onednn_fusion_type=dot"}),
    ("no_ynn_dot+onednn_fusion_dot", {
        "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-dot "
                     "--xla_cpu_experimental_onednn_fusion_type=dot"}),
    ("no_ynn_dot+use_onednn+custom_call+AMX_ISA", {
        "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-dot --xla_cpu_use_onednn=true "
                     "--xla_cpu_experimental_onednn_custom_call=true",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}),
    ("use_xnnpack", {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"}),
    ("no_ynn_dot+xnn_fusion_dot", {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-dot "
                                                "--xla_cpu_experimental_xnn_fusion_type=dot"}),
    ("xnn_graph_greedy", {"XLA_FLAGS": "--xla_cpu_experimental_xnn_graph_fusion_mode="
                                       "XNN_GRAPH_FUSION_MODE_GREEDY"}),
    ("ynn_only_dot", {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}),
    ("no_ynn (Eigen dots)", {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}),
    ("prefer_vector_width_512", {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"}),
    ("max_isa_AVX512", {"XLA_FLAGS": "--xla_cpu_max_isa=AVX512"}),
    # Not XLA: glibc serves big buffers (gradients, the 30522x768 embedding's among them)
    # with fresh mmap()s that page-fault on their first zero-fill; raising the thresholds
    # keeps them in the heap for reuse. Measured alone: a 47 MB fill 19 ms -> 2 ms.
    ("glibc_malloc_no_mmap", {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4294967296:"
                                                "glibc.malloc.trim_threshold=4294967296"}),
    ("glibc_malloc_heap_only", {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:"
                                                  "glibc.malloc.trim_threshold=4294967296"}),
    # glibc asks the kernel for transparent huge pages on its mmaps (madvise): what
    # launch.py starts with (`lite_bert.host.reexec_with_huge_pages`).
    ("glibc_malloc_hugetlb", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}),
    # ... and keeps what a step frees for the next (one arena: a thread's own arena mmaps
    # blocks over its 64 MiB heaps whatever mmap_max says, so heap_only above still
    # mapped XLA's per-step temporaries afresh; experiments/switch_probe.py).
    ("glibc_malloc_hugetlb_keep_freed", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:" + KEEP_FREED}),
)

# Settings whose probe also times training steps (~60 s each): the allocator is what
# could change the step without changing its GEMMs.
PROBE_TRAIN_STEP = ("default", "glibc_malloc_no_mmap", "glibc_malloc_heap_only",
                    "glibc_malloc_hugetlb", "glibc_malloc_hugetlb_keep_freed")


def probe_env(env: dict) -> dict:
  """A setting's child environment: ours without the GLIBC_TUNABLES launch.py (or the
  benchmark) started with, so that `default` is glibc's own; then the setting's."""
  base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  return dict(base, LITE_BERT_HUGE_PAGES="0", **env)


def xla_flag_probe(args) -> dict:
  """GEMM GFLOP/s (and BERT-base 8x128 forward) under each XLA CPU setting, in subprocesses."""
  results = []
  monitor = CpuMonitor(lambda: [os.getpid()])
  wanted = [v for v in getattr(args, "probe_variants", "").split(",") if v]
  unknown = set(wanted) - {name for name, _ in PROBE_VARIANTS}
  if unknown:
    refuse(f"--probe-variants: unknown setting(s) {sorted(unknown)}; "
           f"choose from {[name for name, _ in PROBE_VARIANTS]}")
  settings = [(n, e) for n, e in PROBE_VARIANTS if not wanted or n in wanted]
  # Rounds interleave the settings (a, b, a, b): a slow spell of the machine hits both.
  for round_index, (name, env) in enumerate(settings * max(1, getattr(args, "probe_rounds", 1))):
    idle = wait_for_idle(monitor, args.wait_idle)
    snap = monitor.snapshot()
    cmd = [sys.executable, "-m", "experiments.xla_probe_child"] + (
        (["--train"] if args.probe_model and name in PROBE_TRAIN_STEP else [])
        + (["--model", REPO] if args.probe_model else []))
    start = time.time()
    proc = subprocess.run(cmd, env=probe_env(env), capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    line = [l for l in proc.stdout.splitlines() if l.startswith("PROBE ")]
    entry = {"variant": name, "env": env, "round": round_index // len(settings),
             "wall_s": time.time() - start,
             "returncode": proc.returncode, "interference": dict(monitor.since(snap), **idle)}
    if line:
      entry.update(json.loads(line[-1][6:]))
    else:
      entry["error"] = proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "no output"
    print(json.dumps(entry), flush=True)
    results.append(entry)
  return {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"), "cpu_model": cpu_model(), "cpu_flags": cpu_flags(),
      "jax": jax.__version__, "command": "python -m experiments.benchmark " + " ".join(
          sys.argv[1:]), "git": git_info()}, "variants": results}


def probe_markdown(probe: dict) -> str:
  """`xla_flag_probe`'s result as a Markdown table, one row per setting."""
  keys = ["fp32_2048", "bf16_2048", "bf16_2048_f32acc", "fp32_1024x768x3072",
          "bf16_1024x768x3072", "bert_base_8x128_float32_ms", "bert_base_8x128_bfloat16_ms",
          "bert_base_train_8x128_float32_ms", "bert_base_train_8x128_minor_faults",
          "bert_base_train_8x128_sys_s", "study_bert_train_32x128_float32_ms",
          "study_bert_train_32x128_minor_faults", "study_bert_train_32x128_sys_s"]
  keys = ["bf16_dot_upcast_to_f32"] + keys
  lines = ["# CPU settings vs GEMM throughput (GFLOP/s), BERT-base 8x128 forward and training"
           " steps (ms; minor page faults and kernel CPU s per step)",
           "", f"{probe['meta']['cpu_model']}; CPU flags: {' '.join(probe['meta']['cpu_flags'])};"
           f" jax {probe['meta']['jax']}; {probe['meta']['date']}", "",
           "| variant | env | " + " | ".join(keys) + " | error |",
           "|---|---|" + "---|" * len(keys) + "---|"]
  for v in probe["variants"]:
    env = " ".join(f"{k}={val}" for k, val in v["env"].items())
    lines.append(f"| {v['variant']} | `{env}` | " + " | ".join(
        str(v[k]) if isinstance(v.get(k), bool) else
        f"{v[k]:.2f}" if k.endswith("_s") and isinstance(v.get(k), (int, float)) else
        f"{v[k]:.0f}" if isinstance(v.get(k), (int, float)) else "-" for k in keys)
        + f" | {v.get('error', '')} |")
  return "\n".join(lines + train_summary(probe["variants"])) + "\n"


def train_summary(variants: list) -> list:
  """Lines: each setting's training steps, the median over its rounds, as a ratio to
  `default`'s (> 1: faster), beside its page faults; [] without a timed `default`."""
  points = ("bert_base_train_8x128", "study_bert_train_32x128")
  def median(name, key):
    values = [v[key] for v in variants if v["variant"] == name and key in v]
    return statistics.median(values) if values else None
  names = list(dict.fromkeys(v["variant"] for v in variants))
  lines = []
  for point in points:
    base = median("default", f"{point}_float32_ms")
    if base is None:
      continue
    rounds = sum(1 for v in variants if v["variant"] == "default" and f"{point}_float32_ms" in v)
    lines += ["", f"{point} (median of {rounds} round(s) per setting):", ""]
    for name in names:
      ms = median(name, f"{point}_float32_ms")
      if ms is not None:
        faults, kernel = median(name, f"{point}_minor_faults"), median(name, f"{point}_sys_s")
        lines.append(f"- {name}: {ms:,.0f} ms ({base / ms:.2f}x default)" + (
            f", {faults:,.0f} minor page faults and {kernel:.2f} s kernel CPU per step"
            if faults is not None and kernel is not None else ""))
  return lines
