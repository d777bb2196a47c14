"""What identifies a checkpoint's contents: fingerprints, checksums, compatibility.

Pure functions of pytrees (and JSON values), used by `checkpoint.py` to write
a step's `meta` and to check it on every read:

  leaf_paths          [(path 'a/b/0/c', leaf)] in pytree order
  tree_fingerprint    path -> {'shape', 'dtype'} (or {'empty': type}) as JSON
  tree_checksums      path -> digest of each leaf, computed on its devices (any sharding)
  tree_sha256         path -> sha256 of each leaf's global value (steps saved before)
  json_sha256         sha256 of a JSON value, canonical (sorted keys)
  make_meta           the model's fingerprint stored with each step
  check_compatible    refuses a checkpoint of another model, naming what differs
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

import lite_bert
from lite_bert.errors import UserError




def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _is_empty_node(node) -> bool:
  """None, or a tuple/list/dict (e.g. optax's EmptyState) holding no arrays."""
  return node is None or (isinstance(node, (tuple, list, dict))
                          and not jax.tree.leaves(node))


def leaf_paths(tree, keep_empty: bool = False) -> list[tuple[str, Any]]:
  """[(path 'a/b/0/c', leaf)] in pytree order; empty nodes too if keep_empty."""
  is_leaf = _is_empty_node if keep_empty else None
  return [("/".join(_key_name(k) for k in path), leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_leaf)]


def tree_fingerprint(tree) -> dict[str, dict]:
  """Structure of a pytree of arrays or ShapeDtypeStructs, as JSON.

  Returns:
    path -> {'shape': [...], 'dtype': str} for every array, and
    path -> {'empty': type name} for every node without arrays (optax's
    EmptyState, None), so that two optimizers whose states hold the same arrays
    but differ in structure (what Orbax refuses) still differ here.
  """
  fingerprint = {}
  for path, leaf in leaf_paths(tree, keep_empty=True):
    if _is_empty_node(leaf):
      fingerprint[path] = {"empty": type(leaf).__name__}
    else:
      dtype = getattr(leaf, "dtype", None) or np.asarray(leaf).dtype
      fingerprint[path] = {"shape": [int(d) for d in np.shape(leaf)],
                           "dtype": str(np.dtype(dtype))}
  return fingerprint


# -- checksums ------------------------------------------------------------
#
# A checkpoint's arrays are checked by a digest computed where they live, shard
# by shard on their devices: for each element, its bits (as 32-bit words) mixed
# with its position in the global array through murmur3's 32-bit finalizer,
# summed modulo 2**32 (32 bits per array, as many as the CRC-32C TensorStore
# checks its own metadata with). Each element is counted once: every process
# sums the shards it holds of one replica (for a replicated array, replica
# `leaf index % replicas`, so the work is spread over the devices), and the
# processes add their partial sums (4 bytes per array cross processes). The
# total is a function of the global array alone, so a step saved on N devices
# verifies when restored on M, and no array is gathered or copied to a host.
#
# For a fixed position the mix is a bijection of the word, so changing any one
# element always changes the sum, and moving an element changes its mix;
# several changes escape with probability ~2**-32. It is an integrity check
# against damage (flipped bytes, a wrong chunk), not a cryptographic hash.

CHECKSUM_KIND = "fmix32-sum"  # meta['checksum_kind'] of steps checked this way
_GOLDEN = np.uint32(0x9E3779B9)
_KEY = np.uint32(0x3C6EF372)


def _fmix32(h):
  """murmur3's finalizer: a bijection of uint32 that mixes every bit into every bit."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _words(x):
  """The array's bits as uint32 words: 4-byte elements one word each, narrower
  ones widened, 8-byte ones as two words (a trailing axis of 2)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _shard_digest(shard, start, strides):
  """uint32: the sum over one shard.

  Args:
    shard: the shard's data (on its device).
    start: uint32[ndim]: where the shard starts in the global array (in words).
    strides: uint32[ndim]: the global array's row-major strides (in words).
  """
  words = _words(shard)
  position = jnp.zeros(words.shape, jnp.uint32)
  for axis in range(words.ndim):
    position = position + ((jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis)
                            + start[axis]) * strides[axis])
  return jnp.sum(_fmix32(words ^ (position * _GOLDEN + _KEY)), dtype=jnp.uint32)


def _word_layout(shape, itemsize: int, index) -> tuple[np.ndarray, np.ndarray]:
  """(start, strides) in words of the shard at `index` (a tuple of slices)."""
  starts = [s.start or 0 for s in index] + ([0] if itemsize == 8 else [])
  shape = list(shape) + ([2] if itemsize == 8 else [])
  strides = [int(np.prod(shape[axis + 1:], dtype=np.int64)) % 2**32
             for axis in range(len(shape))]
  return np.asarray(starts, np.uint32), np.asarray(strides, np.uint32)


def _own_digests(leaf, replica: int) -> list:
  """Digests (uint32, on device) of this process's shards of `replica` of `leaf`."""
  if not isinstance(leaf, jax.Array):
    leaf = jnp.asarray(leaf)
  replicas = _replica_count(leaf)
  digests = []
  for shard in leaf.addressable_shards:
    if shard.replica_id == replica % replicas:
      start, strides = _word_layout(leaf.shape, leaf.dtype.itemsize, shard.index)
      digests.append(_shard_digest(shard.data, start, strides))
  return digests


