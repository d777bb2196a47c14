r"""Execute a notebook (default experiments/inspect.ipynb) with the venv's own Python.

  python -m experiments.run_notebook [--notebook experiments/inspect.ipynb]
      [--out experiments/results/inspect.executed.ipynb] [--cwd DIR] [--timeout 1800]

The notebook in the repository is kept with its outputs stripped; this writes
an executed copy (with figures) to --out. The kernel is `sys.executable -m
ipykernel_launcher`, i.e. this interpreter, whatever kernelspecs are installed
(needs `nbclient`, `nbformat` and `ipykernel`, the test extra). The kernel
inherits this process's environment, so LITE_BERT_COMPARE_DIR and
LITE_BERT_INSPECT_DIR (see experiments/make_inspect_fallback.py) apply.
"""

import argparse
import os
import pathlib
import sys
from typing import Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_NOTEBOOK = REPO / "experiments" / "inspect.ipynb"
DEFAULT_OUT = REPO / "experiments" / "results" / "inspect.executed.ipynb"


def _kernel_manager():
  """A KernelManager whose python3 kernel is this interpreter."""
  from jupyter_client.kernelspec import KernelSpec, KernelSpecManager  # pylint: disable=g-import-not-at-top
  from jupyter_client.manager import KernelManager  # pylint: disable=g-import-not-at-top

  class ThisPython(KernelSpecManager):

    def get_kernel_spec(self, kernel_name):
      del kernel_name
      return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                              "{connection_file}"],
                        display_name="Python 3 (lite_bert)", language="python")

  return KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


def execute(notebook=DEFAULT_NOTEBOOK, out: Optional[os.PathLike] = None,
            cwd: Optional[os.PathLike] = None, timeout: int = 1800):
  """Runs every cell of `notebook` in `cwd` (default: the repository root).

  Returns the executed `nbformat` notebook (also written to `out` if given).
  Raises nbclient's CellExecutionError naming the failing cell.
  """
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  nb = nbformat.read(os.fspath(notebook), as_version=4)
  client = nbclient.NotebookClient(
      nb, km=_kernel_manager(), timeout=timeout, allow_errors=False,
      resources={"metadata": {"path": os.fspath(cwd or REPO)}})
  client.execute()
  if out is not None:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, os.fspath(out))
  return nb


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.run_notebook",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--notebook", default=str(DEFAULT_NOTEBOOK))
  parser.add_argument("--out", default=str(DEFAULT_OUT))
  parser.add_argument("--cwd", default=None, help="kernel working directory (default: repo)")
  parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
  args = parser.parse_args(argv)
  execute(args.notebook, args.out, args.cwd, args.timeout)
  print(f"executed {args.notebook} -> {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
