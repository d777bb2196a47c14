"""Tests of lite_bert.data.glue on the real SST-2 and MRPC files.

The TFDS route is checked against TFDS's own `glue` builder code: its
`_generate_examples` (unchanged) writes array_record files from TSV files,
and `read_task_from_tfds` must give the rows `read_task` gives for the same
files. Only SST-2 and MRPC are in the shared data folder, so for the other
tasks the TSV files hold real SST-2 / MRPC sentences laid out in that task's
official GLUE columns: that checks each TaskSpec's column and label mapping
against TFDS's parser, not the other tasks' contents.
"""

import collections
import os
import shutil
import sys

import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.text import glue as tfds_glue

from lite_bert import paths
from lite_bert.data import glue
from lite_bert.errors import UserError

GLUE = paths.data_dir() / "glue"


def test_sst2_dev_rows_and_labels():
  rows = glue.read_task("SST-2", "validation")
  assert len(rows) == 872
  assert collections.Counter(r["label"] for r in rows) == {1: 444, 0: 428}
  assert rows[0] == {"sentence": "it 's a charming and often affecting "
                                 "journey . ", "label": 1, "idx": 0}
  assert [r["idx"] for r in rows] == list(range(872))


def test_mrpc_dev_rows_and_labels():
  rows = glue.read_task("mrpc", "validation")
  assert len(rows) == 408
  assert collections.Counter(r["label"] for r in rows) == {1: 279, 0: 129}
  assert set(rows[0]) == {"sentence1", "sentence2", "label", "idx"}
  # Quotes are text, not CSV quoting.
  assert rows[0]["sentence1"].startswith(
      'He said the foodservice pie business doesn')
  assert sum('"' in r["sentence1"] + r["sentence2"] for r in rows) > 10


def test_train_splits():
  sst2 = glue.read_task("sst2", "train")
  mrpc = glue.read_task("mrpc", "train")
  assert collections.Counter(r["label"] for r in sst2) == {1: 37569, 0: 29780}
  assert collections.Counter(r["label"] for r in mrpc) == {1: 2474, 0: 1194}


def test_task_lookup():
  assert glue.get_task("SST-2") is glue.get_task("sst2") is glue.TASKS["sst2"]
  assert glue.get_task("sts_b").is_regression
  assert glue.get_task("STS-B").num_labels == 1
  assert glue.get_task("MNLI").num_labels == 3
  assert glue.task_folder(glue.get_task("CoLA")) == GLUE / "CoLA"
  with pytest.raises(UserError, match="unknown GLUE task 'sst5'"):
    glue.get_task("sst5")


@pytest.mark.parametrize("name", sorted(glue.TASKS))
def test_task_fields_are_the_tfds_features(name, tmp_path):
  spec = glue.TASKS[name]
  builder = tfds.builder(spec.tfds_name, data_dir=tmp_path)
  features = builder.info.features
  assert set(features) == {*spec.text_fields, "label", "idx"}
  if spec.is_regression:
    assert not hasattr(features["label"], "names")
  else:
    assert tuple(features["label"].names) == (spec.label_names or spec.labels)


def _official_layout(name, tmp_path):
  """(file name, TSV text) of `name`'s layout filled with real sentences."""
  sst2 = glue.read_task("sst2", "validation")[:200]
  mrpc = glue.read_task("mrpc", "validation")
  if name == "sst2":
    return "dev.tsv", (GLUE / "SST-2" / "dev.tsv").read_text(encoding="utf-8")
  if name == "cola":  # source, label, original label, sentence; no header
    return "dev.tsv", "".join(
        f"sst2\t{r['label']}\t{'' if r['label'] else '*'}\t{r['sentence']}\n"
        for r in sst2)
  pairs = [(r["sentence1"], r["sentence2"], r["label"]) for r in mrpc]
  if name == "stsb":
    header = ("index genre filename year old_index source1 source2 sentence1 "
              "sentence2 score").split()
    rows = [[str(i), "main-news", "mrpc", "2012", str(i), "none", "none", a, b,
             f"{(i % 26) / 5:.3f}"] for i, (a, b, _) in enumerate(pairs)]
  elif name in ("rte", "qnli"):
    header = (["index", "sentence1", "sentence2", "label"] if name == "rte"
              else ["index", "question", "sentence", "label"])
    rows = [[str(i), a, b, "entailment" if y else "not_entailment"]
            for i, (a, b, y) in enumerate(pairs)]
  elif name == "mnli":
    header = ("index promptID pairID genre sentence1_binary_parse "
              "sentence2_binary_parse sentence1_parse sentence2_parse "
              "sentence1 sentence2 label1 label2 label3 label4 label5 "
              "gold_label").split()
    gold = ("entailment", "neutral", "contradiction")
    rows = [[str(i), "1", f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)",
             "(ROOT b)", a, b, *[gold[i % 3]] * 5, gold[i % 3]]
            for i, (a, b, _) in enumerate(pairs)]
  elif name == "qqp":
    header = "id qid1 qid2 question1 question2 is_duplicate".split()
    rows = [[str(i), str(2 * i), str(2 * i + 1), a, b, str(y)]
            for i, (a, b, y) in enumerate(pairs)]
  else:
    raise ValueError(name)
  file_name = "dev_matched.tsv" if name == "mnli" else "dev.tsv"
  del tmp_path
  return file_name, "".join("\t".join(r) + "\n" for r in [header] + rows)


