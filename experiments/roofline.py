"""The roofline: this machine's GEMM rate (CPU: measured; GPU: datasheet peak).

`measure_roofline` is the peak GFLOP/s each dtype is measured against (the
best median of large square matmuls through XLA, plus model-shaped ones, and
the same in torch when references are on); `xla_gemm_gflops` /
`torch_gemm_gflops` time one matmul shape. On a GPU the peak is a datasheet
number keyed by `device_kind` (`GPU_PEAK_TFLOPS` in `lite_bert/train/peak.py`).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import jax
import jax.numpy as jnp

from lite_bert.train.peak import gpu_peak

def xla_gemm_gflops(m: int, k: int, n: int, dtype: str, repeats: int) -> dict:
  """GFLOP/s of an [m, k] x [k, n] XLA matmul in `dtype` (median of `repeats` calls)."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((m, k), np.float32), dtype)
  b = jnp.asarray(rng.standard_normal((k, n), np.float32), dtype)
  # As the models compute (`encoder.flat_matmul`): reduced precision in, fp32
  # accumulation, cast back.
  matmul = lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(a.dtype)
  compiled = jax.jit(matmul).lower(a, b).compile()
  jax.block_until_ready(compiled(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(a, b))
    times.append(time.perf_counter() - start)
  t = statistics.median(times)
  return {"m": m, "k": k, "n": n, "dtype": dtype, "median_s": t, "repeats": repeats,
          "gflops": 2 * m * k * n / t / 1e9}


def torch_gemm_gflops(m: int, k: int, n: int, dtype: str, repeats: int) -> dict:
  """The same in torch (`a @ b`)."""
  import torch
  tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  gen = torch.Generator().manual_seed(0)
  a = torch.randn(m, k, generator=gen).to(tdtype)
  b = torch.randn(k, n, generator=gen).to(tdtype)
  a @ b
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
  t = statistics.median(times)
  return {"m": m, "k": k, "n": n, "dtype": dtype, "median_s": t, "repeats": repeats,
          "gflops": 2 * m * k * n / t / 1e9}


def measure_roofline(args, dtypes: tuple, hidden: int, inter: int) -> dict:
  """The machine's peak GFLOP/s for each dtype (CPU: measured XLA GEMM)."""
  device = jax.devices()[0]
  out = {"device_kind": device.device_kind, "platform": device.platform}
  if device.platform == "gpu":
    out["source"] = "datasheet (GPU_PEAK_TFLOPS, dense)"
    out["peak_gflops"] = {d: gpu_peak(device.device_kind, d) for d in dtypes}
    return out
  sizes = (2048,) if args.quick else (2048, 4096)
  repeats = 3 if args.quick else 5
  square = [xla_gemm_gflops(n, n, n, d, repeats) for d in dtypes for n in sizes]
  model_shaped = []
  for d in dtypes:
    for tokens in ((1024,) if args.quick else (1024, 4096)):
      model_shaped.append(xla_gemm_gflops(tokens, hidden, inter, d, repeats))
      model_shaped.append(xla_gemm_gflops(tokens, inter, hidden, d, repeats))
  out.update(source="measured: XLA matmul of n x n fp matrices, best median over n",
             square=square, model_shaped=model_shaped,
             peak_gflops={d: max(r["gflops"] for r in square if r["dtype"] == d)
                          for d in dtypes})
  if args.reference:
    out["torch_square"] = [torch_gemm_gflops(n, n, n, d, repeats)
                           for d in dtypes for n in sizes]
    out["torch_model_shaped"] = [torch_gemm_gflops(1024, hidden, inter, d, repeats)
                                 for d in dtypes]
  return out
