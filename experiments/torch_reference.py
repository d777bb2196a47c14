"""The Hugging Face torch reference models the benchmark times against ours.

`torch_model` builds a transformers model ('base', 'pretraining' or 'mlm'
heads) holding our weights (converted by `lite_bert.models.convert`; the
transformers classes and config fields are named by
`lite_bert.models.convert`); the losses are the
torch equivalents of our objectives (`torch_pretraining_loss`: MLM at the
gathered positions + NSP/SOP; `torch_distillation_loss`: DistilBERT's triple
loss), `torch_adamw` the optimizer with BERT's no-decay groups, and
`torch_autocast` / `torch_tensors` run them in the benchmark's dtype on its
numpy inputs. torch and transformers are imported only when called.
"""

from __future__ import annotations

import operator

import numpy as np

from lite_bert.models import convert
from lite_bert.models.config import EncoderConfig


def torch_model(arch: str, cfg: EncoderConfig, state: dict, kind: str):
  """A HF torch model (kind: 'base', 'pretraining', 'mlm') holding `state`."""
  import torch
  import transformers as tf
  config_cls = getattr(tf, convert.hf_config_class_name(arch))
  cls = getattr(tf, convert.hf_class_name(arch, kind))
  config = config_cls(**convert.hf_config(cfg, arch))
  model = cls._from_config(config, attn_implementation="sdpa")
  tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}
  result = model.load_state_dict(tensors, strict=False)
  missing = [k for k in result.missing_keys if not convert.hf_derived_key(k)]
  unexpected = list(result.unexpected_keys)
  if missing or unexpected:
    raise RuntimeError(f"{cls.__name__}: weights did not load: missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}")
  model.tie_weights()
  return model


def torch_autocast(dtype: str):
  """torch CPU autocast to `dtype` ('bfloat16', 'float16'); no-op for 'float32'."""
  import contextlib
  import torch
  if dtype == "float32":
    return contextlib.nullcontext()
  return torch.autocast("cpu", dtype={"bfloat16": torch.bfloat16,
                                      "float16": torch.float16}[dtype])


def torch_tensors(arrays: dict) -> dict:
  """numpy arrays -> torch tensors (same dtypes, no copy where contiguous)."""
  import torch
  return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def torch_pretraining_loss(model, arch: str, batch: dict):
  """MLM at the gathered positions + NSP/SOP, as `objectives.mlm_and_pair_loss`."""
  import torch
  import torch.nn.functional as F
  part = {k: operator.attrgetter(path)(model)
          for k, path in convert.hf_pretraining_modules(arch).items()}
  out = part["body"](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch.get("token_type_ids"))
  hidden, pooled = out[0], out[1]
  index = batch["masked_positions"].long()[..., None].expand(-1, -1, hidden.shape[-1])
  gathered = hidden.gather(1, index)
  scores, pair = part["mlm"](gathered), part["pair"](pooled)
  weights = batch["masked_weights"].reshape(-1)
  mlm = F.cross_entropy(scores.float().reshape(-1, scores.shape[-1]),
                        batch["masked_ids"].long().reshape(-1), reduction="none")
  mlm = (mlm * weights).sum() / torch.clamp(weights.sum(), min=1.0)
  return mlm + F.cross_entropy(pair.float(), batch["pair_labels"].long())


def torch_distillation_loss(student, teacher, batch: dict, *, alpha_ce=5.0, alpha_mlm=2.0,
                            alpha_cos=1.0, temperature=2.0):
  """DistilBERT's triple loss, as `objectives.distillation_loss` (same weights)."""
  import torch
  import torch.nn.functional as F
  t = temperature
  s_out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  output_hidden_states=True)
  with torch.no_grad():
    t_out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=True)
  s_logits, t_logits = s_out.logits.float(), t_out.logits.float()
  weights = batch["attention_mask"].float()
  count = torch.clamp(weights.sum(), min=1.0)
  kl = F.kl_div(F.log_softmax(s_logits / t, -1), F.log_softmax(t_logits / t, -1),
                reduction="none", log_target=True).sum(-1)
  kl = t * t * (kl * weights).sum() / count
  index = batch["masked_positions"].long()[..., None].expand(-1, -1, s_logits.shape[-1])
  masked = s_logits.gather(1, index)
  mw = batch["masked_weights"].reshape(-1)
  mlm = F.cross_entropy(masked.reshape(-1, masked.shape[-1]),
                        batch["masked_ids"].long().reshape(-1), reduction="none")
  mlm = (mlm * mw).sum() / torch.clamp(mw.sum(), min=1.0)
  s_hidden, t_hidden = s_out.hidden_states[-1].float(), t_out.hidden_states[-1].float()
  cos = 1.0 - F.cosine_similarity(s_hidden, t_hidden, dim=-1, eps=1e-8)
  cos = (cos * weights).sum() / count
  return alpha_ce * kl + alpha_mlm * mlm + alpha_cos * cos


def torch_adamw(model, optim_cfg):
  """torch AdamW with the config's hyper-parameters and BERT's no-decay groups."""
  import torch
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    if not p.requires_grad:
      continue
    (no_decay if convert.hf_no_weight_decay(name) else decay).append(p)
  return torch.optim.AdamW(
      [{"params": decay, "weight_decay": float(optim_cfg.weight_decay)},
       {"params": no_decay, "weight_decay": 0.0}],
      lr=float(optim_cfg.learning_rate), betas=(float(optim_cfg.b1), float(optim_cfg.b2)),
      eps=float(optim_cfg.eps))
