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
import statistics
import sys
import tempfile
import time
from typing import Any, Optional

import numpy as np

import jax
import jax.numpy as jnp

from experiments.benchmark_inputs import (MODELS, make_inputs, make_pretraining_batch,
                                          model_config, optim_config)
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the papers / the study claim, as latency ratios to BERT-base.
CLAIMS = {
    "distilbert": dict(
        ratio=410.0 / 668.0,
        text="DistilBERT '60% faster' than BERT-base (Sanh et al. 2019, Table 3: 410 s vs "
             "668 s CPU inference on STS-B, batch 1) -> latency ratio 0.61"),
    "albert": dict(
        ratio=1.0,
        text="ALBERT-base 'not faster' than BERT-base: sharing removes parameters, not "
             "FLOPs -> latency ratio ~1.0"),
}
TARGETS_TEXT = {
    "roofline_8x512": "encoder forward >= 95% of the measured XLA GEMM roofline at 8x512 (fp32)",
    "inference_vs_torch": "inference >= 1.0x HF torch (every model, every grid point)",
    "inference_vs_flax": "inference >= 1.3x HF Flax (every model, every grid point)",
    "training_vs_torch": "training step >= 1.3x HF torch's equivalent step",
    "distil_ratio": "DistilBERT/BERT latency within +-0.03 of the FLOP ratio at every point",
    "albert_ratio": "ALBERT/BERT latency within 0.95-1.05 at every point",
}

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


# ------------------------------------------------------------------ ratios

def _index(rows: list) -> dict:
  return {(r["model"], r["impl"], r["batch"], r["seq"]): r for r in rows}


def compute_ratios(res: dict, models) -> dict:
  """Every ratio is computed here from the rows' medians and analytic FLOPs."""
  out = {"model_vs_bert": [], "ours_vs_reference": [], "training_vs_reference": [],
         "training_model_vs_bert": []}
  inf = _index(res["inference"])
  impls = sorted({r["impl"] for r in res["inference"]})
  points = sorted({(r["batch"], r["seq"]) for r in res["inference"]})
  for impl in impls:
    for b, s in points:
      bert = inf.get(("bert", impl, b, s))
      if bert is None:
        continue
      for m in ("distilbert", "albert"):
        other = inf.get((m, impl, b, s))
        if other is None:
          continue
        ratio = other["median_s"] / bert["median_s"]
        flop_ratio = other["analytic_flops"] / bert["analytic_flops"]
        entry = {"impl": impl, "batch": b, "seq": s, "model": m, "latency_ratio": ratio,
                 "flop_ratio": flop_ratio, "delta_vs_flop_ratio": ratio - flop_ratio,
                 "claim_ratio": CLAIMS[m]["ratio"]}
        if m == "distilbert":
          entry["within_target"] = abs(ratio - flop_ratio) <= 0.03
        else:
          entry["within_target"] = 0.95 <= ratio <= 1.05
        out["model_vs_bert"].append(entry)
  for (m, impl, b, s), r in sorted(inf.items()):
    if impl != "ours":
      continue
    entry = {"model": m, "batch": b, "seq": s, "ours_s": r["median_s"]}
    for ref in ("hf_torch", "hf_flax"):
      other = inf.get((m, ref, b, s))
      if other is not None:
        entry[f"{ref}_s"] = other["median_s"]
        entry[f"speedup_vs_{ref}"] = other["median_s"] / r["median_s"]
    out["ours_vs_reference"].append(entry)
  tr = _index(res.get("training", []))
  for (m, impl, b, s), r in sorted(tr.items()):
    if impl != "ours":
      continue
    other = tr.get((m, "hf_torch", b, s))
    if other is not None:
      out["training_vs_reference"].append(
          {"model": m, "batch": b, "seq": s, "ours_s": r["median_s"],
           "hf_torch_s": other["median_s"],
           "speedup_vs_hf_torch": other["median_s"] / r["median_s"]})
    bert = tr.get(("bert", "ours", b, s))
    if bert is not None and m != "bert":
      out["training_model_vs_bert"].append(
          {"model": m, "batch": b, "seq": s, "step_ratio": r["median_s"] / bert["median_s"],
           "flop_ratio": r["analytic_flops"] / bert["analytic_flops"]})
  return out