class LocalGlue(tfds_glue.Glue, skip_registration=True):
  """TFDS's GLUE builder, reading one split from local files, offline."""

  name = "glue"

  def __init__(self, *, files, split, **kwargs):
    self._files, self._split = files, split
    super().__init__(**kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # See corpora.LocalTextCorpus.code_path.

  def _split_generators(self, dl_manager):
    return [tfds.core.SplitGenerator(
        name=self._split, gen_kwargs=dict(split="dev", **self._files))]


@pytest.mark.parametrize("name", sorted(glue.TASKS))
def test_tfds_and_tsv_readers_agree(name, tmp_path):
  spec = glue.TASKS[name]
  split = "validation_matched" if name == "mnli" else "validation"
  folder = tmp_path / "tsv"
  folder.mkdir()
  if name == "mrpc":
    # TFDS builds MRPC from Microsoft's file (same columns as GLUE's TSV,
    # BOM included) and a list of dev pair ids; here: the real dev pairs.
    shutil.copy(GLUE / "MRPC" / "dev.tsv", folder / "dev.tsv")
    ids = [line.split("\t")[1:3] for line in (
        folder / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]]
    (folder / "dev_ids.tsv").write_text(
        "".join(f"{a}\t{b}\n" for a, b in ids))
    files = {"data_file": None, "mrpc_files": {
        "dev_ids": os.fspath(folder / "dev_ids.tsv"),
        "train": os.fspath(folder / "dev.tsv")}}
  else:
    file_name, text = _official_layout(name, tmp_path)
    (folder / file_name).write_text(text, encoding="utf-8")
    files = {"data_file": os.fspath(folder / file_name), "mrpc_files": None}
  tfds_dir = tmp_path / "tfds"
  LocalGlue(files=files, split=split, config=spec.tfds_name.split("/")[1],
            data_dir=os.fspath(tfds_dir),
            file_format="array_record").download_and_prepare()

  from_tsv = glue.read_task(spec, split, folder)
  from_tfds = glue.read_task_from_tfds(spec, split, tfds_dir)
  assert len(from_tsv) == len(from_tfds) >= 200
  if spec.is_regression:
    for a, b in zip(from_tsv, from_tfds):
      assert b["label"] == pytest.approx(a["label"], rel=1e-6)
      a.pop("label"), b.pop("label")
  assert from_tfds == from_tsv
  assert "tensorflow" not in sys.modules


def test_tfds_without_prepared_data_is_refused(tmp_path):
  with pytest.raises(UserError, match="tfds has no data for 'glue/sst2'.*"
                     "downloads are off"):
    glue.read_task_from_tfds("sst2", "validation", tmp_path)
  with pytest.raises(UserError, match="names no TFDS dataset"):
    glue.read_task_from_tfds(_custom_task(tmp_path), "validation", tmp_path)


def _custom_task(folder, **overrides):
  return glue.TaskSpec.from_dict({
      "name": "paraphrase", "folder": os.fspath(folder),
      "text_fields": ["first", "second"], "labels": ["no", "yes"],
      "metrics": ["f1", "accuracy"],
      "splits": {"validation": "pairs.tsv"},
      "columns": {"first": "#1 String", "second": "#2 String",
                  "label": "Quality"}, **overrides})


def test_a_new_task_from_config_needs_no_code(tmp_path):
  lines = (GLUE / "MRPC" / "dev.tsv").read_text(
      encoding="utf-8-sig").splitlines()
  relabelled = [lines[0]] + [
      ("yes" if line[0] == "1" else "no") + line[1:] for line in lines[1:]]
  (tmp_path / "pairs.tsv").write_text("\n".join(relabelled) + "\n")
  task = _custom_task(tmp_path)
  rows = glue.read_task(task, "validation")
  mrpc = glue.read_task("mrpc", "validation")
  assert [(r["first"], r["second"], r["label"]) for r in rows] == [
      (r["sentence1"], r["sentence2"], r["label"]) for r in mrpc]
  with pytest.raises(UserError, match="unknown field\\(s\\) \\['label_set'\\]"):
    _custom_task(tmp_path, label_set=["a"])
  with pytest.raises(UserError, match="columns has no entry for \\['second'\\]"):
    _custom_task(tmp_path, columns={"first": "#1 String", "label": "Quality"})
  with pytest.raises(UserError, match="text_fields must be a list"):
    _custom_task(tmp_path, text_fields="first")
  with pytest.raises(UserError, match="metrics must be some of"):
    _custom_task(tmp_path, metrics=["bleu"])


def _write_sst2(tmp_path, lines):
  folder = tmp_path / "SST-2"
  folder.mkdir(exist_ok=True)
  path = folder / "dev.tsv"
  path.write_bytes(b"".join(lines))
  return folder, path


def _sst2_lines():
  with open(GLUE / "SST-2" / "dev.tsv", "rb") as f:
    return f.readlines()


def test_missing_folder_and_files_are_refused(tmp_path):
  with pytest.raises(UserError, match=f"data folder not found: {tmp_path}/x"):
    glue.read_task("sst2", "validation", tmp_path / "x")
  with pytest.raises(UserError, match=f"validation file not found: "
                     f"{tmp_path}/dev.tsv"):
    glue.read_task("sst2", "validation", tmp_path)
  with pytest.raises(UserError, match="no split 'test'"):
    glue.read_task("sst2", "test", tmp_path)


def test_header_without_a_configured_column_is_refused(tmp_path):
  lines = _sst2_lines()
  folder, path = _write_sst2(tmp_path, [b"text\tlabel\n"] + lines[1:])
  with pytest.raises(UserError, match=f"{path} line 1: the header has no "
                     "column 'sentence'"):
    glue.read_task("sst2", "validation", folder)


def test_row_with_wrong_field_count_is_refused(tmp_path):
  lines = _sst2_lines()
  lines[16] = lines[16].replace(b"\t", b"\textra\t")
  folder, path = _write_sst2(tmp_path, lines)
  with pytest.raises(UserError, match=f"{path} line 17: expected 2 "
                     "tab-separated fields \\(header: sentence, label\\), "
                     "found 3"):
    glue.read_task("sst2", "validation", folder)


def test_label_outside_the_label_set_is_refused(tmp_path):
  lines = _sst2_lines()
  lines[4] = lines[4][:-2] + b"2\n"
  folder, path = _write_sst2(tmp_path, lines)
  with pytest.raises(UserError, match=f"{path} line 5: label '2' is not one "
                     "of \\['0', '1'\\]"):
    glue.read_task("sst2", "validation", folder)


def test_regression_label_that_is_not_a_number_is_refused(tmp_path):
  _, text = _official_layout("stsb", tmp_path)
  lines = text.splitlines(keepends=True)
  lines[3] = lines[3].rsplit("\t", 1)[0] + "\thigh\n"
  (tmp_path / "dev.tsv").write_text("".join(lines))
  with pytest.raises(UserError, match=f"{tmp_path}/dev.tsv line 4: label "
                     "'high' is not a number"):
    glue.read_task("stsb", "validation", tmp_path)


def test_headerless_row_with_wrong_field_count_is_refused(tmp_path):
  _, text = _official_layout("cola", tmp_path)
  lines = text.splitlines(keepends=True)
  lines[9] = lines[9].replace("\t", " ", 1)
  (tmp_path / "dev.tsv").write_text("".join(lines))
  with pytest.raises(UserError, match=f"{tmp_path}/dev.tsv line 10: expected "
                     "4 tab-separated fields \\(task CoLA, no header\\), "
                     "found 3"):
    glue.read_task("cola", "validation", tmp_path)


def test_empty_split_is_refused(tmp_path):
  folder, path = _write_sst2(tmp_path, _sst2_lines()[:1])
  with pytest.raises(UserError, match=f"{path}: no data rows"):
    glue.read_task("sst2", "validation", folder)
  folder, path = _write_sst2(tmp_path, [])
  with pytest.raises(UserError, match=f"{path}: empty file"):
    glue.read_task("sst2", "validation", folder)


def test_bytes_that_are_not_utf8_are_refused(tmp_path):
  lines = _sst2_lines()
  lines[8] = lines[8].replace(b"a", b"\xe0", 1)
  folder, path = _write_sst2(tmp_path, lines)
  with pytest.raises(UserError, match=f"{path} line 9: not valid UTF-8"):
    glue.read_task("sst2", "validation", folder)
