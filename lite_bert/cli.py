"""What `launch.py` needs around absl and ml_collections: one-line errors and quiet Orbax noise.

The command line's contract is one `error:` line and exit status 2 for a bad
input. absl, ml_collections and Orbax each print more than that in some
failure; each function here holds one workaround, with the reason beside it.
"""

import logging as py_logging
import sys
import traceback

from absl import flags

from lite_bert.errors import clip


def one_line(text: str) -> str:
  """The last non-empty line of an error text (often a nested traceback)."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return lines[-1] if lines else str(text)


def parse_flags(argv):
  """absl's parser, with config-file and override errors as one line each."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for an override of a field that does not exist:
    # the field's name, then (KeyError) a 'Did you mean ...' line.
    text = e
    while isinstance(text, BaseException):  # e.g. AttributeError(KeyError(text))
      text = text.args[0] if text.args else str(text)
    text = str(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()] or ["?"]
    field = lines[0].strip(chr(34) + chr(39))
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    named = [o for o in overrides if field in o[len("--config."):].split(".")] or overrides
    hint = f" ({' '.join(lines[1:])})" if len(lines) > 1 else ""
    print(f"error: unknown config field {field!r} in {' '.join(named)}{hint}", file=sys.stderr)
  except OSError as e:
    # A config file that cannot be read, reported while applying the overrides.
    print(f"error: cannot load --config: {one_line(e)}", file=sys.stderr)
  except flags.Error as e:
    flag = str(e).splitlines()[0].split(":")[0]
    detail = one_line(e)
    print(f"error: {detail if detail.startswith(flag) else flag + ': ' + detail}",
          file=sys.stderr)
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code failed
    print(f"error: cannot load --config: {config_file_error(e)}", file=sys.stderr)
  sys.exit(2)


MAX_ERROR_CHARS = 600  # a message quoting a whole input file still prints as a short line


def error_line(e: BaseException) -> str:
  """A UserError's text as one line of at most MAX_ERROR_CHARS characters.

  Messages quote at most ~200 characters of any input themselves; this is the
  backstop for one that does not (the middle is cut, the start and the end,
  usually the advice, stay).
  """
  text = " ".join(str(e).split())
  if len(text) <= MAX_ERROR_CHARS:
    return text
  half = (MAX_ERROR_CHARS - 5) // 2
  return f"{text[:half]} ... {text[-half:]}"


def loaded_config(config_flag):
  """The --config ConfigDict; a file that fails to load is one error line, exit 2.

  config_flags defers a failed file load to the first use of the value.
  """
  try:
    config = config_flag.value
    config.get("mode")
  except AttributeError:
    print(f"error: --config: get_config() returned a {type(config).__name__}, not a "
          f"ConfigDict", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code
    print(f"error: cannot load --config: {config_file_error(e)}", file=sys.stderr)
    sys.exit(2)
  return config


def config_file_error(e: BaseException) -> str:
  """What went wrong running a config file, on one line (where: file and line)."""
  if isinstance(e, SyntaxError):
    return clip(f"{e.filename} line {e.lineno}: SyntaxError: {e.msg}")
  tb = e.__traceback__
  where = ""
  while tb is not None:  # the innermost frame: the config file's line
    where = f"{tb.tb_frame.f_code.co_filename} line {tb.tb_lineno}: "
    tb = tb.tb_next
  return clip(f"{where}{type(e).__name__}: {one_line(e)}")


class _AbandonedReads(py_logging.Filter):
  """Drops asyncio's "... exception was never retrieved" for Orbax's abandoned reads and writes."""

  def filter(self, record):
    message = record.getMessage()
    if "exception was never retrieved" not in message:  # a Task's or a _GatheringFuture's
      return True
    frames = traceback.extract_tb(record.exc_info[2]) if record.exc_info else []
    return not ("orbax/checkpoint" in message or any("/orbax/" in f.filename for f in frames))


def quiet_abandoned_checkpoint_reads() -> None:
  """Keeps the noise of a failed checkpoint read off stderr (the CLI's one-line errors).

  When Orbax fails to read one array of a damaged checkpoint it stops waiting
  for the reads of the other arrays: those that fail too are logged by asyncio
  as "Task exception was never retrieved", and those that finish after Orbax
  closed its event loop make tensorstore report "Event loop is closed" as an
  unraisable exception (a bare traceback). The failure itself is already
  reported by the checkpointer (which then tries an older step), so both kinds
  are dropped here; every other message and exception passes through.
  """
  py_logging.getLogger("asyncio").addFilter(_AbandonedReads())
  previous = sys.unraisablehook

  def unraisablehook(unraisable):
    last = unraisable.exc_traceback
    while last is not None and last.tb_next is not None:
      last = last.tb_next
    if (unraisable.exc_type is RuntimeError
        and str(unraisable.exc_value) == "Event loop is closed" and last is not None
        and last.tb_frame.f_code.co_name in ("_check_closed", "call_soon_threadsafe")):
      return
    previous(unraisable)

  sys.unraisablehook = unraisablehook


class _OrbaxSaveErrors(py_logging.Filter):
  """Drops Orbax's own ERROR records (tracebacks of its background save threads)."""

  def filter(self, record):
    return not (record.levelno >= py_logging.ERROR and "/orbax/" in record.pathname)


def quiet_orbax_save_errors() -> None:
  """Keeps Orbax's logged tracebacks of a failed save off stderr.

  A save that fails in Orbax's background threads (disk full, permission
  denied) is logged by each thread with its traceback (hundreds of lines), and
  then raised to the checkpointer, which reports it as one
  `CheckpointWriteError` naming the step, the folder and the cause. The
  records are dropped; the error itself is not.
  """
  py_logging.getLogger("absl").addFilter(_OrbaxSaveErrors())
