"""Where the training step's time goes, and which step variants help (issue #23 item 1).

  python -m experiments.profile_train_step --out=experiments/results/profile_train \
      [--model=bert] [--size=base] [--points=8x128] [--repeats=5]

One process, one model, the library's own `train.loop.train_step` (the
pretraining objective and the config's optimizer, as `experiments/benchmark.py`
times it), jitted with the state donated. Each variant is the smallest change
to the library it stands for, built here; the library is not changed:

  forward_only      the loss forward, deterministic (for the backward ratio);
                    built first: in a process holding many variants the first
                    one built ran 20-30% slower in every call, whichever it was
  baseline          the step as it is (nn.scan over layers, dropout 0.1,
                    threefry PRNG, the non-finite guard on loss, gradient and
                    new state)
  scan_unroll_all   `model.scan_unroll=0`: the scan's body holds every layer
                    (same stacked params, no while loop)
  unrolled          `model.scan_layers=False` (a training option now): a Python
                    loop of blocks, each with its own weights (no [L, ...]
                    stacked weights to slice in the forward and accumulate into
                    in the backward)
  rbg               the dropout key drawn from `rbg` instead of threefry
  no_attn_dropout   `attention_dropout_rate=0` (the cuDNN/Cramming recipe)
  explicit_attention  no attention dropout, but the explicit softmax path that dropout
                    takes (LITE_BERT_ATTENTION=explicit): splits dropout's cost from the path's
  no_dropout        both dropouts 0 (what dropout costs in all)
  bfloat16          `model.dtype=bfloat16` (fp32 params, bf16 compute; the weight matmuls
                    accumulate in fp32, `encoder.flat_matmul`)
  bfloat16_unrolled  bfloat16 on the unrolled layout (`model.scan_layers=False`):
                    XLA:CPU runs a bf16 dynamic-update-slice by converting the whole
                    stacked [L, ...] buffer to fp32 and back (its float normalization),
                    once per layer: the scan's bf16 residuals are written so (O(L^2))
  bfloat16_unrolled_jax_backward  the same with JAX's own backward of the bf16 weight
                    matmuls (an fp32 cotangent: both backward GEMMs widened to fp32)
  bfloat16_unrolled_sum_bias_grad  the same with JAX's own bias gradient in bf16 (a sum
                    over the leading axes; XLA:CPU widens it to an fp32 reduce-window), not
                    the library's GEMV (`encoder._add_bias_reduced`)
  bfloat16_nd_dot   the same on [batch, seq, ...] operands as they are, not flattened
                    to 2-D: what the library did before
  nd_dot            the weight matmuls on [batch, seq, K] operands as they are (one
                    einsum each), not flattened to 2-D: the step before
  guard_loss_only   the guard checks the loss and the gradient norm only, not
                    the new params and moments (what the state check costs)
  guard_cond        the same guard as one `lax.cond` choosing the whole new or old state
                    (not a `where` per leaf)
  guard_finite_sum  the guard's state check (`loop.all_finite`) as one sum of `leaf * 0`
                    per leaf (NaN when it holds an inf or NaN), not `all(isfinite(leaf))`
  unrolled_guard_loss_only  guard_loss_only on the unrolled layout
  unrolled_guard_recompute  the unrolled layout, the same checks, the optimizer update
                    computed twice: once for the checks only (fused reductions), once
                    behind an optimization barrier fused with the select
                    (`guard_recompute_step`)
  hf_torch          HF torch's step on the same weights (the benchmark's
                    reference), when torch and transformers are installed
  hf_torch_bfloat16 the same under torch's bf16 autocast (what the bf16 variants
                    compare with); "vs HF torch" stays against the fp32 one

Timed interleaved, in visits of one untimed call then two timed ones (`timing.VISIT`: a
call right after another variant's or library's ran slower), the order rotating; medians of
--repeats after one warm-up each.
With --op-breakdown each variant's call is then traced (XLA's own trace,
`experiments/op_breakdown.py`) into <out>/OP_BREAKDOWN.md: ms per call by op kind.
Writes <out>/profile_train.json and <out>/PROFILE_TRAIN.md (ratios to the
baseline and to HF torch; CPU timings vary 20-30% run to run: compare ratios).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import statistics
import sys
import time

if __name__ == "__main__":
  from lite_bert import host  # as launch.py runs: transparent huge pages for XLA's buffers
  host.reexec_with_huge_pages()

import jax
import jax.numpy as jnp

from experiments import op_breakdown
from experiments.benchmark_candidates import init_params, torch_training
from experiments.benchmark_inputs import make_pretraining_batch, model_config, optim_config
from experiments.provenance import cpu_model, git_info
from experiments.timing import (Candidate, CpuMonitor, time_round_robin, timed_call,
                                wait_for_idle)
from lite_bert import files
from lite_bert.models import encoder as encoder_lib
from lite_bert.models.encoder import unstack_layers
from lite_bert.models.heads import PretrainingModel
from lite_bert.train import loop as loop_lib
from lite_bert.train import objectives
from lite_bert.train import optim

VARIANTS = ("forward_only", "baseline", "scan_unroll_all", "unrolled", "rbg", "no_attn_dropout",
            "explicit_attention", "no_dropout", "bfloat16", "bfloat16_unrolled",
            "bfloat16_unrolled_jax_backward", "bfloat16_unrolled_sum_bias_grad",
            "bfloat16_nd_dot", "nd_dot",
            "guard_loss_only", "guard_cond", "guard_finite_sum", "unrolled_guard_loss_only",
            "unrolled_guard_recompute", "hf_torch", "hf_torch_bfloat16")


def _update(state, frozen, batch, loss_fn, optimizer, base_rng):
  """`loop.train_step`'s unguarded part: (loss, metrics, grad_norm, new params, new opt state)."""
  import optax
  rng = jax.random.fold_in(base_rng, state["step"])
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], frozen, batch, rng, False)
  updates, new_opt_state = optimizer.update(grads, state["opt_state"], state["params"])
  return (loss, metrics, optax.tree.norm(grads), optax.apply_updates(state["params"], updates),
          new_opt_state)


