"""Where the shared real data lives.

`LITE_BERT_DATA` (environment) wins; otherwise `../shared/data` next to the
repository checkout. Config fields that name data files default to paths under
`data_dir()` and can always be overridden with `--config.x=PATH`.
"""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def data_dir() -> pathlib.Path:
  """The folder holding glue/, wikitext/ and gutenberg/ (see its README)."""
  env = os.environ.get("LITE_BERT_DATA")
  if env:
    return pathlib.Path(env)
  return REPO_ROOT.parent / "shared" / "data"
