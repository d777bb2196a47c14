"""The whole loop in two processes through `launch.py` (issue #19), against one process.

Two `launch.py` processes on localhost join one `jax.distributed` job (a local
coordinator), each with 2 simulated CPU devices; the reference is one process
with 4 devices, the same global batch. Checked, for pretraining and for
fine-tuning with evaluation:

* the same train losses and eval metrics, step by step, within float
  tolerance (pretraining reads its corpus and eval set in 4 fixed shards, each
  process only its 2, fine-tuning one global stream of which each process
  keeps its rows: both ways the global batches are those of one process);
* eval examples counted exactly once (fine-tuning's dev accuracy is a count
  over the dev rows: the 2-process number equals the 1-process one);
* a restore onto a different process count: the 2-process run's mid-run
  checkpoint resumed by one process ends where the one-process run ends;
* one process killed (SIGKILL) after a checkpoint: the other stops by itself
  (a heartbeat timeout, not a hang); both restarted, the run ends exactly as
  the uninterrupted 2-process run.

Distillation is checked the same way, and `mode=evaluate` (masked LM on a
held-out corpus) counts each held-out sequence once in two processes.

Slow (several subprocess starts); the collectives are kept deterministic by the
loop's host sync every `train.sync_every` steps.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_reliability import (DATA, MODEL, REPO, TIMEOUT, WIKI, distill_args,
                                    finetune_args, small_sst2)

pytestmark = pytest.mark.slow

STEPS = 6
PRETRAIN = ["--config=configs/bert.py:tiny", "--config.mode=pretrain", *MODEL, *DATA,
            "--config.data.batch_size=8", "--config.train.log_every=1",
            "--config.train.eval_every=3", "--config.train.sync_every=1",
            "--config.checkpoint.every_steps=3", "--config.optim.warmup_steps=2",
            "--config.data.shards=4"]  # the pod layout: each process reads 2 of 4 shards


def env_with_devices(count: int) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "LITE_BERT_DEBUG", "JAX_ENABLE_X64")}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={count}",
             LITE_BERT_COMPILE_CACHE="off")
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_one(args, workdir):
  """One process, 4 devices."""
  out = subprocess.run([sys.executable, "launch.py", f"--workdir={workdir}", *args], cwd=REPO,
                       env=env_with_devices(4), capture_output=True, text=True, timeout=TIMEOUT)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  return out


def start_two(args, workdir, **popen):
  """Starts two processes of 2 devices each, one job."""
  port = free_port()
  procs = []
  for pid in range(2):
    flags = [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
             "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]
    procs.append(subprocess.Popen(
        [sys.executable, "launch.py", f"--workdir={workdir}", *args, *flags], cwd=REPO,
        env=env_with_devices(2), text=True,
        **(popen or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE})))
  return procs


def run_two(args, workdir):
  """Two processes of 2 devices each, one job; returns both (returncode, stdout, stderr)."""
  procs = start_two(args, workdir)
  outs = []
  for proc in procs:
    try:
      out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise
    outs.append((proc.returncode, out, err))
  for code, out, err in outs:
    assert code == 0, out[-2000:] + err[-4000:]
  return outs


def records(workdir, split):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r for r in map(json.loads, lines) if r["split"] == split}


RATES = ("per_s", "eta_s", "mfu")  # wall-clock rates: the machine's, not the run's


def assert_same_records(got_dir, expected_dir, rtol=1e-5, atol=0.0):
  """Every logged number of every step, train and eval, within rtol (1e-5: the target)."""
  for split in ("train", "eval"):
    got, expected = records(got_dir, split), records(expected_dir, split)
    assert sorted(got) == sorted(expected), split
    numbers = lambda record: sorted(k for k, v in record.items()
                                    if isinstance(v, (int, float)) and not k.endswith(RATES))
    for step, record in expected.items():
      names = numbers(record)
      assert numbers(got[step]) == names, (split, step)
      for name in names:
        np.testing.assert_allclose(got[step][name], record[name], rtol=rtol, atol=atol,
                                   err_msg=f"{split} {name} at step {step}")


@pytest.fixture(scope="module")
def pretrained_two(tmp_path_factory):
  """(1-process workdir, 2-process workdir) of the same tiny pretraining."""
  root = tmp_path_factory.mktemp("multiprocess")
  one, two = root / "one", root / "two"
  run_one(PRETRAIN + [f"--config.train.num_steps={STEPS}"], one)
  outs = run_two(PRETRAIN + [f"--config.train.num_steps={STEPS}"], two)
  assert "step 1 started" in outs[0][1] and "step 1 started" not in outs[1][1]  # process 0 prints
  # One tokenizer, trained by process 0 alone (two trainers raced on one temporary file).
  assert "training a sentencepiece tokenizer" in outs[0][1]
  assert "training a sentencepiece tokenizer" not in outs[1][1]
  return one, two


def test_two_processes_train_and_evaluate_as_one(pretrained_two):
  one, two = pretrained_two
  assert len(records(one, "train")) == STEPS and len(records(one, "eval")) == 2
  assert_same_records(two, one)


def test_a_two_process_checkpoint_resumes_on_one_process(pretrained_two, tmp_path):
  """The 2-process run's step-3 checkpoint, resumed by one process, ends as the 1-process run."""
  one, two = pretrained_two
  resumed = tmp_path / "resumed"
  shutil.copytree(two, resumed)
  shutil.rmtree(resumed / "checkpoints" / str(STEPS))  # as if it had stopped at step 3
  out = run_one(PRETRAIN + [f"--config.train.num_steps={STEPS}"], resumed)
  assert f"resumed from step {STEPS // 2}" in out.stdout
  assert_same_records(resumed, one)


