"""Atomic file writes (a reader sees the old file or the new one, never half of one),
and one checked reader of the JSON files a user may hand in.

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

from lite_bert.errors import UserError, clip


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


def read_json_object(path: str, *, what: str = "", dict_fields: tuple = ()) -> dict:
  """The JSON object in `path`, or a UserError naming the file and what is wrong.

  Refuses an unreadable file, bytes that are not UTF-8, text that is not JSON,
  JSON that is not an object, and an object whose `dict_fields` are missing or
  not objects. `what` says what the file is for ("the run config").
  """
  label = f"{what} {path}" if what else path
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise UserError(f"cannot read {label}: {e.strerror or e}") from None
  try:
    value = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise UserError(f"{label} is not valid UTF-8 (byte {e.start})") from None
  except ValueError as e:
    raise UserError(f"{label} is not valid JSON: {clip(str(e), 120)}") from None
  if not isinstance(value, dict):
    raise UserError(f"{label} holds a JSON {type(value).__name__}, not an object")
  for field in dict_fields:
    if not isinstance(value.get(field), dict):
      raise UserError(f"{label} has no {field!r} object"
                      + ("" if field not in value else
                         f" (it holds a {type(value[field]).__name__})"))
  return value
