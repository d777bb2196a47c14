"""DistilBERT (Sanh et al., 2019): BERT with half the layers, no token types, no pooler.

Sizes (config argument): tiny (tests, CPU demos; half of bert.py:tiny), base.

Distillation (mode=distill; the teacher is a lite_bert pretraining workdir or
a Hugging Face BERT folder; the student is this config's model, initialised
from teacher layers `distill.layers`, with the teacher's tokenizer), tiny:
  python launch.py --config=configs/bert.py:tiny --config.mode=pretrain --workdir=/tmp/bert_tiny
  python launch.py --config=configs/distilbert.py:tiny --config.mode=distill \
      --config.distill.teacher=/tmp/bert_tiny --workdir=/tmp/distilbert_tiny
The from-scratch baseline (same architecture, data and steps, MLM only):
  python launch.py --config=configs/distilbert.py:tiny --config.mode=pretrain \
      --config.tokenizer.path=/tmp/bert_tiny/tokenizer/spm.model --workdir=/tmp/distilbert_scratch

Parameter summary, no weights allocated:
  python launch.py --config=configs/distilbert.py:base --config.mode=summary --workdir=/tmp/distilbert_base
  -> params_total 66,362,880 (base).
"""

from ml_collections import config_dict

from configs import common

SIZES = {
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512,
                 vocab_size=5000),
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
  config = common.base_config(f"distilbert-{arg}", model, pair_head=False,
                              arch="distilbert")

  # Distillation recipe (Sanh et al.): batches of 4k tokens, Adam 5e-4; the
  # distill mode reads config.distill (teacher, loss weights, temperature).
  config.data.pair_objective = "none"
  config.data.masking = "token"
  config.data.max_seq_length = 128
  config.data.batch_size = 32
  config.optim.name = "adamw"
  config.optim.learning_rate = 5e-4

  config.distill = config_dict.ConfigDict()
  # The teacher: a lite_bert pretraining workdir (config.json + checkpoints/)
  # or a Hugging Face BERT folder with MLM head weights. Required.
  config.distill.teacher = ""
  config.distill.teacher_step = 0  # teacher checkpoint step (workdirs); 0 = the latest
  config.distill.init_from_teacher = True  # student = teacher layers; False = random init
  # Teacher layer for each student layer, in order, e.g.
  # --config.distill.layers=0,3; empty = spread evenly, first and last kept
  # ([0, 2, 4, 7, 9, 11] for 12 -> 6, as Hugging Face's DistilBERT script).
  config.distill.layers = ()
  # Add the teacher's token-type-0 row to the student's position table, so an
  # initialised student computes exactly the teacher's layer subset on
  # single-segment input (DistilBERT has no token types); False drops it.
  config.distill.fold_token_type = True
  config.distill.alpha_ce = 5.0  # weight of T^2 KL(teacher/T || student/T) over the vocab
  config.distill.alpha_mlm = 2.0  # weight of the student's masked-LM cross-entropy
  config.distill.alpha_cos = 1.0  # weight of 1 - cos(student, teacher last hidden state)
  config.distill.alpha_mse = 0.0  # weight of the squared logit difference (summed over vocab)
  # weight of the TinyBERT-style MSE between student layer m and teacher layer
  # m * teacher_layers / student_layers (hidden states, mean over H); needs a
  # teacher depth that is a multiple of the student's
  config.distill.alpha_hidden = 0.0
  config.distill.temperature = 2.0  # T, softens both distributions of the KL term
  config.distill.kl_on_masked_only = False  # KL/MSE at masked tokens only (else every token)
  if arg == "tiny":
    common.scale_down_for_cpu(config)
    config.optim.learning_rate = 5e-4  # measured on WikiText: higher stalls post-LN BERT at unigram accuracy
  return config
