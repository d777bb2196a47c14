"""`mode=predict`: a fine-tuned workdir's labels and class probabilities for new text.

  python launch.py --config=configs/finetune.py:sst2 --workdir=FINETUNED_DIR \
      --config.mode=predict --config.predict.input=FILE --config.predict.output=OUT.tsv

The input is a TSV whose header names the task's text columns, or plain text
with one example per line (a pair task: two tab-separated texts), or '-' for
stdin. The output (a file, or '-' for stdout) is a TSV: `index` (the input's
example number, from 0), `label` and one `prob_<label>` column per class, or
`value` for a regression task. Texts longer than the model takes are cut as in
fine-tuning, and their count is printed. From Python: `lite_bert.predictor`.
"""

import os
import sys

from lite_bert import files
from lite_bert import predictor
from lite_bert.errors import UserError


def run(config, workdir: str) -> dict:
  options = config.get("predict", {})
  source, target = options.get("input", ""), options.get("output", "")
  if not source or not target:
    raise UserError("predict mode needs --config.predict.input=FILE (or -) and "
                    "--config.predict.output=FILE (or -)")
  if target == "-" and sys.stdout is None:
    raise UserError("predict.output=- but stdout is closed; name a file")
  if target != "-":
    _check_output(target, workdir)
  model = predictor.Predictor(workdir, checkpoint=options.get("checkpoint", "best"))
  examples = predictor.read_examples(source, model.spec.text_fields)
  result = model(examples)
  columns = list(result.rows[0])
  text = "".join("\t".join(str(row[c]) if c in ("index", "label") else f"{row[c]:.6f}"
                           for c in columns) + "\n" for row in result.rows)
  text = "\t".join(columns) + "\n" + text
  if target == "-":
    sys.stdout.write(text)
  else:
    try:
      files.atomic_write(target, text)
    except OSError as e:
      raise UserError(f"cannot write predict.output {target}: {e.strerror or e}") from e
  note = (f"; {result.truncated} longer than {model.max_seq_length} tokens were cut "
          f"to fit" if result.truncated else "")
  print(f"predict: {len(result.rows)} examples of {model.spec.name} with {workdir} "
        f"(step {model.step}) -> {target}{note}", file=sys.stderr if target == "-" else
        sys.stdout, flush=True)
  return {"examples": len(result.rows), "truncated": result.truncated, "output": target}


def _check_output(target: str, workdir: str) -> None:
  """Refuses an output that would overwrite one of the run's own files.

  Inside the workdir only a new file, or an earlier predictions file (it starts
  with the `index` column), may be written.
  """
  real, root = os.path.realpath(target), os.path.realpath(workdir)
  if os.path.commonpath([real, root]) != root or not os.path.exists(real):
    return
  try:
    with open(real, "rb") as f:
      earlier_predictions = f.read(6) == b"index\t"
  except OSError:
    earlier_predictions = False
  if not earlier_predictions:
    raise UserError(f"predict.output {target} is a file of the run in {workdir}, not an "
                    f"earlier predictions file; write the predictions to another path")