def evaluate_targets(res: dict) -> list:
  targets = []
  dtype = res["meta"]["dtype"]
  ours = [r for r in res["inference"] if r["impl"] == "ours"]
  at = [r for r in ours if r["batch"] == 8 and r["seq"] == 512]
  if at:
    worst = min(r["roofline_fraction"] for r in at)
    targets.append({"target": "roofline_8x512", "text": TARGETS_TEXT["roofline_8x512"],
                    "value": {r["model"]: r["roofline_fraction"] for r in at},
                    "met": worst >= 0.95 if dtype == "float32" else None})
  vs = res["ratios"]["ours_vs_reference"]
  for ref, key, need in (("hf_torch", "inference_vs_torch", 1.0),
                         ("hf_flax", "inference_vs_flax", 1.3)):
    values = [e[f"speedup_vs_{ref}"] for e in vs if f"speedup_vs_{ref}" in e]
    if values:
      targets.append({"target": key, "text": TARGETS_TEXT[key],
                      "value": {"min": min(values), "median": statistics.median(values),
                                "max": max(values)},
                      "met": min(values) >= need})
  tv = res["ratios"]["training_vs_reference"]
  if tv:
    values = [e["speedup_vs_hf_torch"] for e in tv]
    targets.append({"target": "training_vs_torch", "text": TARGETS_TEXT["training_vs_torch"],
                    "value": {f"{e['model']} {e['batch']}x{e['seq']}": e["speedup_vs_hf_torch"]
                              for e in tv},
                    "met": min(values) >= 1.3})
  for m, key in (("distilbert", "distil_ratio"), ("albert", "albert_ratio")):
    entries = [e for e in res["ratios"]["model_vs_bert"]
               if e["impl"] == "ours" and e["model"] == m]
    if entries:
      targets.append({"target": key, "text": TARGETS_TEXT[key],
                      "value": {f"{e['batch']}x{e['seq']}": e["latency_ratio"] for e in entries},
                      "met": all(e["within_target"] for e in entries)})
  return targets


# ----------------------------------------------------------------- outputs

def _mb(x) -> str:
  return "-" if x is None else f"{x / 2**20:,.0f}"


def _ms(x) -> str:
  return "-" if x is None else (f"{x * 1e3:,.1f}" if x < 10 else f"{x * 1e3:,.0f}")


def _x(x) -> str:
  return "-" if x is None else f"{x:.2f}"


