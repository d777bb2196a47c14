"""DistilBERT (Sanh et al., 2019): BERT with half the layers, no token types, no pooler.

Sizes (config argument): tiny (tests, CPU demos; half of bert.py:tiny), base.

Parameter summary, no weights allocated:
  python launch.py --config=configs/distilbert.py:base --config.mode=summary --workdir=/tmp/distilbert_base
  -> params_total 66,362,880 (base).
"""

from configs import common

SIZES = {
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512,
                 vocab_size=8000),
    "base": dict(hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072),
}


def get_config(arg: str = "base"):
  if arg not in SIZES:
    raise ValueError(f"configs/distilbert.py: unknown size {arg!r}; choose one of {sorted(SIZES)}")
  model = dict(
      vocab_size=30522,
      max_position_embeddings=512,
      type_vocab_size=0,  # DistilBERT dropped token-type embeddings
      activation="gelu",
      share="none",
      pooler=False,
      dropout_rate=0.1,
      attention_dropout_rate=0.1,
      layer_norm_eps=1e-12,
  )
  model.update(SIZES[arg])
  config = common.base_config(f"distilbert-{arg}", model, pair_head=False)

  # Distillation recipe (Sanh et al.): batches of 4k tokens, Adam 5e-4; the
  # distill mode reads config.distill (teacher, loss weights, temperature).
  config.data.pair_objective = "none"
  config.data.masking = "token"
  config.data.max_seq_length = 128
  config.data.batch_size = 32
  config.optim.name = "adamw"
  config.optim.learning_rate = 5e-4
  if arg == "tiny":
    common.scale_down_for_cpu(config)
  return config
