r"""Export a lite_bert encoder as a Hugging Face `transformers` checkpoint folder.

  python -m lite_bert.export --source=WORKDIR --out=DIR [--step=N] [--arch=albert]

or, in Python, `export_huggingface(pretrained.load(WORKDIR), None, DIR)`. The
folder holds

  config.json        BertConfig / AlbertConfig / DistilBertConfig fields, with
                     `model_type` and `architectures`
  model.safetensors  the weights (float32), named by `convert.hf_state_dict_from_params`,
                     written with the safetensors numpy API (no torch needed)
  tokenizer files    see below

and loads with `transformers.AutoModel*.from_pretrained(DIR)` (and
`AutoTokenizer.from_pretrained(DIR)`). The class named in `architectures`
follows the heads the params have:

  family      MLM + NSP/SOP head       MLM head only          no heads
  bert        BertForPreTraining       BertForMaskedLM        BertModel
  albert      AlbertForPreTraining     AlbertForMaskedLM      AlbertModel
  distilbert  -                        DistilBertForMaskedLM  DistilBertModel

A `classifier_head` (a fine-tuned model) is not exported; the encoder is.

What `transformers` can express, and so what is exported or refused
(`UserError` naming the reason):

  * BERT: share='none', embedding_size == hidden_size, token types
    (type_vocab_size >= 1). Its base model always builds a pooler, so a model
    without one exports only with its MLM head (BertForMaskedLM has none).
  * ALBERT: factorized embeddings with any E (E == H is written as an
    identity E->H projection: exact), share='all' (one layer group) or
    share='none' (`num_hidden_groups = num_layers`: one group per layer, the
    ALBERT paper's "not-shared" rows). Token types required; pooler as BERT.
    Note: lite_bert's importer (`convert`) reads back share='all' with E != H
    only, so the two other ALBERT forms are one-way exports.
  * DistilBERT: share='none', E == H, no token types, no pooler, LayerNorm
    epsilon 1e-12 (hard-coded in transformers).
  * Never: share='attention' or 'ffn' (ALBERT's partial sharing, Table 4 of
    the paper): transformers' ALBERT shares whole layers only.

The family comes from `arch` ('bert', 'albert', 'distilbert': a workdir's
`config.arch` or the HF model_type it was imported from); pass `arch=` to
override it (e.g. a bert.py run with model.embedding_size=128 exports as
'albert'). Without any, it is inferred from the config.

Tokenizer files:

  * WordPiece (BERT vocabularies): `vocab.txt`, `tokenizer.json` (the same
    normalizer, pre-tokenizer and WordPiece model lite_bert uses, plus the
    `[CLS] A [SEP] B [SEP]` post-processor), `tokenizer_config.json`
    (BertTokenizer / DistilBertTokenizer) and `special_tokens_map.json`. The
    fast tokenizer reproduces lite_bert's ids exactly.
  * SentencePiece (lite_bert's own models, and ALBERT's): the `.model` as
    `spiece.model`, `tokenizer_config.json` naming `AlbertTokenizer` (for any
    family: it is transformers' sentencepiece tokenizer) with
    keep_accents=True and lite_bert's do_lower_case, and
    `special_tokens_map.json` with lite_bert's specials `[PAD] [UNK] [CLS]
    [SEP] [MASK]` (ids 0-4 in models lite_bert trains; bos = [CLS], eos =
    [SEP], as ALBERT's). What AlbertTokenizer does NOT reproduce exactly:
    it splits a piece that ends in a digit followed by a comma ("1990," ->
    "1990" + ","), replaces `` and '' by a double quote before encoding, and
    its fast variant (converted from spiece.model) has no byte fallback, so
    characters outside the vocabulary become [UNK] there instead of byte
    pieces. Everything else (the model's own normalizer, including its case
    folding) is the same sentencepiece model, so ordinary text gets the same
    ids (tests/test_export.py measures it).
"""

import json
import os
import shutil
from typing import Any, Mapping, Optional, Sequence, Union

import lite_bert
from lite_bert.data import tokenizers as tokenizers_lib
from lite_bert.errors import UserError
from lite_bert.models import convert
from lite_bert.models.config import EncoderConfig

FAMILIES = ("bert", "albert", "distilbert")


def infer_family(cfg: EncoderConfig) -> str:
  """The transformers family that fits `cfg` best (used when no arch is known)."""
  if cfg.share == "all" or cfg.embedding_dim != cfg.hidden_size:
    return "albert"
  if cfg.type_vocab_size == 0 and not cfg.pooler:
    return "distilbert"
  return "bert"


