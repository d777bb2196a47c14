"""Where arrays live: processes, the device mesh, and the shardings of batch and state.

Parallelism is the current-JAX way: one `jax.jit` over a `Mesh` whose single
axis 'data' spans every device of every process. The batch is split along
'data' (data parallelism); the parameters and optimizer state are either
replicated on every device or, with FSDP, each large array is split along one
of its axes over the same 'data' devices and XLA inserts the all-gathers and
reduce-scatters. No pmap.

The mesh axis is `AxisType.Auto`: shardings are given to `jit` as
in_shardings/out_shardings (and to `make_array_from_process_local_data`) and
the compiler propagates them through the step; no code inside the model
mentions a mesh axis.

Multi-process (several hosts, or several processes on one host): call
`maybe_initialize_distributed(config)` before anything touches a JAX device;
each process then feeds only its own slice of the global batch through
`host_batch_to_global`.
"""

import math
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lite_bert.errors import UserError

DATA_AXIS = "data"


def _get(config, name: str, default=None):
  """config.<name>, or `default` when the field is absent or None."""
  if config is None:
    return default
  value = config.get(name, default) if hasattr(config, "get") else getattr(
      config, name, default)
  return default if value is None else value


def maybe_initialize_distributed(config) -> bool:
  """Joins this process to a multi-process JAX job when the config asks for it.

  Reads `config.distributed` (absent = single process):
    coordinator_address  'host:port' of process 0's coordinator; when set,
                         `num_processes` and `process_id` must be set too.
    num_processes        processes in the job (int >= 1).
    process_id           this process's index in [0, num_processes).
    enabled              without a coordinator_address: let JAX find all three
                         from the cluster environment (SLURM, Open MPI, TPU pod
                         or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
                         JAX_PROCESS_ID environment variables).
    initialization_timeout_s  seconds to wait for every process (default 300).
    heartbeat_timeout_s  seconds without a heartbeat after which a process
                         counts as dead and the others stop with an error,
                         instead of waiting for it forever (default 100).

  Must run before any JAX computation. Calling it again (or after someone else
  initialized) does nothing.

  Args:
    config: the whole run config (a ConfigDict).

  Returns:
    True when the process is (now) part of a distributed job, False when the
    config asks for a single process.

  Raises:
    UserError: a coordinator_address without num_processes/process_id, or a
      process_id out of range.
  """
  distributed = _get(config, "distributed")
  address = _get(distributed, "coordinator_address")
  enabled = bool(_get(distributed, "enabled", False))
  if not address and not enabled:
    return False
  if jax.distributed.is_initialized():
    return True
  timeouts = dict(initialization_timeout=int(_get(distributed, "initialization_timeout_s", 300)),
                  heartbeat_timeout_seconds=int(_get(distributed, "heartbeat_timeout_s", 100)))
  if not address:
    jax.distributed.initialize(**timeouts)
    return True
  num_processes = _get(distributed, "num_processes")
  process_id = _get(distributed, "process_id")
  if not isinstance(num_processes, int) or num_processes < 1:
    raise UserError(
        f"distributed.num_processes must be a positive integer when "
        f"distributed.coordinator_address={address!r} is set, got {num_processes!r}")
  if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
    raise UserError(
        f"distributed.process_id must be an integer in [0, {num_processes}) when "
        f"distributed.coordinator_address={address!r} is set, got {process_id!r}")
  jax.distributed.initialize(coordinator_address=address,
                             num_processes=num_processes,
                             process_id=process_id, **timeouts)
  return True


