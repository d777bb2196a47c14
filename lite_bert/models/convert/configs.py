"""Hugging Face `transformers` configs and class names <-> lite_bert's EncoderConfig.

The config side of the Hugging Face conversion (`params.py` holds the
tensors): what a checkpoint folder's JSON files say and which transformers
classes hold a model.

  transformers -> lite_bert   `encoder_config_from_hf` (config.json dict ->
                              EncoderConfig, family, whether it has a pair head)
  lite_bert -> transformers   `hf_config` (BertConfig / AlbertConfig /
                              DistilBertConfig kwargs), `hf_checkpoint_config`
                              (a folder's config.json), `hf_class_name` /
                              `hf_config_class_name` / `hf_architecture` (which
                              class), `HF_ACTIVATIONS`
  torch references            `hf_pretraining_modules` (a *ForPreTraining
                              model's submodules), `hf_derived_key`,
                              `hf_no_weight_decay` (parameter-name rules)
  tokenizer files             `hf_special_tokens` (special_tokens_map.json),
                              `hf_wordpiece_tokenizer_config` /
                              `hf_sentencepiece_tokenizer_config`
                              (tokenizer_config.json: which transformers
                              tokenizer class, with which options)

With `params.py` (the tensors) this package is the one place in lite_bert that
knows Hugging Face model names.
"""

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from lite_bert.errors import UserError, clip
from lite_bert.models.config import EncoderConfig

if TYPE_CHECKING:
  from lite_bert.data import tokenizers as tokenizers_lib  # pylint: disable=g-import-not-at-top

# The families lite_bert converts: transformers `model_type`s.
ARCHS = ("bert", "albert", "distilbert")

# Hugging Face `hidden_act` / `activation` -> EncoderConfig.activation.
# gelu_pytorch_tanh is the same tanh approximation as gelu_new.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new",
                "relu": "relu"}

# EncoderConfig.activation -> the transformers name (`hidden_act` / `activation`).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}
# transformers' DistilBERT hard-codes its LayerNorm epsilon.
DISTILBERT_LAYER_NORM_EPS = 1e-12

# Each family's transformers classes, by the heads they hold: 'pretraining'
# (MLM + NSP/SOP), 'mlm' (MLM head only), 'base' (no heads).
HF_CLASSES = {
    "bert": {"pretraining": "BertForPreTraining", "mlm": "BertForMaskedLM",
             "base": "BertModel"},
    "albert": {"pretraining": "AlbertForPreTraining", "mlm": "AlbertForMaskedLM",
               "base": "AlbertModel"},
    "distilbert": {"pretraining": None, "mlm": "DistilBertForMaskedLM",
                   "base": "DistilBertModel"},
}
HF_CONFIG_CLASSES = {"bert": "BertConfig", "albert": "AlbertConfig",
                     "distilbert": "DistilBertConfig"}

# Submodules of a *ForPreTraining model: the encoder body, the MLM head, the NSP/SOP head.
_HF_PRETRAINING_MODULES = {
    "bert": {"body": "bert", "mlm": "cls.predictions", "pair": "cls.seq_relationship"},
    "albert": {"body": "albert", "mlm": "predictions", "pair": "sop_classifier"},
}

# Keys a transformers model may report missing after loading `hf_state_dict_from_params`'s
# tensors: buffers and the decoder tied to the word embeddings.
_HF_DERIVED_KEY_SUFFIXES = ("position_ids", "token_type_ids", "decoder.weight",
                            "decoder.bias", "vocab_projector.weight")


# ------------------------------------------- transformers config.json -> lite_bert

def _get(hf: Mapping[str, Any], key: str, default: Any) -> Any:
  value = hf.get(key, default)
  return default if value is None else value


def _number(hf: Mapping[str, Any], key: str, default: float) -> float:
  """A float field of config.json; anything else is a UserError naming it."""
  value = _get(hf, key, default)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise UserError(f"Hugging Face config {key}={clip(repr(value), 60)} is not a number")
  return float(value)