def check_exportable(cfg: EncoderConfig, family: str, params: Mapping[str, Any]) -> None:
  """UserError naming why `transformers`' `family` cannot hold this model, if it cannot."""
  if family not in FAMILIES:
    raise UserError(f"arch={family!r} cannot be exported; choose one of {FAMILIES}")
  what = f"cannot export to a Hugging Face {family} model:"
  if cfg.share in ("attention", "ffn"):
    raise UserError(
        f"{what} model.share={cfg.share!r} (only the {cfg.share} sub-layer shared across "
        f"layers) has no transformers equivalent: ALBERT shares whole layers, BERT and "
        f"DistilBERT share nothing")
  if family in ("bert", "distilbert"):
    if cfg.share != "none":
      raise UserError(f"{what} model.share={cfg.share!r}: {family} has no cross-layer "
                      f"sharing (export as arch='albert')")
    if cfg.embedding_dim != cfg.hidden_size:
      raise UserError(f"{what} model.embedding_size={cfg.embedding_dim} != hidden_size="
                      f"{cfg.hidden_size}: {family} has no E->H embedding projection "
                      f"(export as arch='albert', which has one)")
  if family in ("bert", "albert"):
    if cfg.type_vocab_size == 0:
      raise UserError(f"{what} model.type_vocab_size=0: transformers' {family} always adds "
                      f"token-type embeddings" +
                      (" (export as arch='distilbert', which has none)"
                       if family == "bert" else ""))
    if "pooler" not in params["encoder"] and "mlm_head" not in params:
      raise UserError(f"{what} the model has neither a pooler nor an MLM head; transformers' "
                      f"{family} base model always builds a pooler, which would be random")
  if family == "distilbert":
    if cfg.type_vocab_size or cfg.pooler:
      raise UserError(f"{what} DistilBERT has no token types and no pooler, the model has "
                      f"type_vocab_size={cfg.type_vocab_size}, pooler={cfg.pooler} (export "
                      f"as arch='bert')")
    if cfg.layer_norm_eps != convert.DISTILBERT_LAYER_NORM_EPS:
      raise UserError(f"{what} model.layer_norm_eps={cfg.layer_norm_eps}: transformers' "
                      f"DistilBERT hard-codes {convert.DISTILBERT_LAYER_NORM_EPS}")
  if cfg.activation not in convert.HF_ACTIVATIONS:
    raise UserError(f"{what} model.activation={cfg.activation!r} has no transformers name")


def hf_config(cfg: EncoderConfig, family: str, arch_class: str,
              tokenizer: Optional[tokenizers_lib.Tokenizer] = None,
              provenance: Optional[dict] = None) -> dict:
  """config.json contents: `convert.hf_checkpoint_config` + lite_bert's provenance."""
  ids = {} if tokenizer is None else dict(pad_id=tokenizer.pad_id, cls_id=tokenizer.cls_id,
                                          sep_id=tokenizer.sep_id)
  config = convert.hf_checkpoint_config(cfg, family, arch_class, **ids)
  config["lite_bert"] = dict(provenance or {}, version=lite_bert.__version__,
                             model=cfg.to_dict())
  return config


def _write_json(path: str, obj: Any) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
    f.write("\n")


