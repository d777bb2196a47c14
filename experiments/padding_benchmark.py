"""What dynamic padding and length grouping save when fine-tuning on SST-2.

  python -m experiments.padding_benchmark --out=experiments/results/padding \
      [--task=sst2] [--init=<HF folder>] [--repeats=5]

The fine-tuning job is built by `lite_bert.modes.finetune.build_job` exactly as
`launch.py` builds it (all-MiniLM-L6-v2 by default: BERT 6 x 384, its own
WordPiece tokenizer, SST-2 from ../shared/data). For each padding policy, one
epoch of the job's real training batches is drawn (no training) to count how
many batches have each padded length; the jitted train step (the loop's
`train_step`: forward, backward, AdamW, non-finite guard) is then timed at every
length that occurs (median of --repeats after compilation, all policies'
lengths timed interleaved in one process). An epoch's compute time is
sum(batches at length L x step time at L); speedups are against padding
every batch to the task's max_seq_length.

Policies (the `finetune.*` fields that select them):
  fixed         pad_multiple = max_seq_length (every batch [32, 64] on SST-2)
  dynamic_32    pad_multiple = 32, bucket_batches = 1 (pad to the batch's longest row)
  dynamic_8     pad_multiple = 8,  bucket_batches = 1
  grouped_8     pad_multiple = 8,  bucket_batches = 50 (the default: length-grouped)

Writes <out>/padding.json and <out>/PADDING.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from configs import finetune as finetune_config
from experiments import glue_runs
from lite_bert.modes import finetune
from lite_bert.train import loop
from lite_bert.train import optim

POLICIES = {
    "fixed": dict(pad_multiple=None, bucket_batches=1),
    "dynamic_32": dict(pad_multiple=32, bucket_batches=1),
    "dynamic_8": dict(pad_multiple=8, bucket_batches=1),
    "grouped_8": dict(pad_multiple=8, bucket_batches=50),
}


def epoch_lengths(config, job) -> collections.Counter:
  """{padded length: number of batches} over one epoch of the job's train batches."""
  batches = config.train.num_steps  # set to one epoch by build_job (finetune.epochs=1)
  iterator = job.make_train_iter(None)
  lengths = collections.Counter()
  real_tokens = 0
  for _ in range(batches):
    batch = next(iterator)
    lengths[batch["input_ids"].shape[1]] += 1
    real_tokens += int(batch["attention_mask"].sum())
  return lengths, real_tokens


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--task", default="sst2")
  parser.add_argument("--init", default="", help="HF folder (default: all-MiniLM-L6-v2)")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  init = args.init or glue_runs.minilm_folder()

  workdir = tempfile.mkdtemp(prefix="padding_benchmark_")
  jobs, policies = {}, {}
  for name, fields in POLICIES.items():
    config = finetune_config.get_config(f"{args.task},bert:base")
    config.finetune.init = init
    config.finetune.epochs = 1
    config.finetune.pad_multiple = fields["pad_multiple"] or config.data.max_seq_length
    config.finetune.bucket_batches = fields["bucket_batches"]
    job = finetune.build_job(config, workdir)
    lengths, real_tokens = epoch_lengths(config, job)
    jobs[name] = (config, job)
    policies[name] = {"finetune.pad_multiple": config.finetune.pad_multiple,
                      "finetune.bucket_batches": config.finetune.bucket_batches,
                      "batches_per_length": dict(sorted(lengths.items())),
                      "batches": sum(lengths.values()), "real_tokens": real_tokens,
                      "padded_tokens": sum(k * v for k, v in lengths.items())
                      * config.data.batch_size}
    print(name, policies[name]["batches_per_length"], flush=True)

  # One step function (all policies share model, loss and optimizer).
  config, job = jobs["grouped_8"]
  optimizer, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  step_fn = jax.jit(functools.partial(loop.train_step, loss_fn=job.loss_fn,
                                      optimizer=optimizer, base_rng=jax.random.key(0)))
  params = job.load_params(jax.device_get(jax.jit(job.init_params)(jax.random.key(0))))
  state = {"step": np.zeros((), np.int32), "params": params,
           "opt_state": optimizer.init(params)}
  all_lengths = sorted({k for p in policies.values() for k in p["batches_per_length"]})
  batch_at = {}
  iterator = job.make_train_iter(None)
  while len(batch_at) < len(all_lengths):  # a real batch of each length, re-padded
    batch = next(iterator)
    for length in all_lengths:
      if length not in batch_at and int(batch["attention_mask"].sum(1).max()) <= length:
        pad = length - batch["input_ids"].shape[1]
        batch_at[length] = {k: (np.pad(v, ((0, 0), (0, pad))) if v.ndim == 2 else v)
                            for k, v in batch.items() if k != "example_ids"}
  compile_s, times = {}, collections.defaultdict(list)
  for length in all_lengths:
    start = time.perf_counter()
    jax.block_until_ready(step_fn(state, None, batch_at[length]))
    compile_s[length] = time.perf_counter() - start
  for _ in range(args.repeats):  # interleaved: every length once per round
    for length in all_lengths:
      start = time.perf_counter()
      jax.block_until_ready(step_fn(state, None, batch_at[length]))
      times[length].append(time.perf_counter() - start)
  step_s = {length: statistics.median(ts) for length, ts in times.items()}
  for name, p in policies.items():
    p["epoch_compute_s"] = sum(n * step_s[k] for k, n in p["batches_per_length"].items())
    p["compilations"] = len(p["batches_per_length"])
  fixed = policies["fixed"]["epoch_compute_s"]
  for p in policies.values():
    p["speedup_vs_fixed"] = fixed / p["epoch_compute_s"]
    p["token_efficiency"] = p["real_tokens"] / p["padded_tokens"]

  result = {
      "meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "command": "python -m experiments.padding_benchmark " + " ".join(
                   f"--{k}={v}" for k, v in vars(args).items() if v),
               "machine": glue_runs.machine(), "commit": glue_runs.commit(),
               "task": args.task, "init": init, "batch_size": config.data.batch_size,
               "max_seq_length": config.data.max_seq_length, "repeats": args.repeats,
               "load_average_1min_at_end": os.getloadavg()[0]},
      "step_s": {str(k): v for k, v in step_s.items()},
      "step_times_s": {str(k): v for k, v in times.items()},
      "compile_s": {str(k): v for k, v in compile_s.items()},
      "policies": policies,
  }
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "padding.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(args.out, "PADDING.md"), "w") as f:
    f.write(markdown(result))
  print(markdown(result))


