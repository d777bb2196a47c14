"""Tests of lite_bert.data.corpora on the real corpora in the shared data folder."""

import csv
import gzip
import lzma
import os
import pickle
import re
import shutil
import sys

import pytest
import tensorflow_datasets as tfds

from lite_bert import paths
from lite_bert.data import corpora
from lite_bert.errors import UserError

WIKITEXT = paths.data_dir() / "wikitext" / "wikitext-2-raw"
GUTENBERG = paths.data_dir() / "gutenberg"


def nonblank_lines(path):
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def test_wikitext_valid_has_its_60_articles(tmp_path):
  docs = corpora.open_corpus(WIKITEXT / "wiki.valid.raw", cache_dir=tmp_path)
  assert len(docs) == 60
  titles = [doc.split("\n")[0] for doc in docs]
  assert titles[0] == "= Homarus gammarus ="
  assert all(re.fullmatch(r"= [^=].* =", t) for t in titles)
  # Every non-blank line lands in exactly one article, in file order.
  paragraphs = [p for doc in docs for p in doc.split("\n")]
  assert paragraphs == nonblank_lines(WIKITEXT / "wiki.valid.raw")


def test_wikitext_test_keeps_formula_lines_inside_their_article(tmp_path):
  docs = corpora.open_corpus(WIKITEXT / "wiki.test.raw", cache_dir=tmp_path)
  assert len(docs) == 60
  (constant_k,) = [d for d in docs if d.startswith("= Constant k filter =")]
  assert "\n= 1 henry and capacitance C =\n" in constant_k


def test_plain_format_override_splits_on_blank_lines(tmp_path):
  path = WIKITEXT / "wiki.valid.raw"
  runs, current = [], []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        current.append(line.strip())
      elif current:
        runs.append("\n".join(current))
        current = []
  docs = corpora.open_corpus(path, cache_dir=tmp_path, format="plain")
  assert list(docs) == runs
  assert len(docs) != 60


def test_gutenberg_train_has_the_106_books_of_the_manifest(tmp_path):
  docs = corpora.open_corpus(GUTENBERG / "gutenberg_train.txt.xz",
                             cache_dir=tmp_path)
  with open(GUTENBERG / "gutenberg_manifest.tsv", encoding="utf-8") as f:
    manifest = [row for row in csv.DictReader(f, delimiter="\t",
                                              quoting=csv.QUOTE_NONE)
                if row["split"] == "train"]
  assert len(docs) == len(manifest) == 106
  for doc, book in zip(docs, manifest):
    assert doc.count("\n") + 1 == int(book["paragraphs"]), book["title"]
    assert len(doc.split()) == int(book["words"]), book["title"]


def test_folder_glob_and_gzip_give_the_same_documents(tmp_path):
  folder = tmp_path / "corpus"
  folder.mkdir()
  shutil.copy(WIKITEXT / "wiki.valid.raw", folder / "a_wiki.valid.raw")
  shutil.copy(GUTENBERG / "gutenberg_valid.txt.xz", folder / "b_books.txt.xz")
  (folder / ".hidden").write_text("never read\n")
  cache = tmp_path / "cache"
  both = corpora.open_corpus(folder, cache_dir=cache)
  wiki = corpora.open_corpus(WIKITEXT / "wiki.valid.raw", cache_dir=cache)
  books = corpora.open_corpus(f"{folder}/*.xz", cache_dir=cache)
  # Each file is detected on its own: WikiText articles, then 6 books.
  assert len(wiki) == 60 and len(books) == 6
  assert list(both) == list(wiki) + list(books)
  assert books[0].startswith("THE ADVENTURES OF TOM SAWYER")
  with open(WIKITEXT / "wiki.valid.raw", "rb") as src:
    with gzip.open(tmp_path / "wiki.gz", "wb") as dst:
      shutil.copyfileobj(src, dst)
  assert list(corpora.open_corpus(tmp_path / "wiki.gz", cache_dir=cache)) == (
      list(wiki))


def test_random_access_and_batched_reads(tmp_path):
  docs = corpora.open_corpus(WIKITEXT / "wiki.valid.raw", cache_dir=tmp_path)
  assert docs[-1] == docs[59]
  assert docs[2:5] == [docs[2], docs[3], docs[4]]
  assert docs.__getitems__([7, 3]) == [docs[7], docs[3]]
  with pytest.raises(IndexError):
    docs[60]  # pylint: disable=pointless-statement
  # Picklable, for data-loader worker processes.
  assert list(pickle.loads(pickle.dumps(docs))) == list(docs)