def _activation(name: Any, field: str) -> str:
  if name not in _ACTIVATIONS:
    raise UserError(f"Hugging Face config {field}={name!r} is not supported; lite_bert has "
                    f"{sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


def encoder_config_from_hf(hf_config: Mapping[str, Any]) -> Tuple[EncoderConfig, str, bool]:
  """Maps a Hugging Face config.json dict to (EncoderConfig, arch, pair_head).

  `arch` is the family ('bert', 'albert' or 'distilbert', from `model_type`);
  `pair_head` is whether the family's pretraining model has an NSP/SOP head
  (BERT, ALBERT) or not (DistilBERT), as in configs/*.py. Fields missing from
  the dict take the `transformers` defaults of that family. The pooler is on
  for BERT and ALBERT (a checkpoint without one, e.g. BertForMaskedLM, reports
  it missing) and off for DistilBERT. Raises UserError for what lite_bert
  cannot represent: ALBERT with several layer groups or inner layers, or with
  embedding_size == hidden_size (its E->H projection would be dropped);
  DistilBERT with sinusoidal position embeddings; relative position
  embeddings; unknown activations.
  """
  hf = dict(hf_config)
  arch = hf.get("model_type")
  if arch not in ARCHS:
    raise UserError(f"Hugging Face config model_type={arch!r} is not supported; "
                    f"lite_bert converts {ARCHS}")
  if arch in ("bert", "albert"):
    position_type = _get(hf, "position_embedding_type", "absolute")
    if position_type != "absolute":
      raise UserError(f"Hugging Face config position_embedding_type={position_type!r}: "
                      f"lite_bert has absolute learned positions only")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
      raise UserError("Hugging Face config is a decoder (is_decoder/add_cross_attention); "
                      "lite_bert converts encoders only")
  if arch == "bert":
    fields = dict(
        vocab_size=_get(hf, "vocab_size", 30522),
        hidden_size=_get(hf, "hidden_size", 768),
        num_layers=_get(hf, "num_hidden_layers", 12),
        num_heads=_get(hf, "num_attention_heads", 12),
        intermediate_size=_get(hf, "intermediate_size", 3072),
        embedding_size=None,
        max_position_embeddings=_get(hf, "max_position_embeddings", 512),
        type_vocab_size=_get(hf, "type_vocab_size", 2),
        activation=_activation(_get(hf, "hidden_act", "gelu"), "hidden_act"),
        share="none",
        pooler=True,
        dropout_rate=_number(hf, "hidden_dropout_prob", 0.1),
        attention_dropout_rate=_number(hf, "attention_probs_dropout_prob", 0.1),
        layer_norm_eps=_number(hf, "layer_norm_eps", 1e-12),
        initializer_range=_number(hf, "initializer_range", 0.02),
    )
  elif arch == "albert":
    for field in ("num_hidden_groups", "inner_group_num"):
      if _get(hf, field, 1) != 1:
        raise UserError(f"Hugging Face ALBERT config {field}={hf[field]}: lite_bert shares "
                        f"one layer across all layers and needs {field}=1")
    hidden = _get(hf, "hidden_size", 4096)
    embedding = _get(hf, "embedding_size", 128)
    if embedding == hidden:
      raise UserError(f"Hugging Face ALBERT config embedding_size == hidden_size == {hidden}: "
                      f"lite_bert has an E->H projection only when E != H")
    fields = dict(
        vocab_size=_get(hf, "vocab_size", 30000),
        hidden_size=hidden,
        num_layers=_get(hf, "num_hidden_layers", 12),
        num_heads=_get(hf, "num_attention_heads", 64),
        intermediate_size=_get(hf, "intermediate_size", 16384),
        embedding_size=embedding,
        max_position_embeddings=_get(hf, "max_position_embeddings", 512),
        type_vocab_size=_get(hf, "type_vocab_size", 2),
        activation=_activation(_get(hf, "hidden_act", "gelu_new"), "hidden_act"),
        share="all",
        pooler=True,
        dropout_rate=_number(hf, "hidden_dropout_prob", 0.0),
        attention_dropout_rate=_number(hf, "attention_probs_dropout_prob", 0.0),
        layer_norm_eps=_number(hf, "layer_norm_eps", 1e-12),
        initializer_range=_number(hf, "initializer_range", 0.02),
    )
  else:
    if _get(hf, "sinusoidal_pos_embds", False):
      raise UserError("Hugging Face DistilBERT config sinusoidal_pos_embds=True: lite_bert has "
                      "learned position embeddings only")
    fields = dict(
        vocab_size=_get(hf, "vocab_size", 30522),
        hidden_size=_get(hf, "dim", 768),
        num_layers=_get(hf, "n_layers", 6),
        num_heads=_get(hf, "n_heads", 12),
        intermediate_size=_get(hf, "hidden_dim", 3072),
        embedding_size=None,
        max_position_embeddings=_get(hf, "max_position_embeddings", 512),
        type_vocab_size=0,
        activation=_activation(_get(hf, "activation", "gelu"), "activation"),
        share="none",
        pooler=False,
        dropout_rate=_number(hf, "dropout", 0.1),
        attention_dropout_rate=_number(hf, "attention_dropout", 0.1),
        layer_norm_eps=DISTILBERT_LAYER_NORM_EPS,
        initializer_range=_number(hf, "initializer_range", 0.02),
    )
  return EncoderConfig(**fields), arch, arch != "distilbert"



# ------------------------------------- lite_bert -> transformers configs and classes

def hf_class_name(arch: str, kind: str) -> str:
  """The transformers class of `arch` with the heads of `kind` ('pretraining', 'mlm', 'base')."""
  return HF_CLASSES[arch][kind]


def hf_config_class_name(arch: str) -> str:
  """The transformers config class of `arch` ('BertConfig' ...)."""
  return HF_CONFIG_CLASSES[arch]


def hf_architecture(arch: str, params: Mapping[str, Any]) -> str:
  """The transformers class that holds every part `params` has (encoder, mlm_head, pair_head)."""
  classes = HF_CLASSES[arch]
  if "mlm_head" in params:
    return (classes["pretraining"] if "pair_head" in params and classes["pretraining"]
            else classes["mlm"])
  return classes["base"]


def hf_pretraining_modules(arch: str) -> Dict[str, str]:
  """Attribute paths of a 'bert' / 'albert' *ForPreTraining model's parts.

  {'body': the encoder (returns last hidden state, pooled), 'mlm': the MLM head
  (hidden -> vocabulary scores), 'pair': the NSP / SOP classifier (pooled -> 2)}.
  """
  return dict(_HF_PRETRAINING_MODULES[arch])


def hf_derived_key(key: str) -> bool:
  """Whether a key a transformers model reports missing holds no weights of its own."""
  return key.endswith(_HF_DERIVED_KEY_SUFFIXES)


def hf_no_weight_decay(name: str) -> bool:
  """BERT's no-decay rule on a transformers parameter name: biases and LayerNorms."""
  return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def hf_config(cfg: EncoderConfig, arch: str, *, pad_token_id: int = 0,
              classifier_dropout: float = 0.0) -> dict:
  """The transformers config fields (BertConfig / AlbertConfig / DistilBertConfig kwargs)
  describing `cfg`'s architecture; `classifier_dropout`: ALBERT's SOP/classifier dropout.

  The inverse of `encoder_config_from_hf` for what both can express. ALBERT
  share='none' becomes one layer group per layer.
  """
  activation = HF_ACTIVATIONS.get(cfg.activation, cfg.activation)
  if arch == "distilbert":
    return dict(vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_position_embeddings,
                n_layers=cfg.num_layers, n_heads=cfg.num_heads, dim=cfg.hidden_size,
                hidden_dim=cfg.intermediate_size, dropout=cfg.dropout_rate,
                attention_dropout=cfg.attention_dropout_rate, activation=activation,
                initializer_range=cfg.initializer_range, sinusoidal_pos_embds=False,
                pad_token_id=pad_token_id)
  common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size, hidden_act=activation,
                hidden_dropout_prob=cfg.dropout_rate,
                attention_probs_dropout_prob=cfg.attention_dropout_rate,
                max_position_embeddings=cfg.max_position_embeddings,
                type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
                initializer_range=cfg.initializer_range, pad_token_id=pad_token_id)
  if arch == "albert":
    common.update(embedding_size=cfg.embedding_dim,
                  num_hidden_groups=1 if cfg.share == "all" else cfg.num_layers,
                  inner_group_num=1, classifier_dropout_prob=classifier_dropout)
  return common


