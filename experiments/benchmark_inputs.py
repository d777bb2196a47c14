"""The models the benchmarks time, and the synthetic inputs they time them on.

`model_config` / `optim_config` read `configs/<model>.py:<size>` (the model
computing in a given dtype, and its optimizer; size `study_<scale>`: the model
`experiments/compare.py` trains at that scale); `make_inputs` makes random
[batch, seq] token ids without padding, `make_pretraining_batch` adds the
gathered MLM positions (`masked_positions_per_seq`) and NSP/SOP labels. Shared
by `experiments/benchmark.py`, its XLA-flag probe and `profile_encoder.py`.
"""

from __future__ import annotations

import numpy as np

from lite_bert.models.config import EncoderConfig
from lite_bert.models.flops import masked_positions_per_seq

MODELS = ("bert", "distilbert", "albert")


def _config_size(size: str) -> tuple[str, dict]:
  """(configs size, model field overrides): `study_<scale>` is compare_plan.SCALES[scale]."""
  if not size.startswith("study_"):
    return size, {}
  from experiments.compare_plan import SCALES  # pylint: disable=import-outside-toplevel
  name = size[len("study_"):]
  if name not in SCALES:
    raise ValueError(f"unknown size {size!r}: a study size is one of "
                     f"{', '.join('study_' + n for n in sorted(SCALES))}")
  return SCALES[name]["size"], SCALES[name]["model"]


def model_config(name: str, size: str, dtype: str) -> EncoderConfig:
  """`configs/<name>.py:<size>`'s model, computing in `dtype` (size `study_<scale>`: the
  study's model at that scale, `experiments/compare_plan.py`)."""
  config_size, overrides = _config_size(size)
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  fields = dict(module.get_config(config_size).model.to_dict(), **overrides.get(name, {}))
  fields["dtype"] = dtype
  return EncoderConfig.from_dict(fields)


def optim_config(name: str, size: str):
  """`configs/<name>.py:<size>`'s optimizer config (`study_<scale>`: its configs size's)."""
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  return module.get_config(_config_size(size)[0]).optim


def make_inputs(cfg: EncoderConfig, batch: int, seq: int, seed: int = 0) -> dict:
  """Random token ids (no padding), segments 0/1 halves when the model has them."""
  rng = np.random.default_rng(seed + 1000 * batch + seq)
  ids = rng.integers(5, cfg.vocab_size, size=(batch, seq), dtype=np.int32)
  out = {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int32)}
  if cfg.type_vocab_size:
    types = np.zeros((batch, seq), np.int32)
    types[:, seq // 2:] = 1
    out["token_type_ids"] = types
  return out


def make_pretraining_batch(cfg: EncoderConfig, batch: int, seq: int, seed: int = 0) -> dict:
  """`make_inputs` + MLM targets at `masked_positions_per_seq(seq)` positions and pair labels."""
  out = make_inputs(cfg, batch, seq, seed)
  rng = np.random.default_rng(seed + 7)
  p = masked_positions_per_seq(seq)
  positions = np.stack([np.sort(rng.choice(np.arange(1, seq), p, replace=False))
                        for _ in range(batch)]).astype(np.int32)
  out.update(masked_positions=positions,
             masked_ids=rng.integers(5, cfg.vocab_size, size=(batch, p), dtype=np.int32),
             masked_weights=np.ones((batch, p), np.float32),
             pair_labels=rng.integers(0, 2, size=(batch,), dtype=np.int32))
  return out