def guard_loss_only_step(state, frozen, batch, *, loss_fn, optimizer, base_rng):
  """`loop.train_step` with the finite check on the loss and gradient norm only."""
  loss, metrics, grad_norm, new_params, new_opt_state = _update(
      state, frozen, batch, loss_fn, optimizer, base_rng)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
  return ({"step": state["step"] + 1, "params": keep(new_params, state["params"]),
           "opt_state": keep(new_opt_state, state["opt_state"])},
          dict(metrics, loss=loss, grad_norm=grad_norm))


def guard_cond_step(state, frozen, batch, *, loss_fn, optimizer, base_rng):
  """`loop.train_step` with the guard as one `lax.cond` over the whole new state instead of
  a `where` per leaf (the same checks: loss, gradient norm, new params and moments)."""
  loss, metrics, grad_norm, new_params, new_opt_state = _update(
      state, frozen, batch, loss_fn, optimizer, base_rng)
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & loop_lib.all_finite(new_params)
            & loop_lib.all_finite(new_opt_state))
  kept = jax.lax.cond(finite, lambda: (new_params, new_opt_state),
                      lambda: (state["params"], state["opt_state"]))
  return ({"step": state["step"] + 1, "params": kept[0], "opt_state": kept[1]},
          dict(metrics, loss=loss, grad_norm=grad_norm,
               nonfinite=1.0 - finite.astype(jnp.float32)))


