"""experiments/inspect.ipynb: committed without outputs, and runs end to end.

The slow test executes the notebook with nbclient in a temporary working
directory, with LITE_BERT_COMPARE_DIR pointing at an empty folder and
LITE_BERT_INSPECT_DIR at a temporary one, so it builds the tiny fallback
(BERT and ALBERT pretrained, DistilBERT distilled, a few dozen steps each)
there and never touches the repository. About 3-4 minutes on 2 CPU cores.
"""

import json
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "experiments" / "inspect.ipynb"


def test_committed_notebook_has_no_outputs():
  nb = json.loads(NOTEBOOK.read_text())
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert code
  for cell in code:
    assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"][:3]
  assert nb["metadata"]["kernelspec"]["name"] == "python3"


def _texts(cell) -> str:
  parts = []
  for out in cell.get("outputs", []):
    if out["output_type"] == "stream":
      parts.append(out["text"])
    elif "data" in out and "text/plain" in out["data"]:
      parts.append(out["data"]["text/plain"])
  return "".join(parts)


@pytest.mark.slow
def test_inspect_notebook_runs_on_the_fallback(tmp_path, monkeypatch):
  pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  from experiments import run_notebook  # pylint: disable=g-import-not-at-top

  fallback = tmp_path / "fallback"
  monkeypatch.setenv("LITE_BERT_INSPECT_DIR", str(fallback))
  monkeypatch.setenv("LITE_BERT_COMPARE_DIR", str(tmp_path / "no_study"))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
  work = tmp_path / "cwd"
  work.mkdir()
  results_before = sorted(p.name for p in (REPO / "experiments" / "results").iterdir())

  nb = run_notebook.execute(NOTEBOOK, out=tmp_path / "executed.ipynb", cwd=work,
                            timeout=900)

  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in code)
  errors = [o for c in code for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  images = [i for i, c in enumerate(code) for o in c.outputs
            if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  # Attention maps, layer transitions, teacher-vs-student bars: one figure each.
  assert len(images) == 3 and len(set(images)) == 3, images
  text = "\n".join(_texts(c) for c in code)
  assert "source: fallback" in text
  for count in ("109,482,240", "66,362,880", "11,683,584"):  # the published base sizes
    assert count in text
  assert "DistilBERT (student)" in text and "placeholder" not in text
  assert "p(cat)" in text and "p(bark)" in text
  assert text.count("L2 ") >= 3 and "cos" in text

  for name in ("bert", "albert", "distilbert"):
    assert (fallback / name / "checkpoints").is_dir(), name
  assert not any(work.iterdir())  # nothing written in the working directory
  assert sorted(p.name for p in (REPO / "experiments" / "results").iterdir()) == results_before
