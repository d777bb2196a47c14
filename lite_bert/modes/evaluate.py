"""`mode=evaluate`: scores a fine-tuned workdir on any split of its task.

  python launch.py --config=configs/finetune.py:sst2 --config.mode=evaluate \
      --workdir=FINETUNED_DIR --config.evaluate.split=validation

Reads the run's own `config.json` (task, model, tokenizer) from the workdir,
restores the best-dev params (or the latest checkpoint with
`--config.evaluate.checkpoint=latest`), and writes `evaluate_<split>.json`
and `evaluate_predictions_<split>.tsv` next to the run's outputs. The command's
own config only supplies `evaluate.*`.
"""

import functools
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from lite_bert import pretrained
from lite_bert.errors import UserError
from lite_bert.models.heads import ClassificationModel
from lite_bert.modes import finetune
from lite_bert.train import checkpoint as checkpoint_lib
from lite_bert.train import mesh as mesh_lib


def restore_best(workdir: str) -> dict:
  path = os.path.abspath(os.path.join(workdir, "best", "params"))
  if not os.path.isdir(path):
    raise UserError(f"{workdir} has no best/ params (was it fine-tuned with an evaluation?)")
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path)


def check_params_fit(model, params, run_config, workdir: str, choice: str) -> None:
  """Refuses params whose tree differs from the model its config.json describes."""
  ids = jax.ShapeDtypeStruct((1, run_config.data.max_seq_length), jnp.int32)
  expected = jax.eval_shape(lambda i: model.init(jax.random.key(0), i)["params"], ids)
  difference = checkpoint_lib.first_tree_difference(checkpoint_lib.tree_fingerprint(params),
                                                    checkpoint_lib.tree_fingerprint(expected))
  if difference:
    raise UserError(f"the {choice} params in {workdir} do not fit the model its config.json "
                    f"describes: parameter {difference}")


def run(config, workdir: str) -> dict:
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} has no config.json: not a fine-tuning workdir")
  run_config = pretrained.read_run_config(workdir)
  if run_config.get("mode") != "finetune":
    raise UserError(f"{workdir} holds a {run_config.get('mode')!r} run, not a fine-tuning run")
  split = config.evaluate.split
  choice = config.evaluate.checkpoint
  if choice == "best":
    params = restore_best(workdir)
  elif choice == "latest":
    params, _ = pretrained.restore_params(os.path.join(workdir, "checkpoints"))
  else:
    raise UserError(f"evaluate.checkpoint must be 'best' or 'latest', got {choice!r}")
  spec = finetune.task_spec(run_config)
  if split not in spec.splits:
    raise UserError(f"task {spec.name} has no split {split!r}; it has {sorted(spec.splits)}")
  with run_config.unlocked():
    run_config.finetune.init = ""  # the params come from this workdir
    run_config.finetune.eval_splits = (split,)
  cfg = finetune.setup.encoder_config(run_config)
  tokenizer = finetune.tokenizer_of_run(run_config, workdir)
  data = finetune.load_task_data(run_config, spec, tokenizer, with_train=False)
  model = ClassificationModel(cfg, num_labels=spec.num_labels)
  check_params_fit(model, params, run_config, workdir, choice)
  score = finetune.make_scorer(run_config, spec, data, model, workdir, tokenizer.pad_id,
                               files=("evaluate_{split}.json",
                                      "evaluate_predictions_{split}.tsv"))
  mesh = mesh_lib.make_mesh(config.mesh)
  numbers = score(params, None, functools.partial(mesh_lib.host_batch_to_global, mesh=mesh))
  if jax.process_index() == 0:
    print(f"{spec.name} {split} ({choice} checkpoint): " +
          " ".join(f"{k}={v:.4f}" for k, v in numbers.items()))
  return numbers
