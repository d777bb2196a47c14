"""BERT (Devlin et al., 2019): post-LN Transformer, WordPiece 30,522, MLM + NSP.

Sizes (config argument): tiny (tests, CPU demos), base, large.

Parameter summary, no weights allocated:
  python launch.py --config=configs/bert.py:base --config.mode=summary --workdir=/tmp/bert_base
  -> params_total 109,482,240 (base), 335,141,888 (large); embeddings 23,837,184 (base).
"""

from configs import common

SIZES = {
    "tiny": dict(hidden_size=128, num_layers=4, num_heads=2, intermediate_size=512,
                 vocab_size=5000),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
}


def get_config(arg: str = "base"):
  if arg not in SIZES:
    raise ValueError(f"configs/bert.py: unknown size {arg!r}; choose one of {sorted(SIZES)}")
  model = dict(
      vocab_size=30522,
      max_position_embeddings=512,
      type_vocab_size=2,
      activation="gelu",  # exact erf GELU, as in the reference
      share="none",
      pooler=True,
      dropout_rate=0.1,
      # BERT's 0.1. A recipe option: 0 (as Cramming and ModernBERT train) lets attention
      # run as one fused kernel, cuDNN's flash attention on a GPU in bf16
      # (`--config.model.attention_dropout_rate=0`).
      attention_dropout_rate=0.1,
      layer_norm_eps=1e-12,
  )
  model.update(SIZES[arg])
  config = common.base_config(f"bert-{arg}", model, pair_head=True,
                              arch="bert")

  # Pretraining recipe (Devlin et al.): AdamW 1e-4, 10k warmup, linear decay,
  # batch 256 x seq 128 for 90% of 1M steps; `tiny` is scaled down for CPU.
  config.data.pair_objective = "nsp"
  config.data.masking = "token"
  config.data.max_seq_length = 128
  config.data.max_predictions_per_seq = 20
  config.data.batch_size = 256
  config.train.num_steps = 1_000_000
  config.optim.name = "adamw"
  config.optim.learning_rate = 1e-4
  config.optim.warmup_steps = 10_000
  if arg == "tiny":
    common.scale_down_for_cpu(config)
    config.optim.learning_rate = 5e-4  # measured on WikiText: higher stalls post-LN BERT at unigram accuracy
  return config
