"""The whole loop in two processes through `launch.py` (issue #19), against one process.

Two `launch.py` processes on localhost join one `jax.distributed` job (a local
coordinator), each with 2 simulated CPU devices; the reference is one process
with 4 devices, the same global batch. Checked, for pretraining and for
fine-tuning with evaluation:

* the same train losses and eval metrics, step by step, within float
  tolerance (the data pipeline makes one global stream and each process keeps
  its rows, so both runs see the same batches);
* eval examples counted exactly once (fine-tuning's dev accuracy is a count
  over the dev rows: the 2-process number equals the 1-process one);
* a restore onto a different process count: the 2-process run's mid-run
  checkpoint resumed by one process ends where the one-process run ends.

Slow (several subprocess starts); the collectives are kept deterministic by the
loop's host sync every `train.sync_every` steps.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.test_reliability import (DATA, MODEL, REPO, TIMEOUT, finetune_args, small_sst2)

pytestmark = pytest.mark.slow

STEPS = 6
PRETRAIN = ["--config=configs/bert.py:tiny", "--config.mode=pretrain", *MODEL, *DATA,
            "--config.data.batch_size=8", "--config.train.log_every=1",
            "--config.train.eval_every=3", "--config.train.sync_every=1",
            "--config.checkpoint.every_steps=3", "--config.optim.warmup_steps=2"]


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


def run_two(args, workdir):
  """Two processes of 2 devices each, one job; returns both outputs."""
  port = free_port()
  procs = []
  for pid in range(2):
    flags = [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
             "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]
    procs.append(subprocess.Popen(
        [sys.executable, "launch.py", f"--workdir={workdir}", *args, *flags], cwd=REPO,
        env=env_with_devices(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
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


def assert_same_numbers(got: dict, expected: dict, names, rtol=2e-4):
  assert sorted(got) == sorted(expected)
  for step in expected:
    for name in names:
      np.testing.assert_allclose(got[step][name], expected[step][name], rtol=rtol,
                                 err_msg=f"{name} at step {step}")


@pytest.fixture(scope="module")
def pretrained_two(tmp_path_factory):
  """(1-process workdir, 2-process workdir) of the same tiny pretraining."""
  root = tmp_path_factory.mktemp("multiprocess")
  one, two = root / "one", root / "two"
  run_one(PRETRAIN + [f"--config.train.num_steps={STEPS}"], one)
  outs = run_two(PRETRAIN + [f"--config.train.num_steps={STEPS}"], two)
  assert "step 1 started" in outs[0][1] and "step 1 started" not in outs[1][1]  # process 0 prints
  return one, two


def test_two_processes_train_and_evaluate_as_one(pretrained_two):
  one, two = pretrained_two
  assert_same_numbers(records(two, "train"), records(one, "train"), ("loss", "mlm_loss"))
  assert_same_numbers(records(two, "eval"), records(one, "eval"),
                      ("mlm_loss", "mlm_accuracy", "pair_accuracy"))


def test_a_two_process_checkpoint_resumes_on_one_process(pretrained_two, tmp_path):
  """The 2-process run's step-3 checkpoint, resumed by one process, ends as the 1-process run."""
  one, two = pretrained_two
  resumed = tmp_path / "resumed"
  shutil.copytree(two, resumed)
  shutil.rmtree(resumed / "checkpoints" / str(STEPS))  # as if it had stopped at step 3
  out = run_one(PRETRAIN + [f"--config.train.num_steps={STEPS}"], resumed)
  assert f"resumed from step {STEPS // 2}" in out.stdout
  assert_same_numbers(records(resumed, "train"), records(one, "train"), ("loss", "mlm_loss"))
  assert_same_numbers(records(resumed, "eval"), records(one, "eval"), ("mlm_loss",))


def test_two_process_finetuning_counts_each_dev_example_once(pretrained_two, tmp_path):
  one, _ = pretrained_two
  sst2 = small_sst2(tmp_path / "SST-2")
  args = finetune_args(one, sst2) + ["--config.train.sync_every=1"]
  run_one(args, tmp_path / "ft_one")
  run_two(args, tmp_path / "ft_two")
  expected = records(tmp_path / "ft_one", "eval")
  got = records(tmp_path / "ft_two", "eval")
  names = [k for k in next(iter(expected.values())) if k.endswith(("accuracy", "f1", "loss"))]
  assert names
  assert_same_numbers(got, expected, names)
  # Counted once: the eval file's example count and one prediction per dev row, in order.
  dev_rows = len((sst2 / "dev.tsv").read_text().splitlines()) - 1
  for run in ("ft_one", "ft_two"):
    assert json.loads((tmp_path / run / "eval_validation.json").read_text())["examples"] == dev_rows
    lines = (tmp_path / run / "predictions_validation.tsv").read_text().splitlines()[1:]
    assert [int(line.split("\t")[0]) for line in lines] == list(range(dev_rows))
  assert ((tmp_path / "ft_one" / "predictions_validation.tsv").read_text()
          == (tmp_path / "ft_two" / "predictions_validation.tsv").read_text())
