r"""The comparative study in one command: BERT, DistilBERT (distilled from that BERT) and ALBERT.

  python -m experiments.compare --workdir=workdirs/compare_small --scale=small
  python -m experiments.compare --workdir=workdirs/compare_small --report-only

checks, side by side and in one run, the claims of "A Comparative Analysis of
DistilBERT and ALBERT" (`STUDY` below: BERT-base 110M parameters, DistilBERT
66M, ALBERT-base 12M; embeddings 23M vs 3M; DistilBERT 60% faster at 97% of
BERT's GLUE score; ALBERT not faster). Every stage is one plain command (a
`python launch.py ...` run, or the benchmark) in its own folder under
`--workdir`:

  summary_base_<model>     parameter counts at base size (`mode=summary`)
  summary_trained_<model>  the same for the models as trained at this scale
  tokenizer                one sentencepiece vocabulary for all three models
  pretrain_bert, pretrain_albert   MLM+NSP / MLM+SOP on the Gutenberg books
  distill_distilbert       DistilBERT distilled from pretrain_bert (`mode=distill`)
  eval_<corpus>_<model>    `mode=evaluate` of each: masked-LM accuracy and
                           perplexity on held-out Gutenberg books and on
                           WikiText, one masking, the same masked tokens for all
                           three (results land in the trained workdir)
  finetune_<model>_<task>  SST-2 and MRPC, dev scores (`eval_validation.json`)
  benchmark                `experiments/benchmark.py` at base size: inference
                           latency and memory over a batch x length grid

A stage whose final outputs exist is skipped; an interrupted one resumes from
its checkpoint when the command is run again (or just `--workdir=DIR`: the
settings DIR was made with; delete a stage's folder to redo it). `--stages=pretrain_albert,finetune` runs only those stages (their inputs
must exist). Each stage's command, log (`logs/<stage>.log`) and wall time
(`stages/<stage>.json`; an interrupted attempt counts until its log's last
write) are kept. Then `report.md` and its PNG plots are written from those
files alone; `--report-only` rewrites them without running anything, byte for
byte the same. `report_numbers.json` names the source of every number in
`report.md` (a JSON file and key, a folder's size on disk, a figure of the
study, or arithmetic on those); `tests/test_compare.py` checks each one.

Scales (`SCALES`): `tiny` (the configs' tiny models, 300 steps: 40 minutes
measured on 2 CPU cores shared with other jobs, less on idle ones), `small` (4 layers of 256, 3,000 steps: about four hours on 2 CPU
cores), `base` (the real BERT-base / DistilBERT / ALBERT-base, 100k steps of
256 sequences: an accelerator). The parameter counts and the benchmark are at
base size at every scale. Step counts, the corpora, the benchmark grid and the
evaluation size can be overridden (`--pretrain-steps`, `--corpus`, `--batches`,
...; the test runs `tiny` with a few steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from experiments import jobs
from experiments import provenance
from experiments.jobs import Job, shown_path, write_record
from typing import Optional

from lite_bert.files import atomic_write
from lite_bert import paths  # no jax

MODELS = ("bert", "distilbert", "albert")
TRAINED_BY = {"bert": "pretrain_bert", "distilbert": "distill_distilbert",
              "albert": "pretrain_albert"}
NAMES = {"bert": "BERT", "distilbert": "DistilBERT", "albert": "ALBERT"}
TASKS = ("sst2", "mrpc")
TASK_NAMES = {"sst2": "SST-2", "mrpc": "MRPC"}
COLORS = {"bert": "tab:blue", "distilbert": "tab:orange", "albert": "tab:green"}

# ------------------------------------------------------------------- the study
#
# What "A Comparative Analysis of DistilBERT and ALBERT" states, typed once.
# `claim` is the study's sentence ({} = `value` shown with `scale`/`fmt`);
# other numeric fields are the criteria our numbers are held to.
STUDY = {
    "bert_params": dict(claim="BERT-base has {}M parameters", value=110e6, scale=1e-6,
                        fmt=".0f", tolerance=0.05),
    "distilbert_params": dict(claim="DistilBERT has {}M parameters", value=66e6, scale=1e-6,
                              fmt=".0f", tolerance=0.05),
    "distilbert_fewer": dict(claim="DistilBERT has {}% fewer parameters than BERT", value=40,
                             scale=1, fmt=".0f", points=2),
    "albert_params": dict(claim="ALBERT-base has {}M parameters", value=12e6, scale=1e-6,
                          fmt=".0f", tolerance=0.05),
    "albert_fewer": dict(claim="ALBERT-base has {}% fewer parameters than BERT", value=89,
                         scale=1, fmt=".0f", points=2),
    "bert_embeddings": dict(claim="BERT's embeddings hold {}M parameters", value=23e6,
                            scale=1e-6, fmt=".0f", tolerance=0.05),
    "albert_embeddings": dict(claim="ALBERT's factorized embeddings hold {}M parameters",
                              value=3e6, scale=1e-6, fmt=".0f", tolerance=0.05),
    # "60% faster": the issue reads it as DistilBERT/BERT latency <= 0.6; Sanh
    # et al. (Table 3) measured 410 s vs 668 s of CPU inference (ratio 0.61).
    "distilbert_faster": dict(claim="DistilBERT is {}% faster than BERT", value=60, scale=1,
                              fmt=".0f", max_ratio=0.6, sanh_distilbert_s=410.0,
                              sanh_bert_s=668.0),
    "distilbert_glue": dict(claim="DistilBERT keeps {}% of BERT's GLUE score", value=97,
                            scale=1, fmt=".0f", min_retention=0.97),
    # Not faster: it still runs all its layers (sharing saves parameters, not FLOPs).
    "albert_not_faster": dict(claim="ALBERT is not faster than BERT: it still runs {} layers",
                              value=12, scale=1, fmt=".0f", min_ratio=0.9, max_ratio=1.1),
}

# ---------------------------------------------------------------------- scales

_SMALL_SHAPE = dict(hidden_size=256, num_heads=4, intermediate_size=1024, vocab_size=8000)
SCALES = {
    # The configs' tiny models (H=128; BERT and ALBERT 4 layers, DistilBERT 2) and
    # their CPU schedule.
    "tiny": dict(
        size="tiny", vocab_size=5000,
        model={"bert": {}, "albert": {}, "distilbert": {}},
        tokenizer_sentences=100_000, batch_size=32, max_seq_length=128,
        pretrain_steps=300, distill_steps=300,
        learning_rate={"bert": 5e-4, "albert": 5e-3, "distilbert": 5e-4},
        # Fine-tuning lr measured on SST-2 with this scale's BERT (300 steps): 1e-4
        # predicts one class (0.509), 3e-4 gives 0.645, 1e-3 0.755.
        finetune_steps={"sst2": 300, "mrpc": 114}, finetune_learning_rate=1e-3,
        finetune_batch_size=32, eval_batches=20,
        benchmark=dict(batches=(1, 8), seqs=(64, 128), quick=True, retries=0, wait_idle=0)),
    # 4 layers of 256 (ALBERT: E=128, one shared layer; DistilBERT: 2 layers),
    # 8,000-piece vocabulary, 3,000 steps of 32 x 128 each (~1.4 s a step on 2 CPU
    # cores; 400 steps left every model at the unigram plateau, MLM accuracy 0.10),
    # SST-2 400 steps, MRPC 2 epochs: about four hours on 2 CPU cores, resumable.
    "small": dict(
        size="tiny", vocab_size=8000,
        model={"bert": dict(_SMALL_SHAPE, num_layers=4),
               "albert": dict(_SMALL_SHAPE, num_layers=4, embedding_size=128),
               "distilbert": dict(_SMALL_SHAPE, num_layers=2)},
        tokenizer_sentences=200_000, batch_size=32, max_seq_length=128,
        pretrain_steps=3000, distill_steps=3000,
        learning_rate={"bert": 5e-4, "albert": 5e-3, "distilbert": 5e-4},
        finetune_steps={"sst2": 400, "mrpc": 228}, finetune_learning_rate=5e-4,
        finetune_batch_size=32, eval_batches=20,
        # 7 timed calls a point: single calls here vary by up to 20% (1 in 3 slow).
        benchmark=dict(batches=(1, 8), seqs=(64, 128, 256, 512), quick=False, retries=2,
                       wait_idle=60, repeats=7)),
    # The real sizes on an accelerator: 100k steps of 256 x 128 for each model
    # (BERT's recipe shortened; ALBERT's LAMB rate scaled by sqrt(256 / 4096)),
    # 3 epochs of fine-tuning with BERT's recipe (lr 2e-5, batch 32).
    "base": dict(
        size="base", vocab_size=30000,
        model={"bert": {"vocab_size": 30000}, "albert": {},
               "distilbert": {"vocab_size": 30000}},
        tokenizer_sentences=300_000, batch_size=256, max_seq_length=128,
        pretrain_steps=100_000, distill_steps=100_000,
        learning_rate={"bert": 1e-4, "albert": 4.4e-4, "distilbert": 5e-4},
        finetune_steps={"sst2": 6312, "mrpc": 342}, finetune_learning_rate=2e-5,
        finetune_batch_size=32, eval_batches=50,
        benchmark=dict(batches=(1, 8, 32), seqs=(128, 256, 512), quick=False, retries=0,
                       wait_idle=0)),
}


def data_path(*parts: str) -> str:
  return os.path.join(str(paths.data_dir()), *parts)


def corpus_label(spec: str) -> str:
  from lite_bert.modes import evaluate  # pylint: disable=import-outside-toplevel  # jax
  return evaluate.corpus_label(spec)


# ------------------------------------------------------------------------ plan




def finished_training(workdir: str, extra: tuple = ()) -> bool:
  """config.json names num_steps and checkpoints/<num_steps> was committed."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      steps = json.load(f)["train"]["num_steps"]
  except (OSError, ValueError, KeyError):
    return False
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(steps))) and all(
      os.path.exists(os.path.join(workdir, e)) for e in extra)


