"""What a checkpoint save costs the training loop: blocking time and host memory (issue #19).

  python -m experiments.checkpoint_benchmark --out=experiments/results/checkpoint_save/one \
      [--model=bert --size=base --saves=3]
  python -m experiments.checkpoint_benchmark --out=... --processes=2 --devices=2 --fsdp

Builds a train state the loop's way (step, params, the config's AdamW moments:
BERT-base is 110M parameters, 1.3 GB with its moments), places it on a mesh of
all devices (replicated, or FSDP-split with `--fsdp`), then calls
`Checkpointer.save` (async, as the loop does) `--saves` times. For each save:

  blocking_s    how long `save` held the caller (the loop's stall), and
  wait_s        how long the background write took after that;
  extra_rss_mb  the process's resident memory at its highest during the save
                and its write, minus what it held just before (sampled every
                2 ms from /proc/self/statm): the copies the save makes. On CPU
                the devices' arrays are host memory too, so this is what the
                save adds on top of the state itself.

With `--processes=N` it starts N copies of itself joined by `jax.distributed`
on localhost (each with `--devices` simulated CPU devices) and reports every
process. Writes <out>/checkpoint_save.json and prints one line per save.
Quote ratios from one machine only (CPU timings vary 20-30%).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * PAGE


class PeakRss:
  """The highest RSS seen while active, sampled on a thread."""

  def __init__(self, every_s: float = 0.002):
    self.every_s, self.peak, self._stop = every_s, 0, threading.Event()

  def __enter__(self):
    self.peak = rss_bytes()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def _sample(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_bytes())
      time.sleep(self.every_s)

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_bytes())


def build_state(model: str, size: str, fsdp: bool):
  """(state on the mesh, its size in bytes, mesh description)."""
  import jax
  import jax.numpy as jnp
  from experiments.benchmark_candidates import init_params
  from experiments.benchmark_inputs import model_config, optim_config
  from lite_bert.train import mesh as mesh_lib
  from lite_bert.train import optim

  cfg = model_config(model, size, "float32")
  optimizer, _ = optim.make_optimizer(optim_config(model, size), total_steps=1_000_000)
  mesh = mesh_lib.make_mesh()

  def init_state():
    params = init_params({model: cfg})[model]
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": optimizer.init(params)}

  abstract = jax.eval_shape(init_state)
  shardings = {"step": mesh_lib.replicated(mesh),
               "params": mesh_lib.param_shardings(mesh, abstract["params"], fsdp),
               "opt_state": mesh_lib.param_shardings(mesh, abstract["opt_state"], fsdp)}
  state = jax.jit(init_state, out_shardings=shardings)()
  jax.block_until_ready(state)
  size_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))
  return state, size_bytes


def measure(args) -> dict:
  """Saves --saves times in this process; the per-save figures."""
  import jax
  from lite_bert.train import checkpoint as checkpoint_lib
  from lite_bert.train import fingerprints

  state, size_bytes = build_state(args.model, args.size, args.fsdp)
  own = sum(shard.data.size * shard.data.dtype.itemsize
            for leaf in jax.tree.leaves(state) for shard in leaf.addressable_shards
            if shard.replica_id == 0)
  meta = {"model": {"name": args.model, "size": args.size}}
  checkpointer = checkpoint_lib.Checkpointer(args.directory, max_to_keep=2, async_save=True)
  saves = []
  for i in range(args.saves):
    step = i + 1
    state = dict(state, step=state["step"] + 1)
    jax.block_until_ready(state)
    before = rss_bytes()
    with PeakRss() as peak:
      start = time.perf_counter()
      checkpointer.save(step, state, {"step": step}, meta, force=True)
      blocking = time.perf_counter() - start
      checkpointer.wait()
      wait = time.perf_counter() - start - blocking
    saves.append({"step": step, "blocking_s": round(blocking, 3), "wait_s": round(wait, 3),
                  "extra_rss_mb": round((peak.peak - before) / 2**20, 1)})
    print(f"process {jax.process_index()}: save {step}: blocked {blocking:.3f} s, "
          f"wrote {wait:.3f} s more, +{(peak.peak - before) / 2**20:.0f} MB RSS", flush=True)
  start = time.perf_counter()
  checkpointer.restore(args.saves, jax.eval_shape(lambda: state),
                       jax.tree.map(lambda leaf: leaf.sharding, state))
  restore_s = time.perf_counter() - start
  checkpointer.close()
  return {"process": jax.process_index(), "processes": jax.process_count(),
          "devices": jax.device_count(), "fsdp": args.fsdp,
          "state_mb": round(size_bytes / 2**20, 1), "own_shards_mb": round(own / 2**20, 1),
          "checksums": getattr(fingerprints, "CHECKSUM_KIND", "sha256 (gathered)"),
          "saves": saves, "restore_s": round(restore_s, 3),
          # The first save also starts Orbax's threads and compiles: shown, not in the median.
          "median_blocking_s": statistics.median(s["blocking_s"] for s in saves[1:] or saves),
          "max_extra_rss_mb": max(s["extra_rss_mb"] for s in saves)}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(args) -> list[dict]:
  """Starts args.processes copies of this script as one jax.distributed job."""
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
  procs = []
  with tempfile.TemporaryDirectory() as results:
    for pid in range(args.processes):
      cmd = [sys.executable, "-m", "experiments.checkpoint_benchmark", f"--model={args.model}",
             f"--size={args.size}", f"--saves={args.saves}", f"--directory={args.directory}",
             f"--coordinator=127.0.0.1:{port}", f"--processes={args.processes}",
             f"--process-id={pid}", f"--result={results}/{pid}.json"]
      procs.append(subprocess.Popen(cmd + (["--fsdp"] if args.fsdp else []), env=env))
    codes = [proc.wait() for proc in procs]
    if any(codes):
      raise SystemExit(f"error: a benchmark process failed (exit codes {codes})")
    out = []
    for pid in range(args.processes):
      with open(f"{results}/{pid}.json") as f:
        out.append(json.load(f))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", help="folder for checkpoint_save.json")
  p.add_argument("--model", default="bert", choices=("bert", "distilbert", "albert"))
  p.add_argument("--size", default="base")
  p.add_argument("--saves", type=int, default=4)
  p.add_argument("--fsdp", action="store_true")
  p.add_argument("--processes", type=int, default=1)
  p.add_argument("--devices", type=int, default=2, help="simulated CPU devices per process")
  p.add_argument("--directory", help="checkpoint folder (default: a temporary one)")
  p.add_argument("--coordinator", help=argparse.SUPPRESS)
  p.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
  p.add_argument("--result", help=argparse.SUPPRESS)
  args = p.parse_args(argv)

  if args.coordinator:  # one process of a multi-process run
    import jax
    jax.distributed.initialize(args.coordinator, args.processes, args.process_id)
    result = measure(args)
    with open(args.result, "w") as f:
      json.dump(result, f)
    return 0

  with tempfile.TemporaryDirectory() as tmp:
    args.directory = args.directory or os.path.join(tmp, "checkpoints")
    if args.processes > 1:
      results = run_processes(args)
    else:
      os.environ.setdefault("XLA_FLAGS",
                            f"--xla_force_host_platform_device_count={args.devices}")
      results = [measure(args)]
  from experiments.provenance import git_info, machine
  report = {"command": " ".join(["python", "-m", "experiments.checkpoint_benchmark",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine(), "git": git_info(), "results": results}
  print(json.dumps({r["process"]: {k: r[k] for k in ("median_blocking_s", "max_extra_rss_mb",
                                                     "state_mb", "own_shards_mb")}
                    for r in results}))
  if args.out:
    from lite_bert import files
    os.makedirs(args.out, exist_ok=True)
    files.atomic_write_json(os.path.join(args.out, "checkpoint_save.json"), report)
  return 0


if __name__ == "__main__":
  sys.exit(main())