def write_wordpiece_tokenizer(tokenizer: tokenizers_lib.WordPieceTokenizer, out_dir: str,
                              family: str, max_length: int) -> list[str]:
  """vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
  import tokenizers as hf_tokenizers  # pylint: disable=g-import-not-at-top
  # The Tokenizer lite_bert encodes with (normalizer, pre-tokenizer, WordPiece).
  tok = hf_tokenizers.Tokenizer.from_str(tokenizer._tok.to_str())  # pylint: disable=protected-access
  if tok.post_processor is None:
    cls, sep = tokenizer.id_to_token(tokenizer.cls_id), tokenizer.id_to_token(tokenizer.sep_id)
    tok.post_processor = hf_tokenizers.processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.cls_id), (sep, tokenizer.sep_id)])
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  vocab = tok.get_vocab(with_added_tokens=True)
  by_id = sorted(vocab.items(), key=lambda kv: kv[1])
  if [i for _, i in by_id] != list(range(len(by_id))):
    raise UserError(f"{tokenizer.source}: the WordPiece vocabulary ids are not 0..V-1; "
                    f"cannot write vocab.txt")
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.writelines(token + "\n" for token, _ in by_id)
  special = convert.hf_special_tokens(tokenizer)
  _write_json(os.path.join(out_dir, "tokenizer_config.json"),
              convert.hf_wordpiece_tokenizer_config(
                  special, family, max_length, json.loads(tok.to_str())))
  _write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
  return ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def write_sentencepiece_tokenizer(tokenizer: tokenizers_lib.SentencePieceTokenizer,
                                  out_dir: str, family: str, max_length: int) -> list[str]:
  """spiece.model, tokenizer_config.json, special_tokens_map.json."""
  shutil.copyfile(tokenizer.source, os.path.join(out_dir, "spiece.model"))
  special = convert.hf_special_tokens(tokenizer, sentencepiece=True)
  # lite_bert's own models fold case in the sentencepiece normalizer; ALBERT's
  # released ones are loaded with do_lower_case=True (SentencePieceTokenizer).
  lower = bool(getattr(tokenizer, "_do_lower_case", False))
  _write_json(os.path.join(out_dir, "tokenizer_config.json"),
              convert.hf_sentencepiece_tokenizer_config(special, family, max_length,
                                                                  lower))
  _write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
  return ["spiece.model", "tokenizer_config.json", "special_tokens_map.json"]


def _unpack(model) -> tuple[EncoderConfig, dict, Optional[str], Any, dict]:
  """(cfg, params, arch, tokenizer, provenance) of a Loaded or a (cfg, params, arch) tuple."""
  if isinstance(model, (tuple, list)):
    if len(model) != 3:
      raise UserError("export_huggingface takes a pretrained.Loaded or a (cfg, params, arch) "
                      f"tuple, got a {len(model)}-tuple")
    cfg, params, arch = model
    return cfg, params, arch, None, {}
  for field in ("cfg", "params"):
    if not hasattr(model, field):
      raise UserError("export_huggingface takes a pretrained.Loaded or a (cfg, params, arch) "
                      f"tuple, got {type(model).__name__}")
  provenance = {"source": os.path.abspath(model.source) if getattr(model, "source", None)
                else None, "step": getattr(model, "step", None)}
  return model.cfg, model.params, model.arch, model.tokenizer, provenance


def export_huggingface(model: Union["lite_bert.pretrained.Loaded", Sequence[Any]],
                       tokenizer: Optional[tokenizers_lib.Tokenizer], out_dir: str, *,
                       arch: Optional[str] = None) -> dict:
  """Writes a transformers checkpoint folder of `model` to `out_dir`.

  Args:
    model: a `pretrained.Loaded`, or a (EncoderConfig, params, arch) tuple
      with a PretrainingModel (or ClassificationModel) params tree; arch may
      be None.
    tokenizer: written next to the weights; None takes the Loaded's (a tuple
      then gets no tokenizer files).
    out_dir: created if needed; existing files of the same names are
      replaced. A lite_bert workdir is refused (its config.json would be
      overwritten).
    arch: 'bert', 'albert' or 'distilbert' to override the model's own.

  Returns:
    dict: out_dir, model_type, architecture, files (names written),
    not_exported (params parts left out, e.g. classifier_head), tensors.

  Raises:
    UserError: the architecture has no transformers equivalent (see the module
    docstring), a tokenizer whose vocabulary differs from the model's, or an
    unusable out_dir.
  """
  cfg, params, own_arch, own_tokenizer, provenance = _unpack(model)
  tokenizer = own_tokenizer if tokenizer is None else tokenizer
  family = arch or own_arch or infer_family(cfg)
  if "encoder" not in params:
    raise UserError("export_huggingface: params have no 'encoder'")
  check_exportable(cfg, family, params)
  if tokenizer is not None:
    tokenizers_lib.check_vocab_matches(tokenizer, cfg.vocab_size, "the exported model")
  out_dir = os.fspath(out_dir)
  if os.path.isdir(os.path.join(out_dir, "checkpoints")):
    raise UserError(f"{out_dir} is a lite_bert workdir; export to another folder")
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {out_dir}: {e.strerror}") from e

  arch_class = convert.hf_architecture(family, params)
  state = convert.hf_checkpoint_state_dict(params, cfg, family)
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  provenance = dict(provenance, arch=family, share=cfg.share)
  _write_json(os.path.join(out_dir, "config.json"),
              hf_config(cfg, family, arch_class, tokenizer, provenance))
  files = ["config.json", "model.safetensors"]
  if isinstance(tokenizer, tokenizers_lib.WordPieceTokenizer):
    files += write_wordpiece_tokenizer(tokenizer, out_dir, family, cfg.max_position_embeddings)
  elif isinstance(tokenizer, tokenizers_lib.SentencePieceTokenizer):
    files += write_sentencepiece_tokenizer(tokenizer, out_dir, family,
                                           cfg.max_position_embeddings)
  not_exported = sorted(k for k in params if k not in ("encoder", "mlm_head", "pair_head"))
  return dict(out_dir=out_dir, model_type=family, architecture=arch_class, files=files,
              not_exported=not_exported, tensors=len(state))