def settings_of(args) -> dict:
  """Everything that decides the stages' commands (stored in run.json, compared on reruns)."""
  scale = SCALES[args.scale]
  bench = scale["benchmark"]
  return dict(
      scale=args.scale,
      corpus=args.corpus or data_path("gutenberg", "gutenberg_train.txt.xz"),
      eval_corpus=args.eval_corpus or data_path("gutenberg", "gutenberg_valid.txt.xz"),
      wikitext=args.wikitext or data_path("wikitext", "wikitext-2-raw", "wiki.valid.raw"),
      pretrain_steps=args.pretrain_steps or scale["pretrain_steps"],
      distill_steps=args.distill_steps or scale["distill_steps"],
      finetune_steps={t: args.finetune_steps or scale["finetune_steps"][t] for t in TASKS},
      finetune_pad_multiple=args.finetune_pad_multiple,
      eval_batches=args.eval_batches or scale["eval_batches"],
      tokenizer_sentences=args.tokenizer_sentences or scale["tokenizer_sentences"],
      batches=[int(b) for b in args.batches.split(",")] if args.batches else list(
          bench["batches"]),
      seqs=[int(s) for s in args.seqs.split(",")] if args.seqs else list(bench["seqs"]),
      bench_size=args.bench_size)


def schedule(steps: int) -> dict:
  """Logging, evaluation, checkpoint and warmup intervals for a run of `steps` steps."""
  return dict(log_every=max(1, min(steps // 30, 1000)), eval_every=max(1, steps // 6),
              checkpoint_every=max(1, min(steps // 12, 5000)), warmup=max(1, steps // 10))


def make_plan(root: str, s: dict) -> list:
  """The stages of a comparison in `root` with the settings `s`, in run order."""
  scale = SCALES[s["scale"]]
  py = sys.executable
  stages = []
  w = lambda name: os.path.join(root, name)
  launch = lambda config, workdir, *extra: [py, "launch.py", f"--config={config}",
                                            f"--workdir={shown_path(workdir)}", *extra]

  def model_flags(m):
    return [f"--config.model.{k}={v}" for k, v in sorted(scale["model"][m].items())]

  for m in MODELS:
    d = w(f"summary_base_{m}")
    stages.append(Job(f"summary_base_{m}", "summary",
                      launch(f"configs/{m}.py:base", d, "--config.mode=summary"), d,
                      lambda d=d: os.path.exists(os.path.join(d, "summary.json"))))
  for m in MODELS:  # the models as trained at this scale
    d = w(f"summary_trained_{m}")
    stages.append(Job(f"summary_trained_{m}", "summary",
                      launch(f"configs/{m}.py:{scale['size']}", d, "--config.mode=summary",
                             *model_flags(m)), d,
                      lambda d=d: os.path.exists(os.path.join(d, "summary.json"))))

  def corpus_flag(spec):
    return shown_path(spec) if os.path.exists(spec) else spec

  tok = w("tokenizer")
  spm = os.path.join(tok, "tokenizer", "spm.model")
  stages.append(Job("tokenizer", "tokenizer", launch(
      "configs/tokenizer.py", tok, f"--config.data.corpus={corpus_flag(s['corpus'])}",
      f"--config.tokenizer.vocab_size={scale['vocab_size']}",
      f"--config.tokenizer.max_sentences={s['tokenizer_sentences']}"), tok,
      lambda: os.path.exists(spm)))

  def training_flags(m, steps):
    sch = schedule(steps)
    return [f"--config.data.corpus={corpus_flag(s['corpus'])}",
            f"--config.data.eval_corpus={corpus_flag(s['eval_corpus'])}",
            f"--config.data.eval_batches={s['eval_batches']}",
            f"--config.data.batch_size={scale['batch_size']}",
            f"--config.data.max_seq_length={scale['max_seq_length']}",
            f"--config.train.num_steps={steps}",
            f"--config.train.log_every={sch['log_every']}",
            f"--config.train.eval_every={sch['eval_every']}",
            f"--config.checkpoint.every_steps={sch['checkpoint_every']}",
            f"--config.optim.learning_rate={scale['learning_rate'][m]}",
            f"--config.optim.warmup_steps={sch['warmup']}"] + model_flags(m)

  for m in ("bert", "albert"):
    d = w(f"pretrain_{m}")
    stages.append(Job(f"pretrain_{m}", "pretrain", launch(
        f"configs/{m}.py:{scale['size']}", d, "--config.mode=pretrain",
        f"--config.tokenizer.path={spm}", *training_flags(m, s["pretrain_steps"])),
        d, lambda d=d: finished_training(d), needs=("tokenizer",)))
  d = w("distill_distilbert")
  stages.append(Job("distill_distilbert", "distill", launch(
      f"configs/distilbert.py:{scale['size']}", d, "--config.mode=distill",
      f"--config.distill.teacher={w('pretrain_bert')}",
      *training_flags("distilbert", s["distill_steps"])),
      d, lambda d=d: finished_training(d), needs=("pretrain_bert",)))

  for label, corpus in (("heldout", s["eval_corpus"]), ("wikitext", s["wikitext"])):
    for m in MODELS:
      trained = w(TRAINED_BY[m])
      result = os.path.join(trained, f"evaluate_mlm_{corpus_label(corpus)}.json")
      stages.append(Job(f"eval_{label}_{m}", "evaluate", launch(
          f"configs/{m}.py:{scale['size']}", trained, "--config.mode=evaluate",
          f"--config.data.eval_corpus={corpus_flag(corpus)}", "--config.data.masking=token",
          f"--config.data.eval_batches={s['eval_batches']}"), trained,
          lambda r=result: os.path.exists(r), needs=(TRAINED_BY[m],)))

  for m in MODELS:
    for task in TASKS:
      d = w(f"finetune_{m}_{task}")
      steps = s["finetune_steps"][task]
      stages.append(Job(f"finetune_{m}_{task}", "finetune", launch(
          f"configs/finetune.py:{task},{m}:{scale['size']}", d,
          f"--config.finetune.init={w(TRAINED_BY[m])}",
          "--config.finetune.epochs=0", f"--config.train.num_steps={steps}",
          f"--config.train.eval_every={steps}",
          f"--config.train.log_every={max(1, min(steps // 20, 500))}",
          f"--config.checkpoint.every_steps={max(1, min(steps, 2000))}",
          f"--config.data.batch_size={scale['finetune_batch_size']}",
          f"--config.optim.learning_rate={scale['finetune_learning_rate']}",
          "--config.optim.warmup_steps=-1", "--config.optim.warmup_fraction=0.1",
          *([f"--config.finetune.pad_multiple={s['finetune_pad_multiple']}"]
            if s.get("finetune_pad_multiple") else [])), d,
          lambda d=d: finished_training(d, ("eval_validation.json",)),
          needs=(TRAINED_BY[m],)))

  bench = SCALES[s["scale"]]["benchmark"]
  d = w("benchmark")
  argv = [py, "-m", "experiments.benchmark", f"--out={shown_path(d)}",
          f"--size={s['bench_size']}", "--no-reference", "--skip-training", "--resume",
          f"--batches={','.join(map(str, s['batches']))}",
          f"--seqs={','.join(map(str, s['seqs']))}"]
  if bench["quick"]:
    argv.append("--quick")
  if bench["retries"]:
    argv.append(f"--retries={bench['retries']}")
  if bench.get("repeats"):
    argv.append(f"--repeats={bench['repeats']}")
  if bench["wait_idle"]:
    argv.append(f"--wait-idle={bench['wait_idle']}")
  stages.append(Job("benchmark", "benchmark", argv, d,
                    lambda d=d: os.path.exists(os.path.join(d, "benchmark.json"))))
  return stages


# ---------------------------------------------------------------------- running


def run_all(args, root: str) -> None:
  """Runs the stages of the comparison in `root` that are not done (or those of --stages)."""
  run_path = os.path.join(root, "run.json")
  run = jobs.read_json(run_path) if os.path.exists(run_path) else None
  if args.scale is None:
    if run is None:
      raise SystemExit(f"error: --scale is required: {root} holds no comparison to resume")
    settings = run["settings"]  # resume with the settings the folder was made with
  else:
    settings = settings_of(args)
  if run is not None and run["settings"] != settings:
    changed = sorted(k for k in settings if run["settings"].get(k) != settings[k])
    raise SystemExit(f"error: {root} holds a comparison made with other settings ({changed} "
                     f"differ; it has --scale={run['settings']['scale']}); rerun it with the same "
                     f"flags, or use another --workdir")
  stages = make_plan(root, settings)
  chosen = jobs.select(stages, args.stages)
  todo, skipped = jobs.pending(chosen)
  jobs.check_needs(todo, stages)
  command = "python -m experiments.compare " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  run = run or {"settings": settings, "invocations": []}
  if todo:
    run["invocations"].append({"date": jobs.now_iso(), "command": command,
                               "git": provenance.git_info(), "machine": provenance.machine(),
                               "stages": [s.name for s in todo]})
    jobs.write_record(run_path, run)
  elif not os.path.exists(run_path):
    jobs.write_record(run_path, run)
  if skipped:
    print(f"done already (delete a stage's folder to redo it): {', '.join(skipped)}")
  for stage in chosen:
    path = jobs.record_path(root, stage.name)
    if (stage not in todo and os.path.exists(path)
        and jobs.read_json(path)["command"] != stage.command):
      print(f"warning: {stage.name} was run with another command than this version plans; "
            f"delete {jobs.shown_path(stage.workdir)} to redo it", flush=True)
  jobs.run_stages(todo, root, echo=args.echo)


# ------------------------------------------------------------------------ main


# ---------------------------------------------------------------------- numbers


class Num:
  """A number and where it comes from (a source spec `tests/test_compare.py` resolves)."""

  __slots__ = ("value", "src")

  def __init__(self, value, src: dict):
    self.value, self.src = value, src

  @staticmethod
  def of(x) -> "Num":
    return x if isinstance(x, Num) else Num(x, {"const": x})

  def _op(self, op, other, fn):
    other = Num.of(other)
    return Num(fn(self.value, other.value), {"op": op, "args": [self.src, other.src]})

  def __truediv__(self, other):
    return self._op("div", other, lambda a, b: a / b)

  def __mul__(self, other):
    return self._op("mul", other, lambda a, b: a * b)

  def __sub__(self, other):
    return self._op("sub", other, lambda a, b: a - b)

  def __rsub__(self, other):
    return Num.of(other)._op("sub", self, lambda a, b: a - b)

  def __add__(self, other):
    return self._op("add", other, lambda a, b: a + b)

  def __abs__(self):
    return Num(abs(self.value), {"op": "abs", "args": [self.src]})


def reduce_nums(op: str, nums: list) -> Num:
  values = [n.value for n in nums]
  fn = {"mean": lambda v: sum(v) / len(v), "min": min, "max": max, "sum": sum}[op]
  return Num(fn(values), {"op": op, "args": [n.src for n in nums]})


def select_item(items: list, match: dict):
  found = [x for x in items if all(x.get(k) == v for k, v in match.items())]
  if len(found) != 1:
    raise KeyError(f"{len(found)} items match {match}")
  return found[0]


class Sources:
  """Reads the workdirs' files; every value comes back as a `Num` with its source."""

  def __init__(self, root: str):
    self.root = root
    self._cache: dict = {}

  def path(self, rel: str) -> str:
    return os.path.join(self.root, rel)

  def exists(self, rel: str) -> bool:
    return os.path.exists(self.path(rel))

  def load(self, rel: str):
    if rel not in self._cache:
      with open(self.path(rel)) as f:
        self._cache[rel] = ([json.loads(l) for l in f if l.strip()] if rel.endswith(".jsonl")
                            else json.load(f))
    return self._cache[rel]

  def raw(self, rel: str, *keys):
    value = self.load(rel)
    for key in keys:
      value = select_item(value, key) if isinstance(key, dict) else value[key]
    return value

  def get(self, rel: str, *keys) -> Optional[Num]:
    """The number at `keys` in file `rel`, or None when the file / key / value is missing."""
    try:
      value = self.raw(rel, *keys)
    except (OSError, KeyError, IndexError, TypeError, ValueError):
      return None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
      return None
    return Num(value, {"file": rel, "key": list(keys)})

  def dir_bytes(self, rel: str) -> Optional[Num]:
    top = self.path(rel)
    if not os.path.isdir(top):  # a published copy: the sizes measured before publishing
      return self.get(SIZES_FILE, "bytes", rel)
    total = 0
    for folder, _, files in os.walk(top):
      total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return Num(total, {"dir_bytes": rel})


SIZES_FILE = "sizes.json"  # written by `publish`: the folders it leaves behind, in bytes
ACCURACY_FILE = "accuracy_stats.json"  # written by `report`: intervals and majority baselines


def finetune_runs(root: str, task: str) -> dict:
  """{model: [(seed, folder)]} of the fine-tuning stages with dev predictions."""
  return {m: [(0, f"finetune_{m}_{task}")] for m in MODELS
          if os.path.exists(os.path.join(root, f"finetune_{m}_{task}",
                                         "predictions_validation.tsv"))}


def write_accuracy_stats(root: str) -> None:
  """ACCURACY_FILE: each task's majority-class score and, when every model's dev
  predictions are there, `accuracy_stats.analyse` against BERT (intervals, verdicts)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from experiments import accuracy_stats  # pylint: disable=import-outside-toplevel
  if not all(os.path.exists(os.path.join(root, f"finetune_{m}_{t}", "eval_validation.json"))
             for m in MODELS for t in TASKS):
    return
  if all(len(finetune_runs(root, t)) == len(MODELS) for t in TASKS):
    data = accuracy_stats.collect(root, list(TASKS), lambda t: finetune_runs(root, t))
    numbers = accuracy_stats.analyse(data, reference="bert", control="", order=MODELS)
    numbers["intervals"] = True
  else:  # runs published before their predictions were: no interval can be drawn
    numbers = {"intervals": False, "tasks": {}}
    for t in TASKS:
      data = accuracy_stats.task_data(t)
      majority = np.full_like(data["labels"], data["majority"])
      numbers["tasks"][t] = {"majority_score": accuracy_stats.task_score(
          data["spec"], majority, data["labels"])}
  write_record(os.path.join(root, ACCURACY_FILE), numbers)


def study(key: str, field: str = "value") -> Num:
  return Num(STUDY[key][field], {"study": key, "field": field})


class Ledger:
  """Formats numbers for the report and records each with its source."""

  def __init__(self):
    self.items: list = []

  def __call__(self, num: Optional[Num], fmt: str, scale: float = 1, missing: str = "n/a"
               ) -> str:
    if num is None:
      return missing
    text = format(num.value * scale, fmt)
    self.items.append({"text": text, "fmt": fmt, "scale": scale, "source": num.src})
    return text

  def study_claim(self, key: str) -> str:
    entry = STUDY[key]
    return entry["claim"].format(self(study(key), entry["fmt"], entry["scale"]))


def ms_fmt(seconds: float) -> str:
  ms = seconds * 1e3
  return ".1f" if ms >= 10 else ".2f" if ms >= 1 else ".3f"


# ---------------------------------------------------------------------- report


def md_table(header: list, rows: list) -> list:
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
          ["| " + " | ".join(row) + " |" for row in rows] + [""])


def code(text) -> str:
  return "`" + str(text).replace("`", "'") + "`"


class Report:
  """Everything `report.md` shows, read from the stage folders."""

  def __init__(self, root: str):
    self.root = root
    self.src = Sources(root)
    self.n = Ledger()
    self.run = self.src.raw("run.json") if self.src.exists("run.json") else {
        "settings": {}, "invocations": []}
    self.settings = self.run["settings"]
    self.scale = self.settings.get("scale", "?")

  # ---- helpers

  def summary(self, which: str, m: str, key: str) -> Optional[Num]:
    return self.src.get(f"summary_{which}_{m}/summary.json", key)

  def trained(self, m: str) -> str:
    return TRAINED_BY[m]

  def final_step(self, stage: str) -> Optional[Num]:
    return self.src.get(f"{stage}/config.json", "train", "num_steps")

  def dev(self, m: str, task: str, metric: str) -> Optional[Num]:
    return self.src.get(f"finetune_{m}_{task}/eval_validation.json", metric)

  def task_score(self, m: str, task: str) -> Optional[Num]:
    """GLUE's score of a task: SST-2 accuracy; MRPC the mean of accuracy and F1."""
    if task == "mrpc":
      acc, f1 = self.dev(m, task, "accuracy"), self.dev(m, task, "f1")
      return None if acc is None or f1 is None else reduce_nums("mean", [acc, f1])
    return self.dev(m, task, "accuracy")

  def one_class(self, m: str, task: str) -> bool:
    """Whether the fine-tuned model predicts the same label for every dev example."""
    path = self.src.path(f"finetune_{m}_{task}/predictions_validation.tsv")
    if not os.path.exists(path):
      return False
    with open(path) as f:
      return len({line.rstrip("\n").split("\t")[-1] for line in list(f)[1:]}) == 1

  def glue_score(self, m: str) -> Optional[Num]:
    scores = [self.task_score(m, t) for t in TASKS]
    return None if None in scores else reduce_nums("mean", scores)

  def bench_rows(self) -> list:
    if not self.src.exists("benchmark/benchmark.json"):
      return []
    rows = self.src.raw("benchmark/benchmark.json", "inference")
    return sorted({(r["batch"], r["seq"]) for r in rows if r["impl"] == "ours"},
                  key=lambda p: (p[0], p[1]))

  def latency(self, m: str, b: int, s: int) -> Optional[Num]:
    return self.src.get("benchmark/benchmark.json", "inference",
                        {"model": m, "impl": "ours", "batch": b, "seq": s}, "median_s")

  def ratio(self, m: str, b: int, s: int, field: str = "latency_ratio") -> Optional[Num]:
    return self.src.get("benchmark/benchmark.json", "ratios", "model_vs_bert",
                        {"model": m, "impl": "ours", "batch": b, "seq": s}, field)

  def wall(self, stage: str) -> Optional[Num]:
    return self.src.get(f"stages/{stage}.json", "wall_s")

  # ---- sections

  def header(self) -> list:
    lines = [f"# BERT, DistilBERT and ALBERT side by side (scale {code(self.scale)})", "",
             "Written by " + code("python -m experiments.compare") + " from the stage folders "
             "of " + code(shown_path(self.root)) + " (" + code("--report-only") +
             " rewrites it without running anything). Every number below comes from a file of "
             "those folders (" + code("report_numbers.json") + " names it) or from the study.",
             ""]
    invocations = self.run["invocations"]
    for i, inv in enumerate(invocations):
      git = inv["git"]
      # A stage redone by a later run (its folder deleted) no longer feeds the report.
      later = {s for other in invocations[i + 1:] for s in other.get("stages", [])}
      ran = inv.get("stages", [])
      kept = [s for s in ran if s not in later]
      names = lambda stage_names: ", ".join(code(s) for s in stage_names)
      stages = (f"; stages: {names(kept) or 'none kept'}"
                + (f" (redone later: {names(s for s in ran if s in later)})"
                   if len(kept) < len(ran) else "")) if ran else ""
      lines.append(f"- run {code(inv['date'])}: commit {code(git['commit'][:12])}"
                   f"{' (uncommitted changes)' if git['dirty'] else ''}, machine "
                   f"{code(inv['machine']['cpu'])} with {code(inv['machine']['cpu_count'])} "
                   f"CPU cores ({code(inv['machine']['platform'])}), command "
                   f"{code(inv['command'])}{stages}")
    if self.src.exists("benchmark/benchmark.json"):
      meta = self.src.raw("benchmark/benchmark.json", "meta")
      lines.append(f"- benchmark device: {code(meta['device_kind'])} ({code(meta['platform'])}), "
                   f"dtype {code(meta['dtype'])}, jax {code(meta['jax'])}")
    return lines + [""]

  def claims(self) -> list:
    n = self.n
    rows = []

    def counts(key, m, field="params_total", which="base"):
      ours = self.summary(which, m, field)
      claim = study(key)
      if ours is None:
        return [n.study_claim(key), "n/a", "not measured yet"]
      rel = abs(ours - claim) / claim
      tol = study(key, "tolerance")
      agrees = rel.value <= tol.value
      verdict = (f"{'agrees' if agrees else 'disagrees'}: ours differs by {n(rel, '.1f', 100)}%, "
                 f"{'within' if agrees else 'more than'} the {n(tol, '.0f', 100)}% a figure "
                 f"rounded to millions allows")
      return [n.study_claim(key), f"{n(ours, '.2f', 1e-6)}M", verdict]

    def fewer(key, m):
      ours_m, bert = self.summary("base", m, "params_total"), self.summary(
          "base", "bert", "params_total")
      if ours_m is None or bert is None:
        return [n.study_claim(key), "n/a", "not measured yet"]
      fewer_pct = (1 - ours_m / bert) * 100
      diff = abs(fewer_pct - study(key))
      agrees = diff.value <= STUDY[key]["points"]
      layers_m = self.src.get(f"summary_base_{m}/summary.json", "model", "num_layers")
      why = (f"{NAMES[m]} keeps {n(layers_m, '.0f')} layers of BERT's "
             f"{n(self.src.get('summary_base_bert/summary.json', 'model', 'num_layers'), '.0f')}"
             " and all of its embeddings" if m == "distilbert" else
             "one set of layer weights shared by all layers, and factorized embeddings")
      verdict = (f"{'agrees' if agrees else 'disagrees'}: ours {n(fewer_pct, '.1f')}% fewer, "
                 f"{n(diff, '.1f')} points from the study ({why})")
      return [n.study_claim(key), f"{n(fewer_pct, '.1f')}% fewer", verdict]

    rows.append(counts("bert_params", "bert"))
    rows.append(counts("distilbert_params", "distilbert"))
    rows.append(fewer("distilbert_fewer", "distilbert"))
    rows.append(counts("albert_params", "albert"))
    rows.append(fewer("albert_fewer", "albert"))
    rows.append(counts("bert_embeddings", "bert", "params_embeddings"))
    row = counts("albert_embeddings", "albert", "params_embeddings")
    vocab = self.src.get("summary_base_albert/summary.json", "model", "vocab_size")
    emb = self.src.get("summary_base_albert/summary.json", "model", "embedding_size")
    total = self.summary("base", "albert", "params_embeddings")
    if (vocab is not None and emb is not None and total is not None
        and vocab.value * emb.value > STUDY["albert_embeddings"]["value"]):
      word = vocab * emb
      rest = total - word
      row[2] += (f". The word table alone is V x E = {n(vocab, ',.0f')} x {n(emb, '.0f')} = "
                 f"{n(word, '.2f', 1e-6)}M, more than the study's figure; positions, token "
                 f"types, LayerNorm and the E-to-H projection add {n(rest, '.2f', 1e-6)}M, so "
                 f"the study rounds down or counts only part of the table")
    rows.append(row)
    rows.append(self.speed_claim("distilbert_faster", "distilbert"))
    rows.append(self.glue_claim())
    rows.append(self.speed_claim("albert_not_faster", "albert"))
    return (["## The study says / we measured", ""] +
            md_table(["the study says", "we measured", "verdict"], rows))

  def speed_claim(self, key: str, m: str) -> list:
    n = self.n
    points = self.bench_rows()
    ratios = [(b, s, self.ratio(m, b, s)) for b, s in points]
    ratios = [(b, s, r) for b, s, r in ratios if r is not None]
    if not ratios:
      return [n.study_claim(key), "n/a", "not measured yet"]
    flops = [self.ratio(m, b, s, "flop_ratio") for b, s, _ in ratios]
    def span(nums):
      lo, hi = reduce_nums("min", nums), reduce_nums("max", nums)
      if format(lo.value, ".2f") == format(hi.value, ".2f"):
        return n(lo, ".2f")
      return f"{n(lo, '.2f')}–{n(hi, '.2f')}"
    size = self.settings.get("bench_size", "base")
    if key == "distilbert_faster":
      limit = study(key, "max_ratio")
      bad = [(b, s, r) for b, s, r in ratios if r.value > limit.value]
      crit = f"latency ratio to BERT at most {n(limit, '.1f')}"
      sanh = (f"Sanh et al. measured {n(study(key, 'sanh_distilbert_s'), '.0f')} s vs "
              f"{n(study(key, 'sanh_bert_s'), '.0f')} s, a ratio of "
              f"{n(study(key, 'sanh_distilbert_s') / study(key, 'sanh_bert_s'), '.2f')}")
      why = f"it runs half of BERT's layers, so its FLOP ratio is {span(flops)}; {sanh}"
    else:
      low, high = study(key, "min_ratio"), study(key, "max_ratio")
      bad = [(b, s, r) for b, s, r in ratios if not low.value <= r.value <= high.value]
      crit = f"latency ratio to BERT within {n(low, '.1f')}–{n(high, '.1f')}"
      layers = self.src.get(f"summary_{size}_albert/summary.json", "model", "num_layers")
      why = (f"sharing removes parameters, not computation: it runs "
             f"{n(layers, '.0f')} layers like BERT, FLOP ratio {span(flops)}")
      faster = [(b, s) for b, s, r in bad if r.value < low.value]
      albert_w = self.src.get(f"summary_{size}_albert/summary.json", "params_layers")
      bert_w = self.src.get(f"summary_{size}_bert/summary.json", "params_layers")
      scanned = self.src.raw("benchmark/benchmark.json", "meta").get(
          "inference_layout", "scanned") == "scanned"
      if faster and scanned and albert_w is not None and bert_w is not None:
        why += (f"; where it is faster ({', '.join(f'{b}x{s}' for b, s in faster)}) a "
                f"forward does little arithmetic per weight, and BERT's scanned layer stack "
                f"first copies each layer's weights out of the stacked arrays "
                f"({n(bert_w * 4, '.0f', 1e-6)} MB per forward in fp32: the compiled XLA:CPU "
                f"code runs a dynamic-slice fusion before every GEMM), while ALBERT's one "
                f"shared layer ({n(albert_w * 4, '.0f', 1e-6)} MB) is read in place")
    measured = span([r for _, _, r in ratios])
    if not bad:
      verdict = f"agrees: {crit} at every point of the grid, at {size} size ({why})"
    elif len(bad) < len(ratios):
      verdict = (f"partly agrees: {crit} except at " +
                 ", ".join(f"{b}x{s} ({n(r, '.2f')})" for b, s, r in bad) + f" ({why})")
    else:
      verdict = f"disagrees: no point of the grid meets the {crit} ({why})"
    return [n.study_claim(key), f"latency ratio {measured}", verdict]

  def glue_claim(self) -> list:
    """97%: DistilBERT's macro dev score over BERT's, with its interval and the majority class."""
    n = self.n
    key = "distilbert_glue"
    if not self.src.exists(ACCURACY_FILE):
      return [n.study_claim(key), "n/a", "not measured yet"]
    stats = self.src.raw(ACCURACY_FILE)
    get = lambda *keys: self.src.get(ACCURACY_FILE, *keys)
    steps = self.final_step("pretrain_bert")
    names = " + ".join(TASK_NAMES[t] for t in TASKS)
    majority = "; ".join(f"{TASK_NAMES[t]} {n(get('tasks', t, 'majority_score'), '.1f', 100)}"
                         for t in TASKS)
    scale_note = (f"At scale {code(self.scale)}, after {n(steps, ',.0f')} pretraining steps, "
                  f"one seed a model; the study's figure is for BERT-base pretrained to "
                  f"convergence, on all of GLUE")
    confidence = lambda: n(Num.of(0.95), ".0f", 100)  # each use is a number of the text
    if not stats["intervals"]:
      scores = "; ".join(f"{NAMES[m]} " + ", ".join(
          f"{TASK_NAMES[t]} {n(self.task_score(m, t), '.1f', 100)}" for t in TASKS)
          for m in ("bert", "distilbert"))
      return [n.study_claim(key), "n/a",
              f"inconclusive: the fine-tuning runs' per-example dev predictions were not kept, "
              f"so no interval can be drawn. Scores: {scores}; the majority class scores "
              f"{majority} (GLUE score, %). {scale_note}"]
    retention = get("variants", "distilbert", "retention")
    ci = lambda: (f"{confidence()}% CI "
                  f"{n(get('variants', 'distilbert', 'retention_ci', 0), '.1f', 100)} to "
                  f"{n(get('variants', 'distilbert', 'retention_ci', 1), '.1f', 100)}%")

    def points(num):  # a signed difference in words (the report's numbers carry no sign)
      side = "below" if num.value < 0 else "above"
      return f"{n(abs(num), '.1f', 100)} points {side}"

    below = [f"{NAMES[m]} on {TASK_NAMES[t]} scores "
             f"{n(get('tasks', t, 'variants', m, 'mean'), '.1f', 100)}, its {confidence()}% CI "
             f"from {points(get('tasks', t, 'variants', m, 'minus_majority_ci', 0))} to "
             f"{points(get('tasks', t, 'variants', m, 'minus_majority_ci', 1))} the majority"
             for m in ("bert", "distilbert") for t in TASKS
             if stats["tasks"][t]["variants"][m]["vs_majority"] != "above"]
    word = stats["variants"]["distilbert"]["retention_verdict"]
    why = (f"not above the majority class: {'; '.join(below)}" if below else
           f"the interval {'lies at or above' if word == 'agrees' else 'lies below' if word == 'disagrees' else 'straddles'} "
           f"the study's figure less its rounding")
    verdict = (f"{word}: ours keeps {n(retention, '.1f', 100)}% ({ci()}) of BERT's {names} "
               f"score; {why}. Majority class: {majority} (GLUE score, %). {scale_note}")
    measured = f"{n(retention, '.1f', 100)}% of BERT's score ({ci()})"
    return [n.study_claim(key), measured, verdict]

  def parameters(self) -> list:
    n = self.n
    rows = []
    for m in MODELS:
      g = lambda k, m=m: self.summary("base", m, k)
      bert = self.summary("base", "bert", "params_total")
      total = g("params_total")
      fewer = None if total is None or bert is None else (1 - total / bert)
      heads = g("params_with_heads")
      rows.append([NAMES[m], n(total, ",.0f"), n(g("params_embeddings"), ",.0f"),
                   n(g("params_layers"), ",.0f"), n(g("params_pooler"), ",.0f"),
                   n(heads, ",.0f"), n(fewer, ".1f", 100),
                   n(None if heads is None else heads * 4, ".0f", 1e-6)])
    return (["## Parameters at base size", "",
             "From " + code("mode=summary") + " on " + code("configs/<model>.py:base") +
             " (" + code("summary_base_<model>/summary.json") + "): total = embeddings + "
             "encoder layers + pooler, as the papers count; the pretraining heads come on top.",
             ""] +
            md_table(["model", "total", "embeddings", "encoder layers", "pooler",
                      "with pretraining heads", "fewer than BERT (%)",
                      "fp32 weights with heads (MB)"], rows))

  def models_at_scale(self) -> list:
    n = self.n
    rows = []
    for m in MODELS:
      stage = self.trained(m)
      cfg = lambda *k, stage=stage: self.src.get(f"{stage}/config.json", *k)
      summ = lambda k, m=m: self.summary("trained", m, k)
      emb = cfg("model", "embedding_size")
      rows.append([NAMES[m], code(stage), n(cfg("model", "num_layers"), ".0f"),
                   n(cfg("model", "hidden_size"), ".0f"),
                   n(emb, ".0f") if emb is not None else "= hidden",
                   n(cfg("model", "vocab_size"), ",.0f"), n(summ("params_total"), ",.0f"),
                   n(cfg("train", "num_steps"), ",.0f"), n(cfg("data", "batch_size"), ".0f"),
                   n(cfg("data", "max_seq_length"), ".0f"),
                   code(self.src.raw(f"{stage}/config.json", "optim", "name"))
                   if self.src.exists(f"{stage}/config.json") else "n/a",
                   n(cfg("optim", "learning_rate"), ".5f")])
    lines = ["## Training at this scale", "",
             f"The three models trained at scale {code(self.scale)}, on the corpus "
             f"{code(self.settings.get('corpus', '?'))}, with one shared sentencepiece "
             f"vocabulary ({code('tokenizer/')}); DistilBERT is distilled from the BERT above "
             f"(teacher layers spread evenly, student initialised from them).", ""]
    lines += md_table(["model", "stage", "layers", "hidden", "embedding", "vocabulary",
                       "parameters", "steps", "batch", "sequence length", "optimizer",
                       "learning rate"], rows)
    # Held-out masked LM: the in-training evaluation, then one masking for all three.
    held = corpus_label(self.settings.get("eval_corpus", "")) if self.settings else "?"
    wiki = corpus_label(self.settings.get("wikitext", "")) if self.settings else "?"
    rows = []
    for m in MODELS:
      stage = self.trained(m)
      steps = self.final_step(stage)
      metrics = f"{stage}/metrics.jsonl"
      train_loss = last_eval = None
      if steps is not None and self.src.exists(metrics):
        train_loss = self.src.get(metrics, {"split": "train", "step": steps.value}, "loss")
        last_eval = self.src.get(metrics, {"split": "eval", "step": steps.value}, "mlm_accuracy")
      ev = lambda label, k, stage=stage: self.src.get(
          f"{stage}/evaluate_mlm_{label}.json", k)
      rows.append([NAMES[m], n(train_loss, ".3f"), n(last_eval, ".4f"),
                   n(ev(held, "mlm_accuracy"), ".4f"), n(ev(held, "mlm_perplexity"), ".1f"),
                   n(ev(wiki, "mlm_accuracy"), ".4f"), n(ev(wiki, "mlm_perplexity"), ".1f")])
    tokens = self.src.get(f"pretrain_bert/evaluate_mlm_{wiki}.json", "masked_tokens")
    tokens_held = self.src.get(f"pretrain_bert/evaluate_mlm_{held}.json", "masked_tokens")
    lines += [f"Held-out masked LM. 'In training' is the run's own last evaluation on "
              f"{code(held)} with its own masking (ALBERT: n-gram, the others: single tokens). "
              f"The other columns come from {code('mode=evaluate')} on the final checkpoints, "
              f"single-token masking and the same masked tokens for all three "
              f"({n(tokens_held, ',.0f')} on {code(held)}, {n(tokens, ',.0f')} on "
              f"{code(wiki)}).", ""]
    lines += md_table(["model", "final training loss (own objective)", "in training: MLM accuracy",
                       f"{held}: MLM accuracy", f"{held}: perplexity", f"{wiki}: MLM accuracy",
                       f"{wiki}: perplexity"], rows)
    distil = "distill_distilbert/metrics.jsonl"
    steps = self.final_step("distill_distilbert")
    if steps is not None and self.src.exists(distil):
      g = lambda k: self.src.get(distil, {"split": "eval", "step": steps.value}, k)
      lines += [f"Distillation, last evaluation on {code(held)} (its own batches): student "
                f"MLM accuracy {n(g('mlm_accuracy'), '.4f')} (loss {n(g('mlm_loss'), '.3f')}) "
                f"vs the teacher's {n(g('teacher_mlm_accuracy'), '.4f')} (loss "
                f"{n(g('teacher_mlm_loss'), '.3f')}); KL to the teacher "
                f"{n(g('kl'), '.3f')}, cosine loss {n(g('cosine_loss'), '.3f')}.", ""]
    return lines

  def disk(self) -> list:
    n = self.n
    rows = []
    for m in MODELS:
      stage = self.trained(m)
      steps = self.final_step(stage)
      ckpt = None if steps is None else self.src.dir_bytes(
          f"{stage}/checkpoints/{steps.value}")
      rows.append([NAMES[m], n(ckpt, ".2f", 2**-20),
                   n(self.src.dir_bytes(f"finetune_{m}_sst2/best/params"), ".2f", 2**-20)])
    return (["## Size on disk at this scale", "",
             "Bytes of the files, measured on disk: the final training checkpoint (params, "
             "optimizer moments, data position) and the fine-tuned SST-2 weights alone "
             f"({code('best/params')}). At base size the fp32 weights are in the table above.",
             ""] + md_table(["model", "training checkpoint (MiB)",
                             "fine-tuned SST-2 weights (MiB)"], rows))

  def benchmark(self) -> list:
    n = self.n
    points = self.bench_rows()
    if not points:
      return ["## Inference at base size", "", "Not measured yet.", ""]
    meta = self.src.raw("benchmark/benchmark.json", "meta")
    rows = []
    for b, s in points:
      lat = {m: self.latency(m, b, s) for m in MODELS}
      other = self.src.get("benchmark/benchmark.json", "inference",
                           {"model": "bert", "impl": "ours", "batch": b, "seq": s},
                           "interference", "others_cpu_fraction")
      rows.append([f"{b}x{s}"] + [n(lat[m], ms_fmt(lat[m].value), 1e3) if lat[m] else "n/a"
                                  for m in MODELS] +
                  [n(self.ratio("distilbert", b, s), ".2f"),
                   n(self.ratio("distilbert", b, s, "flop_ratio"), ".2f"),
                   n(self.ratio("albert", b, s), ".2f"),
                   n(self.ratio("albert", b, s, "flop_ratio"), ".2f"), n(other, ".0f", 100)])
    mem_rows = []
    for b, s in points:
      cells = []
      for field in (("xla_memory", "peak_estimate"), ("rss_peak_delta_bytes",)):
        for m in MODELS:
          cells.append(n(self.src.get("benchmark/benchmark.json", "inference",
                                      {"model": m, "impl": "ours", "batch": b, "seq": s},
                                      *field), ".0f", 2**-20))
      mem_rows.append([f"{b}x{s}"] + cells)
    lines = ["## Inference at base size", "",
             f"Encoder forward of BERT-base, DistilBERT-base and ALBERT-base, measured by "
             f"{code('experiments/benchmark.py')} in one process, the three models interleaved "
             f"call by call ({code('benchmark/BENCHMARKS.md')} has the details; its command is "
             f"in the wall-time table). Medians of the timed calls after compilation and a "
             f"warm-up; ratios from the benchmark's own {code('ratios')}; 'others' CPU' is the "
             f"share of the CPUs other processes used while the point was timed. "
             + (f"The layers run unrolled, each layer's weights their own arrays (the inference "
                f"layout, {code('--inference-layout=unrolled')}); the scanned training layout "
                f"makes XLA:CPU copy every BERT layer's weights out of the stacked arrays "
                f"before its matmuls."
                if meta.get("inference_layout", "scanned") == "unrolled" else
                f"The layers run in the scanned training layout "
                f"({code('--inference-layout=scanned')})."), ""]
    lines += md_table(["batch x seq", "BERT (ms)", "DistilBERT (ms)", "ALBERT (ms)",
                       "DistilBERT / BERT", "FLOP ratio", "ALBERT / BERT", "FLOP ratio",
                       "others' CPU (%)"], rows)
    lines += ["Peak memory (MiB): what XLA allocates for the call (arguments + outputs + "
              "temporaries), and the growth of the process's peak resident memory while timing.",
              ""]
    lines += md_table(["batch x seq"] + [f"{NAMES[m]} XLA" for m in MODELS] +
                      [f"{NAMES[m]} RSS growth" for m in MODELS], mem_rows)
    return lines

  def finetuning(self) -> list:
    n = self.n
    rows = []
    bert_glue = self.glue_score("bert")
    for m in MODELS:
      glue = self.glue_score(m)
      ret = lambda t, m=m: (None if self.task_score(m, t) is None or
                            self.task_score("bert", t) is None else
                            self.task_score(m, t) / self.task_score("bert", t))
      mark = lambda t, m=m: " (one class)" if self.one_class(m, t) else ""
      rows.append([NAMES[m], n(self.dev(m, "sst2", "accuracy"), ".4f") + mark("sst2"),
                   n(self.dev(m, "mrpc", "accuracy"), ".4f") + mark("mrpc"),
                   n(self.dev(m, "mrpc", "f1"), ".4f") + mark("mrpc"),
                   n(glue, ".4f"), n(ret("sst2"), ".1f", 100), n(ret("mrpc"), ".1f", 100),
                   n(None if glue is None or bert_glue is None else glue / bert_glue, ".1f",
                     100)])
    cfg = lambda t, *k: self.src.get(f"finetune_bert_{t}/config.json", *k)
    lines = ["## Fine-tuning (dev sets)", "",
             f"Each model fine-tuned from its own checkpoint with one recipe: SST-2 "
             f"{n(cfg('sst2', 'train', 'num_steps'), ',.0f')} steps, MRPC "
             f"{n(cfg('mrpc', 'train', 'num_steps'), ',.0f')} steps, batch "
             f"{n(cfg('sst2', 'data', 'batch_size'), '.0f')}, learning rate "
             f"{n(cfg('sst2', 'optim', 'learning_rate'), '.5f')} with linear warmup and decay; "
             f"scores of the final step ({code('finetune_<model>_<task>/eval_validation.json')}"
             f"). The average is GLUE's: SST-2 accuracy and the mean of MRPC accuracy and F1, "
             f"averaged; retention is the score divided by BERT's. '(one class)': the model "
             f"predicts the same label for every dev example "
             f"({code('predictions_validation.tsv')}), the majority-class score.", ""]
    lines += md_table(["model", "SST-2 accuracy", "MRPC accuracy", "MRPC F1", "average",
                       "SST-2 retention (%)", "MRPC retention (%)", "average retention (%)"],
                      rows)
    return lines

  def walls(self, stage_names: list) -> list:
    n = self.n
    rows, nums = [], []
    for name in stage_names:
      if not self.src.exists(f"stages/{name}.json"):
        continue
      record = self.src.raw(f"stages/{name}.json")
      wall = self.wall(name)
      nums.append(wall)
      attempts = len(record["attempts"])
      rows.append([code(name), n(wall, ".0f") + (" (resumed)" if attempts > 1 else ""),
                   record.get("status", "?"), code(record["command"])])
    total = reduce_nums("sum", nums) if nums else None
    return (["## Wall time per stage", "",
             f"Total {n(total, '.1f', 1 / 60)} min; a resumed stage counts all its attempts "
             f"({code('stages/<stage>.json')}, logs in {code('logs/')}).", ""] +
            md_table(["stage", "wall time (s)", "status", "command"], rows))

  def plots(self) -> list:
    out = []
    for name, what in PLOTS:
      if os.path.exists(os.path.join(self.root, name)):
        out.append(f"![{what}]({name})")
        out.append("")
    return ["## Plots", ""] + out

  def render(self, stage_names: list) -> str:
    lines = self.header() + self.claims() + self.parameters() + self.benchmark()
    lines += self.models_at_scale() + self.finetuning() + self.disk()
    lines += self.walls(stage_names) + self.plots()
    return "\n".join(lines).rstrip() + "\n"


PLOTS = (("accuracy_vs_parameters.png", "dev score vs parameters"),
         ("latency_vs_sequence_length.png", "latency vs sequence length"),
         ("pretraining_loss.png", "pretraining loss"),
         ("distillation_loss.png", "distillation loss"),
         ("retention.png", "retention relative to BERT"))


def write_plots(root: str, rep: Report) -> None:
  """The PNGs of the report, from the same files (matplotlib, Agg)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  src = rep.src

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(os.path.join(root, name), dpi=100, metadata={"Software": None})
    plt.close(fig)

  # Dev score vs parameters (at this scale).
  params = {m: rep.summary("trained", m, "params_total") for m in MODELS}
  if all(params.values()) and all(rep.glue_score(m) for m in MODELS):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [("SST-2 accuracy", lambda m: rep.dev(m, "sst2", "accuracy"), "o"),
              ("MRPC accuracy", lambda m: rep.dev(m, "mrpc", "accuracy"), "s"),
              ("MRPC F1", lambda m: rep.dev(m, "mrpc", "f1"), "^"),
              ("average", rep.glue_score, "D")]
    for label, fn, marker in series:
      xs = [params[m].value / 1e6 for m in MODELS]
      ax.plot(xs, [fn(m).value for m in MODELS], ls=":", color="gray", lw=0.8)
      for m, x in zip(MODELS, xs):
        ax.scatter([x], [fn(m).value], marker=marker, color=COLORS[m], s=50,
                   label=label if m == "bert" else None)
    for m in MODELS:
      ax.annotate(NAMES[m], (params[m].value / 1e6, rep.glue_score(m).value),
                  textcoords="offset points", xytext=(6, 6), color=COLORS[m])
    ax.set(xlabel="parameters (millions, at this scale)", ylabel="dev score",
           title=f"Dev score vs parameters (scale {rep.scale})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "accuracy_vs_parameters.png")

  # Latency vs sequence length, one panel per batch size.
  points = rep.bench_rows()
  if points:
    batches = sorted({b for b, _ in points})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
      seqs = sorted(s for bb, s in points if bb == b)
      for m in MODELS:
        lat = [rep.latency(m, b, s) for s in seqs]
        ax.plot(seqs, [x.value * 1e3 for x in lat], marker="o", color=COLORS[m],
                label=NAMES[m])
      ax.set(xlabel="sequence length", ylabel="latency (ms)", title=f"batch {b}")
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=8)
    fig.suptitle("Inference latency at base size (encoder forward, median)")
    save(fig, "latency_vs_sequence_length.png")

  def curve(stage, split, key):
    path = f"{stage}/metrics.jsonl"
    if not src.exists(path):
      return [], []
    recs = [r for r in src.raw(path) if r.get("split") == split and key in r]
    return [r["step"] for r in recs], [r[key] for r in recs]

  if any(src.exists(f"{TRAINED_BY[m]}/metrics.jsonl") for m in ("bert", "albert")):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in ("bert", "albert"):
      xs, ys = curve(TRAINED_BY[m], "train", "loss")
      pair = "NSP" if m == "bert" else "SOP"
      axes[0].plot(xs, ys, color=COLORS[m], label=f"{NAMES[m]} (MLM + {pair})")
    for m in MODELS:
      xs, ys = curve(TRAINED_BY[m], "eval", "mlm_loss")
      axes[1].plot(xs, ys, marker="o", color=COLORS[m], label=NAMES[m])
    axes[0].set(xlabel="step", ylabel="training loss", title="Pretraining loss")
    axes[1].set(xlabel="step", ylabel="held-out MLM loss",
                title="Held-out masked-LM loss (each run's own masking)")
    for ax in axes:
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    save(fig, "pretraining_loss.png")

  if src.exists("distill_distilbert/metrics.jsonl"):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    xs, ys = curve("distill_distilbert", "train", "loss")
    axes[0].plot(xs, ys, color=COLORS["distilbert"], label="training loss (triple)")
    xs, ys = curve("distill_distilbert", "eval", "distill_loss")
    axes[0].plot(xs, ys, marker="o", color="black", label="held-out loss")
    xs, ys = curve("distill_distilbert", "eval", "mlm_loss")
    axes[1].plot(xs, ys, marker="o", color=COLORS["distilbert"], label="student")
    _, teacher = curve("distill_distilbert", "eval", "teacher_mlm_loss")
    if teacher:
      axes[1].axhline(teacher[-1], color=COLORS["bert"], ls="--", label="teacher (BERT)")
    axes[0].set(xlabel="step", ylabel="loss", title="Distillation loss")
    axes[1].set(xlabel="step", ylabel="held-out MLM loss", title="Student vs teacher")
    for ax in axes:
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    save(fig, "distillation_loss.png")

  if all(rep.glue_score(m) for m in MODELS):
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [TASK_NAMES[t] for t in TASKS] + ["average"]
    for i, m in enumerate(("distilbert", "albert")):
      vals = [(rep.task_score(m, t) / rep.task_score("bert", t)).value for t in TASKS]
      vals.append((rep.glue_score(m) / rep.glue_score("bert")).value)
      xs = [g + (i - 0.5) * 0.35 for g in range(len(groups))]
      ax.bar(xs, [v * 100 for v in vals], width=0.35, color=COLORS[m], label=f"{NAMES[m]} / BERT")
    ax.axhline(STUDY["distilbert_glue"]["min_retention"] * 100, color="black", ls="--", lw=1,
               label="study: DistilBERT keeps 97%")
    ax.axhline(100, color="gray", lw=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel="% of BERT's dev score", title=f"Retention relative to BERT (scale {rep.scale})")
    ax.set_ylim(bottom=min(50, ax.get_ylim()[0]))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save(fig, "retention.png")


def stage_names(root: str, settings: dict) -> list:
  if not settings:
    return []
  return [s.name for s in make_plan(root, settings)]


def report(root: str) -> str:
  """Writes report.md, report_numbers.json and the plots from `root`'s files; returns the text."""
  root = os.path.abspath(root)
  write_accuracy_stats(root)
  rep = Report(root)
  write_plots(root, rep)  # first: the report links the plots that exist
  text = rep.render(stage_names(root, rep.settings))
  atomic_write(os.path.join(root, "report.md"), text)
  write_record(os.path.join(root, "report_numbers.json"), rep.n.items)
  return text


def _source_files(source) -> set:
  """The files a report_numbers.json source names (recursively through its `args`)."""
  if isinstance(source, dict):
    found = {source["file"]} if "file" in source else set()
    for arg in source.get("args", []):
      found |= _source_files(arg)
    return found
  return set()


def _dir_of(source) -> Optional[str]:
  """The folder a `dir_bytes` source (or its first such argument) names."""
  if isinstance(source, dict):
    if "dir_bytes" in source:
      return source["dir_bytes"]
    for arg in source.get("args", []):
      found = _dir_of(arg)
      if found:
        return found
  return None


def publish(root: str, dest: str) -> list:
  """Copies the report, its plots and every small file it was computed from to `dest`.

  Checkpoints and logs stay behind (the sizes in the report were measured on
  `root`); what is copied: report.md, report_numbers.json, the PNGs, run.json,
  stages/*.json, each file a number of the report names, every stage's
  config.json and metrics.jsonl (the loss curves), and the benchmark's
  BENCHMARKS.md, benchmark.json and plots. Returns the copied relative paths.
  """
  import glob  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  root = os.path.abspath(root)
  with open(os.path.join(root, "report_numbers.json")) as f:
    numbers = json.load(f)
  files = set().union(*(_source_files(item["source"]) for item in numbers))
  patterns = ["report.md", "report_numbers.json", "*.png", "run.json", "stages/*.json",
              "*/config.json", "*/metrics.jsonl", "*/predictions_validation.tsv",
              ACCURACY_FILE, "benchmark/BENCHMARKS.md",
              "benchmark/benchmark.json", "benchmark/*.png"]
  for pattern in patterns:
    files |= {os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern))}
  sizes = {_dir_of(item["source"]): None for item in numbers if _dir_of(item["source"])}
  sizes = {rel: Sources(root).dir_bytes(rel) for rel in sizes}
  if any(os.path.isdir(os.path.join(root, rel)) for rel in sizes):
    os.makedirs(dest, exist_ok=True)
    write_record(os.path.join(dest, SIZES_FILE), {
        "bytes": {rel: num.value for rel, num in sizes.items() if num is not None},
        "measured_in": root})
  copied = []
  for rel in sorted(files):
    src = os.path.join(root, rel)
    if os.path.isfile(src):
      os.makedirs(os.path.dirname(os.path.join(dest, rel)) or dest, exist_ok=True)
      shutil.copy2(src, os.path.join(dest, rel))
      copied.append(rel)
  return copied


# ------------------------------------------------------------------------ main


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m experiments.compare",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="folder of the stages and the report")
  p.add_argument("--scale", choices=sorted(SCALES), default=None,
                 help="tiny | small | base; omitted: the settings --workdir was made with")
  p.add_argument("--report-only", action="store_true",
                 help="rewrite report.md and the plots from the stage folders, run nothing")
  p.add_argument("--stages", default="", help="run only these stages or groups (comma list)")
  p.add_argument("--publish", default="",
                 help="then copy the report, plots and the small files behind its numbers "
                      "(no checkpoints) to this folder, e.g. experiments/results/compare")
  p.add_argument("--echo", action=argparse.BooleanOptionalAction, default=True,
                 help="show the stages' output (always in logs/<stage>.log)")
  p.add_argument("--corpus", default="", help="pretraining corpus (default: Gutenberg train)")
  p.add_argument("--eval-corpus", default="",
                 help="held-out corpus (default: Gutenberg validation books)")
  p.add_argument("--wikitext", default="", help="out-of-domain corpus (default: WikiText-2 valid)")
  p.add_argument("--pretrain-steps", type=int, default=0)
  p.add_argument("--distill-steps", type=int, default=0)
  p.add_argument("--finetune-steps", type=int, default=0, help="steps of every fine-tuning run")
  p.add_argument("--finetune-pad-multiple", type=int, default=0,
                 help="finetune.pad_multiple (0: the config's); the sequence length pads every "
                      "batch to one shape, one compilation (few-step tests)")
  p.add_argument("--eval-batches", type=int, default=0, help="held-out batches per evaluation")
  p.add_argument("--tokenizer-sentences", type=int, default=0)
  p.add_argument("--batches", default="", help="benchmark batch sizes, e.g. 1,8")
  p.add_argument("--seqs", default="", help="benchmark sequence lengths, e.g. 128,512")
  p.add_argument("--bench-size", default="base", choices=("base", "tiny"),
                 help="model size the benchmark times (base; tiny only for quick checks)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  root = os.path.abspath(args.workdir)
  os.makedirs(root, exist_ok=True)
  if not args.report_only:
    run_all(args, root)
  elif not os.path.exists(os.path.join(root, "run.json")):
    raise SystemExit(f"error: {root} has no run.json: not a comparison folder")
  report(root)
  print(f"wrote {os.path.join(root, 'report.md')}")
  if args.publish:
    copied = publish(root, args.publish)
    print(f"published {len(copied)} files to {args.publish}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
