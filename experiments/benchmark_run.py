"""The benchmark run: which candidates are timed together, how, and what is kept.

`Benchmark(args).run()` measures the roofline, then each inference grid point
(every model and implementation at that point, interleaved in visits) and
each training point (one model at a time, ours and HF torch), and returns the
result dict that `benchmark.py` writes as benchmark.json. `measure` waits for
an idle machine (--wait-idle), prepares every candidate, times them
round-robin and again when other processes used more than 25% of the CPUs
(--retries, the least disturbed attempt kept). After every point the rows so
far go to <out>/partial.json, which --resume and --report-only read back.
The candidates themselves are built in `benchmark_candidates.py`.
"""

from __future__ import annotations

import datetime
import functools
import gc
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from typing import Optional

import numpy as np

import jax

from experiments.benchmark_candidates import (flax_inference, init_params, our_inference,
                                              our_training, parity, torch_inference,
                                              torch_training)
from experiments.benchmark_inputs import MODELS, model_config
from experiments.benchmark_report import CLAIMS, compute_ratios, evaluate_targets
from experiments.jobs import refuse
from experiments.provenance import cpu_flags, cpu_model, git_info
from experiments.reference_flax_client import FlaxReference
from experiments.roofline import measure_roofline, xla_gemm_gflops
from experiments.timing import (REPEATS, VISIT, CpuMonitor, fixed_repeats, repeats_for,
                                summarize_times, time_noisy_again, time_round_robin,
                                wait_for_idle)
from experiments.torch_reference import torch_model
from lite_bert.models import convert
from lite_bert.models.flops import FORMULA, encoder_flops, train_step_flops

GRIDS = {
    # (batches, seqs, training points, repeats policy)
    "full": dict(batches=(1, 8, 32), seqs=(128, 256, 512),
                 train=((8, 128), (32, 128), (8, 512))),
    "quick": dict(batches=(1, 8), seqs=(64, 128), train=((8, 128),)),
}


