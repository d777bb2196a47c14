"""One setting of the XLA-flag probe: the child process `xla_probe.xla_flag_probe` starts.

  python -m experiments.xla_probe_child [--train] [--model REPO]

run with one setting's environment (XLA_FLAGS, ONEDNN_MAX_CPU_ISA,
GLIBC_TUNABLES), so that XLA reads it at start-up. Prints one line,
`PROBE {json}`: whether a bf16 dot is widened to f32 (and the optimized HLO
around it), GEMM GFLOP/s (fp32, bf16, bf16 with an fp32 result, at 2048^3 and
a model shape); with --model, the BERT-base 8x128 forward in ms (fp32 and
bf16); with --train, the training step in ms of BERT-base 8x128 and of the long
study's BERT at 32x128, with minor page faults and kernel time per step. An
exception becomes `error` in the JSON. Only jax and numpy are imported before
the GEMMs are timed; lite_bert and the benchmark's configs only for --model /
--train.
"""

import json
import statistics
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp


def gemm(m, k, n, dtype, pref=None):
  """GFLOP/s of an [m, k] x [k, n] matmul (median of 5 calls after a warm-up)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k), np.float32), dtype)
  b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n), np.float32), dtype)
  f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=pref))
  c = f.lower(a, b).compile(); jax.block_until_ready(c(a, b))
  ts = []
  for _ in range(5):
    t = time.perf_counter(); jax.block_until_ready(c(a, b)); ts.append(time.perf_counter() - t)
  return 2 * m * k * n / statistics.median(ts) / 1e9


def train_step_cost(cfg, optim_cfg, batch: int, seq: int, calls: int = 5) -> tuple:
  """(median ms, minor page faults, kernel CPU s) per training step of `cfg` on a random
  batch x seq pretraining batch, after a warm-up step."""
  import functools
  import resource
  from experiments.benchmark_inputs import make_pretraining_batch
  from lite_bert.models.heads import PretrainingModel
  from lite_bert.train import loop as loop_lib, objectives, optim
  model = PretrainingModel(cfg, pair_head=True)
  data = {k: jnp.asarray(v) for k, v in make_pretraining_batch(cfg, batch, seq).items()}
  inner = objectives.pretraining_loss_fn(model)
  params = jax.jit(lambda r: model.init(r, data["input_ids"])["params"])(jax.random.key(0))
  optimizer, _ = optim.make_optimizer(optim_cfg, total_steps=1_000_000)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params)}
  step = jax.jit(functools.partial(
      loop_lib.train_step, loss_fn=lambda p, f, b, r, d: inner(p, b, r, d),
      optimizer=optimizer, base_rng=jax.random.key(0)), donate_argnums=0)
  state, _ = jax.block_until_ready(step(state, None, data))
  ts, faults, sys_s = [], [], []
  for _ in range(calls):
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter(); state, _ = jax.block_until_ready(step(state, None, data))
    ts.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    faults.append(r1.ru_minflt - r0.ru_minflt)
    sys_s.append(r1.ru_stime - r0.ru_stime)
  return (statistics.median(ts) * 1e3, statistics.median(faults), statistics.median(sys_s))


def probe(argv: list) -> dict:
  """The measurements of this process's setting (see the module docstring)."""
  out = {}
  try:
    a = jnp.ones((512, 512), jnp.bfloat16)
    hlo = jax.jit(jnp.matmul).lower(a, a).compile().as_text()
    out["bf16_dot_upcast_to_f32"] = any(
        " convert(" in l and "f32[512,512]" in l.split("=")[1][:20] for l in hlo.splitlines()
        if "=" in l)
    out["bf16_dot_hlo"] = [l.strip()[:160] for l in hlo.splitlines()
                           if ("dot(" in l or "fusion(" in l) and "ENTRY" not in l][:4]
    out["fp32_2048"] = gemm(2048, 2048, 2048, jnp.float32)
    out["bf16_2048"] = gemm(2048, 2048, 2048, jnp.bfloat16)
    out["bf16_2048_f32acc"] = gemm(2048, 2048, 2048, jnp.bfloat16, jnp.float32)
    out["fp32_1024x768x3072"] = gemm(1024, 768, 3072, jnp.float32)
    out["bf16_1024x768x3072"] = gemm(1024, 768, 3072, jnp.bfloat16)
    if "--model" in argv:
      sys.path.insert(0, argv[-1])
      from experiments.benchmark_inputs import model_config, make_inputs
      from lite_bert.models.encoder import Encoder
      for dtype in ("float32", "bfloat16"):
        cfg = model_config("bert", "base", dtype)
        enc = Encoder(cfg)
        x = {k: jnp.asarray(v) for k, v in make_inputs(cfg, 8, 128).items()}
        p = jax.jit(lambda r: enc.init(r, x["input_ids"])["params"])(jax.random.key(0))
        f = jax.jit(lambda p, x: enc.apply({"params": p}, x["input_ids"], x["attention_mask"],
                                           x["token_type_ids"]))
        jax.block_until_ready(f(p, x))
        ts = []
        for _ in range(3):
          t = time.perf_counter(); jax.block_until_ready(f(p, x)); ts.append(time.perf_counter() - t)
        out[f"bert_base_8x128_{dtype}_ms"] = statistics.median(ts) * 1e3
    if "--train" in argv:
      # MLM+NSP training steps (AdamW, fp32) with the library's own step function:
      # BERT-base 8x128 and the study's BERT shape (compare_plan's `small` scale, which
      # `long` keeps; the tiny config's dropout) at the long scale's 32x128 batch.
      # Allocator settings (GLIBC_TUNABLES) show up here, in the step's temporary
      # buffers: minor page faults and kernel time per step are recorded too.
      from experiments.benchmark_inputs import model_config, optim_config
      study = model_config("bert", "study_small", "float32")
      for name, cfg, batch in (("bert_base_train_8x128", model_config("bert", "base", "float32"), 8),
                               ("study_bert_train_32x128", study, 32)):
        ms, faults, sys_s = train_step_cost(cfg, optim_config("bert", "base"), batch, 128)
        out[f"{name}_float32_ms"] = ms
        out[f"{name}_minor_faults"] = faults
        out[f"{name}_sys_s"] = sys_s
  except Exception as e:  # pylint: disable=broad-except
    out["error"] = f"{type(e).__name__}: {str(e)[:300]}"
  return out


def main(argv=None) -> int:
  print("PROBE " + json.dumps(probe(sys.argv[1:] if argv is None else argv)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