def test_cache_is_reused_and_follows_file_changes(tmp_path):
  path = tmp_path / "wiki.raw"
  shutil.copy(WIKITEXT / "wiki.valid.raw", path)
  cache = tmp_path / "cache"
  assert len(corpora.open_corpus(path, cache_dir=cache)) == 60
  assert len(corpora.open_corpus(path, cache_dir=cache)) == 60
  assert len(list((cache / "corpora").iterdir())) == 1
  with open(WIKITEXT / "wiki.test.raw", encoding="utf-8") as f:
    test_split = f.read()
  with open(path, "a", encoding="utf-8") as f:
    f.write(test_split)
  assert len(corpora.open_corpus(path, cache_dir=cache)) == 120
  assert len(list((cache / "corpora").iterdir())) == 2


def test_default_corpus_is_the_embedded_books(tmp_path):
  docs = corpora.open_corpus("default", cache_dir=tmp_path)
  assert len(docs) == 4
  assert [d.split("\n")[0] for d in docs] == [
      "ALICE\u2019S ADVENTURES IN WONDERLAND", "A CHRISTMAS CAROL",
      "ADVENTURES", "PRIDE AND PREJUDICE"]
  assert sum(len(d.split()) for d in docs) == 287_720
  assert corpora.DEFAULT_CORPUS_FILE.stat().st_size < 600_000


