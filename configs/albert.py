"""ALBERT (Lan et al., 2020): factorized embeddings (E=128), one block shared by all layers, SOP.

Sizes (config argument): tiny (tests, CPU demos), base, large, xlarge, xxlarge
(the v2 models: no dropout, tanh-approximate GELU, sentencepiece vocab 30,000).

Parameter summary, no weights allocated:
  python launch.py --config=configs/albert.py:base --config.mode=summary --workdir=/tmp/albert_base
  -> params_total 11,683,584 (base), 17,683,968 (large), 58,724,864 (xlarge),
     222,595,584 (xxlarge); embeddings 4,005,120 (base: the 30,000 x 128 word table 3,840,000, positions,
     token types, LayerNorm and the 128->768 projection 99,072).
Partial sharing (ALBERT paper, Table 4): --config.model.share=attention|ffn|none.
"""

from configs import common

SIZES = {
    "tiny": dict(hidden_size=128, num_layers=4, num_heads=2, intermediate_size=512,
                 embedding_size=64, vocab_size=5000),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    "xlarge": dict(hidden_size=2048, num_layers=24, num_heads=16, intermediate_size=8192),
    "xxlarge": dict(hidden_size=4096, num_layers=12, num_heads=64, intermediate_size=16384),
}


def get_config(arg: str = "base"):
  if arg not in SIZES:
    raise ValueError(f"configs/albert.py: unknown size {arg!r}; choose one of {sorted(SIZES)}")
  model = dict(
      vocab_size=30000,
      embedding_size=128,
      max_position_embeddings=512,
      type_vocab_size=2,
      activation="gelu_new",  # tanh approximation, as google-research/albert uses
      share="all",
      pooler=True,
      dropout_rate=0.0,  # ALBERT v2 turned dropout off
      attention_dropout_rate=0.0,
      layer_norm_eps=1e-12,
  )
  model.update(SIZES[arg])
  config = common.base_config(f"albert-{arg}", model, pair_head=True,
                              arch="albert")

  # Pretraining recipe (Lan et al.): LAMB 0.00176, batch 4096, 125k steps with
  # 3,125 warmup, SOP, n-gram masking (n <= 3); `tiny` is scaled down for CPU.
  config.data.pair_objective = "sop"
  config.data.eval_documents = 1  # SOP needs no second document
  config.data.masking = "ngram"
  config.data.max_seq_length = 512
  config.data.max_predictions_per_seq = 20
  config.data.batch_size = 4096
  config.train.num_steps = 125_000
  config.optim.name = "lamb"
  config.optim.learning_rate = 0.00176
  config.optim.warmup_steps = 3_125
  if arg == "tiny":
    common.scale_down_for_cpu(config)
    config.optim.learning_rate = 5e-3  # measured on WikiText: LAMB's trust ratio needs a larger step
  return config
