"""Checkpoints of a run: train state, data-iterator state and a fingerprint, per step.

One `Checkpointer` wraps an `orbax.checkpoint.CheckpointManager`. Each step
directory `DIR/<step>/` holds three items:

  state  the train-state pytree (params, opt_state, step, rng key data as
         `jax.random.key_data`), written by `StandardSave` (OCDBT + zarr,
         each process writing its own shards), restored onto whatever
         shardings the caller gives, so N devices can resume on M.
  data   the data iterator's JSON state dict.
  meta   JSON: what the caller passes (`make_meta`: lite_bert version, model
         config, params shapes/dtypes) plus `state_tree` (every state leaf's
         shape and dtype), `checksums` (a 32-bit digest of every state
         leaf, computed on the devices holding it: `fingerprints.tree_checksums`;
         the same for any sharding, so nothing is gathered to a host) and
         `checksum_kind`. Steps saved before the digests carry sha256 of
         each global array instead (no `checksum_kind`), still verified.

Completeness (Orbax 0.12.8, local/POSIX file systems): a save writes into
`DIR/<step>.orbax-checkpoint-tmp-<timestamp>/`, writes `commit_success.txt`
inside it and only then renames it to `DIR/<step>/` (`AtomicRenameTemporaryPath`;
the rename is atomic). A step is therefore complete exactly when a directory
named `<step>` exists; `all_steps()`/`latest_step()` list only those, and the
leftovers of a crash mid-save (tmp directories) are never listed and are
deleted when the next `Checkpointer` opens the directory
(`cleanup_tmp_directories=True`). On object stores without atomic rename
(gs://) Orbax instead writes `commit_success.txt` last and checks for it.

Corruption after the commit (a lost file, flipped bytes) is a different
matter. Orbax notices missing files and damaged JSON/OCDBT metadata (tensorstore
CRC-32C on its b-tree nodes and manifests) as exceptions on restore, but a byte
flipped inside an array's zstd-compressed chunk was measured to restore
silently with a wrong value. So `restore` recomputes every restored leaf's
digest on its new devices and compares with `meta['checksums']`; either
failure raises `CorruptCheckpointError` naming the step and the reason.
`restore_latest_good` walks back from the newest step to the newest good one.
"""

import json
import logging
import os
import shutil
import time
from typing import Any, Mapping, NamedTuple, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from lite_bert.errors import UserError, clip
from lite_bert.train.fingerprints import (check_compatible, first_tree_difference, json_sha256,
                                          tree_checksums, tree_fingerprint, tree_sha256,
                                          CHECKSUM_KIND)

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")
QUARANTINE_DIR = "corrupt"  # DIR/corrupt/<step>-<unix ns>: bad steps moved aside


class CorruptCheckpointError(UserError):
  """A committed checkpoint step that cannot be read back intact."""

  def __init__(self, directory, step: int, reason: str):
    super().__init__(f"checkpoint step {step} in {directory} is unusable: {reason}")
    self.step = step
    self.reason = reason


class CheckpointReadError(UserError):
  """A checkpoint step that could not be read for a reason that is not evidence of damage.

  An injected or transient I/O error, a permission problem, running out of
  memory, a sharding the devices cannot hold: the step may be intact, so it
  is neither skipped nor moved; the run stops naming the step and the cause.
  """

  def __init__(self, directory, step: int, cause: str):
    super().__init__(f"cannot read checkpoint step {step} in {directory}: {cause} (the step "
                     f"was left in place: this is not evidence that it is damaged)")
    self.step = step
    self.cause = cause


class CheckpointWriteError(UserError):
  """A save that failed (disk full, permission denied, ...): the step was not kept."""

  def __init__(self, directory, step: Optional[int], cause: str, committed: Optional[int]):
    after = (f"the run can resume from step {committed}" if committed is not None
             else "no step was committed")
    super().__init__(f"cannot write checkpoint step {step} to {directory}: {cause} (nothing "
                     f"of step {step} was kept; {after})")
    self.step = step
    self.committed = committed


# The operating system's words for a failed write, found in Orbax/tensorstore errors.
WRITE_FAILURES = ("No space left on device", "Permission denied", "Read-only file system",
                  "Disk quota exceeded", "File too large", "Input/output error")


