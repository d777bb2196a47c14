"""Guards around a run: one process per workdir, and SIGTERM as a clean preemption.

`WorkdirLock` takes an exclusive `flock` on `<workdir>/.lock`. The kernel drops
the lock when its process dies, so a run killed with SIGKILL leaves no stale
lock: the next run simply takes it. A second live run on the same workdir is
refused with one clear error instead of interleaving checkpoints. The file
holds the owner's pid while it runs and is empty otherwise.

`SigtermFlag` turns SIGTERM (how Slurm, Kubernetes and TPU/GPU schedulers
preempt) into a flag the train loop reads at each step boundary: it saves a
checkpoint there and exits 0, so the scheduler's restart resumes with no lost
step. Before the loop runs (tokenizer training, data encoding, compiling)
there is nothing to save: `StopOnSigterm` turns a SIGTERM then into
`Preempted`, which unwinds the start-up's own clean-up (a half-trained
tokenizer is removed) and ends the run with status 0.
"""

import fcntl
import os
import signal

from lite_bert.errors import UserError


class WorkdirLock:
  """Exclusive lock on a workdir for the lifetime of a run (a context manager)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, ".lock")
    self._file = None

  def __enter__(self) -> "WorkdirLock":
    try:
      self._file = open(self.path, "a+")
    except OSError as e:
      raise UserError(f"cannot take the workdir's lock file {self.path}: "
                      f"{e.strerror or e}") from None
    try:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      owner = self._file.read().strip() or "another process"
      self._file.close()
      raise UserError(f"workdir {os.path.dirname(self.path)} is in use by a running job "
                      f"({owner}); use another --workdir or stop that job first") from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f"pid {os.getpid()}\n")
    self._file.flush()
    return self

  def __exit__(self, *exc) -> None:
    # The file stays: removing it would let a waiting process lock a dead inode.
    # Emptied while still held, so a run that ends (or is refused) leaves it as an
    # earlier finished run did: a failed run changes no byte of the workdir.
    self._file.truncate(0)
    self._file.flush()
    fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
    self._file.close()


class SigtermFlag:
  """Records a SIGTERM instead of dying; restores the previous handler on exit."""

  def __init__(self):
    self.received = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __enter__(self) -> "SigtermFlag":
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      self._previous = None
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Preempted(BaseException):
  """A SIGTERM before the train loop took over: nothing to save, stop cleanly."""


class StopOnSigterm:
  """Raises `Preempted` on SIGTERM (the train loop's `SigtermFlag` overrides it inside)."""

  def __init__(self):
    self._previous = None

  @staticmethod
  def _handle(signum, frame):
    del signum, frame
    raise Preempted()

  def __enter__(self) -> "StopOnSigterm":
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler
      self._previous = None
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
