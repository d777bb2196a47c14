"""Fields every run shares; the model files (bert.py, albert.py, ...) fill in the rest."""

from ml_collections import config_dict


def base_config(name: str, model: dict, *, pair_head: bool) -> config_dict.ConfigDict:
  """A ConfigDict with the job-independent sections.

  Args:
    name: a label for tables and plots, e.g. 'bert-base'.
    model: the `lite_bert.models.config.EncoderConfig` fields.
    pair_head: True for an NSP/SOP head (BERT, ALBERT), False for DistilBERT.
  """
  config = config_dict.ConfigDict()
  config.name = name
  config.mode = "summary"  # summary | tokenizer | pretrain | distill | finetune | evaluate
  config.seed = 0
  config.model = config_dict.ConfigDict(model)
  # EncoderConfig.embedding_size may be None (E = H); keep the field typed.
  config.model.embedding_size = config_dict.placeholder(int) if model.get(
      "embedding_size") is None else model["embedding_size"]
  config.pair_head = pair_head
  return config
