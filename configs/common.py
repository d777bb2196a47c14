"""Fields every run shares; the model files (bert.py, albert.py, ...) fill in the rest.

Every field has a comment; `--config.a.b=value` overrides any of them.
"""

from ml_collections import config_dict

from lite_bert.train import optim


def base_config(name: str, model: dict, *, pair_head: bool, arch: str) -> config_dict.ConfigDict:
  """A ConfigDict with the job-independent sections.

  Args:
    name: a label for tables and plots, e.g. 'bert-base'.
    model: the `lite_bert.models.config.EncoderConfig` fields.
    pair_head: True for an NSP/SOP head (BERT, ALBERT), False for DistilBERT.
    arch: 'bert', 'albert' or 'distilbert': the family, for export and reports.
  """
  config = config_dict.ConfigDict()
  config.name = name
  config.arch = arch
  config.mode = "summary"  # summary | tokenizer | pretrain | distill | finetune | evaluate
  config.seed = 0  # params init, dropout, data order and masks all derive from it
  # JAX's persistent compilation cache: a rerun, resume or second run with the same
  # shapes loads its compiled steps instead of compiling again. '' = the folder in
  # $LITE_BERT_COMPILE_CACHE, else ~/.cache/lite_bert/jax; 'off' disables it.
  config.compilation_cache = ""

  config.model = config_dict.ConfigDict(model)
  # How the layers are stored and run, not what they compute: True, one nn.scan
  # over stacked [L, ...] params (one block to compile); False, a loop over
  # separately stored layers, the faster training step on XLA:CPU (BERT-base
  # 8x128 1.17-1.27x, experiments/results/profile_train/layer_loop). Checkpoints
  # keep the run's layout; readers (`pretrained.load`) get the stacked one.
  # ALBERT's share='all' always scans.
  config.model.scan_layers = bool(model.get("scan_layers", True))
  # EncoderConfig.embedding_size may be None (E = H); keep the field typed.
  if model.get("embedding_size") is None:
    config.model.embedding_size = config_dict.placeholder(int)
  config.pair_head = pair_head  # NSP/SOP head on the pooler

  config.tokenizer = config_dict.ConfigDict()
  # A sentencepiece .model, a vocab.txt / tokenizer.json, or a folder with one.
  # Empty: train a sentencepiece unigram model of model.vocab_size pieces on
  # data.corpus into <workdir>/tokenizer on the first run.
  config.tokenizer.path = ""
  config.tokenizer.lower_case = True  # only used when training a tokenizer
  config.tokenizer.max_sentences = 300_000  # sentences sampled to train it

  config.data = config_dict.ConfigDict()
  # 'default' (embedded public-domain books), a local path (file, folder, glob;
  # plain text with blank lines between documents, WikiText raw, .xz/.gz), or
  # 'tfds:<name>[:split]'.
  config.data.corpus = "default"
  # Held-out corpus for evaluation; empty: the last `eval_documents`
  # documents of `corpus` are held out (and not trained on).
  config.data.eval_corpus = ""
  config.data.eval_documents = 2  # NSP needs 2 (a random next from another document)
  config.data.format = "auto"  # auto | plain | wikitext
  config.data.max_seq_length = 128  # tokens per example, [CLS] and [SEP]s included
  config.data.max_predictions_per_seq = 20  # masked tokens per example at most
  config.data.mask_rate = 0.15
  config.data.masking = "token"  # token | whole_word | ngram (ALBERT, n <= ngram_max)
  config.data.ngram_max = 3
  config.data.short_seq_prob = 0.1  # fraction of examples with a shorter target length
  config.data.pair_objective = "nsp" if pair_head else "none"  # nsp | sop | none
  config.data.batch_size = 32  # global batch (all hosts, all devices)
  # 0: every host tokenizes the whole corpus and keeps its rows of each batch.
  # N (pods): the corpus (and each held-out set) in N fixed shards, each host
  # reading only its N / process_count; N divides the batch, the process count
  # divides N, and the batches are the same on any process count.
  config.data.shards = 0
  config.data.eval_batches = 20  # held-out batches per evaluation (mode=evaluate: 0 = all)

  config.train = config_dict.ConfigDict()
  config.train.num_steps = 1000
  config.train.log_every = 50  # train metrics and a progress line every N steps
  config.train.eval_every = 500  # held-out evaluation every N steps (0: only at the end)
  config.train.sync_every = 10  # read metrics back at least every N steps
  config.train.on_nonfinite = "stop"  # stop | skip: what a NaN/Inf loss or gradient does
  config.train.pair_weight = 1.0  # weight of the NSP/SOP loss next to the MLM loss
  # Stop (with a checkpoint) after this step, as a preemption would; 0 = run to
  # num_steps. Rerunning without it resumes and finishes the same schedule.
  config.train.stop_after = 0

  config.pretrain = config_dict.ConfigDict()
  # mode=pretrain starts from these params instead of a random init (fresh start
  # only): a lite_bert workdir or a Hugging Face folder, whose architecture and
  # tokenizer the run takes; heads it lacks start fresh. For BERT's second
  # phase at a longer sequence length, or continued pretraining on a new corpus.
  config.pretrain.init = ""
  config.pretrain.init_step = 0  # checkpoint step of an init workdir (0: its newest)

  config.optim = optim.default_optim_config()

  config.mesh = config_dict.ConfigDict()
  config.mesh.num_devices = 0  # devices in the 'data' axis; 0 = all
  config.mesh.fsdp = False  # shard params and optimizer state over 'data' too

  config.checkpoint = config_dict.ConfigDict()
  config.checkpoint.every_steps = 500
  config.checkpoint.max_to_keep = 3
  config.checkpoint.async_save = True

  config.evaluate = config_dict.ConfigDict()
  config.evaluate.checkpoint = "latest"  # mode=evaluate: latest | a step number

  config.distributed = config_dict.ConfigDict()
  # host:port of process 0 for multi-host runs; empty = single process
  # (or set `enabled` to let jax.distributed auto-detect a cluster).
  config.distributed.coordinator_address = ""
  config.distributed.num_processes = 1
  config.distributed.process_id = 0
  config.distributed.enabled = False
  # A process silent this long counts as dead: the others stop with an error
  # (then restart the job: it resumes from the last checkpoint).
  config.distributed.heartbeat_timeout_s = 100
  return config


def scale_down_for_cpu(config: config_dict.ConfigDict) -> None:
  """The `tiny` schedule: a few hundred steps of batch 32 x 128, minutes on 2 CPU cores."""
  config.data.max_seq_length = 128
  config.data.batch_size = 32
  config.train.num_steps = 300
  config.train.log_every = 25
  config.train.eval_every = 100
  config.checkpoint.every_steps = 100
  config.optim.warmup_steps = 30