class Benchmark:
  """One run: the grid, the repeat policy, the references, the rows measured so far."""

  def __init__(self, args):
    self.args = args
    self.grid = dict(GRIDS["quick" if args.quick else "full"])
    if args.batches:
      self.grid["batches"] = tuple(int(x) for x in args.batches.split(","))
    if args.seqs:
      self.grid["seqs"] = tuple(int(x) for x in args.seqs.split(","))
    if args.train_points:
      self.grid["train"] = tuple(tuple(int(v) for v in p.split("x"))
                                 for p in args.train_points.split(","))
    self.policy = REPEATS["quick" if args.quick else "full"]
    if args.repeats:  # a fixed count: steadier medians where calls vary from one to the next
      self.policy = fixed_repeats(args.repeats)
    self.models = tuple(args.models.split(","))
    self.cfgs = {m: model_config(m, args.size, args.dtype) for m in MODELS}
    self.flax = None
    self.monitor = CpuMonitor(lambda: [os.getpid()] + ([self.flax.pid()] if self.flax
                                                       and self.flax.pid() else []))
    self.tmp = tempfile.mkdtemp(prefix="lite_bert_bench_")
    self.results: dict = {}
    self.started = time.time()

  def wait_for_idle(self) -> dict:
    return wait_for_idle(self.monitor, self.args.wait_idle, self.log)

  def measure(self, candidates: list) -> dict:
    """Prepare every candidate (compile + one warm-up), then time them interleaved.

    With --wait-idle, waits for other processes to go quiet first; with
    --retries, a point during which other processes used more than 25% of the
    CPUs is timed again (after waiting again), and the attempt with the least
    interference is kept. Returns that attempt's interference numbers.
    """
    self.wait_for_idle()  # so that the warm-up, which sets the repeats, is not slowed
    for c in candidates:
      c.info.update(c.prepare())
      c.target = repeats_for(c.info["warmup_s"], self.policy)
    attempts = []
    for attempt in range(1 + self.args.retries):
      idle = self.wait_for_idle()
      snap = self.monitor.snapshot()
      time_round_robin(candidates)
      time_noisy_again(candidates, self.policy)
      load = dict(self.monitor.since(snap), **idle)
      attempts.append((load.get("others_cpu_fraction", 0.0), load,
                       [(c.times, c.rss, c.cpu) for c in candidates]))
      if load.get("others_cpu_fraction", 0.0) <= 0.25:
        break
      self.log(f"other processes used {load['others_cpu_fraction']:.0%} of the CPUs; "
               f"{'timing again' if attempt < self.args.retries else 'keeping the least busy'}")
    best = min(attempts, key=lambda a: a[0])
    for c, (times, rss, cpu) in zip(candidates, best[2]):
      c.times, c.rss, c.cpu = times, rss, cpu
    for c in candidates:
      c.cleanup()
    return dict(best[1], attempts_others_cpu_fraction=[a[0] for a in attempts])

  def log(self, msg: str) -> None:
    print(f"[{time.time() - self.started:7.1f}s] {msg}", flush=True)

  # ---- setup

  def meta(self) -> dict:
    import flax
    import optax
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m experiments.benchmark " + " ".join(
            shlex.quote(a) for a in sys.argv[1:]),
        "argv": sys.argv,
        "git": git_info(),
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "device_count": jax.device_count(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "jax": jax.__version__, "jaxlib": None, "flax": flax.__version__, "optax": optax.__version__,
        "numpy": np.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "dtype": self.args.dtype, "size": self.args.size, "quick": self.args.quick,
        "reference": self.args.reference, "models": list(self.models),
        "grid": {"batches": list(self.grid["batches"]), "seqs": list(self.grid["seqs"]),
                 "train": [list(p) for p in self.grid["train"]]},
        "repeat_policy": self.policy, "visit": dict(VISIT), "retries": self.args.retries,
        "wait_idle_s": self.args.wait_idle,
        "inference_layout": self.args.inference_layout,
        "train_layout": self.args.train_layout,
        "teacher_layout": self.args.teacher_layout,
    }
    try:
      import jaxlib
      info["jaxlib"] = jaxlib.__version__
    except ImportError:
      pass
    if self.args.reference:
      import torch
      import transformers
      info.update(torch=torch.__version__, transformers=transformers.__version__,
                  torch_threads=torch.get_num_threads())
    return info

  def start_references(self, params) -> dict:
    """Torch models and the Flax worker, loaded with our weights; parity checked."""
    import torch
    torch.set_num_threads(2 if jax.devices()[0].platform == "cpu" else os.cpu_count())
    refs = {"torch": {}, "flax_loaded": set(), "parity": {}, "flax_versions": None}
    python = self.args.reference_python
    if not os.path.exists(python):
      self.log(f"no reference venv at {python}: run experiments/reference_env.sh; "
               "HF Flax rows are skipped")
      refs["flax_error"] = f"reference python {python} not found"
    else:
      self.flax = FlaxReference(python, os.path.join(self.args.out, "reference_flax.log"))
      try:
        refs["flax_versions"] = self.flax.call(cmd="versions")
      except RuntimeError as e:
        refs["flax_error"] = str(e)
        self.flax.close()
        self.flax = None
    if jax.devices()[0].platform != "cpu":
      # The venv's torch is a CPU build: timing it against a GPU would mean nothing.
      refs["torch_skipped"] = "jax runs on a GPU and torch has no CUDA here"
    for m in self.models:
      cfg = self.cfgs[m]
      state = convert.hf_state_dict_from_params({"encoder": params[m]["encoder"]}, cfg, m,
                                                prefix="")
      refs["torch"][m] = torch_model(m, cfg, state, "base").eval()
      if self.flax is not None:
        path = os.path.join(self.tmp, f"{m}_weights.npz")
        np.savez(path, **state)
        try:
          self.flax.call(cmd="load", name=m, arch=m, config=convert.hf_config(cfg, m),
                         config_class=convert.hf_config_class_name(m),
                         model_class="Flax" + convert.hf_class_name(m, "base"),
                         weights=path, dtype=self.args.dtype)
          refs["flax_loaded"].add(m)
        except RuntimeError as e:
          refs.setdefault("flax_load_errors", {})[m] = str(e)
          self.log(f"HF Flax {m} failed to load: {e}")
        os.remove(path)
      refs["parity"][m] = parity(m, cfg, params[m], refs, layout=self.args.inference_layout,
                                 dtype=self.args.dtype, flax=self.flax, tmp=self.tmp)
      self.log(f"parity {m}: {refs['parity'][m]}")
    return refs

  def save_partial(self) -> None:
    """Everything measured so far, so that --resume can carry on after an interruption."""
    path = os.path.join(self.args.out, "partial.json")
    with open(path + ".tmp", "w") as f:
      json.dump(self.res, f, default=str)
    os.replace(path + ".tmp", path)

  def load_partial(self) -> Optional[dict]:
    path = os.path.join(self.args.out, "partial.json")
    if not (self.args.resume and os.path.exists(path)):
      return None
    with open(path) as f:
      old = json.load(f)
    keys = ("dtype", "size", "quick", "reference", "models", "grid", "XLA_FLAGS",
            "inference_layout")
    if any(old["meta"].get(k) != self.res["meta"].get(k) for k in keys):
      refuse(f"--resume: {path} is from a run with other settings "
             f"({ {k: old['meta'].get(k) for k in keys} })")
    return old

  def inference(self, params, refs) -> list:
    rows = self.res["inference"]
    done = {(r["batch"], r["seq"]) for r in rows}
    # The headline points first (8x128, then 1x128 and 8x512), so that an
    # interrupted run (see --resume) has the ones that matter most.
    points = sorted(((b, s) for s in self.grid["seqs"] for b in self.grid["batches"]),
                    key=lambda p: (p != (8, 128), p != (1, 128), p != (8, 512), p[0] * p[1]))
    for batch, seq in points:
      if (batch, seq) in done:
        continue
      candidates = []
      for m in self.models:
        candidates.append(our_inference(m, self.cfgs[m], params[m]["encoder"], batch, seq,
                                        self.args.inference_layout))
        if refs and "torch_skipped" not in refs:
          candidates.append(torch_inference(m, self.cfgs[m], refs["torch"][m], batch, seq,
                                            self.args.dtype))
          if m in refs["flax_loaded"]:
            candidates.append(flax_inference(self.flax, m, self.cfgs[m], batch, seq, self.tmp))
      load = self.measure(candidates)
      for c in candidates:
        cfg = self.cfgs[c.model]
        flops = encoder_flops(cfg, batch, seq)
        row = {"model": c.model, "impl": c.impl, "batch": batch, "seq": seq,
               "tokens": batch * seq, **summarize_times(c), **c.info,
               "analytic_flops": flops, "interference": load}
        row["tokens_per_s"] = batch * seq / row["median_s"]
        row["gflops_per_s"] = flops / row["median_s"] / 1e9
        row["roofline_fraction"] = row["gflops_per_s"] / self.peak
        rows.append(row)
        self.log(f"infer {c.model:10s} {c.impl:8s} {batch:3d}x{seq:<4d} "
                 f"{row['median_s'] * 1e3:9.1f} ms  ({row['repeats']} reps)  "
                 f"{row['gflops_per_s']:6.1f} GFLOP/s = {row['roofline_fraction']:.0%} of peak"
                 f"  [others {load.get('others_cpu_fraction', 0):.0%}]"
                 + (f"  xla {row['xla_flops'] / flops:.3f}x analytic"
                    if row.get("xla_flops") else ""))
      self.save_partial()
      gc.collect()
    return rows

  # ---- training
  def training(self, params, with_torch: bool) -> list:
    rows = self.res["training"]
    done = {(r["model"], r["batch"], r["seq"]) for r in rows}
    # The teacher: BERT's encoder + MLM head (no NSP head), frozen.
    self._teacher_params = {k: v for k, v in params["bert"].items() if k != "pair_head"}
    for batch, seq in self.grid["train"]:
      for m in self.models:  # one model at a time: optimizer states are large
        if (m, batch, seq) in done:
          continue
        # 'both': the separately stored layout is 'ours', the scanned one beside it.
        layout, teacher_layout = (("unrolled" if a == "both" else a) for a in (
            self.args.train_layout, self.args.teacher_layout))
        ours = functools.partial(our_training, m, self.cfgs, params[m], batch, seq,
                                 size=self.args.size, teacher_params=self._teacher_params)
        candidates = [ours(deterministic_loss=self.args.reference, layout=layout,
                           teacher_layout=teacher_layout)]
        if self.args.teacher_layout == "both" and m == "distilbert":
          candidates.append(ours(deterministic_loss=False, layout=layout,
                                 teacher_layout="scanned", impl="ours_scanned_teacher"))
        # ALBERT's shared layer scans either way.
        if self.args.train_layout == "both" and self.cfgs[m].share != "all":
          candidates.append(ours(deterministic_loss=False, layout="scanned",
                                 teacher_layout=teacher_layout, impl="ours_scanned"))
        if with_torch:
          candidates.append(torch_training(m, self.cfgs, params[m], batch, seq,
                                           size=self.args.size, dtype=self.args.dtype,
                                           teacher_params=self._teacher_params))
        load = self.measure(candidates)
        cfg = self.cfgs[m]
        flops = train_step_flops(m, cfg, batch, seq, self.cfgs["bert"])
        for c in candidates:
          row = {"model": m, "impl": c.impl, "batch": batch, "seq": seq,
                 "tokens": batch * seq, **summarize_times(c), **c.info,
                 "analytic_flops": flops, "interference": load}
          row["sequences_per_s"] = batch / row["median_s"]
          row["tokens_per_s"] = batch * seq / row["median_s"]
          row["gflops_per_s"] = flops / row["median_s"] / 1e9
          row["mfu"] = row["gflops_per_s"] / self.peak
          rows.append(row)
          self.log(f"train {m:10s} {c.impl:8s} {batch:3d}x{seq:<4d} "
                   f"{row['median_s'] * 1e3:9.1f} ms  {row['sequences_per_s']:7.2f} seq/s  "
                   f"MFU {row['mfu']:.0%}"
                   + (f"  xla {row['xla_flops'] / flops:.3f}x analytic"
                      if row.get("xla_flops") else ""))
        del candidates
        self.save_partial()
        gc.collect()
    return rows

  # ---- run

  def run(self) -> dict:
    args = self.args
    total = self.monitor.snapshot()
    res = self.res = {"meta": self.meta(), "inference": [], "training": []}
    self.log(f"device {res['meta']['device_kind']}, jax {jax.__version__}, dtype {args.dtype}, "
             f"size {args.size}, {'quick' if args.quick else 'full'} grid {self.grid}")
    dtypes = ("float32",) if args.dtype == "float32" else ("float32", args.dtype)
    bert = self.cfgs["bert"]
    old = self.load_partial()
    if args.report_only and old is None and os.path.exists(os.path.join(args.out, "partial.json")):
      args.resume = True
      old = self.load_partial()
    if args.report_only and old is None:  # refused before anything is measured
      refuse(f"--report-only: no {args.out}/partial.json to report")
    os.makedirs(args.out, exist_ok=True)
    if old is not None:
      res["roofline"] = old["roofline"]
      res["inference"], res["training"] = old["inference"], old["training"]
      res["meta"]["resumed"] = old["meta"].get("resumed", []) + [
          {"date": old["meta"]["date"], "git": old["meta"]["git"],
           "command": old["meta"]["command"], "wall_s": old["meta"].get("wall_s")}]
      self.log(f"resuming: {len(res['inference'])} inference and {len(res['training'])} "
               f"training rows from {old['meta']['date']}")
    else:
      attempts = []
      for _ in range(1 + args.retries):
        self.wait_for_idle()
        snap = self.monitor.snapshot()
        roof = measure_roofline(args, dtypes, bert.hidden_size, bert.intermediate_size)
        roof["interference"] = self.monitor.since(snap)
        attempts.append(roof)
        if roof["interference"].get("others_cpu_fraction", 0.0) <= 0.25:
          break
      res["roofline"] = min(attempts, key=lambda r: r["interference"].get(
          "others_cpu_fraction", 0.0))
    self.peak = res["roofline"]["peak_gflops"][args.dtype]
    self.log(f"roofline: {json.dumps(res['roofline']['peak_gflops'])} GFLOP/s")

    if args.report_only:
      for k in ("reference",):
        if k in old:
          res[k] = old[k]
      res["meta"]["report_only"] = True
      return self.finish(res, total, dtypes, measure=False)

    params = init_params(self.cfgs)
    refs = None
    if args.reference:
      refs = self.start_references(params)
      res["reference"] = {k: refs[k] for k in ("parity", "flax_versions")}
      res["reference"]["flax_python"] = args.reference_python
      res["reference"]["flax_loaded"] = sorted(refs["flax_loaded"])
      for k in ("flax_error", "flax_load_errors", "torch_skipped"):
        if k in refs:
          res["reference"][k] = refs[k]
    self.save_partial()
    self.inference(params, refs)
    if refs:
      refs["torch"].clear()
    if self.flax is not None:
      self.flax.close()
      self.flax = None
    gc.collect()
    if not args.skip_training:
      self.training(params,
                    with_torch=args.reference and not (refs and "torch_skipped" in refs))
    return self.finish(res, total, dtypes, measure=True)

  def finish(self, res, total, dtypes, measure: bool) -> dict:
    if measure and jax.devices()[0].platform == "cpu" and not self.args.quick:
      self.wait_for_idle()
      res["roofline"]["end_of_run"] = [
          xla_gemm_gflops(2048, 2048, 2048, d, 5) for d in dtypes]
    res["flops_formula"] = FORMULA
    res["claims"] = CLAIMS
    res["ratios"] = compute_ratios(res, self.models)
    res["targets"] = evaluate_targets(res)
    res["interference"] = self.monitor.since(total)
    res["meta"]["wall_s"] = time.time() - self.started
    return res
