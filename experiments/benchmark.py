"""Speed and memory of the lite_bert encoders, against Hugging Face, in ONE run.

  python -m experiments.benchmark --out=experiments/results/benchmark --reference
  python -m experiments.benchmark --out=/tmp/b --quick --no-reference      # ~1 min
  python -m experiments.benchmark --out=/tmp/b --quick --size=tiny --no-reference  # tests
  python -m experiments.benchmark --out=/tmp/b --xla-flag-probe   # XLA CPU flags vs bf16/fp32

What one run measures (all on the same machine, in the same process, the
implementations interleaved repeat by repeat so that drift and other load hit
them alike):

1. Roofline: a large fp32 (and the run's dtype) matmul through XLA (2048^2 and
   4096^2; the best median is this machine's "peak"), plus matmuls of the
   shapes the model runs, and the same in torch when references are on.
   On a GPU the peak is a datasheet number keyed by `device_kind` instead.
2. Inference: encoder forward (embeddings, the layers, pooler) of
   BERT-base, DistilBERT-base and ALBERT-base over batch x sequence length;
   by default in the unrolled layout (`--inference-layout=unrolled`:
   `EncoderConfig.scan_layers=False`, the trained params converted once with
   `unstack_layers`, each layer's weights their own arrays). XLA:CPU copies a
   scanned layer's weights out of the stacked [L, ...] arrays before its GEMMs
   (a dynamic-slice fusion per weight; 340 MB per BERT-base forward in fp32),
   which at batch 1 cost BERT-base ~20% (1x64: 106 -> 86 ms) and made shared-
   weight ALBERT look faster than BERT; `--inference-layout=scanned` measures
   the training layout.
   median latency over timed repeats after one warm-up call (XLA compilation
   is done before, and timed apart). Memory: XLA's compiled memory analysis
   (arguments + outputs + temporaries - aliased; exact for what XLA
   allocates) and the process's peak-RSS growth during the timed calls (VmHWM
   reset through /proc/self/clear_refs; includes allocator behaviour).
3. Training step: one jitted `lite_bert.train.loop.train_step` (the step the
   train loop runs, incl. the non-finite guard) with each model's objective
   and optimizer from its config: BERT MLM+NSP with AdamW, ALBERT MLM+SOP with
   LAMB (MLM at `P = 20 * seq / 128` gathered positions), DistilBERT's triple
   loss (student + frozen BERT-base teacher forward, MLM logits at every
   position, alpha_ce=5, alpha_mlm=2, alpha_cos=1, T=2) with AdamW.
4. References (`--reference`): Hugging Face transformers PyTorch models with
   the same weights (converted by `lite_bert.models.convert`), 2 threads,
   eval + inference_mode for inference, and a training step with the
   equivalent objective (gathered MLM positions, NSP/SOP, the same triple
   loss) + torch AdamW + grad clipping; and HF's Flax models (jitted forward)
   in their own virtualenv through the `experiments/reference_flax.py`
   worker.

Model FLOPs are counted analytically (matmuls only, 2 FLOPs per
multiply-add; the formula is in `lite_bert/models/flops.py`, and the report
repeats it) and cross-checked against XLA's `compiled.cost_analysis()`,
corrected for the scanned layers whose loop body XLA counts once (the raw
counted value is kept in the JSON too).

Utilisation = analytic FLOPs / median time / peak.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from typing import Any, Optional

import numpy as np

import jax
import jax.numpy as jnp

from experiments.benchmark_inputs import (MODELS, make_inputs, make_pretraining_batch,
                                          model_config, optim_config)
from experiments.benchmark_plots import write_plots
from experiments.benchmark_report import CLAIMS, compute_ratios, evaluate_targets, markdown
from experiments.provenance import cpu_flags, cpu_model, git_info
from experiments.reference_flax_client import REFERENCE_VENV_PYTHON, FlaxReference
from experiments.roofline import measure_roofline, xla_gemm_gflops
from experiments.timing import (REPEATS, Candidate, CpuMonitor, fixed_repeats, repeats_for,
                                summarize_times, time_noisy_again, time_round_robin, timed_call,
                                wait_for_idle)
from experiments.torch_reference import (torch_adamw, torch_autocast, torch_distillation_loss,
                                         torch_model, torch_pretraining_loss, torch_tensors)
from experiments.xla_probe import probe_markdown, xla_flag_probe
from lite_bert.models import convert
from lite_bert.models.encoder import Encoder, unstack_layers
from lite_bert.models.flops import (FORMULA, corrected_xla_flops, encoder_flops,
                                    masked_positions_per_seq, train_step_flops, xla_flops,
                                    xla_memory)
from lite_bert.models.heads import PretrainingModel
from lite_bert.train import loop as loop_lib
from lite_bert.train import objectives
from lite_bert.train import optim

GRIDS = {
    # (batches, seqs, training points, repeats policy)
    "full": dict(batches=(1, 8, 32), seqs=(128, 256, 512),
                 train=((8, 128), (32, 128), (8, 512))),
    "quick": dict(batches=(1, 8), seqs=(64, 128), train=((8, 128),)),
}


# --------------------------------------------------------------- benchmark

class Benchmark:

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
        "repeat_policy": self.policy, "retries": self.args.retries,
        "wait_idle_s": self.args.wait_idle,
        "inference_layout": self.args.inference_layout,
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

  def init_params(self) -> dict:
    """PretrainingModel params per model (the encoder part drives inference)."""
    params = {}
    for m in MODELS:
      cfg = self.cfgs[m]
      model = PretrainingModel(cfg, pair_head=m != "distilbert")
      ids = jnp.ones((1, 8), jnp.int32)
      params[m] = jax.jit(lambda rng, model=model, ids=ids: model.init(rng, ids)["params"])(
          jax.random.key({"bert": 0, "distilbert": 1, "albert": 2}[m]))
    return params

  # ---- inference

  def inference_model(self, m: str, params) -> tuple[Encoder, Any]:
    """The encoder and its params in the run's `--inference-layout`."""
    cfg = self.cfgs[m]
    if self.args.inference_layout == "scanned":
      return Encoder(cfg), params
    return (Encoder(dataclasses.replace(cfg, scan_layers=False)),
            unstack_layers(params, cfg))

  def our_inference(self, m: str, params, batch: int, seq: int) -> Candidate:
    cfg = self.cfgs[m]
    inputs = {k: jnp.asarray(v) for k, v in make_inputs(cfg, batch, seq).items()}
    state = {}
    # share='all' scans in either layout (see EncoderConfig.scan_layers)
    scans = self.args.inference_layout == "scanned" or cfg.share == "all"
    scanned = [(cfg, batch, seq, False)] if scans else []

    def prepare():
      enc, layout_params = self.inference_model(m, params)

      def forward(p, ids, mask, types):
        return enc.apply({"params": p}, ids, mask, types, deterministic=True)

      args = (layout_params, inputs["input_ids"], inputs["attention_mask"],
              inputs.get("token_type_ids"))
      start = time.perf_counter()
      compiled = jax.jit(forward).lower(*args).compile()
      compile_s = time.perf_counter() - start
      state["call"] = lambda: jax.block_until_ready(compiled(*args))
      start = time.perf_counter()
      state["call"]()
      warm = time.perf_counter() - start
      counted = xla_flops(compiled)
      return {"compile_s": compile_s, "warmup_s": warm, "xla_memory": xla_memory(compiled),
              "xla_flops_counted": counted,
              "xla_flops": corrected_xla_flops(counted, scanned)}

    def cleanup():
      state.clear()

    return Candidate(m, "ours", prepare, lambda: timed_call(state["call"]), cleanup)

  def torch_inference(self, m: str, tmodel, batch: int, seq: int) -> Candidate:
    import torch
    cfg = self.cfgs[m]
    inputs = torch_tensors(make_inputs(cfg, batch, seq))

    def call():
      with torch.inference_mode(), torch_autocast(self.args.dtype):
        tmodel(**inputs)

    def prepare():
      start = time.perf_counter()
      call()
      return {"warmup_s": time.perf_counter() - start, "compile_s": 0.0,
              "attn_implementation": tmodel.config._attn_implementation}

    return Candidate(m, "hf_torch", prepare, lambda: timed_call(call))

  def flax_inference(self, m: str, batch: int, seq: int) -> Candidate:
    cfg = self.cfgs[m]
    key = f"{batch}x{seq}"
    path = os.path.join(self.tmp, f"{m}_{key}.npz")
    np.savez(path, **make_inputs(cfg, batch, seq))

    def prepare():
      return self.flax.call(cmd="prepare", name=m, key=key, ids=path)

    def run():
      r = self.flax.call(cmd="time", name=m, key=key)
      return r["seconds"], r["rss_peak_delta_bytes"], r["cpu_s"]

    return Candidate(m, "hf_flax", prepare, run,
                     lambda: self.flax.call(cmd="drop", name=m, key=key))

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
                         weights=path, dtype=self.args.dtype)
          refs["flax_loaded"].add(m)
        except RuntimeError as e:
          refs.setdefault("flax_load_errors", {})[m] = str(e)
          self.log(f"HF Flax {m} failed to load: {e}")
        os.remove(path)
      refs["parity"][m] = self.parity(m, params[m], refs)
      self.log(f"parity {m}: {refs['parity'][m]}")
    return refs

  def parity(self, m: str, params, refs) -> dict:
    """Max |difference| of last_hidden_state, ours vs each reference, same weights."""
    import torch
    cfg = self.cfgs[m]
    inputs = make_inputs(cfg, 2, 16, seed=123)
    enc, layout_params = self.inference_model(m, params["encoder"])
    ours = enc.apply({"params": layout_params}, *(
        jnp.asarray(inputs[k]) if k in inputs else None
        for k in ("input_ids", "attention_mask", "token_type_ids")))["last_hidden_state"]
    ours = np.asarray(ours, np.float32)
    out = {}
    with torch.inference_mode(), torch_autocast(self.args.dtype):
      theirs = refs["torch"][m](**torch_tensors(inputs))[0].float().numpy()
    out["hf_torch_max_abs_diff"] = float(np.max(np.abs(ours - theirs)))
    if m in refs["flax_loaded"]:
      path = os.path.join(self.tmp, f"parity_{m}.npz")
      np.savez(path, **inputs)
      self.flax.call(cmd="prepare", name=m, key="parity", ids=path)
      npy = os.path.join(self.tmp, f"parity_{m}.npy")
      self.flax.call(cmd="output", name=m, key="parity", path=npy)
      self.flax.call(cmd="drop", name=m, key="parity")
      out["hf_flax_max_abs_diff"] = float(np.max(np.abs(ours - np.load(npy))))
    return out

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
      raise SystemExit(f"--resume: {path} is from a run with other settings "
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
        candidates.append(self.our_inference(m, params[m]["encoder"], batch, seq))
        if refs and "torch_skipped" not in refs:
          candidates.append(self.torch_inference(m, refs["torch"][m], batch, seq))
          if m in refs["flax_loaded"]:
            candidates.append(self.flax_inference(m, batch, seq))
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

  def our_training(self, m: str, params, batch: int, seq: int) -> Candidate:
    cfg = self.cfgs[m]
    size = self.args.size
    model = PretrainingModel(cfg, pair_head=m != "distilbert")
    data = {k: jnp.asarray(v) for k, v in make_pretraining_batch(cfg, batch, seq).items()}
    frozen = None
    stacks = [(cfg, batch, seq, True)]
    if m == "distilbert":
      tcfg = self.cfgs["bert"]
      teacher = PretrainingModel(tcfg, pair_head=False)
      frozen = self._teacher_params
      stacks.append((tcfg, batch, seq, False))

      def loss_fn(p, frozen, batch_, rng, deterministic):
        s = model.apply({"params": p}, batch_["input_ids"], batch_["attention_mask"], None,
                        None, deterministic=deterministic, rngs={"dropout": rng})
        t = teacher.apply({"params": frozen}, batch_["input_ids"], batch_["attention_mask"],
                          None, None, deterministic=True)
        return objectives.distillation_loss(s, t, batch_, alpha_ce=5.0, alpha_mlm=2.0,
                                            alpha_cos=1.0, temperature=2.0)
      objective = "distillation: 5*T^2*KL(T=2) + 2*MLM + 1*cosine, teacher BERT-" + size
    else:
      inner = objectives.pretraining_loss_fn(model)
      loss_fn = lambda p, frozen, b, rng, det: inner(p, b, rng, det)
      objective = ("MLM (gathered, P=%d) + %s" % (masked_positions_per_seq(seq),
                                                  "NSP" if m == "bert" else "SOP"))
    ocfg = optim_config(m, size)
    optimizer, _ = optim.make_optimizer(ocfg, total_steps=1_000_000)
    st = {}

    def prepare():
      state = {"step": jnp.zeros((), jnp.int32),
               "params": jax.tree_util.tree_map(jnp.array, params),
               "opt_state": optimizer.init(params)}
      step = jax.jit(functools.partial(loop_lib.train_step, loss_fn=loss_fn,
                                       optimizer=optimizer, base_rng=jax.random.key(0)),
                     donate_argnums=0)
      start = time.perf_counter()
      compiled = step.lower(state, frozen, data).compile()
      compile_s = time.perf_counter() - start
      st["state"] = state

      def call():
        st["state"], metrics = compiled(st["state"], frozen, data)
        jax.block_until_ready((st["state"], metrics))
        st["loss"] = metrics["loss"]

      st["call"] = call
      start = time.perf_counter()
      call()
      warm = time.perf_counter() - start
      counted = xla_flops(compiled)
      info = {}
      if self.args.reference:  # the loss without dropout, to compare with HF torch's
        info["deterministic_loss"] = float(jax.jit(
            lambda p, f, d: loss_fn(p, f, d, jax.random.key(1), True)[0])(params, frozen, data))
      return {**info, "compile_s": compile_s, "warmup_s": warm, "xla_memory": xla_memory(compiled),
              "xla_flops_counted": counted, "xla_flops": corrected_xla_flops(counted, stacks),
              "objective": objective, "optimizer": ocfg.name}

    def cleanup():
      st["final_loss"] = float(st["loss"])
      st.clear()

    return Candidate(m, "ours", prepare, lambda: timed_call(st["call"]), cleanup)

  def torch_training(self, m: str, params, batch: int, seq: int) -> Candidate:
    import torch
    cfg = self.cfgs[m]
    data = torch_tensors(make_pretraining_batch(cfg, batch, seq))
    if m != "distilbert":
      data_ = dict(data)
    else:
      data_ = {k: v for k, v in data.items() if k != "token_type_ids"}
    st = {}

    def prepare():
      state = convert.hf_state_dict_from_params(params, cfg, m)
      if m == "distilbert":
        student = torch_model(m, cfg, state, "mlm")
        tstate = convert.hf_state_dict_from_params(self._teacher_params, self.cfgs["bert"],
                                                   "bert")
        # BertForMaskedLM has no pooler (ours computes it and XLA drops it, unused).
        tstate = {k: v for k, v in tstate.items() if not k.startswith("bert.pooler.")}
        teacher = torch_model("bert", self.cfgs["bert"], tstate, "mlm").eval()
        for p in teacher.parameters():
          p.requires_grad_(False)
        loss = lambda: torch_distillation_loss(student, teacher, data_)
        model = student
      else:
        model = torch_model(m, cfg, state, "pretraining")
        loss = lambda: torch_pretraining_loss(model, m, data_)
      model.eval()
      with torch.no_grad(), torch_autocast(self.args.dtype):
        loss_det = float(loss())
      model.train()
      opt = torch_adamw(model, optim_config(m, self.args.size))
      clip = float(optim_config(m, self.args.size).clip_norm or 0.0)

      def call():
        opt.zero_grad(set_to_none=True)
        with torch_autocast(self.args.dtype):
          value = loss()
        value.backward()
        if clip > 0:
          torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        st["loss"] = value

      st["call"] = call
      start = time.perf_counter()
      call()
      return {"warmup_s": time.perf_counter() - start, "compile_s": 0.0,
              "optimizer": "torch AdamW" + (" + clip" if clip else ""),
              "deterministic_loss": loss_det,
              "attn_implementation": model.config._attn_implementation}

    def cleanup():
      st.clear()

    return Candidate(m, "hf_torch", prepare, lambda: timed_call(st["call"]), cleanup)

  def training(self, params, with_torch: bool) -> list:
    rows = self.res["training"]
    done = {(r["model"], r["batch"], r["seq"]) for r in rows}
    # The teacher: BERT's encoder + MLM head (no NSP head), frozen.
    self._teacher_params = {k: v for k, v in params["bert"].items() if k != "pair_head"}
    for batch, seq in self.grid["train"]:
      for m in self.models:  # one model at a time: optimizer states are large
        if (m, batch, seq) in done:
          continue
        candidates = [self.our_training(m, params[m], batch, seq)]
        if with_torch:
          candidates.append(self.torch_training(m, params[m], batch, seq))
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
    os.makedirs(args.out, exist_ok=True)
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
      if old is None:
        raise SystemExit(f"--report-only: no {args.out}/partial.json to report")
      for k in ("reference",):
        if k in old:
          res[k] = old[k]
      res["meta"]["report_only"] = True
      return self.finish(res, total, dtypes, measure=False)

    params = self.init_params()
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


# --------------------------------------------------------------------- main

def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="folder for benchmark.json, BENCHMARKS.md, PNGs")
  p.add_argument("--markdown", default=None,
                 help="write the Markdown report here instead of <out>/BENCHMARKS.md (it also "
                      "includes <out>/xla_flags_probe.json when that exists)")
  p.add_argument("--quick", action="store_true",
                 help="small grid (batch 1,8 x seq 64,128; training 8x128), few repeats")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--size", default="base", choices=("base", "tiny"),
                 help="configs/<model>.py size (tiny: for tests)")
  p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=False,
                 help="also time HF torch and HF Flax (default: off)")
  p.add_argument("--reference-python", default=REFERENCE_VENV_PYTHON,
                 help="python of the HF Flax reference venv (experiments/reference_env.sh)")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--batches", default="", help="override the grid's batch sizes, e.g. 1,8")
  p.add_argument("--seqs", default="", help="override the grid's sequence lengths")
  p.add_argument("--train-points", default="", help="override training points, e.g. 8x128")
  p.add_argument("--skip-training", action="store_true")
  p.add_argument("--repeats", type=int, default=0,
                 help="timed calls per candidate and point (default 0: as many as fill the "
                      "time budget of the repeat policy, at least 2-3)")
  p.add_argument("--inference-layout", default="unrolled", choices=("unrolled", "scanned"),
                 help="layers as separate arrays (EncoderConfig.scan_layers=False, the "
                      "inference layout) or the scanned training layout")
  p.add_argument("--resume", action="store_true",
                 help="carry on from <out>/partial.json (written after every point) of an "
                      "interrupted run with the same settings")
  p.add_argument("--report-only", action="store_true",
                 help="write benchmark.json / BENCHMARKS.md / plots from <out>/partial.json "
                      "without measuring anything more")
  p.add_argument("--retries", type=int, default=0,
                 help="time a point again (up to N times) when other processes used more "
                      "than 25%% of the CPUs during it; the least busy attempt is kept")
  p.add_argument("--wait-idle", type=float, default=0.0,
                 help="before each measured point, wait up to this many seconds for other "
                      "processes to use < 10%% of the CPUs (0: do not wait)")
  p.add_argument("--no-plots", action="store_true")
  p.add_argument("--xla-flag-probe", action="store_true",
                 help="instead of the benchmark: GEMMs under each XLA CPU setting")
  p.add_argument("--probe-model", action=argparse.BooleanOptionalAction, default=True,
                 help="with --xla-flag-probe: also time BERT-base 8x128 per setting")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  if args.xla_flag_probe:
    probe = xla_flag_probe(args)
    with open(os.path.join(args.out, "xla_flags_probe.json"), "w") as f:
      json.dump(probe, f, indent=1)
    with open(os.path.join(args.out, "XLA_FLAGS_PROBE.md"), "w") as f:
      f.write(probe_markdown(probe))
    return 0
  bench = Benchmark(args)
  try:
    res = bench.run()
  finally:
    if bench.flax is not None:
      bench.flax.close()
  res["plots"] = [] if args.no_plots else write_plots(res, args.out)
  with open(os.path.join(args.out, "benchmark.json"), "w") as f:
    json.dump(res, f, indent=1, default=str)
  probe_path = os.path.join(args.out, "xla_flags_probe.json")
  probe = None
  if os.path.exists(probe_path):
    with open(probe_path) as f:
      probe = json.load(f)
  md_path = args.markdown or os.path.join(args.out, "BENCHMARKS.md")
  image_dir = os.path.relpath(args.out, os.path.dirname(os.path.abspath(md_path)))
  text = markdown(res, probe, "" if image_dir == "." else image_dir)
  with open(md_path, "w") as f:
    f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