# What marks a failed read as damage to the step's files (see `is_damage`).
DAMAGE_ERRORS = (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, EOFError)
DAMAGE_STATUSES = ("DATA_LOSS", "NOT_FOUND", "OUT_OF_RANGE")  # tensorstore status codes


def _chain(error: BaseException) -> list:
  """The error and its causes/contexts, outermost first."""
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def is_damage(error: BaseException) -> bool:
  """Whether a failed read shows the step's files are damaged (missing, truncated, garbled).

  Evidence: a missing file, undecodable JSON, a missing item, or a tensorstore
  status of lost/missing/short data (`DATA_LOSS`, `NOT_FOUND`, `OUT_OF_RANGE`,
  or `FAILED_PRECONDITION` on a compressed chunk that does not decode).
  Anything else (permission denied, other OS errors, out of memory, a
  sharding mismatch) is not.
  """
  for e in _chain(error):
    if isinstance(e, DAMAGE_ERRORS):
      return True
    text = str(e)
    if isinstance(e, KeyError) and "was not found in the checkpoint" in text:
      return True
    if isinstance(e, ValueError) and (
        text.startswith(tuple(s + ":" for s in DAMAGE_STATUSES))
        # zstd's words vary by version: "Zstd ...", "ZSTD_decompressStream() failed: Data
        # corruption detected" (where the flipped bytes fall decides which appears).
        or (text.startswith("FAILED_PRECONDITION:") and "zstd" in text.lower())):
      return True
  return False


class Restored(NamedTuple):
  """What `restore_latest_good` found."""
  step: int                 # the step restored
  state: Any                # the train state, on the requested shardings
  data_state: dict          # the data iterator's state
  meta: dict                # the stored meta (with state_tree and checksums)
  bad_steps: dict           # newer steps skipped: step -> reason


# ---------------------------------------------------------------------------
# The checkpointer.


def _as_path(directory) -> epath.Path:
  directory = os.fspath(directory)
  if "://" not in directory:
    directory = os.path.abspath(directory)
  return epath.Path(directory)