class WikitextArticles(tfds.core.GeneratorBasedBuilder,
                       skip_registration=True):
  """A TFDS text dataset made here, read back by name like any TFDS dataset.

  Not registered: `open_corpus('tfds:wikitext_articles')` finds it from its
  prepared files alone, as it would a dataset prepared on another machine.
  Articles are cut with the test's own rule (a title line after a blank
  line), not with corpora.iter_documents.
  """

  name = "wikitext_articles"
  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # See corpora.LocalTextCorpus.code_path.

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(
            {"title": tfds.features.Text(), "text": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"validation": self._generate_examples()}

  def _generate_examples(self):
    with open(WIKITEXT / "wiki.valid.raw", encoding="utf-8") as f:
      lines = f.read().split("\n")
    articles = []
    for i, line in enumerate(lines):
      if re.fullmatch(r" = [^=].* = ", line) and (i == 0 or not lines[i - 1]
                                                 .strip()):
        articles.append([])
      if line.strip():
        articles[-1].append(line.strip())
    for i, article in enumerate(articles):
      yield i, {"title": article[0], "text": "\n".join(article)}


def test_tfds_dataset_opens_by_name_through_the_same_reader(tmp_path):
  tfds_dir = tmp_path / "tfds"
  WikitextArticles(data_dir=os.fspath(tfds_dir),
                   file_format="array_record").download_and_prepare()
  docs = corpora.open_corpus("tfds:wikitext_articles:validation",
                             tfds_data_dir=tfds_dir)
  local = corpora.open_corpus(WIKITEXT / "wiki.valid.raw",
                              cache_dir=tmp_path / "cache")
  assert len(docs) == 60
  assert list(docs) == list(local)
  titles = corpora.open_corpus("tfds:wikitext_articles", split="validation",
                               tfds_data_dir=tfds_dir, text_field="title")
  assert titles[0] == "= Homarus gammarus ="
  with pytest.raises(UserError, match="no split 'train'"):
    corpora.open_corpus("tfds:wikitext_articles", tfds_data_dir=tfds_dir)
  with pytest.raises(UserError, match="no text field 'body'"):
    corpora.open_corpus("tfds:wikitext_articles:validation",
                        tfds_data_dir=tfds_dir, text_field="body")
  assert "tensorflow" not in sys.modules


def test_unknown_or_unprepared_tfds_dataset_is_refused(tmp_path):
  with pytest.raises(UserError, match="tfds has no data for 'no_such_corpus'"
                     ".*downloads are off"):
    corpora.open_corpus("tfds:no_such_corpus", tfds_data_dir=tmp_path)
  with pytest.raises(UserError, match="tfds has no data for 'glue/sst2'"):
    corpora.open_corpus("tfds:glue/sst2:validation", tfds_data_dir=tmp_path,
                        text_field="sentence")


def test_missing_files_and_bad_specs_are_refused(tmp_path):
  with pytest.raises(UserError, match=f"corpus file not found: {tmp_path}/nope"):
    corpora.open_corpus(tmp_path / "nope.txt", cache_dir=tmp_path)
  with pytest.raises(UserError, match="matches no files"):
    corpora.open_corpus(f"{tmp_path}/*.raw", cache_dir=tmp_path)
  (tmp_path / "empty_folder").mkdir()
  with pytest.raises(UserError, match="holds no files"):
    corpora.open_corpus(tmp_path / "empty_folder", cache_dir=tmp_path)
  with pytest.raises(UserError, match="format must be one of"):
    corpora.open_corpus(WIKITEXT / "wiki.valid.raw", format="markdown")


def test_blank_corpus_is_refused_and_leaves_no_cache(tmp_path):
  path = tmp_path / "blank.txt"
  path.write_text("\n \n\t\n")
  cache = tmp_path / "cache"
  with pytest.raises(UserError, match=f"corpus {path} is empty"):
    corpora.open_corpus(path, cache_dir=cache)
  assert not list((cache / "corpora").iterdir())


def test_bytes_that_are_not_utf8_are_refused_with_file_and_line(tmp_path):
  lines = nonblank_lines(WIKITEXT / "wiki.valid.raw")[:5]
  data = "\n".join(lines).encode("utf-8")
  first_four = data.rsplit(b"\n", 1)[0]
  bad = first_four + b"\nLatin-1 text: caf\xe9\n"
  path = tmp_path / "bad.txt"
  path.write_bytes(bad)
  with pytest.raises(UserError,
                     match=rf"{path} line 5: not valid UTF-8 \(byte 0xe9"):
    corpora.open_corpus(path, cache_dir=tmp_path / "cache")
  xz_path = tmp_path / "bad.txt.xz"
  xz_path.write_bytes(lzma.compress(bad))
  with pytest.raises(UserError, match=rf"{xz_path} line 5: not valid UTF-8"):
    corpora.open_corpus(xz_path, cache_dir=tmp_path / "cache")


def test_split_sentences_on_a_real_paragraph(tmp_path):
  pride_and_prejudice = corpora.open_corpus("default", cache_dir=tmp_path)[3]
  (paragraph,) = [p for p in pride_and_prejudice.split("\n")
                  if p.startswith("Mr. Bennet was so odd a mixture")]
  assert corpora.split_sentences(paragraph) == [
      "Mr. Bennet was so odd a mixture of quick parts, sarcastic humour, "
      "reserve, and caprice, that the experience of three-and-twenty years had "
      "been insufficient to make his wife understand his character.",
      "_Her_ mind was less difficult to develop.",
      "She was a woman of mean understanding, little information, and "
      "uncertain temper.",
      "When she was discontented, she fancied herself nervous.",
      "The business of her life was to get her daughters married; its solace "
      "was visiting and news."]


def test_split_sentences_rules():
  # Quotes open and close sentences; 'Mr.' does not end one.
  assert corpora.split_sentences(
      "Mr. Bennet made no answer. \u201cDo you not want to know who has taken "
      "it?\u201d cried his wife impatiently.") == [
          "Mr. Bennet made no answer.",
          "\u201cDo you not want to know who has taken it?\u201d cried his wife "
          "impatiently."]
  # Initials and lower-case continuations do not end a sentence.
  assert corpora.split_sentences(
      "The War of the Worlds is by H. G. Wells. It was published in 1898.") == [
          "The War of the Worlds is by H. G. Wells.",
          "It was published in 1898."]
  assert corpora.split_sentences("Wait... what? it is not. Yes! _") == [
      "Wait... what? it is not.", "Yes! _"]
  assert corpora.split_sentences("   ") == []


def test_split_sentences_keeps_every_word_of_wikitext():
  paragraphs = nonblank_lines(WIKITEXT / "wiki.valid.raw")
  total = 0
  for paragraph in paragraphs:
    sentences = corpora.split_sentences(paragraph)
    assert " ".join(sentences).split() == paragraph.split()
    total += len(sentences)
  # WikiText separates the final period by a space: ' . The ...'.
  assert total > 2 * len(paragraphs)