def test_two_process_finetuning_counts_each_dev_example_once(pretrained_two, tmp_path):
  one, _ = pretrained_two
  sst2 = small_sst2(tmp_path / "SST-2")
  args = finetune_args(one, sst2) + ["--config.train.sync_every=1",
                                      "--config.finetune.eval_batch_size=4"]
  run_one(args, tmp_path / "ft_one")
  outs = run_two(args, tmp_path / "ft_two")
  # Each process encodes only its rows of the dev set: 2 of every 4.
  assert "SST-2 validation: tokenized 8 examples (this process's share)" in outs[0][1]
  assert len(records(tmp_path / "ft_one", "eval")) == 2
  assert_same_records(tmp_path / "ft_two", tmp_path / "ft_one")
  # Counted once: the eval file's example count and one prediction per dev row, in order.
  dev_rows = len((sst2 / "dev.tsv").read_text().splitlines()) - 1
  for run in ("ft_one", "ft_two"):
    assert json.loads((tmp_path / run / "eval_validation.json").read_text())["examples"] == dev_rows
    lines = (tmp_path / run / "predictions_validation.tsv").read_text().splitlines()[1:]
    assert [int(line.split("\t")[0]) for line in lines] == list(range(dev_rows))
  assert ((tmp_path / "ft_one" / "predictions_validation.tsv").read_text()
          == (tmp_path / "ft_two" / "predictions_validation.tsv").read_text())


def test_one_process_killed_the_other_stops_and_both_restarted_resume_exactly(
    pretrained_two, tmp_path):
  """SIGKILL process 1 once step 3 is committed (before step 6 is): process 0 stops by
  itself with an error (its peer's heartbeat is gone); both restarted, the metrics equal
  the uninterrupted 2-process run's, every logged number."""
  _, two = pretrained_two
  workdir = tmp_path / "killed"
  args = PRETRAIN + [f"--config.train.num_steps={STEPS}"]
  log = open(tmp_path / "out", "w")
  procs = start_two(args + ["--config.distributed.heartbeat_timeout_s=30"], workdir,
                    stdout=log, stderr=subprocess.STDOUT)
  committed = lambda: sorted(int(p.name) for p in (workdir / "checkpoints").glob("*")
                             if p.name.isdigit()) if (workdir / "checkpoints").is_dir() else []
  deadline = time.monotonic() + TIMEOUT
  while STEPS // 2 not in committed():
    assert all(p.poll() is None for p in procs), (tmp_path / "out").read_text()[-3000:]
    assert time.monotonic() < deadline, "no checkpoint within the timeout"
    time.sleep(0.01)
  for proc in procs:
    os.kill(proc.pid, signal.SIGSTOP)  # frozen: nothing moves until process 1 is gone
  assert STEPS not in committed(), "the run finished before the kill: it did not land mid-run"
  os.kill(procs[1].pid, signal.SIGKILL)
  procs[1].wait()
  os.kill(procs[0].pid, signal.SIGCONT)
  started = time.monotonic()
  procs[0].wait(timeout=TIMEOUT)  # never hangs waiting for a dead peer
  log.close()
  output = (tmp_path / "out").read_text()
  assert procs[0].returncode != 0, output[-3000:]
  print(f"process 0 stopped {time.monotonic() - started:.0f} s after its peer's death")
  assert STEPS not in committed()
  outs = run_two(args, workdir)
  assert f"resumed from step {STEPS // 2}" in outs[0][1], outs[0][1][-2000:]
  assert_same_records(workdir, two, rtol=0)  # the same job resumed: bit for bit


def test_two_process_distillation_matches_one(pretrained_two, tmp_path):
  one, _ = pretrained_two
  args = distill_args(one) + ["--config.train.sync_every=1", "--config.train.log_every=1"]
  run_one(args, tmp_path / "one")
  run_two(args, tmp_path / "two")
  expected = records(tmp_path / "one", "train")
  assert len(expected) == 8 and len([k for k in expected[8] if k.endswith("loss")]) >= 2
  # The KL to the teacher is ~2e-3, a difference of larger terms: 4e-8 apart (2e-5 relative).
  assert_same_records(tmp_path / "two", tmp_path / "one", atol=1e-7)


def test_two_process_evaluate_scores_each_held_out_sequence_once(pretrained_two, tmp_path):
  one, _ = pretrained_two
  args = ["--config=configs/bert.py:tiny", "--config.mode=evaluate",
          f"--config.data.eval_corpus={WIKI / 'wiki.valid.raw'}", "--config.data.eval_batches=3"]
  results = {}
  for name, run in (("one", run_one), ("two", run_two)):
    workdir = tmp_path / name
    shutil.copytree(one, workdir)
    run(args, workdir)
    results[name] = json.loads((workdir / "evaluate_mlm_wiki.valid.json").read_text())
  # 3 global batches of 8 sequences, each scored once (the 2 processes take 4 rows each).
  assert results["one"]["sequences"] == 24
  for field in ("sequences", "masked_tokens", "batches"):
    assert results["two"][field] == results["one"][field], field
  for field in ("mlm_loss", "mlm_accuracy", "mlm_unigram_accuracy"):
    np.testing.assert_allclose(results["two"][field], results["one"][field], rtol=1e-5,
                               err_msg=field)