def guard_recompute_step(state, frozen, batch, *, loss_fn, optimizer, base_rng):
  """`loop.train_step` with the same checks, the optimizer update computed twice: once
  only for the checks (reductions XLA may fuse with the update, so that nothing need be
  materialized), and once behind an optimization barrier (so not merged with the first)
  fused with the `where` that keeps the old state. Meant to trade a recomputation of
  the element-wise update for the passes that write the new state, read it back for the
  check and again for the select; measured, it did not
  (`experiments/results/profile_train/guard_recompute`)."""
  import optax
  rng = jax.random.fold_in(base_rng, state["step"])
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], frozen, batch, rng, False)
  grad_norm = optax.tree.norm(grads)

  def update(grads, opt_state, params):
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt_state

  checked_params, checked_opt_state = update(grads, state["opt_state"], state["params"])
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & loop_lib.all_finite(checked_params)
            & loop_lib.all_finite(checked_opt_state))
  grads, opt_state, params = jax.lax.optimization_barrier(
      (grads, state["opt_state"], state["params"]))
  new_params, new_opt_state = update(grads, opt_state, params)
  keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
  return ({"step": state["step"] + 1, "params": keep(new_params, params),
           "opt_state": keep(new_opt_state, opt_state)},
          dict(metrics, loss=loss, grad_norm=grad_norm,
               nonfinite=1.0 - finite.astype(jnp.float32)))


def baseline_config(model_name: str, size: str):
  """The baseline's model: `size`'s, fp32, in the scanned layout (the variants change that;
  the study's `long` models train with separate layers, `--size=study_long`)."""
  return dataclasses.replace(model_config(model_name, size, "float32"), scan_layers=True)


def build(variant: str, model_name: str, size: str, batch: int, seq: int, params0):
  """(call, info) for one variant: `call()` runs one step (or forward) to completion."""
  cfg = baseline_config(model_name, size)
  base_rng = jax.random.key(0)
  step_fn = loop_lib.train_step
  params = params0
  if variant.startswith("unrolled") or variant.startswith("bfloat16_unrolled"):
    cfg = dataclasses.replace(cfg, scan_layers=False,
                              dtype="bfloat16" if variant.startswith("bfloat16") else cfg.dtype)
    params = dict(params0, encoder=unstack_layers(params0["encoder"], cfg))
  elif variant == "rbg":
    base_rng = jax.random.key(0, impl="rbg")
  elif variant in ("no_attn_dropout", "explicit_attention"):
    cfg = dataclasses.replace(cfg, attention_dropout_rate=0.0)
  elif variant in ("bfloat16", "bfloat16_nd_dot"):
    cfg = dataclasses.replace(cfg, dtype="bfloat16")
  elif variant == "no_dropout":
    cfg = dataclasses.replace(cfg, attention_dropout_rate=0.0, dropout_rate=0.0)
  elif variant == "guard_loss_only":
    step_fn = guard_loss_only_step
  elif variant == "guard_cond":
    step_fn = guard_cond_step
  elif variant == "scan_unroll_all":
    cfg = dataclasses.replace(cfg, scan_unroll=0)
  if variant == "unrolled_guard_loss_only":
    step_fn = guard_loss_only_step
  elif variant == "unrolled_guard_recompute":
    step_fn = guard_recompute_step
  if variant == "bfloat16_unrolled_jax_backward":  # the same forward, no custom VJP
    return _patched(encoder_lib, "_reduced_matmul", encoder_lib._reduced_matmul.fun, variant,
                    cfg, model_name, size, batch, seq, params, step_fn, base_rng)
  if variant == "guard_finite_sum":
    sum_check = lambda tree: jnp.isfinite(jnp.stack(
        [jnp.sum(x * jnp.zeros((), x.dtype), dtype=jnp.float32) for x in jax.tree.leaves(tree)
         if jnp.issubdtype(jnp.result_type(x), jnp.inexact)])).all()
    return _patched(loop_lib, "all_finite", sum_check, variant, cfg, model_name, size, batch,
                    seq, params, step_fn, base_rng)
  if variant == "bfloat16_unrolled_sum_bias_grad":  # the same bias add, JAX's own gradient
    return _patched(encoder_lib, "_add_bias_reduced", encoder_lib._add_bias_reduced.fun,
                    variant, cfg, model_name, size, batch, seq, params, step_fn, base_rng)
  if variant in ("nd_dot", "bfloat16_nd_dot"):
    nd = lambda x, w, out_dtype=None, w_transposed=False: jnp.einsum(
        "...k,nk->...n" if w_transposed else "...k,kn->...n", x, w,
        preferred_element_type=jnp.float32).astype(out_dtype or jnp.result_type(x, w))
    return _patched(encoder_lib, "flat_matmul", nd, variant, cfg, model_name, size, batch,
                    seq, params, step_fn, base_rng)
  if variant != "explicit_attention":
    return _compiled(variant, cfg, model_name, size, batch, seq, params, step_fn, base_rng)
  os.environ["LITE_BERT_ATTENTION"] = "explicit"  # read while tracing, so only this variant
  try:
    return _compiled(variant, cfg, model_name, size, batch, seq, params, step_fn, base_rng)
  finally:
    del os.environ["LITE_BERT_ATTENTION"]


