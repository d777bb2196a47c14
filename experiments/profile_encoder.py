"""Where the encoder's time goes on this machine, and which model-code variants help.

  python -m experiments.profile_encoder --out=experiments/results/profile [--points=8x128,1x128]

Everything is BERT-base (fp32 unless --dtype), forward only, jitted, timed
interleaved (variant by variant, call by call), medians of --repeats after a
warm-up. The variants are built HERE, by subclassing / patching the model code
inside this process only; the model files are not changed. Each is the
smallest change to `lite_bert/models/encoder.py` that it stands for:

  baseline          the encoder as it is (nn.scan over layers, fused qkv,
                    jax.nn.dot_product_attention with the key mask, exact GELU)
  unroll            nn.scan(..., unroll=num_layers): same params tree, no while loop
  python_loop       a Python loop of Blocks, each with its own params (HF's layout):
                    no [L, ...] stacked weights, so no per-layer slice to copy
  gelu_tanh         activation 'gelu_new' (tanh approximation) instead of exact erf GELU
  einsum_attention  explicit einsum softmax attention instead of dot_product_attention
  no_mask           attention without the key mask (what HF does when there is no padding)
  separate_qkv      three [H, H] projections instead of one fused [H, 3H]
  albert_unshared   ALBERT-base with share='none' (12 layers of weights) vs 'all'

and a per-op decomposition of one layer (each GEMM, the attention core,
LayerNorm, GELU) timed standalone, next to the same layer timed whole.
Writes <out>/profile.json and <out>/PROFILE.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmark_inputs import make_inputs, model_config
from experiments.provenance import cpu_model, git_info
from experiments.roofline import xla_gemm_gflops
from experiments.timing import CpuMonitor, wait_for_idle
from lite_bert.models import encoder as enc_lib
from lite_bert.models.encoder import Block, Encoder
from lite_bert.models.flops import encoder_flops, xla_memory


class UnrolledEncoder(Encoder):
  """The same encoder with the layer scan unrolled (nn.scan(unroll=L))."""

  def _layer_stack(self, deterministic, output_attentions):
    cfg = self.cfg
    if cfg.share == "all":
      kw = dict(variable_broadcast="params", split_rngs={"params": False, "dropout": True})
    else:
      kw = dict(variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True})
    scanned = nn.scan(Block, in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      unroll=cfg.num_layers, **kw)
    return scanned(cfg, None, deterministic, output_attentions, name="layers")


class LoopedLayers(nn.Module):
  """The layers as a Python loop of Blocks with their own (unstacked) params, as HF does."""

  cfg: object
  deterministic: bool = True
  output_attentions: bool = False

  @nn.compact
  def __call__(self, x, mask, shared):
    for i in range(self.cfg.num_layers):
      x, _ = Block(self.cfg, None, self.deterministic, self.output_attentions,
                   name=f"layer_{i}")(x, mask, shared)
    return x, {}


class LoopEncoder(Encoder):
  """Per-layer params (no [L, ...] stacking), so no per-layer weight slice is copied."""

  def _layer_stack(self, deterministic, output_attentions):
    return LoopedLayers(self.cfg, deterministic, output_attentions, name="layers")


def einsum_attention(q, k, v, mask=None, **_):
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bnqk,bknd->bqnd", probs, v)


def unmasked_attention(q, k, v, mask=None, **kw):
  del mask
  return _ORIGINAL_DPA(q, k, v, **kw)


_ORIGINAL_DPA = jax.nn.dot_product_attention


class SeparateQKVSelfAttention(nn.Module):
  """SelfAttention with three [H, H] projections (the pre-fusion layout)."""

  cfg: object
  deterministic: bool = True
  output_attentions: bool = False

  @nn.compact
  def __call__(self, x, mask):
    cfg = self.cfg
    b, s, _ = x.shape
    dense = lambda name: nn.Dense(cfg.hidden_size, name=name, **enc_lib.dtypes(cfg))
    q, k, v = (dense(n)(x).reshape(b, s, cfg.num_heads, cfg.head_dim)
               for n in ("query", "key", "value"))
    context = jax.nn.dot_product_attention(q, k, v, mask=mask).reshape(b, s, cfg.hidden_size)
    y = nn.Dense(cfg.hidden_size, name="output", **enc_lib.dtypes(cfg))(context)
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="layer_norm",
                        **enc_lib.dtypes(cfg))(x + y), None


@contextlib.contextmanager
def patched(obj, name, value):
  old = getattr(obj, name)
  setattr(obj, name, value)
  try:
    yield
  finally:
    setattr(obj, name, old)


@dataclasses.dataclass
class Variant:
  name: str
  model: str = "bert"
  encoder_cls: type = Encoder
  overrides: dict = dataclasses.field(default_factory=dict)
  patch: tuple = ()  # (object, attribute, value) applied while tracing


VARIANTS = (
    Variant("baseline"),
    Variant("unroll", encoder_cls=UnrolledEncoder),
    Variant("python_loop", encoder_cls=LoopEncoder),
    Variant("gelu_tanh", overrides={"activation": "gelu_new"}),
    Variant("einsum_attention", patch=(jax.nn, "dot_product_attention", einsum_attention)),
    Variant("no_mask", patch=(jax.nn, "dot_product_attention", unmasked_attention)),
    Variant("separate_qkv", patch=(enc_lib, "SelfAttention", SeparateQKVSelfAttention)),
    Variant("unroll+gelu_tanh", encoder_cls=UnrolledEncoder,
            overrides={"activation": "gelu_new"}),
    Variant("albert", model="albert"),
    Variant("albert_unshared", model="albert", overrides={"share": "none"}),
    Variant("albert_unroll", model="albert", encoder_cls=UnrolledEncoder),
)


def build(variant: Variant, dtype: str, batch: int, seq: int):
  cfg = model_config(variant.model, "base", dtype)
  if variant.overrides:
    cfg = dataclasses.replace(cfg, **variant.overrides)
  model = variant.encoder_cls(cfg)
  inputs = {k: jnp.asarray(v) for k, v in make_inputs(cfg, batch, seq).items()}
  ctx = patched(*variant.patch) if variant.patch else contextlib.nullcontext()
  with ctx:
    params = jax.jit(lambda r: model.init(r, inputs["input_ids"])["params"])(jax.random.key(0))
    args = (params, inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
    fn = lambda p, i, m, t: model.apply({"params": p}, i, m, t)["last_hidden_state"]
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
  call = lambda: jax.block_until_ready(compiled(*args))
  return cfg, call, compile_s, compiled


def time_interleaved(calls: dict, repeats: int) -> dict:
  for call in calls.values():
    call()
  times = {k: [] for k in calls}
  for _ in range(repeats):
    for k, call in calls.items():
      start = time.perf_counter()
      call()
      times[k].append(time.perf_counter() - start)
  return times


def layer_decomposition(dtype: str, batch: int, seq: int, repeats: int) -> dict:
  """One BERT-base layer, whole and op by op (standalone jits)."""
  cfg = model_config("bert", "base", dtype)
  h, i, n, d = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.head_dim
  t = batch * seq
  dt = jnp.dtype(dtype)
  rng = np.random.default_rng(0)
  arr = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32) * 0.02, dt)
  x, x_i = arr(t, h), arr(t, i)
  w_qkv, w_o, w_1, w_2 = arr(h, 3 * h), arr(h, h), arr(h, i), arr(i, h)
  q, k, v = arr(batch, seq, n, d), arr(batch, seq, n, d), arr(batch, seq, n, d)
  mask = jnp.ones((batch, 1, 1, seq), bool)
  scale, bias = jnp.ones((h,), dt), jnp.zeros((h,), dt)

  def layer_norm(x):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + 1e-12) * scale + bias).astype(x.dtype)

  ops = {
      "qkv GEMM [T,H]x[H,3H]": (lambda a, w: a @ w, (x, w_qkv), 2 * t * h * 3 * h),
      "q,k,v as 3 GEMMs [T,H]x[H,H]": (lambda a, w1, w2, w3: (a @ w1, a @ w2, a @ w3),
                                       (x, arr(h, h), arr(h, h), arr(h, h)), 3 * 2 * t * h * h),
      "attention core (dot_product_attention, mask)": (
          lambda q, k, v, m: jax.nn.dot_product_attention(q, k, v, mask=m), (q, k, v, mask),
          4 * batch * seq * seq * h),
      "attention core (einsum softmax)": (einsum_attention, (q, k, v, mask),
                                          4 * batch * seq * seq * h),
      "output GEMM [T,H]x[H,H]": (lambda a, w: a @ w, (x, w_o), 2 * t * h * h),
      "FFN in GEMM [T,H]x[H,I]": (lambda a, w: a @ w, (x, w_1), 2 * t * h * i),
      "GELU exact (erf) [T,I]": (functools.partial(jax.nn.gelu, approximate=False), (x_i,), 0),
      "GELU tanh [T,I]": (functools.partial(jax.nn.gelu, approximate=True), (x_i,), 0),
      "FFN out GEMM [T,I]x[I,H]": (lambda a, w: a @ w, (x_i, w_2), 2 * t * i * h),
      "LayerNorm [T,H] (x2 per layer)": (layer_norm, (x,), 0),
      "FFN in GEMM + exact GELU fused": (
          lambda a, w: jax.nn.gelu(a @ w, approximate=False), (x, w_1), 2 * t * h * i),
  }
  block = Block(cfg, None, True)
  xb = x.reshape(batch, seq, h)
  bparams = jax.jit(lambda r: block.init(r, xb, mask, None)["params"])(jax.random.key(0))
  whole = jax.jit(lambda p, x, m: block.apply({"params": p}, x, m, None)[0])
  calls = {"whole layer (Block)": (lambda: jax.block_until_ready(whole(bparams, xb, mask)))}
  flops = {"whole layer (Block)": encoder_flops(
      dataclasses.replace(cfg, num_layers=1, pooler=False), batch, seq)}
  for name, (fn, args, f) in ops.items():
    compiled = jax.jit(fn).lower(*args).compile()
    calls[name] = functools.partial(lambda c, a: jax.block_until_ready(c(*a)), compiled, args)
    flops[name] = f
  times = time_interleaved(calls, repeats)
  out = {}
  for name, ts in times.items():
    med = statistics.median(ts)
    out[name] = {"median_ms": med * 1e3, "gflops_per_s": flops[name] / med / 1e9
                 if flops[name] else None}
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--points", default="8x128,1x128,8x512")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
  p.add_argument("--wait-idle", type=float, default=0.0,
                 help="before each timing, wait up to this many seconds for other "
                      "processes to use < 10%% of the CPUs")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  wanted = args.variants.split(",")
  variants = [v for v in VARIANTS if v.name in wanted]
  monitor = CpuMonitor(lambda: [os.getpid()])
  wait_for_idle(monitor, args.wait_idle)
  roof = xla_gemm_gflops(2048, 2048, 2048, args.dtype, 5)
  total = monitor.snapshot()
  res = {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"), "command": "python -m experiments.profile_encoder " + " ".join(
          sys.argv[1:]), "git": git_info(), "cpu_model": cpu_model(),
      "jax": jax.__version__, "dtype": args.dtype, "repeats": args.repeats,
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
      "roofline_2048": roof, "points": {}}
  for point in args.points.split(","):
    batch, seq = (int(x) for x in point.split("x"))
    calls, info = {}, {}
    for v in variants:
      cfg, call, compile_s, compiled = build(v, args.dtype, batch, seq)
      calls[v.name] = call
      info[v.name] = {"compile_s": compile_s, "model": v.model,
                      "flops": encoder_flops(cfg, batch, seq),
                      "xla_memory": xla_memory(compiled)}
    wait_for_idle(monitor, args.wait_idle)
    snap = monitor.snapshot()
    times = time_interleaved(calls, args.repeats)
    load = monitor.since(snap)
    rows = {}
    for name, ts in times.items():
      med = statistics.median(ts)
      rows[name] = dict(info[name], median_ms=med * 1e3, times_ms=[t * 1e3 for t in ts],
                        gflops_per_s=info[name]["flops"] / med / 1e9,
                        roofline_fraction=info[name]["flops"] / med / 1e9 / roof["gflops"])
    base = {"bert": rows.get("baseline"), "albert": rows.get("albert")}
    for name, r in rows.items():
      ref = base.get(r["model"])
      r["speedup_vs_baseline"] = ref["median_ms"] / r["median_ms"] if ref else None
      print(f"{point:8s} {name:20s} {r['median_ms']:9.1f} ms  {r['gflops_per_s']:6.1f} GFLOP/s"
            f"  x{r['speedup_vs_baseline'] or float('nan'):.3f}", flush=True)
    res["points"][point] = {"variants": rows, "interference": load}
    wait_for_idle(monitor, args.wait_idle)
    snap = monitor.snapshot()
    res["points"][point]["layer_decomposition"] = layer_decomposition(
        args.dtype, batch, seq, args.repeats)
    res["points"][point]["layer_decomposition_interference"] = monitor.since(snap)
    for name, r in res["points"][point]["layer_decomposition"].items():
      print(f"{point:8s}   {name:45s} {r['median_ms']:8.2f} ms"
            + (f"  {r['gflops_per_s']:6.1f} GFLOP/s" if r["gflops_per_s"] else ""), flush=True)
  res["interference"] = monitor.since(total)
  with open(os.path.join(args.out, "profile.json"), "w") as f:
    json.dump(res, f, indent=1)
  lines = [f"# Encoder profile ({args.dtype}), {res['meta']['cpu_model']}", "",
           f"- date {res['meta']['date']}, commit {res['meta']['git']['commit'][:12]}, "
           f"jax {jax.__version__}; command `{res['meta']['command']}`",
           f"- XLA 2048^2 GEMM: {roof['gflops']:.0f} GFLOP/s; {args.repeats} timed calls per "
           f"variant after a warm-up, interleaved; medians. Other processes used "
           f"{res['interference'].get('others_cpu_fraction', float('nan')):.0%} of the CPUs.", ""]
  for point, d in res["points"].items():
    lines += [f"## {point}", "", f"Other processes used "
              f"{d['interference'].get('others_cpu_fraction', float('nan')):.0%} of the CPUs "
              f"while the variants were timed.", "",
              "| variant | ms | GFLOP/s | % of GEMM roofline | "
              "speed-up vs baseline (same model) | XLA temp MiB |", "|---|---|---|---|---|---|"]
    for name, r in d["variants"].items():
      lines.append(f"| {name} | {r['median_ms']:.1f} | {r['gflops_per_s']:.0f} | "
                   f"{r['roofline_fraction']:.0%} | {r['speedup_vs_baseline']:.3f} | "
                   f"{r['xla_memory'].get('temp_size', 0) / 2**20:.0f} |")
    lines += ["", f"One layer, op by op ({point}):", "", "| op | ms | GFLOP/s |", "|---|---|---|"]
    for name, r in d["layer_decomposition"].items():
      lines.append(f"| {name} | {r['median_ms']:.2f} | "
                   f"{'-' if not r['gflops_per_s'] else format(r['gflops_per_s'], '.0f')} |")
    lines.append("")
  with open(os.path.join(args.out, "PROFILE.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