def make_mesh(mesh_config=None) -> Mesh:
  """A 1-D mesh, axis 'data', over all devices of all processes.

  Args:
    mesh_config: optional ConfigDict; `num_devices` (None or 0 = all) keeps
      only the first devices (single-process runs and tests only).

  Returns:
    A `jax.sharding.Mesh` with one Auto axis named 'data'.

  Raises:
    UserError: num_devices out of range, or set below the total in a
      multi-process job (every process must own part of the mesh).
  """
  devices = jax.devices()
  num_devices = _get(mesh_config, "num_devices", 0)
  if not isinstance(num_devices, int) or not 0 <= num_devices <= len(devices):
    raise UserError(f"mesh.num_devices must be an integer in [0, {len(devices)}] "
                    f"(0 = all {len(devices)} devices), got {num_devices!r}")
  if num_devices and num_devices != len(devices) and jax.process_count() > 1:
    raise UserError(
        f"mesh.num_devices={num_devices} leaves devices out of a "
        f"{jax.process_count()}-process job with {len(devices)} devices; "
        f"leave it at 0")
  count = num_devices or len(devices)
  return jax.make_mesh((count,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices[:count])


def replicated(mesh: Mesh) -> NamedSharding:
  """The same full copy on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'; trailing axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], num_shards: int,
              min_size_to_shard: int) -> PartitionSpec:
  """Partition of one array under FSDP: its largest axis divisible by num_shards.

  Arrays with fewer than `min_size_to_shard` elements, and arrays with no axis
  divisible by `num_shards`, stay replicated (PartitionSpec()). Among equally
  large divisible axes the first wins.
  """
  if num_shards <= 1 or math.prod(shape) < min_size_to_shard:
    return PartitionSpec()
  candidates = [axis for axis, size in enumerate(shape) if size % num_shards == 0]
  if not candidates:
    return PartitionSpec()
  axis = max(candidates, key=lambda a: (shape[a], -a))
  spec = [None] * len(shape)
  spec[axis] = DATA_AXIS
  return PartitionSpec(*spec)


def param_shardings(mesh: Mesh, abstract_tree: Any, fsdp: bool,
                    min_size_to_shard: int = 2**18) -> Any:
  """A `NamedSharding` for every leaf of a params / optimizer-state / train-state tree.

  Args:
    mesh: from `make_mesh`.
    abstract_tree: pytree whose leaves have `.shape` (`jax.eval_shape` output,
      arrays); leaves without a shape (Python scalars) are replicated.
    fsdp: False replicates everything; True splits each leaf of at least
      `min_size_to_shard` elements along `fsdp_spec`'s axis over 'data'.
    min_size_to_shard: elements below which a leaf stays replicated (2**18 =
      1 MiB of float32: smaller arrays cost more in collectives than they save).

  Returns:
    A pytree of `NamedSharding`s with the structure of `abstract_tree`.
  """
  num_shards = mesh.shape[DATA_AXIS]

  def sharding_of(leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    if not fsdp:
      return replicated(mesh)
    return NamedSharding(mesh, fsdp_spec(shape, num_shards, min_size_to_shard))

  return jax.tree.map(sharding_of, abstract_tree)


def host_batch_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh
                         ) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global, 'data'-sharded arrays.

  Every process calls this with its own rows, in process order: process p's
  rows become rows [p * per_host_batch, (p + 1) * per_host_batch) of the global
  batch (the 1-D mesh lists devices process by process).

  Args:
    batch: name -> numpy array [per_host_batch, ...]; all share per_host_batch.
    mesh: from `make_mesh`.

  Returns:
    name -> jax.Array [per_host_batch * process_count, ...] sharded with
    `batch_sharding(mesh)`.

  Raises:
    UserError: arrays disagree on per_host_batch, or per_host_batch is not a
      multiple of this process's devices in the mesh.
  """
  local_devices = len(mesh.local_devices)
  sizes = {name: np.shape(value)[0] if np.ndim(value) else None
           for name, value in batch.items()}
  per_host = set(sizes.values())
  if len(per_host) != 1 or None in per_host:
    raise UserError(f"every array of a batch needs the same leading (batch) "
                    f"size; got {sizes}")
  per_host_batch = per_host.pop()
  if per_host_batch % local_devices:
    raise UserError(
        f"the per-host batch of {per_host_batch} examples does not split over "
        f"this process's {local_devices} devices; make the global batch a "
        f"multiple of {local_devices * jax.process_count()} "
        f"({local_devices} devices x {jax.process_count()} processes)")
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in batch.items()}