def _patched(module, name, value, *args):
  """`_compiled(*args)` with `module.name` set to `value` while the step is traced."""
  saved = getattr(module, name)
  setattr(module, name, value)
  try:
    return _compiled(*args)
  finally:
    setattr(module, name, saved)


def _compiled(variant, cfg, model_name, size, batch, seq, params, step_fn, base_rng):
  model = PretrainingModel(cfg, pair_head=model_name != "distilbert")
  inner = objectives.pretraining_loss_fn(model)
  loss_fn = lambda p, frozen, b, rng, det: inner(p, b, rng, det)
  data = {k: jnp.asarray(v) for k, v in make_pretraining_batch(cfg, batch, seq).items()}
  st = {}
  start = time.perf_counter()
  if variant == "forward_only":
    fwd = jax.jit(lambda p, d: loss_fn(p, None, d, None, True)[0])
    compiled = fwd.lower(params, data).compile()

    def call():
      jax.block_until_ready(compiled(params, data))
  else:
    optimizer, _ = optim.make_optimizer(optim_config(model_name, size), total_steps=1_000_000)
    state = {"step": jnp.zeros((), jnp.int32), "params": jax.tree_util.tree_map(jnp.array, params),
             "opt_state": optimizer.init(params)}
    step = jax.jit(functools.partial(step_fn, loss_fn=loss_fn, optimizer=optimizer,
                                     base_rng=base_rng), donate_argnums=0)
    compiled = step.lower(state, None, data).compile()
    st["state"] = state

    def call():
      st["state"], metrics = compiled(st["state"], None, data)
      jax.block_until_ready((st["state"], metrics))
      st["loss"] = float(metrics["loss"])
  compile_s = time.perf_counter() - start
  call()  # warm-up
  return call, {"compile_s": round(compile_s, 2), "loss": st.get("loss")}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True)
  p.add_argument("--model", default="bert", choices=("bert", "albert"))
  p.add_argument("--size", default="base",
                 help="configs/<model>.py size, or study_<scale>: the study's model at that "
                      "scale (experiments/compare_plan.py)")
  p.add_argument("--points", default="8x128")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--wait-idle", type=float, default=0.0,
                 help="seconds to wait for an idle CPU before timing (0: do not wait)")
  p.add_argument("--op-breakdown", action="store_true",
                 help="after timing, trace each variant (XLA's own trace) and write "
                      "OP_BREAKDOWN.md: ms per call by XLA:CPU op kind")
  args = p.parse_args(argv)
  if args.op_breakdown:
    op_breakdown.trace_env()  # before the backend starts
  variants = [v for v in args.variants.split(",") if v]
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    print(f"error: --variants: unknown {unknown}; known: {', '.join(VARIANTS)}", file=sys.stderr)
    return 2
  try:
    cfg = baseline_config(args.model, args.size)
  except ValueError as e:
    print(f"error: --size: {e}", file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  params0 = init_params({args.model: cfg})[args.model]
  if args.wait_idle:
    wait_for_idle(CpuMonitor(lambda: [os.getpid()]), args.wait_idle)
  rows, breakdowns = [], {}
  if args.op_breakdown and os.path.exists(os.path.join(args.out, "OP_BREAKDOWN.md")):
    os.remove(os.path.join(args.out, "OP_BREAKDOWN.md"))
  for point in args.points.split(","):
    batch, seq = (int(x) for x in point.split("x"))
    calls, infos = {}, {}
    for v in variants:
      print(f"{args.model}-{args.size} {point}: compiling {v}", flush=True)
      if v in ("hf_torch", "hf_torch_bfloat16"):
        try:
          cand = torch_training(args.model, {args.model: cfg}, params0, batch, seq,
                                size=args.size, teacher_params=None,
                                dtype="bfloat16" if v == "hf_torch_bfloat16" else "float32")
        except ImportError as e:
          print(f"  hf_torch skipped: {e}", flush=True)
          continue
        infos[v] = cand.prepare()
        calls[v] = lambda c=cand: c.run()
      else:
        calls[v], infos[v] = build(v, args.model, args.size, batch, seq, params0)
    # Visits of an untimed then two timed calls, the order rotating (timing.time_round_robin).
    candidates = [Candidate(args.model, v, prepare=dict, run=functools.partial(timed_call, call),
                            target=args.repeats) for v, call in calls.items()]
    print(f"  timing {len(candidates)} variants x {args.repeats} calls", flush=True)
    time_round_robin(candidates)
    times = {c.impl: c.times for c in candidates}
    if args.op_breakdown:
      ops = {v: op_breakdown.op_breakdown(call) for v, call in calls.items()
             if not v.startswith("hf_torch")}
      breakdowns[point] = ops
      with open(os.path.join(args.out, "OP_BREAKDOWN.md"), "a") as f:
        f.write(op_breakdown.breakdown_markdown(
            f"## {args.model}-{args.size} {point}: ms per call by XLA:CPU op kind (two traced "
            f"calls, `{' '.join(['python -m experiments.profile_train_step'] + sys.argv[1:])}`, "
            f"{cpu_model()}, git {git_info()['commit'][:10]})", ops) + "\n")
    for v in calls:
      print(f"  {v}: " + ", ".join(f"{t * 1e3:.0f}" for t in times[v]) + " ms", flush=True)
    base = statistics.median(times["baseline"]) if "baseline" in times else None
    torch_ms = statistics.median(times["hf_torch"]) if "hf_torch" in times else None
    for v in calls:
      med = statistics.median(times[v])
      rows.append(dict(point=point, variant=v, median_ms=round(med * 1e3, 1),
                       times_ms=[round(t * 1e3, 1) for t in times[v]],
                       vs_baseline=round(base / med, 3) if base else None,
                       vs_hf_torch=round(torch_ms / med, 3) if torch_ms else None,
                       **{k: val for k, val in infos[v].items()
                          if k in ("compile_s", "loss", "deterministic_loss")}))
  result = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join(["python -m experiments.profile_train_step"] + sys.argv[1:]),
                cpu=cpu_model(), cpu_count=os.cpu_count(), git=git_info(), jax=jax.__version__,
                model=args.model, size=args.size, repeats=args.repeats, rows=rows,
                op_breakdown=breakdowns)
  files.atomic_write(os.path.join(args.out, "profile_train.json"),
                          json.dumps(result, indent=2) + "\n")
  lines = [f"# Training-step variants: {args.model}-{args.size}", "",
           f"`{result['command']}` on {result['cpu']} ({result['cpu_count']} cores), "
           f"{result['date']}, git {result['git'].get('commit', '?')[:10]}. Medians of "
           f"{args.repeats} interleaved calls; ratios > 1: faster than the baseline / "
           f"HF torch.", "",
           "| point | variant | median ms | vs baseline | vs HF torch |", "|---|---|---|---|---|"]
  for row in rows:
    lines.append(f"| {row['point']} | {row['variant']} | {row['median_ms']:.0f} | "
                 f"{row['vs_baseline'] if row['vs_baseline'] else '-'} | "
                 f"{row['vs_hf_torch'] if row['vs_hf_torch'] else '-'} |")
  files.atomic_write(os.path.join(args.out, "PROFILE_TRAIN.md"), "\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
