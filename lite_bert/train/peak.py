"""The peak FLOP/s a run's model-FLOPs utilisation (MFU) is measured against.

  GPU / TPU  the datasheet's dense peak per chip, in the model's dtype, times
             the number of devices (`GPU_PEAK_TFLOPS`, `TPU_PEAK_TFLOPS`);
  CPU        the XLA GEMM rate of this machine, measured once (a 2048^3 fp32
             matmul, best of a few) and cached per CPU model, matmul flags (AMX or not),
             core count and jax version in `$LITE_BERT_CACHE` (default ~/.cache/lite_bert/peak.json). A
             CPU "device" is the whole machine (simulated devices share it).

`device_peak(dtype)` returns (FLOP/s, where the number comes from), or
(None, reason) for an accelerator not in the tables.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp

from lite_bert import files
from lite_bert import host

# Dense (no sparsity) datasheet peaks in TFLOP/s per chip, by device-kind substring.
# 'float32' on these GPUs is what XLA runs an fp32 matmul as by default (TF32
# tensor cores); 'float32_cuda_cores' is the non-tensor-core rate.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0,
                   "float32_cuda_cores": 51.0}),
    ("H100", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5,
              "float32_cuda_cores": 67.0}),
    ("H200", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5,
              "float32_cuda_cores": 67.0}),
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0,
              "float32_cuda_cores": 19.5}),
)
# bf16 per chip (TPU matmuls run in bf16 whatever the dtype).
TPU_PEAK_TFLOPS = (("v6", 918.0), ("v5p", 459.0), ("v5 lite", 197.0), ("v5e", 197.0),
                   ("v4", 275.0), ("v3", 123.0), ("v2", 45.0))


def gpu_peak(device_kind: str, dtype: str) -> Optional[float]:
  """Datasheet GFLOP/s of a GPU `device_kind` in `dtype` (None for an unknown GPU)."""
  for key, table in GPU_PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return table.get(dtype, table["float32"]) * 1e3
  return None


def _cache_path() -> str:
  folder = os.environ.get("LITE_BERT_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "lite_bert")
  return os.path.join(folder, "peak.json")


def measure_cpu_gemm(size: int = 2048, repeats: int = 5) -> float:
  """This machine's XLA fp32 GEMM rate in FLOP/s (best of `repeats` size^3 matmuls)."""
  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best


def cpu_peak() -> tuple[float, str]:
  """(FLOP/s, source) of this CPU: cached, else measured now and cached."""
  # The flags too: VMs named "Intel(R) Xeon(R) Processor" range from 150 to 360 GFLOP/s (AMX).
  key = (f"{host.cpu_model()} | {' '.join(host.cpu_flags())} | {os.cpu_count()} cores | "
         f"jax {jax.__version__}")
  path = _cache_path()
  try:
    with open(path) as f:
      cached = json.load(f)
  except (OSError, ValueError):
    cached = {}
  if key not in cached:
    cached[key] = measure_cpu_gemm()
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      files.atomic_write_json(path, cached)
    except OSError:
      pass  # a read-only home: measure again next time
  return cached[key], f"XLA fp32 GEMM measured on this CPU ({cached[key] / 1e9:.0f} GFLOP/s)"


def device_peak(dtype: str) -> tuple[Optional[float], str]:
  """(peak FLOP/s of all devices of the job, where it comes from) for a model in `dtype`."""
  device = jax.devices()[0]
  if device.platform == "cpu":
    return cpu_peak()
  kind = device.device_kind
  if device.platform == "gpu":
    per_chip = gpu_peak(kind, dtype)
  else:
    per_chip = next((tf * 1e3 for name, tf in TPU_PEAK_TFLOPS if name in kind.lower()), None)
  if per_chip is None:
    return None, f"no datasheet peak for {kind!r}"
  return per_chip * 1e9 * jax.device_count(), (f"{kind} datasheet {dtype} peak x "
                                               f"{jax.device_count()} devices")
