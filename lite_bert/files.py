"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every result, config and record file is written through these helpers: the
bytes go to `<path>.tmp`, are flushed, and the temporary is renamed over
`path` (atomic on POSIX). If writing fails (disk full, permission denied) the
temporary is removed and the error propagates, so nothing half-written and no
`.tmp` file is left behind.
"""

import contextlib
import json
import os
import shutil
from typing import Any, Union


@contextlib.contextmanager
def _replacing(path: str):
  """Yields `<path>.tmp` to write; renames it over `path`, or removes it if writing fails."""
  tmp = path + ".tmp"
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write(path: str, data: Union[str, bytes]) -> str:
  """Writes `data` (text or bytes) to `path` atomically; returns `path`."""
  with _replacing(path) as tmp:
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)
      f.flush()
  return path


def atomic_write_json(path: str, value: Any, *, indent: int = 2, sort_keys: bool = True,
                      **dumps_kwargs) -> str:
  """`value` as JSON (indented, keys sorted by default), written atomically."""
  return atomic_write(path, json.dumps(value, indent=indent, sort_keys=sort_keys,
                                       **dumps_kwargs) + "\n")


def atomic_copy(source: str, path: str) -> str:
  """Copies the file `source` to `path` atomically; returns `path`."""
  with _replacing(path) as tmp:
    shutil.copyfile(source, tmp)
  return path
