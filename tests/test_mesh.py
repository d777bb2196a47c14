"""Tests of lite_bert.train.mesh: data parallelism and FSDP give the 1-device result.

Multi-device runs happen in subprocesses that run this file as a script with
XLA_FLAGS=--xla_force_host_platform_device_count=N set before jax is imported;
the pytest process itself keeps its single CPU device. The workers wait for
every step's loss before launching the next: on this 2-core machine, a loop of
sharded steps with all-reduces that never waits was measured to deadlock in
XLA's CPU collective rendezvous and abort.

The workers print one JSON line (the last line of stdout) that the tests read.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from lite_bert.errors import UserError
from lite_bert.train import mesh as mesh_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 16
STEPS = 8
FSDP_MIN_SIZE = 64  # small enough that the toy MLP's kernels get sharded


# ---------------------------------------------------------------------------
# The toy problem, shared by the workers and the 1-device reference.


def toy_params() -> dict:
  rng = np.random.default_rng(0)
  return {"w1": rng.normal(size=(8, 32)).astype(np.float32) * 0.3,
          "b1": np.zeros((32,), np.float32),
          "w2": rng.normal(size=(32, 4)).astype(np.float32) * 0.3}


def toy_batch() -> dict:
  rng = np.random.default_rng(1)
  x = rng.normal(size=(GLOBAL_BATCH, 8)).astype(np.float32)
  y = np.sin(x[:, :4]) + 0.1 * rng.normal(size=(GLOBAL_BATCH, 4)).astype(np.float32)
  return {"x": x, "y": y.astype(np.float32)}


def loss_fn(params, batch):
  hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
  return jnp.mean((hidden @ params["w2"] - batch["y"]) ** 2)


def sgd_step(params, batch):
  loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads), loss


def first_copy(array) -> np.ndarray:
  """Host value of a replicated array (works when other processes hold copies too)."""
  return np.asarray(array.addressable_data(0))


def train_toy(mesh, fsdp: bool, host_rows: slice) -> tuple[list, dict, dict]:
  """STEPS jitted SGD steps; returns (losses, params, params as placed on devices)."""
  params = toy_params()
  shardings = mesh_lib.param_shardings(mesh, jax.eval_shape(lambda: params), fsdp,
                                       min_size_to_shard=FSDP_MIN_SIZE)
  step = jax.jit(sgd_step,
                 in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(shardings, mesh_lib.replicated(mesh)))
  params = jax.device_put(params, shardings)
  host_batch = {name: value[host_rows] for name, value in toy_batch().items()}
  losses = []
  for _ in range(STEPS):
    batch = mesh_lib.host_batch_to_global(host_batch, mesh)
    params, loss = step(params, batch)
    losses.append(float(first_copy(loss)))  # waits for the step: see docstring
  placed = params
  if fsdp:
    params = jax.jit(lambda p: p, out_shardings=mesh_lib.replicated(mesh))(params)
  return losses, {k: first_copy(v) for k, v in params.items()}, placed


def reference() -> tuple[list, dict]:
  """The same training on this (1-device) pytest process."""
  mesh = mesh_lib.make_mesh()
  assert mesh.size == 1
  losses, params, _ = train_toy(mesh, fsdp=False, host_rows=slice(None))
  return losses, params


# ---------------------------------------------------------------------------
# Workers (run in subprocesses).


def worker_data_parallel(fsdp: str) -> dict:
  mesh = mesh_lib.make_mesh()
  fsdp = fsdp == "fsdp"
  losses, params, placed = train_toy(mesh, fsdp, slice(None))
  placement = {
      name: {"spec": str(array.sharding.spec),
             "shard_shapes": [list(s.data.shape) for s in array.addressable_shards],
             "devices": sorted(s.device.id for s in array.addressable_shards)}
      for name, array in placed.items()}
  return {"devices": mesh.size, "losses": losses,
          "params": {k: v.tolist() for k, v in params.items()},
          "placement": placement}


def worker_shardings() -> dict:
  mesh = mesh_lib.make_mesh()
  abstract_params = {"embedding": jax.ShapeDtypeStruct((30522, 768), jnp.float32),
                     "kernel": jax.ShapeDtypeStruct((1024, 512), jnp.float32),
                     "bias": jax.ShapeDtypeStruct((768,), jnp.float32)}
  abstract_opt = jax.eval_shape(optax.adam(1e-3).init, abstract_params)
  specs = {"params": mesh_lib.param_shardings(mesh, abstract_params, fsdp=True),
           "opt": mesh_lib.param_shardings(mesh, abstract_opt, fsdp=True),
           "replicated": mesh_lib.param_shardings(mesh, abstract_params, fsdp=False)}
  flat = {jax.tree_util.keystr(path): str(sharding.spec)
          for path, sharding in jax.tree_util.tree_leaves_with_path(specs)}
  try:
    mesh_lib.host_batch_to_global({"x": np.zeros((6, 3), np.float32)}, mesh)
    error = None
  except UserError as e:
    error = str(e)
  small = mesh_lib.make_mesh(ml_collections.ConfigDict({"num_devices": 2}))
  global_batch = mesh_lib.host_batch_to_global(
      {"x": np.arange(12, dtype=np.float32).reshape(6, 2)}, small)["x"]
  return {"specs": flat, "indivisible_error": error, "small_mesh": small.size,
          "small_global_shape": list(global_batch.shape),
          "small_shard_shapes": [list(s.data.shape)
                                 for s in global_batch.addressable_shards]}


def worker_distributed(process_id: str, port: str) -> dict:
  config = ml_collections.ConfigDict({"distributed": {
      "coordinator_address": f"127.0.0.1:{port}", "num_processes": 2,
      "process_id": int(process_id), "initialization_timeout_s": 60}})
  assert mesh_lib.maybe_initialize_distributed(config)
  assert mesh_lib.maybe_initialize_distributed(config)  # idempotent
  mesh = mesh_lib.make_mesh()
  half = GLOBAL_BATCH // 2
  rows = slice(int(process_id) * half, (int(process_id) + 1) * half)
  losses, params, _ = train_toy(mesh, fsdp=False, host_rows=rows)
  return {"processes": jax.process_count(), "devices": mesh.size,
          "local_devices": len(mesh.local_devices), "losses": losses,
          "params": {k: v.tolist() for k, v in params.items()}}


WORKERS = {"data_parallel": worker_data_parallel, "shardings": worker_shardings,
           "distributed": worker_distributed}


# ---------------------------------------------------------------------------
# Running workers.


def worker_env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  return env


def read_result(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def run_worker(name: str, *args: str, devices: int = 4, timeout: int = 300) -> dict:
  proc = subprocess.run([sys.executable, __file__, name, *args],
                        env=worker_env(devices), capture_output=True, text=True,
                        timeout=timeout, cwd=REPO)
  assert proc.returncode == 0, f"worker {name} failed:\n{proc.stderr[-4000:]}"
  return read_result(proc.stdout)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def assert_same_training(result: dict, losses: list, params: dict):
  np.testing.assert_allclose(result["losses"], losses, rtol=1e-6, atol=1e-6)
  for name, value in params.items():
    np.testing.assert_allclose(np.asarray(result["params"][name], np.float32),
                               value, rtol=1e-6, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------
# Tests.


def test_pytest_process_has_one_device():
  assert jax.device_count() == 1


def test_fsdp_spec_picks_the_largest_divisible_axis():
  assert mesh_lib.fsdp_spec((1024, 512), 4, 2**18) == P("data", None)
  assert mesh_lib.fsdp_spec((30522, 768), 4, 2**18) == P(None, "data")
  assert mesh_lib.fsdp_spec((512, 512), 4, 2**18) == P("data", None)
  assert mesh_lib.fsdp_spec((768,), 4, 2**18) == P()          # too small
  assert mesh_lib.fsdp_spec((1001, 1003), 4, 16) == P()       # nothing divides
  assert mesh_lib.fsdp_spec((1024, 512), 1, 16) == P()        # one device


def test_host_batch_with_ragged_leading_sizes_is_refused():
  with pytest.raises(UserError, match="same leading"):
    mesh_lib.host_batch_to_global({"x": np.zeros((4, 2)), "y": np.zeros((3,))},
                                  mesh_lib.make_mesh())


def test_no_distributed_config_means_single_process():
  assert not mesh_lib.maybe_initialize_distributed(ml_collections.ConfigDict())
  assert not mesh_lib.maybe_initialize_distributed(
      ml_collections.ConfigDict({"distributed": {"coordinator_address": None,
                                                 "enabled": False}}))


def test_coordinator_without_process_id_is_refused():
  config = ml_collections.ConfigDict({"distributed": {
      "coordinator_address": "127.0.0.1:1234", "num_processes": 2,
      "process_id": 2}})
  with pytest.raises(UserError, match=r"distributed\.process_id"):
    mesh_lib.maybe_initialize_distributed(config)


def test_mesh_num_devices_out_of_range_is_refused():
  with pytest.raises(UserError, match=r"mesh\.num_devices"):
    mesh_lib.make_mesh(ml_collections.ConfigDict({"num_devices": 2}))


def test_data_parallel_on_4_devices_matches_1_device():
  losses, params = reference()
  result = run_worker("data_parallel", "replicated")
  assert result["devices"] == 4
  assert losses[-1] < losses[0]
  assert_same_training(result, losses, params)
  for placement in result["placement"].values():
    assert placement["spec"] == str(P())
    assert placement["devices"] == [0, 1, 2, 3]


def test_fsdp_on_4_devices_shards_params_and_matches_1_device():
  losses, params = reference()
  result = run_worker("data_parallel", "fsdp")
  assert_same_training(result, losses, params)
  placement = result["placement"]
  assert placement["w1"]["spec"] == str(P(None, "data"))
  assert placement["w1"]["shard_shapes"] == [[8, 8]] * 4
  assert placement["w2"]["spec"] == str(P("data", None))
  assert placement["w2"]["shard_shapes"] == [[8, 4]] * 4
  assert placement["w1"]["devices"] == [0, 1, 2, 3]
  assert placement["b1"]["spec"] == str(P())  # 32 elements < FSDP_MIN_SIZE
  assert placement["b1"]["shard_shapes"] == [[32]] * 4


def test_shardings_of_params_and_optimizer_state_on_4_devices():
  result = run_worker("shardings")
  specs = result["specs"]
  assert specs["['params']['embedding']"] == str(P(None, "data"))
  assert specs["['params']['kernel']"] == str(P("data", None))
  assert specs["['params']['bias']"] == str(P())
  assert specs["['replicated']['kernel']"] == str(P())
  # Adam's moments follow the params; its step count stays replicated.
  assert specs["['opt'][0].mu['embedding']"] == str(P(None, "data"))
  assert specs["['opt'][0].nu['kernel']"] == str(P("data", None))
  assert specs["['opt'][0].count"] == str(P())
  assert "6 examples" in result["indivisible_error"]
  assert "4 devices" in result["indivisible_error"]
  assert result["small_mesh"] == 2
  assert result["small_global_shape"] == [6, 2]
  assert result["small_shard_shapes"] == [[3, 2], [3, 2]]


def test_two_processes_on_localhost_match_one_process():
  losses, params = reference()
  port = str(free_port())
  procs = [subprocess.Popen([sys.executable, __file__, "distributed", str(pid), port],
                            env=worker_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
           for pid in (0, 1)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=240))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  for proc, (stdout, stderr) in zip(procs, outputs):
    assert proc.returncode == 0, stderr[-4000:]
  for stdout, _ in outputs:
    result = read_result(stdout)
    assert (result["processes"], result["devices"], result["local_devices"]) == (2, 4, 2)
    assert_same_training(result, losses, params)


if __name__ == "__main__":
  print(json.dumps(WORKERS[sys.argv[1]](*sys.argv[2:])))