class Checkpointer:
  """Saves and restores (state, data_state, meta) per step under one directory.

  Every process of a multi-process job constructs one and calls every method
  (saving and restoring are collective).
  """

  def __init__(self, directory, *, max_to_keep: Optional[int] = None,
               save_every_steps: int = 1, async_save: bool = True, read_only: bool = False):
    """Opens (creating if needed) the checkpoint directory.

    Args:
      directory: local path or gs:// URL.
      max_to_keep: newest steps kept (older ones deleted after each save);
        None keeps all. Keep >= 2 so a corrupted newest step has a fallback.
      save_every_steps: `save` writes only at steps divisible by this
        (unless forced).
      async_save: return from `save` once arrays are copied to host memory and
        write in a background thread (call `wait`/`close` before exiting).
      read_only: for readers of a finished run: nothing is created, cleaned up
        or saved.
    """
    if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
      raise UserError(f"checkpoint max_to_keep must be a positive integer or None, "
                      f"got {max_to_keep!r}")
    if not isinstance(save_every_steps, int) or save_every_steps < 1:
      raise UserError(f"checkpoint save_every_steps must be a positive integer, "
                      f"got {save_every_steps!r}")
    self.directory = _as_path(directory)
    self.save_every_steps = save_every_steps
    self.read_only = read_only
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=1,  # the interval is decided in `save`
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only,  # a reader leaves a running save alone
        create=not read_only,
        # Create a step's tmp folder in `save` itself: a folder that cannot be
        # written fails there, not in a background thread others wait on for minutes.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    self._saving: Optional[int] = None  # the step of the save in flight
    self._async = async_save
    # Handlers named up front (not inferred from the first save/restore) so that
    # `item_metadata` can describe a step's state before anything is restored.
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=handlers)

  # -- saving ---------------------------------------------------------------

  def save(self, step: int, state, data_state: Mapping[str, Any],
           meta: Mapping[str, Any], force: bool = False) -> bool:
    """Writes step `step` if it is due (or forced).

    Args:
      step: the train step the state is at.
      state: train-state pytree of arrays (typed PRNG keys as key data).
      data_state: JSON-serialisable data-iterator state.
      meta: JSON-serialisable fingerprint (`make_meta`); `state_tree` and
        `checksums` are added here.
      force: save even if `step` is not a multiple of save_every_steps.

    Returns:
      Whether a save was started. With async_save the write completes in the
      background; the step appears in `all_steps` once committed.
    """
    if self.read_only:
      raise ValueError(f"{self.directory} was opened read-only")
    # Orbax alone would also save the first step it sees, whatever the interval.
    if not force and (step % self.save_every_steps
                      or not self._manager.should_save(step)):
      return False
    # Orbax serialises JSON items later, on a background thread: hand it
    # snapshots, never the caller's live objects (the loop keeps appending to
    # its metric window while the write is pending).
    snapshot = lambda value: json.loads(json.dumps(value))
    data = snapshot(dict(data_state))
    full_meta = {**meta, "state_tree": tree_fingerprint(state),
                 "checksum_kind": CHECKSUM_KIND, "checksums": tree_checksums(state),
                 "data_sha256": json_sha256(data)}
    self.wait()  # a failed earlier save is reported as itself, before this one starts
    self._saving = step
    try:
      started = self._manager.save(
          step, force=force,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data),
                                  meta=ocp.args.JsonSave(snapshot(full_meta))))
    except Exception as e:  # pylint: disable=broad-except  # reported as one line
      raise self._write_failed(e) from e
    if not self._async:
      self._saving = None
    return started

  def wait(self) -> None:
    """Blocks until every started save is committed.

    Raises:
      CheckpointWriteError: the save in flight failed (its tmp folder removed).
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # reported as one line
      raise self._write_failed(e) from e
    self._saving = None

  def close(self) -> None:
    """Waits for pending saves and releases the manager (raises as `wait`)."""
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except  # already reported by `wait`
        pass

  def abandon(self) -> None:
    """Releases the manager on an error path: a failed save is cleaned up, not raised."""
    try:
      self.close()
    except CheckpointWriteError:
      pass

  def committed_steps(self) -> list[int]:
    """The step folders on disk now (no waiting, no Orbax state)."""
    if not os.path.isdir(os.fspath(self.directory)):
      return []
    return sorted(int(name) for name in os.listdir(os.fspath(self.directory)) if name.isdigit())

  def _write_failed(self, error: BaseException) -> CheckpointWriteError:
    """The one-line error for a failed save; removes what the save left behind."""
    step, self._saving = self._saving, None
    if jax.process_index() == 0 and os.path.isdir(os.fspath(self.directory)):
      for name in os.listdir(os.fspath(self.directory)):
        if ".orbax-checkpoint-tmp" in name:
          shutil.rmtree(os.path.join(os.fspath(self.directory), name), ignore_errors=True)
    text = " ".join(str(e) for e in _chain(error))
    cause = next((words for words in WRITE_FAILURES if words in text), None) or _short(error,
                                                                                       200)
    committed = self.committed_steps()
    return CheckpointWriteError(self.directory, step, cause, committed[-1] if committed else None)

  # -- listing --------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Committed steps, ascending (waits for pending saves first)."""
    self.wait()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    """Newest committed step, or None (waits for pending saves first)."""
    self.wait()
    return self._manager.latest_step()

  # -- restoring ------------------------------------------------------------

  def read_meta(self, step: int) -> dict:
    """The stored meta of `step` (no arrays read).

    Raises:
      CorruptCheckpointError: the meta item is missing or not valid JSON.
    """
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  # sorted by `is_damage`
      if is_damage(e):
        raise CorruptCheckpointError(self.directory, step,
                                     f"meta unreadable ({_short(e)})") from e
      raise CheckpointReadError(self.directory, step, f"reading its meta failed ({_short(e)})"
                                ) from e
    if not isinstance(restored.meta, dict):
      raise CorruptCheckpointError(self.directory, step, "meta is not a JSON object")
    return restored.meta

  def saved_abstract_state(self, step: int):
    """The state of `step` as saved: a pytree of `jax.ShapeDtypeStruct` (no arrays read).

    Dicts and lists in place of the saver's containers (optax's named tuples),
    which leave the leaf paths, and so the checksums, as they were.
    """
    try:
      tree = self._manager.item_metadata(step).state.tree
    except Exception as e:  # pylint: disable=broad-except  # sorted by `is_damage`
      if is_damage(e) or isinstance(e, (AttributeError, ValueError)):  # no/garbled metadata
        raise CorruptCheckpointError(self.directory, step,
                                     f"its state metadata is unreadable ({_short(e)})") from e
      raise CheckpointReadError(self.directory, step, f"reading its state metadata failed "
                                f"({_short(e)})") from e
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree)

  def restore(self, step: int, abstract_state=None, shardings=None, *,
              meta_now: Optional[Mapping[str, Any]] = None):
    """Reads step `step` onto the given shardings and verifies it.

    Args:
      step: a committed step.
      abstract_state: pytree of `jax.ShapeDtypeStruct` (`jax.eval_shape` of the
        state init) with the structure the state must have; None: the state
        as saved (`saved_abstract_state`), for readers without a model.
      shardings: matching pytree of `jax.sharding.Sharding` (e.g. from
        `mesh.param_shardings`), or None for the first device.
      meta_now: `make_meta` of the model being built; when given, an
        incompatible checkpoint is refused before any array is read.

    Returns:
      (state, data_state, meta).

    Raises:
      UserError: incompatible with meta_now or abstract_state (naming what
        differs).
      CorruptCheckpointError (a UserError): unreadable or failing its checksums.
    """
    self.wait()
    where = f"checkpoint step {step} in {self.directory}"
    meta = self.read_meta(step)
    as_saved = abstract_state is None
    if as_saved:
      abstract_state = self.saved_abstract_state(step)
    if meta_now is not None:
      check_compatible(meta, meta_now, where)
    if "state_tree" in meta and not as_saved:
      difference = first_tree_difference(meta["state_tree"],
                                         tree_fingerprint(abstract_state))
      if difference:
        raise UserError(f"{where} holds a different train state (another optimizer "
                        f"or model?): {difference}")
    kind = meta.get("checksum_kind", "sha256" if "checksums" in meta else None)
    checksum_fns = {CHECKSUM_KIND: tree_checksums, "sha256": tree_sha256, None: None}
    if kind not in checksum_fns:
      raise CheckpointReadError(self.directory, step, f"its checksums are of a kind this "
                                f"lite_bert cannot check ({kind!r}; a newer version?)")
    checksum_fn = checksum_fns[kind]
    if shardings is None:  # whole arrays on this process's first device (any process count)
      first_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      shardings = jax.tree.map(lambda _: first_device, abstract_state)
    target = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                    sharding=sharding),
        abstract_state, shardings)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                        data=ocp.args.JsonRestore()))
      state = restored.state
      checksums = checksum_fn(state) if checksum_fn else {}
    except MemoryError as e:  # this host's problem, not the checkpoint's
      raise CheckpointReadError(self.directory, step, "out of host memory") from e
    except Exception as e:  # pylint: disable=broad-except  # sorted by `is_damage`
      if is_damage(e):
        raise CorruptCheckpointError(self.directory, step,
                                     f"reading it failed ({_short(e)})") from e
      raise CheckpointReadError(self.directory, step, f"reading it failed ({_short(e)})") from e
    if checksum_fn is None:
      log.warning("%s has no checksums; restored without verifying its bytes", where)
    else:
      bad = [path for path, digest in checksums.items()
             if meta["checksums"].get(path) != digest]
      if bad:
        raise CorruptCheckpointError(
            self.directory, step,
            f"{len(bad)} array(s) differ from their checksums at save time, "
            f"first '{bad[0]}'")
    if "data_sha256" in meta and json_sha256(restored.data) != meta["data_sha256"]:
      raise CorruptCheckpointError(
          self.directory, step, "its data-iterator state differs from its sha256 at save "
          "time (resuming from it would read the wrong data position)")
    return state, restored.data, meta

  def restore_latest_good(self, abstract_state, shardings=None, *,
                          meta_now: Optional[Mapping[str, Any]] = None
                          ) -> Optional[Restored]:
    """Restores the newest step that reads back intact, walking back past bad ones.

    Each bad step is logged (step and reason). When an older step is good, the
    bad newer ones are moved to DIR/corrupt/<step>-<time>/ (kept for
    inspection, out of Orbax's sight, so the run can save those steps again).

    Args: as `restore`.

    Returns:
      A `Restored`, or None when the directory has no committed step (fresh
      start).

    Raises:
      UserError: an incompatible checkpoint (not skipped: that is a config
        problem, not damage); or every step is bad, listing each step and why,
        with all files left in place.
    """
    steps = self.all_steps()
    if not steps:
      return None
    bad_steps = {}
    for step in reversed(steps):
      try:
        state, data_state, meta = self.restore(step, abstract_state, shardings,
                                               meta_now=meta_now)
      except CorruptCheckpointError as e:
        bad_steps[step] = e.reason
        log.warning("%s; trying an older step", e)
        continue
      if bad_steps:
        self._quarantine(sorted(bad_steps))
        log.warning("resuming from checkpoint step %d in %s; skipped bad step(s) %s",
                    step, self.directory, sorted(bad_steps))
      return Restored(step, state, data_state, meta, bad_steps)
    listing = "; ".join(f"step {s}: {r}" for s, r in bad_steps.items())
    raise UserError(f"no usable checkpoint in {self.directory} (files left in "
                    f"place): {listing}")

  def _quarantine(self, steps: list[int]) -> None:
    """Moves committed step directories to DIR/corrupt/ (process 0) and rescans."""
    if jax.process_index() == 0:
      quarantine = self.directory / QUARANTINE_DIR
      quarantine.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target = quarantine / f"{step}-{time.time_ns()}"
        (self.directory / str(step)).rename(target)
        log.warning("moved bad checkpoint step %d to %s", step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("lite_bert_checkpoint_quarantine")
    self._manager.reload()


def load_verified(directory, step: Optional[int] = None, *,
                  choose_with: str = "step={step}") -> Restored:
  """The one read path for a checkpoint someone else wrote: verified, never repaired.

  Used by every reader of a finished or running run (`pretrained.load`,
  evaluation, fine-tuning's init, a distillation teacher, export, predict);
  resuming goes through `Checkpointer.restore_latest_good`, which may skip and
  quarantine. The step's arrays are checked against their checksums and its data
  state against its sha256, as at resume. Nothing is moved or deleted.

  Args:
    directory: a checkpoint directory (`WORKDIR/checkpoints`).
    step: the step to read; None: the newest committed one.
    choose_with: how the caller's user picks a step (`{step}` is filled in),
      e.g. "--config.distill.teacher_step={step}"; quoted when a step is bad.

  Returns:
    A `Restored` (state as saved, on the first device; `bad_steps` empty).

  Raises:
    UserError: no such directory or step.
    CorruptCheckpointError: the step is damaged; the message names the newest
      good older step and how to choose it, or says there is none.
    CheckpointReadError: it could not be read for another reason.
  """
  if not os.path.isdir(os.fspath(directory)):
    raise UserError(f"no checkpoints in {directory}")
  checkpointer = Checkpointer(directory, read_only=True)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise UserError(f"no finished checkpoint in {directory}")
    if step is not None and step not in steps:
      raise UserError(f"{directory} has no checkpoint step {step}; it has steps {steps}")
    wanted = steps[-1] if step is None else step
    try:
      state, data_state, meta = checkpointer.restore(wanted)
    except CorruptCheckpointError as e:
      good = None
      for older in reversed([s for s in steps if s < wanted]):
        try:
          checkpointer.restore(older)
        except CorruptCheckpointError:
          continue
        good = older
        break
      offer = (f"; the newest good step is {good}: choose it with "
               f"{choose_with.format(step=good)}" if good is not None
               else "; no older step is good either")
      raise CorruptCheckpointError(directory, wanted, e.reason + offer) from e
    return Restored(wanted, state, data_state, meta, {})
  finally:
    checkpointer.close()


def _short(error: BaseException, limit: int = 200) -> str:
  """One line: type and start of the message of the innermost cause.

  Orbax wraps tensorstore's precise error ('NOT_FOUND ...', 'DATA_LOSS ...')
  in an exception whose message is mostly a TensorStore spec.
  """
  innermost = _chain(error)[-1]
  return f"{type(innermost).__name__}: {clip(str(innermost), limit)}"
