"""`mode=summary`: the parameter table of the configured model, no weights allocated.

Prints the table and writes `<workdir>/summary.json` with `params_total`
(encoder incl. pooler, no pretraining heads), `params_embeddings`, the other
parts, and the model config it describes.
"""

import os

from lite_bert import files
from lite_bert.models.config import EncoderConfig
from lite_bert.models import summary


def run(config, workdir: str) -> dict:
  cfg = EncoderConfig.from_dict(config.model)
  params = summary.abstract_pretraining_params(cfg, pair_head=config.get("pair_head", cfg.pooler))
  counts = summary.parameter_counts(params)
  print(summary.format_table(config.get("name", "model"), counts))
  result = dict(counts, name=config.get("name", "model"), model=cfg.to_dict())
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "summary.json")
  files.atomic_write_json(path, result, sort_keys=False)
  print(f"wrote {path}")
  return result
