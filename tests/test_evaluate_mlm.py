"""`mode=evaluate` on pretraining and distillation workdirs: masked-LM numbers on held-out text.

The check that matters: scored with the run's own settings, the evaluation
gives exactly the numbers the run's last in-training evaluation logged (same
batches, same masks, same params), for a BERT pretraining run and for the
DistilBERT student distilled from it; and BERT and the student are scored on
the same masked tokens. The runs take ~1 minute on 2 CPU cores (marked slow).
"""

import json
import math
import os

import pytest

import launch
from configs import bert
from configs import distilbert
from lite_bert import paths
from lite_bert.errors import UserError
from lite_bert.modes import evaluate
from lite_bert.train import metrics as metrics_lib

WIKI = paths.data_dir() / "wikitext" / "wikitext-2-raw"
SHAPE = {"data.batch_size": 8, "data.max_seq_length": 64, "data.max_predictions_per_seq": 10,
         "data.eval_batches": 3, "data.pair_objective": "none", "data.masking": "token",
         "train.num_steps": 4, "train.log_every": 2, "train.eval_every": 0,
         "checkpoint.every_steps": 4, "checkpoint.async_save": False,
         "optim.warmup_steps": 1}


def configure(config, mode, **overrides):
  config.mode = mode
  config.data.corpus = str(WIKI / "wiki.test.raw")
  config.data.eval_corpus = str(WIKI / "wiki.valid.raw")
  for key, value in {**SHAPE, **overrides}.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A 4-step tiny BERT (MLM only) and a 4-step DistilBERT distilled from it."""
  root = tmp_path_factory.mktemp("evaluate_mlm")
  teacher, student = str(root / "bert"), str(root / "distilbert")
  launch.run(configure(bert.get_config("tiny"), "pretrain"), teacher)
  config = configure(distilbert.get_config("tiny"), "distill")
  config.distill.teacher = teacher
  launch.run(config, student)
  return {"bert": teacher, "distilbert": student}


def score(workdir, module, **overrides):
  config = module.get_config("tiny")
  config.mode = "evaluate"
  config.data.eval_corpus = str(WIKI / "wiki.valid.raw")
  config.data.eval_batches = SHAPE["data.eval_batches"]
  config.data.masking = "token"
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return launch.run(config, workdir)


@pytest.mark.slow
@pytest.mark.parametrize("name, module", [("bert", bert), ("distilbert", distilbert)])
def test_equals_the_runs_own_last_evaluation(runs, name, module):
  workdir = runs[name]
  result = score(workdir, module)
  path = os.path.join(workdir, "evaluate_mlm_wiki.valid.json")
  with open(path) as f:
    written = json.load(f)
  assert written == result
  last = metrics_lib.read_metrics(workdir, "eval")[-1]
  assert last["step"] == written["step"] == 4
  for key in ("mlm_loss", "mlm_accuracy", "mlm_perplexity"):
    assert written[key] == pytest.approx(last[key], rel=1e-5, abs=1e-7), key
  assert written["mode"] == {"bert": "pretrain", "distilbert": "distill"}[name]
  assert written["arch"] == name and written["masking"] == "token"
  assert written["batches"] == 3 and written["sequences"] == 3 * 8
  assert 0 < written["masked_tokens"] <= 3 * 8 * 10
  # The 95% Wilson interval of the accuracy, recomputed from its closed form.
  tokens, z = written["masked_tokens"], 1.959963984540054
  accuracy = round(written["mlm_accuracy"] * tokens) / tokens
  center = (accuracy + z * z / (2 * tokens)) / (1 + z * z / tokens)
  half = z / (1 + z * z / tokens) * math.sqrt(
      accuracy * (1 - accuracy) / tokens + z * z / (4 * tokens * tokens))
  assert written["mlm_accuracy_ci95"] == pytest.approx([center - half, center + half], abs=1e-9)
  assert os.path.exists(os.path.join(workdir, "config_evaluate.json"))


@pytest.mark.slow
def test_a_relative_workdir_works(runs):
  """Orbax restores absolute paths only; the loader makes the path absolute."""
  absolute = score(runs["bert"], bert)
  assert score(os.path.relpath(runs["bert"]), bert) == absolute


@pytest.mark.slow
def test_teacher_and_student_see_the_same_masked_tokens(runs):
  numbers = {name: score(runs[name], bert, **{"data.masking": "whole_word"}) for name in runs}
  assert numbers["bert"]["masked_tokens"] == numbers["distilbert"]["masked_tokens"]
  assert numbers["bert"]["masking"] == "whole_word"
  # Another masking is another set of masked tokens: a new score, not the logged one.
  assert numbers["bert"]["mlm_loss"] != metrics_lib.read_metrics(runs["bert"], "eval")[-1][
      "mlm_loss"]


@pytest.mark.slow
def test_refusals_leave_the_workdir_alone(runs):
  workdir = runs["bert"]
  before = sorted(os.listdir(workdir))
  with pytest.raises(UserError, match=r"holds a 'pretrain' run: scoring it needs "
                                      r"--config\.data\.eval_corpus"):
    score(workdir, bert, **{"data.eval_corpus": ""})
  with pytest.raises(UserError, match=r"data\.masking must be one of"):
    score(workdir, bert, **{"data.masking": "span"})
  with pytest.raises(UserError, match=r"data\.eval_batches must be a number of batches, or 0 "
                                      r"for every full batch of the corpus, got -1"):
    score(workdir, bert, **{"data.eval_batches": -1})
  assert sorted(os.listdir(workdir)) == before


@pytest.mark.parametrize("spec, label", [
    ("../shared/data/wikitext/wikitext-2-raw/wiki.valid.raw", "wiki.valid"),
    ("/data/gutenberg/gutenberg_valid.txt.xz", "gutenberg_valid"),
    ("tfds:wikipedia/20230601.en:train", "wikipedia_20230601.en_train"),
    ("books/", "books"),
])
def test_corpus_label(spec, label):
  assert evaluate.corpus_label(spec) == label


@pytest.mark.slow
def test_eval_batches_0_scores_every_full_batch_beside_the_sampled_file(runs, tmp_path):
  """`data.eval_batches=0`: the whole held-out split, in its own `_all` file."""
  corpus = tmp_path / "held.raw"
  with open(WIKI / "wiki.valid.raw") as f:
    corpus.write_text("".join(f.readlines()[:60]))
  workdir = runs["bert"]
  sampled = score(workdir, bert, **{"data.eval_corpus": str(corpus), "data.eval_batches": 2})
  whole = score(workdir, bert, **{"data.eval_corpus": str(corpus), "data.eval_batches": 0})
  with open(os.path.join(workdir, "evaluate_mlm_held_all.json")) as f:
    assert json.load(f) == whole
  with open(os.path.join(workdir, "evaluate_mlm_held.json")) as f:
    assert json.load(f) == sampled  # the sampled numbers stay
  count = whole["batches"]
  assert count > 2 and whole["sequences"] == count * 8
  # The same as asking for that many batches by number, and there is no batch more.
  by_number = score(workdir, bert, **{"data.eval_corpus": str(corpus),
                                      "data.eval_batches": count})
  assert {k: by_number[k] for k in whole} == whole
  with pytest.raises(UserError, match=f"gives only {count} full batches"):
    score(workdir, bert, **{"data.eval_corpus": str(corpus), "data.eval_batches": count + 1})
