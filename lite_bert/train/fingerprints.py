"""What identifies a checkpoint's contents: fingerprints, checksums, compatibility.

Pure functions of pytrees (and JSON values), used by `checkpoint.py` to write
a step's `meta` and to check it on every read:

  leaf_paths          [(path 'a/b/0/c', leaf)] in pytree order
  tree_fingerprint    path -> {'shape', 'dtype'} (or {'empty': type}) as JSON
  tree_checksums      path -> sha256 of each leaf's bytes (global value)
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


def _gather_if_split(leaf):
  """A leaf whose shards live in several processes, gathered whole (collective)."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    return multihost_utils.process_allgather(leaf, tiled=True)
  return leaf


def array_sha256(value: np.ndarray) -> str:
  """sha256 hex digest of an array's bytes in C order (shape/dtype not included)."""
  return hashlib.sha256(value.reshape(-1).view(np.uint8)).hexdigest()


def tree_checksums(tree) -> dict[str, str]:
  """path -> sha256 of the leaf's global value; waits for the values.

  Values are fetched in order (a multi-process gather is collective), then
  hashed on a thread pool (hashlib releases the GIL).
  """
  paths, leaves = zip(*leaf_paths(tree)) if jax.tree.leaves(tree) else ((), ())
  values = jax.device_get([_gather_if_split(leaf) for leaf in leaves])
  values = [np.ascontiguousarray(value) for value in values]
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
