"""Hugging Face `transformers` checkpoints <-> lite_bert: the one home of HF model names.

Two files, one job (nothing else in lite_bert or experiments/ spells a
transformers parameter, config or class name; `tests/test_layers.py` checks):

  params.py    the tensors: checkpoint folders and state dicts <-> the
               `PretrainingModel` params tree (names, layouts, ALBERT groups)
  configs.py   config.json <-> `EncoderConfig`, transformers class names,
               the torch references' module paths and weight-decay rules,
               tokenizer_config.json / special_tokens_map.json for export

Callers use the names below as `convert.<name>`.
"""

from lite_bert.models.convert.configs import (ARCHS, DISTILBERT_LAYER_NORM_EPS,
                                              HF_ACTIVATIONS, HF_CLASSES,
                                              HF_CONFIG_CLASSES, encoder_config_from_hf,
                                              hf_architecture, hf_checkpoint_config,
                                              hf_class_name, hf_config,
                                              hf_config_class_name, hf_derived_key,
                                              hf_no_weight_decay, hf_pretraining_modules,
                                              hf_sentencepiece_tokenizer_config,
                                              hf_special_tokens,
                                              hf_wordpiece_tokenizer_config)
from lite_bert.models.convert.params import (PARTS, fill_missing, hf_checkpoint_state_dict,
                                             hf_state_dict_from_params, load_hf_checkpoint,
                                             params_from_hf_state_dict, read_hf_state_dict)

__all__ = [
    "ARCHS", "DISTILBERT_LAYER_NORM_EPS", "HF_ACTIVATIONS", "HF_CLASSES", "HF_CONFIG_CLASSES",
    "PARTS", "encoder_config_from_hf", "fill_missing", "hf_architecture",
    "hf_checkpoint_config", "hf_checkpoint_state_dict", "hf_class_name", "hf_config",
    "hf_config_class_name", "hf_derived_key", "hf_no_weight_decay", "hf_pretraining_modules",
    "hf_sentencepiece_tokenizer_config", "hf_special_tokens", "hf_state_dict_from_params",
    "hf_wordpiece_tokenizer_config", "load_hf_checkpoint", "params_from_hf_state_dict",
    "read_hf_state_dict",
]