def _replica_count(leaf: jax.Array) -> int:
  """How many full copies of `leaf` its devices hold."""
  shard_shape = leaf.sharding.shard_shape(leaf.shape)
  copies_of_one_shard = leaf.sharding.num_devices * int(np.prod(shard_shape, dtype=np.int64))
  return max(1, copies_of_one_shard // max(1, leaf.size))


def tree_checksums(tree) -> dict[str, str]:
  """path -> 8 hex digits: each leaf's digest (see above), computed on its devices.

  Every process of a multi-process job must call it when the tree holds arrays
  split over processes (their partial sums are added across processes). Waits
  only for the digests: one pass over one replica of the arrays on their
  devices, then 4 bytes per array to the host.
  """
  paths_leaves = leaf_paths(tree)
  pending = [_own_digests(leaf, i) for i, (_, leaf) in enumerate(paths_leaves)]  # dispatched
  sums = np.zeros(len(pending), np.uint32)
  for i, digests in enumerate(pending):
    for digest in digests:
      sums[i] += np.asarray(digest)  # uint32: wraps modulo 2**32
  # Arrays split over processes: add the other processes' partial sums (collective).
  # An array this process holds whole (one process's copy) is summed here alone.
  split = np.asarray([isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
                      for _, leaf in paths_leaves], bool)
  if split.any():
    sums[split] = np.sum(multihost_utils.process_allgather(sums[split]), axis=0,
                         dtype=np.uint32)
  return {path: f"{int(total):08x}" for (path, _), total in zip(paths_leaves, sums)}


def array_sha256(value: np.ndarray) -> str:
  """sha256 hex digest of an array's bytes in C order (shape/dtype not included)."""
  return hashlib.sha256(value.reshape(-1).view(np.uint8)).hexdigest()


def tree_sha256(tree) -> dict[str, str]:
  """path -> sha256 of each leaf's global value: how steps saved before
  CHECKSUM_KIND were checked, kept to verify them. Gathers split arrays to every
  process (collective), then hashes on a thread pool."""
  paths, leaves = zip(*leaf_paths(tree)) if jax.tree.leaves(tree) else ((), ())
  gathered = [multihost_utils.process_allgather(leaf, tiled=True)
              if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable else leaf
              for leaf in leaves]
  values = [np.ascontiguousarray(value) for value in jax.device_get(gathered)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
    digests = list(pool.map(array_sha256, values))
  return dict(zip(paths, digests))


def _config_dict(model_config) -> dict:
  if dataclasses.is_dataclass(model_config):
    return dataclasses.asdict(model_config)
  if hasattr(model_config, "to_dict"):
    return model_config.to_dict()
  return dict(model_config)


def make_meta(model_config, params) -> dict:
  """The compatibility fingerprint stored with (and checked against) a checkpoint.

  Args:
    model_config: `EncoderConfig`, ConfigDict or dict of JSON-able values.
    params: the params pytree (arrays or `jax.eval_shape` output).

  Returns:
    {'lite_bert_version': str, 'model': {field: value},
     'params': {path: {'shape', 'dtype'}}}.
  """
  return {"lite_bert_version": lite_bert.__version__,
          "model": _config_dict(model_config),
          "params": tree_fingerprint(params)}


def _describe(entry: Optional[dict]) -> str:
  if entry is None:
    return "absent"
  if "empty" in entry:
    return f"an empty {entry['empty']}"
  return f"{entry['dtype']}{entry['shape']}"


def first_tree_difference(saved: Mapping[str, dict], now: Mapping[str, dict]
                          ) -> Optional[str]:
  """'path: <saved> in the checkpoint, <now> here' for the first differing path, or None."""
  for path in sorted(set(saved) | set(now)):
    if saved.get(path) != now.get(path):
      return (f"'{path}' is {_describe(saved.get(path))} in the checkpoint, "
              f"{_describe(now.get(path))} here")
  return None


def check_compatible(meta_saved: Mapping[str, Any], meta_now: Mapping[str, Any],
                     where: str = "the checkpoint") -> None:
  """Refuses a checkpoint whose model differs from the one being built.

  Compares the `model` config fields, then the `params` shapes/dtypes. A
  different lite_bert version alone is accepted (it is named in the message
  when something else differs).

  Raises:
    UserError: naming every differing model field, or the first differing
      parameter path.
  """
  model_saved = meta_saved.get("model", {})
  model_now = meta_now.get("model", {})
  fields = [name for name in sorted(set(model_saved) | set(model_now))
            if model_saved.get(name, "<absent>") != model_now.get(name, "<absent>")]
  versions = ""
  if meta_saved.get("lite_bert_version") != meta_now.get("lite_bert_version"):
    versions = (f" (checkpoint by lite_bert {meta_saved.get('lite_bert_version')}, "
                f"this is {meta_now.get('lite_bert_version')})")
  if fields:
    then = ", ".join(f"{n}={model_saved.get(n, '<absent>')!r}" for n in fields)
    now = ", ".join(f"{n}={model_now.get(n, '<absent>')!r}" for n in fields)
    raise UserError(f"{where} was written by a model with {then}, this config has "
                    f"{now}{versions}")
  difference = first_tree_difference(meta_saved.get("params", {}),
                                     meta_now.get("params", {}))
  if difference:
    raise UserError(f"{where} has a different parameter tree: parameter "
                    f"{difference}{versions}")


def json_sha256(value) -> str:
  """sha256 of a JSON value written canonically (sorted keys): equal after a round trip."""
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