def hf_checkpoint_config(cfg: EncoderConfig, arch: str, architecture: str, *, pad_id: int = 0,
                         cls_id: Optional[int] = None, sep_id: Optional[int] = None) -> dict:
  """config.json of a transformers checkpoint folder holding class `architecture`.

  `hf_config` plus `model_type`, `architectures` and the fields transformers
  writes with their defaults; ALBERT's bos/eos are the tokenizer's [CLS]/[SEP]
  when `cls_id`/`sep_id` are given.
  """
  config = dict(hf_config(cfg, arch, pad_token_id=pad_id, classifier_dropout=0.1),
                architectures=[architecture], model_type=arch, tie_word_embeddings=True)
  if arch == "distilbert":
    config.update(qa_dropout=0.1, seq_classif_dropout=0.2, tie_weights_=True)
  else:
    config.update(position_embedding_type="absolute")
  if arch == "albert" and cls_id is not None:
    config.update(bos_token_id=cls_id, eos_token_id=sep_id)
  return config


# ----------------------------------- tokenizer_config.json and special_tokens_map.json

def hf_special_tokens(tokenizer: "tokenizers_lib.Tokenizer", *,
                      sentencepiece: bool = False) -> Dict[str, str]:
  """special_tokens_map.json of a lite_bert tokenizer: its pad, unk, cls, sep, mask tokens.

  With `sentencepiece`, also bos = [CLS] and eos = [SEP], as ALBERT's.
  """
  names = ("pad", "unk", "cls", "sep", "mask")
  special = {f"{n}_token": tokenizer.id_to_token(getattr(tokenizer, f"{n}_id")) for n in names}
  if sentencepiece:
    special.update(bos_token=special["cls_token"], eos_token=special["sep_token"])
  return special


