r"""The one entry point: flags -> config -> modes[config.mode](config, workdir).

  python launch.py --config=configs/albert.py:tiny --workdir=/tmp/albert \
      --config.mode=pretrain --config.train.num_steps=300

`--config.a.b=value` overrides any field; an unknown field or a value of the
wrong type is one clear error. The resolved config is written to
`<workdir>/config.json` once the inputs are validated, before a training job
starts (`config_<mode>.json` after a summary or evaluate run, which must not
overwrite a run's config); a refused run leaves the workdir as it was.
Problems with the input are printed as one line (`error: ...`) with exit
status 2; `--debug` (or LITE_BERT_DEBUG=1) shows the traceback instead.
"""

import contextlib
import importlib
import os
import sys

if __name__ == "__main__":
  # glibc reads its tunables only at start-up: start again with transparent huge pages
  # for XLA's buffers (`host.reexec_with_huge_pages`), before jax is imported.
  from lite_bert import host
  host.reexec_with_huge_pages()

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lite_bert import cli
from lite_bert.errors import UserError
from lite_bert.train import setup
from lite_bert.train import guards

MODES = ("summary", "tokenizer", "pretrain", "distill", "finetune", "evaluate", "predict")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/bert.py:base.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the run's outputs.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show tracebacks for input errors.")


def run(config, workdir: str):
  """Runs `config.mode` in `workdir`; also the programmatic entry point."""
  mode = config.get("mode")
  if mode not in MODES:
    raise UserError(f"config.mode={mode!r} is not a mode; choose one of {MODES}")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create workdir {workdir}: {e.strerror}") from e
  if not os.access(workdir, os.W_OK):
    raise UserError(f"workdir {workdir} is not writable")
  module = importlib.import_module(f"lite_bert.modes.{mode}")
  setup.use_compilation_cache(config)
  if mode in ("pretrain", "distill", "finetune"):  # the loop's fields, before any write
    from lite_bert.train import loop  # pylint: disable=import-outside-toplevel  # jax
    # Fine-tuning sets train.num_steps from finetune.epochs once it has read the data.
    loop.check_config(config, check_schedule=mode != "finetune")
  if mode == "evaluate":  # a JAX mode outside the loop: join a multi-process job first
    from lite_bert.train import mesh  # pylint: disable=import-outside-toplevel  # jax
    mesh.maybe_initialize_distributed(config)
  if mode not in setup.TRAINING_MODES:
    result = module.run(config, workdir)
    if mode != "evaluate" or _process_index() == 0:  # process 0 writes for a job
      setup.write_config(config, workdir)  # config_<mode>.json: only for a run that worked
    return result
  # One run per workdir; a killed run leaves no stale lock. The mode writes
  # config.json once its inputs are validated (the loop: after the restore
  # check), so a refused run leaves the workdir as it found it. In a
  # multi-process job (joined by check_config above) process 0 holds the lock.
  lead = mode == "tokenizer" or _process_index() == 0
  with guards.StopOnSigterm(), (guards.WorkdirLock(workdir) if lead else contextlib.nullcontext()):
    return module.run(config, workdir)


def _process_index() -> int:
  import jax  # pylint: disable=import-outside-toplevel  # not for the tokenizer mode
  return jax.process_index()


def main(argv):
  cli.quiet_abandoned_checkpoint_reads()
  cli.quiet_orbax_save_errors()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  config = cli.loaded_config(_CONFIG)
  logging.set_verbosity(logging.WARNING)
  debug = _DEBUG.value or os.environ.get("LITE_BERT_DEBUG") == "1"
  setup.COMMAND_LINE_FIELDS.set(frozenset(config_flags.get_override_values(flags.FLAGS["config"])))
  setup.CONFIG_ARGUMENT.set(config_flags.get_config_filename(flags.FLAGS["config"]))
  try:
    run(config, _WORKDIR.value)
  except guards.Preempted:
    print(f"{config.get('mode')}: stopped by SIGTERM during start-up, before the first "
          f"training step; nothing to save. Rerun the same command to start", flush=True)
    sys.exit(0)
  except UserError as e:
    if debug:
      raise
    print(f"error: {cli.error_line(e)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=cli.parse_flags)