def markdown(result: dict) -> str:
  meta = result["meta"]
  lines = [f"# Padding policies: one {meta['task']} epoch of training steps", "",
           f"{meta['date'][:10]}, {meta['machine']['cpu']} ({meta['machine']['cpu_count']} cores), "
           f"commit {meta['commit'][:10]}, `{meta['command']}`.", "",
           f"Model {os.path.basename(os.path.dirname(meta['init']))}, batch {meta['batch_size']}, "
           f"max_seq_length {meta['max_seq_length']}. Step time measured per padded length "
           f"(median of {meta['repeats']}, after compilation); epoch time = sum over the "
           "epoch's batches.", "",
           f"Load average (1 min) when the timing ended: {meta.get('load_average_1min_at_end', 'not recorded')} "
           f"on {meta['machine']['cpu_count']} cores. The lengths are timed interleaved, so other load "
           "inflates the absolute times but hits every policy alike; the speedups are the result.", "",
           "| policy | pad_multiple | bucket_batches | lengths used | token efficiency | "
           "epoch compute | speedup vs fixed |", "|---|---|---|---|---|---|---|"]
  for name, p in result["policies"].items():
    lines.append(f"| {name} | {p['finetune.pad_multiple']} | {p['finetune.bucket_batches']} | "
                 f"{p['compilations']} | {p['token_efficiency']:.2f} | "
                 f"{p['epoch_compute_s'] / 60:.1f} min | {p['speedup_vs_fixed']:.2f}x |")
  lines += ["", "| padded length | step time |", "|---|---|"]
  lines += [f"| {k} | {v * 1000:.0f} ms |" for k, v in result["step_s"].items()]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