def _normalizer_options(tok_json: Mapping[str, Any]) -> dict:
  """do_lower_case / strip_accents / tokenize_chinese_chars of a BertNormalizer."""
  normalizer = tok_json.get("normalizer") or {}
  stack = [normalizer]
  while stack:
    node = stack.pop()
    if node.get("type") == "BertNormalizer":
      return dict(do_lower_case=bool(node.get("lowercase", True)),
                  strip_accents=node.get("strip_accents"),
                  tokenize_chinese_chars=bool(node.get("handle_chinese_chars", True)))
    stack.extend(node.get("normalizers") or [])
  return dict(do_lower_case=False, strip_accents=None, tokenize_chinese_chars=True)


def _model_inputs(family: str) -> dict:
  """DistilBERT's forward takes no token_type_ids: its tokenizer must not make them."""
  if family == "distilbert":
    return {"model_input_names": ["input_ids", "attention_mask"]}
  return {}


def hf_wordpiece_tokenizer_config(special: Mapping[str, str], family: str, max_length: int,
                                  tokenizer_json: Mapping[str, Any]) -> dict:
  """tokenizer_config.json of a WordPiece vocabulary (BertTokenizer / DistilBertTokenizer).

  `special`: `hf_special_tokens`'s; `tokenizer_json`: the `tokenizers`
  Tokenizer's JSON, whose BertNormalizer gives do_lower_case, strip_accents
  and tokenize_chinese_chars.
  """
  cls_name = "DistilBertTokenizer" if family == "distilbert" else "BertTokenizer"
  return dict(special, tokenizer_class=cls_name, model_max_length=max_length,
              clean_up_tokenization_spaces=False, **_normalizer_options(tokenizer_json),
              **_model_inputs(family))


def hf_sentencepiece_tokenizer_config(special: Mapping[str, str], family: str,
                                      max_length: int, do_lower_case: bool) -> dict:
  """tokenizer_config.json of a sentencepiece model: AlbertTokenizer, for any family.

  AlbertTokenizer is transformers' sentencepiece tokenizer; keep_accents=True
  leaves normalization to the model itself. `special`: `hf_special_tokens(...,
  sentencepiece=True)`'s.
  """
  return dict(special, tokenizer_class="AlbertTokenizer", do_lower_case=do_lower_case,
              keep_accents=True, remove_space=True, model_max_length=max_length,
              clean_up_tokenization_spaces=False, **_model_inputs(family))