def write_plots(res: dict, out: str) -> list:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  paths = []
  colors = {"bert": "tab:blue", "distilbert": "tab:orange", "albert": "tab:green"}
  styles = {"ours": "-", "hf_torch": "--", "hf_flax": ":"}
  rows = res["inference"]
  batches = sorted({r["batch"] for r in rows})
  seqs = sorted({r["seq"] for r in rows})

  def memory(r):
    return (r.get("xla_memory") or {}).get("peak_estimate") or r.get("rss_peak_delta_bytes")

  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  b_fix = 8 if 8 in batches else batches[-1]
  s_fix = seqs[-1]
  for (m, impl) in sorted({(r["model"], r["impl"]) for r in rows}):
    sel = sorted((r for r in rows if r["model"] == m and r["impl"] == impl
                  and r["batch"] == b_fix), key=lambda r: r["seq"])
    label = f"{m} {impl}"
    if sel:
      axes[0, 0].plot([r["seq"] for r in sel], [r["median_s"] * 1e3 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
      axes[1, 0].plot([r["seq"] for r in sel], [(memory(r) or 0) / 2**20 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
    sel = sorted((r for r in rows if r["model"] == m and r["impl"] == impl
                  and r["seq"] == s_fix), key=lambda r: r["batch"])
    if sel:
      axes[0, 1].plot([r["batch"] for r in sel], [r["median_s"] * 1e3 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
      axes[1, 1].plot([r["batch"] for r in sel], [(memory(r) or 0) / 2**20 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
  axes[0, 0].set(title=f"inference latency vs sequence length (batch {b_fix})",
                 xlabel="sequence length", ylabel="ms")
  axes[0, 1].set(title=f"inference latency vs batch (seq {s_fix})", xlabel="batch",
                 ylabel="ms")
  axes[1, 0].set(title=f"memory vs sequence length (batch {b_fix})", xlabel="sequence length",
                 ylabel="MiB (ours: XLA args+out+temp; HF: peak RSS growth)")
  axes[1, 1].set(title=f"memory vs batch (seq {s_fix})", xlabel="batch",
                 ylabel="MiB (ours: XLA args+out+temp; HF: peak RSS growth)")
  for ax in axes.flat:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f"lite_bert inference scaling, {res['meta']['device_kind']}, "
               f"{res['meta']['dtype']}")
  fig.tight_layout()
  path = os.path.join(out, "inference_scaling.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  paths.append(path)

  ratios = [e for e in res["ratios"]["model_vs_bert"]]
  if ratios:
    fig, ax = plt.subplots(figsize=(10, 5))
    labels = [f"{b}x{s}" for b, s in sorted({(e["batch"], e["seq"]) for e in ratios})]
    xs = {lab: i for i, lab in enumerate(labels)}
    for m, marker in (("distilbert", "o"), ("albert", "s")):
      for impl in sorted({e["impl"] for e in ratios}):
        sel = [e for e in ratios if e["model"] == m and e["impl"] == impl]
        if sel:
          ax.plot([xs[f"{e['batch']}x{e['seq']}"] for e in sel],
                  [e["latency_ratio"] for e in sel], styles[impl], marker=marker,
                  color=colors[m], label=f"{m}/bert {impl}")
      sel = [e for e in ratios if e["model"] == m and e["impl"] == "ours"]
      ax.plot([xs[f"{e['batch']}x{e['seq']}"] for e in sel], [e["flop_ratio"] for e in sel],
              color=colors[m], alpha=0.4, lw=6, label=f"{m}/bert FLOP ratio")
      ax.axhline(CLAIMS[m]["ratio"], color=colors[m], ls="-.", lw=1,
                 label=f"{m} claim {CLAIMS[m]['ratio']:.2f}")
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set(ylabel="latency / BERT-base latency", xlabel="batch x seq",
           title="DistilBERT/BERT and ALBERT/BERT latency ratios vs FLOP ratio and claims")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = os.path.join(out, "ratios.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

  train = res.get("training") or []
  if train:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for (m, impl) in sorted({(r["model"], r["impl"]) for r in train}):
      sel = sorted((r for r in train if r["model"] == m and r["impl"] == impl),
                   key=lambda r: (r["seq"], r["batch"]))
      labels = [f"{r['batch']}x{r['seq']}" for r in sel]
      axes[0].plot(labels, [r["median_s"] * 1e3 for r in sel], styles[impl], marker="o",
                   color=colors[m], label=f"{m} {impl}")
      axes[1].plot(labels, [(memory(r) or 0) / 2**20 for r in sel], styles[impl],
                   marker="o", color=colors[m], label=f"{m} {impl}")
    axes[0].set(title="training step time", xlabel="batch x seq", ylabel="ms")
    axes[1].set(title="training step memory", xlabel="batch x seq",
                ylabel="MiB (ours: XLA; HF: peak RSS growth)")
    for ax in axes:
      ax.set_yscale("log")
      ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, "training_scaling.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


def analysis_lines(res: dict, probe: Optional[dict]) -> list:
  """Where we stand against each target and what limits it, from this run's numbers."""
  meta, roof = res["meta"], res["roofline"]
  peak = roof["peak_gflops"].get(meta["dtype"])
  lines = ["## Where we stand and what limits it", ""]
  if meta["device_kind"] == "cpu":
    sq = {(r["m"], r["dtype"]): r["gflops"] for r in roof.get("square", [])}
    tsq = {(r["m"], r["dtype"]): r["gflops"] for r in roof.get("torch_square", [])}
    if (2048, "float32") in sq:
      lines.append(
          f"- Roofline: a 2048^3 fp32 matmul runs at {sq[(2048, 'float32')]:.0f} GFLOP/s "
          f"through XLA" + (f" and {tsq[(2048, 'float32')]:.0f} through torch"
                            if (2048, "float32") in tsq else "")
          + " on this machine, in this run; every utilisation below is relative to the best "
          f"XLA GEMM ({peak:.0f} GFLOP/s), not to a datasheet.")
  ours = {(r["model"], r["batch"], r["seq"]): r for r in res["inference"] if r["impl"] == "ours"}
  if ours:
    best = max(ours.values(), key=lambda r: r["roofline_fraction"])
    lines.append(
        f"- Encoder forward: {min(r['roofline_fraction'] for r in ours.values()):.0%} to "
        f"{best['roofline_fraction']:.0%} of that peak (best: {best['model']} "
        f"{best['batch']}x{best['seq']}); "
        + ", ".join(f"{m} 8x512 {ours[(m, 8, 512)]['roofline_fraction']:.0%}"
                    for m in MODELS if (m, 8, 512) in ours)
        + ". 8x512 falls short of the 95% target: besides the GEMMs a forward runs "
        "memory-bound work they do not absorb (LayerNorms, GELU, the softmax over "
        "batch x heads x seq x seq scores: 96 MiB per layer at 8x512), and the GEMMs "
        "themselves reach the 2048^3 rate only at favourable shapes (model-shaped GEMMs in "
        "the roofline table). At batch 1 a forward does little arithmetic per weight byte.")
  vs = res["ratios"]["ours_vs_reference"]
  for ref, name in (("hf_torch", "HF torch"), ("hf_flax", "HF Flax")):
    vals = [e[f"speedup_vs_{ref}"] for e in vs if f"speedup_vs_{ref}" in e]
    if vals:
      lines.append(f"- Inference vs {name} (same weights, same machine, interleaved): median "
                   f"{statistics.median(vals):.2f}x, range {min(vals):.2f}x-{max(vals):.2f}x "
                   f"over {len(vals)} points (> 1: ours faster).")
  if any("speedup_vs_hf_torch" in e for e in vs):
    lines.append(
        "  All three implementations spend nearly all their time in the same GEMMs (MKL for "
        "torch, YNNPACK for XLA), so inference lands within a few percent of HF torch; ALBERT "
        "is where we are clearly ahead, because HF torch runs ALBERT's tanh-GELU unfused.")
  tv = res["ratios"]["training_vs_reference"]
  if tv:
    lines.append(
        "- Training step vs HF torch (same objective and optimizer, dropout on): " + ", ".join(
            f"{e['model']} {e['batch']}x{e['seq']} {e['speedup_vs_hf_torch']:.2f}x" for e in tv)
        + ". Our step does no extra arithmetic (XLA's FLOP count is "
        + "{:.2f}-{:.2f}x the analytic one".format(*(f(
            r["xla_flops"] / r["analytic_flops"] for r in res.get("training", [])
            if r["impl"] == "ours" and r.get("xla_flops")) for f in (min, max)))
        + ", and the MLM head runs on the gathered positions only), so the gap is in "
        "non-GEMM time and memory traffic: XLA's temporaries for the step (forward "
        "activations kept for the backward pass, gradients) are "
        + ", ".join(f"{r['model']} {r['batch']}x{r['seq']} {r['xla_memory']['temp_size'] / 2**30:.1f}"
                    for r in res.get("training", []) if r["impl"] == "ours"
                    and (r.get("xla_memory") or {}).get("temp_size"))
        + " GiB, written and read once per step. One XLA profile of the step (MiniLM shape, "
        "jax.profiler) put ~57% of it in GEMM fusions; the rest was zero-filled gradient "
        "buffers (the 30522-row embedding gradient among them), the dynamic slices/updates "
        "of the `nn.scan` layer stack and copies.")
  for m, band in (("distilbert", "the FLOP ratio +-0.03"), ("albert", "0.95-1.05")):
    es = [e for e in res["ratios"]["model_vs_bert"] if e["impl"] == "ours" and e["model"] == m]
    if not es:
      continue
    out = [e for e in es if not e["within_target"]]
    text = (f"- {m}/BERT latency: {min(e['latency_ratio'] for e in es):.2f}-"
            f"{max(e['latency_ratio'] for e in es):.2f} (FLOP ratio "
            f"{es[0]['flop_ratio']:.2f}); {len(es) - len(out)} of {len(es)} points within {band}")
    if out:
      text += "; outside: " + ", ".join(f"{e['batch']}x{e['seq']} {e['latency_ratio']:.2f}"
                                         for e in out)
    layout = res["meta"].get("inference_layout", "scanned")
    if m == "albert" and layout != "scanned":
      text += (". Sharing removes parameters, not FLOPs. The layers ran unrolled, each BERT layer's "
               "weights their own arrays (`--inference-layout=unrolled`); in the scanned training "
               "layout XLA:CPU copies every layer's weights out of the stacked arrays before its "
               "GEMMs, which slows BERT at small batches and made ALBERT look faster there (measure it "
               "with `--inference-layout=scanned`)")
    elif m == "albert":
      text += (". Sharing removes parameters, not FLOPs. Where ALBERT is faster (small batches, "
               "little arithmetic per weight) what differs in the compiled code is a copy: BERT's `nn.scan` takes "
               "each layer's weights out of the stacked [L, ...] arrays, and XLA:CPU "
               "materializes that slice (a dynamic-slice fusion before every GEMM fusion in the "
               "compiled HLO; 340 MB per forward in fp32), while ALBERT's shared weights are "
               "read in place")
      flax = {(e["batch"], e["seq"]): e["latency_ratio"] for e in res["ratios"]["model_vs_bert"]
              if e["impl"] == "hf_flax" and e["model"] == "albert"}
      at = [flax[(e["batch"], e["seq"])] for e in out if (e["batch"], e["seq"]) in flax]
      if at:
        text += (f". HF Flax, whose layers are separate arrays, has ALBERT/BERT {min(at):.2f}-"
                 f"{max(at):.2f} at those points")
    lines.append(text + ".")
  if probe:
    by = {v["variant"]: v for v in probe["variants"]}
    default = by.get("default", {})
    ok = [v for v in probe["variants"] if isinstance(v.get("bf16_2048_f32acc"), (int, float))]
    if ok and default.get("fp32_2048"):
      plain = max(ok, key=lambda v: v.get("bf16_2048", 0))
      acc = max(ok, key=lambda v: v["bf16_2048_f32acc"])
      amx = any(f.startswith("amx") for f in probe["meta"]["cpu_flags"])
      text = (f"- bf16 on CPU: {len(probe['variants'])} settings tried (table below). A bf16 "
              f"matmul with a bf16 result is widened to fp32 first in every one of them "
              f"(best {plain['bf16_2048']:.0f} GFLOP/s at 2048^3, {plain['variant']}), slower "
              f"than fp32 ({default['fp32_2048']:.0f}). Asking for an fp32 result "
              f"(`preferred_element_type`) gives a native bf16 kernel: "
              f"{acc['bf16_2048_f32acc']:.0f} GFLOP/s ({acc['variant']}), "
              f"{acc['bf16_2048_f32acc'] / acc['fp32_2048']:.2f}x its fp32 "
              f"({acc['fp32_2048']:.0f}); with default settings "
              f"{default['bf16_2048_f32acc']:.0f} vs {default['fp32_2048']:.0f}, "
              f"{default['bf16_2048_f32acc'] / default['fp32_2048']:.2f}x. Our models use "
              f"that form for every matmul in bf16 (`f32_accumulating_dot_general`)")
      f32, b16 = default.get("bert_base_8x128_float32_ms"), default.get("bert_base_8x128_bfloat16_ms")
      if f32 and b16:
        text += f": BERT-base 8x128 forward {f32:,.0f} ms fp32 -> {b16:,.0f} ms bf16 ({f32 / b16:.2f}x)"
      text += (". AMX cannot be tried on this machine: its CPU reports no `amx` flags "
               "(it has `avx512_bf16`)" if not amx else
               ". The CPU has AMX; no setting made XLA use it")
      lines.append(text + ".")
    train = [v for v in probe["variants"]
             if isinstance(v.get("bert_base_train_8x128_float32_ms"), (int, float))]
    if default.get("bert_base_train_8x128_float32_ms") and len(train) > 1:
      base = default["bert_base_train_8x128_float32_ms"]
      lines.append("- BERT-base 8x128 training step by setting (ms; default "
                   f"{base:,.0f}): " + ", ".join(
                       f"{v['variant']} {v['bert_base_train_8x128_float32_ms']:,.0f} "
                       f"({base / v['bert_base_train_8x128_float32_ms']:.2f}x)"
                       for v in train if v["variant"] != "default") + ".")
  if meta["device_kind"] == "cpu":
    lines.append("- GPU targets (MFU on an H100, GPU latency table): not measured here; this "
                 "run had no GPU. `--dtype=bfloat16` on a GPU machine uses the datasheet peak "
                 "table (`GPU_PEAK_TFLOPS`).")
  return lines + [""]


def markdown(res: dict, probe: Optional[dict] = None, image_dir: str = "") -> str:
  """The run as Markdown; `probe`: an --xla-flag-probe result to include; images under `image_dir`."""
  meta = res["meta"]
  lines = [f"# lite_bert benchmark ({meta['dtype']}, {meta['size']}"
           f"{', quick' if meta['quick'] else ''})", ""]
  lines += [f"- device: {meta['device_kind']} ({meta['cpu_model']}, {meta['cpu_count']} cores;"
            f" flags {' '.join(meta['cpu_flags'])})",
            f"- date: {meta['date']}; git commit {meta['git']['commit'][:12]}"
            f"{' (dirty tree)' if meta['git']['dirty'] else ''}",
            f"- jax {meta['jax']}, jaxlib {meta.get('jaxlib')}, flax {meta['flax']}, optax "
            f"{meta['optax']}" + (f", torch {meta['torch']} ({meta['torch_threads']} threads), "
                                  f"transformers {meta['transformers']}"
                                  if meta.get("torch") else ""),
            f"- command: `{meta['command']}` (wall {meta.get('wall_s', 0) / 60:.1f} min)"
            + (" wrote this report from the rows measured by the sessions below"
               if meta.get("report_only") else ""),
            f"- XLA_FLAGS: `{meta['XLA_FLAGS'] or '(none)'}`"] + [
            f"- rows carried over (--resume) from the session of {r['date']} (commit "
            f"{r['git']['commit'][:12]}{' (dirty tree)' if r['git'].get('dirty') else ''}"
            f"{', wall %.1f min' % (r['wall_s'] / 60) if r.get('wall_s') else ''}): "
            f"`{r.get('command', '?')}`" for r in meta.get("resumed", [])
            if not meta.get("report_only") or "--report-only" not in r.get("command", "")] + [
            f"- repeats: 1 warm-up call after compilation, then "
            + (f"{res['meta']['repeat_policy']['fixed']} timed calls per candidate (--repeats)"
               if res['meta']['repeat_policy'].get('fixed') else
               f"timed calls filling ~{res['meta']['repeat_policy']['budget_s']} s per candidate "
               f"(min {res['meta']['repeat_policy']['min']}, max "
               f"{res['meta']['repeat_policy']['max']}; {res['meta']['repeat_policy']['min_long']}"
               f" when a call takes > {res['meta']['repeat_policy']['long_s']} s)"
               + (f"; a candidate whose calls spread by more than "
                  f"{res['meta']['repeat_policy']['spread']:.0%} of their median gets more "
                  f"calls, up to {res['meta']['repeat_policy']['spread_max']}"
                  if res['meta']['repeat_policy'].get('spread_max') else ""))
            + f", implementations interleaved call by "
            f"call; medians reported. A point during which other processes used > 25% of the "
            f"CPUs is timed again (up to --retries times, "
            f"{'as each session set it' if meta.get('report_only') else res['meta']['retries']};"
            f" the least busy attempt is kept).",
            "- interference: per point in the tables ('others' CPU %') and the JSON." if
            meta.get("report_only") else
            f"- interference: other processes used "
            f"{res['interference'].get('others_cpu_fraction', float('nan')):.0%} of the CPUs "
            f"during the run (per-point values in the JSON).", ""]
  roof = res["roofline"]
  lines += ["## Roofline", "", f"Source: {roof['source']}.", ""]
  if "square" in roof:
    lines += ["| GEMM (m x k x n) | dtype | XLA GFLOP/s | torch GFLOP/s |", "|---|---|---|---|"]
    torch_rows = {(r["m"], r["k"], r["n"], r["dtype"]): r for r in
                  roof.get("torch_square", []) + roof.get("torch_model_shaped", [])}
    for r in roof["square"] + roof["model_shaped"]:
      t = torch_rows.get((r["m"], r["k"], r["n"], r["dtype"]))
      lines.append(f"| {r['m']} x {r['k']} x {r['n']} | {r['dtype']} | {r['gflops']:.0f} | "
                   f"{t['gflops']:.0f} |" if t else
                   f"| {r['m']} x {r['k']} x {r['n']} | {r['dtype']} | {r['gflops']:.0f} | - |")
    for r in roof.get("end_of_run", []):
      lines.append(f"| {r['m']} x {r['k']} x {r['n']} (end of run) | {r['dtype']} | "
                   f"{r['gflops']:.0f} | - |")
  lines += ["", "Peak used for utilisation: " + ", ".join(
      f"{d} {v:.0f} GFLOP/s" for d, v in roof["peak_gflops"].items() if v), ""]
  if res.get("reference"):
    ref = res["reference"]
    lines += ["## References", "",
              f"- HF Flax worker python: `{ref['flax_python']}`; versions "
              f"{json.dumps(ref.get('flax_versions'))}; loaded: {ref['flax_loaded']}"
              + (f"; error: {ref['flax_error']}" if ref.get("flax_error") else ""),
              "- same weights (our params converted with `hf_state_dict_from_params`): max |diff|"
              " of last_hidden_state, 2x16 input: " + "; ".join(
                  f"{m}: " + ", ".join(f"{k.replace('_max_abs_diff', '')} {v:.1e}"
                                       for k, v in d.items())
                  for m, d in ref["parity"].items()), ""]
  lines += ["## Inference (encoder forward)", "",
            "| model | batch x seq | ours ms | HF torch ms | HF Flax ms | ours vs torch | "
            "ours vs Flax | ours GFLOP/s | % of peak | XLA/analytic FLOPs | ours XLA MiB "
            "(temp) | RSS growth MiB ours / torch / Flax | others' CPU % |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  inf = _index(res["inference"])
  for (m, impl, b, s), r in sorted(inf.items(), key=lambda kv: (MODELS.index(kv[0][0]),
                                                                kv[0][3], kv[0][2])):
    if impl != "ours":
      continue
    t, f = inf.get((m, "hf_torch", b, s)), inf.get((m, "hf_flax", b, s))
    mem = r.get("xla_memory") or {}
    lines.append(
        f"| {m} | {b}x{s} | {_ms(r['median_s'])} | {_ms(t and t['median_s'])} | "
        f"{_ms(f and f['median_s'])} | {_x(t and t['median_s'] / r['median_s'])} | "
        f"{_x(f and f['median_s'] / r['median_s'])} | {r['gflops_per_s']:.0f} | "
        f"{r['roofline_fraction']:.0%} | "
        f"{_x(r.get('xla_flops') and r['xla_flops'] / r['analytic_flops'])} | "
        f"{_mb(mem.get('peak_estimate'))} ({_mb(mem.get('temp_size'))}) | "
        f"{_mb(r.get('rss_peak_delta_bytes'))} / {_mb(t and t.get('rss_peak_delta_bytes'))} / "
        f"{_mb(f and f.get('rss_peak_delta_bytes'))} | "
        f"{r['interference'].get('others_cpu_fraction', float('nan')):.0%} |")
  lines += ["", "'ours vs X' = X's median latency / ours (> 1: ours faster). 'others' CPU %': "
            "share of the 2 CPUs other processes used while the point was timed.", ""]
  lines += ["## Model ratios (latency / BERT-base latency, same implementation)", "",
            "| impl | batch x seq | DistilBERT/BERT | FLOP ratio | delta | ALBERT/BERT | "
            "FLOP ratio |", "|---|---|---|---|---|---|---|"]
  by = {}
  for e in res["ratios"]["model_vs_bert"]:
    by.setdefault((e["impl"], e["seq"], e["batch"]), {})[e["model"]] = e
  for (impl, s, b), d in sorted(by.items()):
    di, al = d.get("distilbert"), d.get("albert")
    lines.append(
        f"| {impl} | {b}x{s} | {_x(di and di['latency_ratio'])}"
        f"{'' if not di or di['within_target'] or impl != 'ours' else ' (!)'} | "
        f"{_x(di and di['flop_ratio'])} | "
        f"{'-' if not di else format(di['delta_vs_flop_ratio'], '+.3f')} | "
        f"{_x(al and al['latency_ratio'])}"
        f"{'' if not al or al['within_target'] or impl != 'ours' else ' (!)'} | "
        f"{_x(al and al['flop_ratio'])} |")
  lines += ["", "Claims: " + " / ".join(c["text"] for c in CLAIMS.values()) + ".",
            "(!) = outside the target band (ours only).", ""]
  train = res.get("training") or []
  if train:
    lines += ["## Training step", "",
              "| model | impl | batch x seq | objective / optimizer | step ms | seq/s | "
              "tokens/s | analytic GFLOP | XLA/analytic | MFU (of peak) | memory MiB | "
              "loss w/o dropout | others' CPU % |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in train:
      mem = (r.get("xla_memory") or {}).get("peak_estimate") or r.get("rss_peak_delta_bytes")
      lines.append(
          f"| {r['model']} | {r['impl']} | {r['batch']}x{r['seq']} | "
          f"{r.get('objective', 'same objective')} / {r.get('optimizer')} | "
          f"{_ms(r['median_s'])} | {r['sequences_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
          f"{r['analytic_flops'] / 1e9:,.0f} | "
          f"{_x(r.get('xla_flops') and r['xla_flops'] / r['analytic_flops'])} | "
          f"{r['mfu']:.0%} | {_mb(mem)} | "
          f"{'-' if r.get('deterministic_loss') is None else format(r['deterministic_loss'], '.4f')} | "
          f"{r['interference'].get('others_cpu_fraction', float('nan')):.0%} |")
    lines += ["", "Memory: ours = XLA memory analysis (args + outputs + temps - donated); "
              "hf_torch = peak RSS growth during a step. 'loss w/o dropout': the objective on "
              "the same batch and weights with dropout off (shows the objectives match).", ""]
    lines += data_pipeline_lines(train)
    tv = res["ratios"]["training_vs_reference"]
    if tv:
      lines += ["Ours vs HF torch (training, > 1: ours faster): " + ", ".join(
          f"{e['model']} {e['batch']}x{e['seq']} {e['speedup_vs_hf_torch']:.2f}x" for e in tv),
          ""]
  lines += ["## Targets", "", "| target | value | met |", "|---|---|---|"]
  for t in res["targets"]:
    value = ", ".join(f"{k} {v:.2f}" for k, v in t["value"].items())
    lines.append(f"| {t['text']} | {value} | "
                 f"{'n/a' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
  lines += [""] + analysis_lines(res, probe)
  if probe:
    lines += probe_markdown(probe).replace("# CPU settings", "## CPU settings").splitlines() + [""]
  lines += ["## FLOP formula", "", "```", res["flops_formula"].rstrip(), "```", ""]
  for p in res.get("plots", []):
    path = os.path.join(image_dir, os.path.basename(p)) if image_dir else os.path.basename(p)
    lines.append(f"![{os.path.basename(p)}]({path})")
  return "\n".join(lines) + "\n"


DATA_BENCHMARK = os.path.join(REPO, "experiments", "results", "data_benchmark.json")
DATA_RECIPE = {"bert": "bert_wordpiece_nsp_whole_word", "albert": "albert_sentencepiece_sop_ngram3",
               "distilbert": "distilbert_wordpiece_single_token"}


def data_pipeline_lines(train: list, path: str = DATA_BENCHMARK) -> list:
  """The input pipeline's measured sequences/s (one core, seq 128) next to what each step eats."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    data = json.load(f)
  lines = [f"Input pipeline vs training step at seq 128 (pipeline: {path.split(REPO + '/')[-1]}, "
           f"one {data['cpu']} core, {data['date']}; sequences/s):", "",
           "| model | pipeline recipe | pipeline 1st epoch | pipeline later epochs | "
           "step consumes (ours) | pipeline / step (1st epoch) |", "|---|---|---|---|---|---|"]
  for r in train:
    recipe = data["recipes"].get(DATA_RECIPE.get(r["model"], ""))
    if r["impl"] != "ours" or r["seq"] != data["max_seq_length"] or recipe is None:
      continue
    first = recipe["first_epoch_seq_per_s"]
    lines.append(f"| {r['model']} {r['batch']}x{r['seq']} | {DATA_RECIPE[r['model']]} | "
                 f"{first:,.0f} | {recipe['steady_seq_per_s']:,.0f} | "
                 f"{r['sequences_per_s']:,.1f} | {first / r['sequences_per_s']:,.0f}x |")
  return lines + [""]


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
