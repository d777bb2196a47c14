"""Text corpora as random-access sequences of documents.

`open_corpus(spec)` returns a `Documents` sequence (`len`, `[i]`): item `i` is
one document's text, its paragraphs (lines) joined by "\\n". The spec is one of

* a local path: a file, a folder (every non-hidden file under it, sorted) or a
  glob. Plain text, or `.xz` / `.gz` / `.bz2` compressed (found from the
  file's first bytes). Two layouts:
    - 'plain': one paragraph (or sentence) per line, blank lines between
      documents (BERT's `create_pretraining_data` convention; the Gutenberg
      files in the shared data folder);
    - 'wikitext': WikiText raw files, where a line matching
      `^ = [^=].* = $` (an article title) after a blank line starts a new
      document and blank lines are dropped.
  'auto' picks 'wikitext' for a file whose first non-blank line is an article
  title and 'plain' otherwise.
* `tfds:<name>[/<config>][:<split>]`: any TFDS text dataset already prepared
  (with `file_format='array_record'`) under the TFDS data dir; downloads are
  off.
* `default`: four public-domain books shipped with the package
  (`lite_bert/data/assets/`, see its README).

Local files take the same road as TFDS datasets: a small TFDS builder
(`LocalTextCorpus`) writes their documents once into an array_record file in
a cache folder keyed by the files' paths, sizes and mtimes, and both are then
read through TFDS's random-access `as_data_source()`. None of this imports
TensorFlow (TFDS only needs it for `tf.data` and tfrecord).

`split_sentences(paragraph)` is the rule-based sentence splitter shared by
tokenizer training and pretraining-example creation.
"""

import bz2
import collections.abc
import contextlib
import glob as glob_lib
import gzip
import hashlib
import io
import json
import lzma
import os
import pathlib
import re
import shutil
from typing import Iterator, Optional, Sequence, Union

from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

from lite_bert.errors import UserError

DEFAULT_CORPUS = "default"
DEFAULT_CORPUS_FILE = (
    pathlib.Path(__file__).resolve().parent / "assets" / "gutenberg_default.txt.xz")
FORMATS = ("auto", "plain", "wikitext")
TFDS_PREFIX = "tfds:"
# A WikiText article title line (section headings have `= =` and do not match).
WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")
# Bumped whenever the document layout written into the cache changes.
_CACHE_LAYOUT_VERSION = 2

_MAGIC_OPENERS = (
    (b"\xfd7zXZ\x00", lzma.open),
    (b"\x1f\x8b", gzip.open),
    (b"BZh", bz2.open),
)


def default_cache_dir() -> pathlib.Path:
  """Where prepared local corpora go: `$LITE_BERT_CACHE` or ~/.cache/lite_bert."""
  env = os.environ.get("LITE_BERT_CACHE")
  if env:
    return pathlib.Path(env)
  xdg = os.environ.get("XDG_CACHE_HOME")
  base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
  return base / "lite_bert"


class Documents(collections.abc.Sequence):
  """A random-access sequence of documents over a TFDS data source.

  `docs[i]` is document i as one `str` (paragraphs joined by "\\n");
  `docs.__getitems__(indices)` reads many at once (what grain calls).
  """

  def __init__(self, source, text_field: str, description: str):
    self._source = source
    self._text_field = text_field
    self.description = description

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.__getitems__(range(*index.indices(len(self))))
    index = int(index)
    if index < 0:
      index += len(self)
    if not 0 <= index < len(self):
      raise IndexError(f"document {index} out of range for {len(self)} "
                       f"documents in {self.description}")
    return _as_text(self._source[index][self._text_field])

  def __getitems__(self, indices: Sequence[int]) -> list[str]:
    records = self._source.__getitems__([int(i) for i in indices])
    return [_as_text(r[self._text_field]) for r in records]

  def __repr__(self) -> str:
    return f"Documents({self.description}, {len(self)} documents)"


def _as_text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, str):
    return value
  # numpy scalars / 0-d arrays of bytes.
  return _as_text(value.item())


def open_corpus(spec: Union[str, os.PathLike],
                *,
                split: str = "train",
                cache_dir: Optional[Union[str, os.PathLike]] = None,
                format: str = "auto",  # pylint: disable=redefined-builtin
                text_field: str = "text",
                tfds_data_dir: Optional[Union[str, os.PathLike]] = None,
               ) -> Documents:
  """Opens a corpus as a random-access sequence of documents.

  Args:
    spec: a local file / folder / glob, `tfds:<name>[/<config>][:<split>]`, or
      'default' (the embedded books). See the module docstring.
    split: the TFDS split to read when `spec` names none. Local files and
      'default' hold a single split and ignore it.
    cache_dir: where local corpora are prepared (array_record); default
      `default_cache_dir()`. Preparing happens once per set of files (keyed by
      their absolute paths, sizes and mtimes).
    format: layout of local files: 'auto', 'plain' or 'wikitext'.
    text_field: the feature holding the text in a TFDS dataset.
    tfds_data_dir: the TFDS data dir for `tfds:` specs; default TFDS's own
      (`$TFDS_DATA_DIR` or ~/tensorflow_datasets).

  Returns:
    `Documents`: `len(docs)` documents, `docs[i]` a `str`.

  Raises:
    UserError: a missing file, a corpus with no non-blank line, bytes that are
      not UTF-8 (file and line named), an unknown or unprepared TFDS dataset,
      an unknown split, field or format.
  """
  if format not in FORMATS:
    raise UserError(f"corpus format must be one of {FORMATS}, got {format!r}")
  spec = os.fspath(spec)
  if spec.startswith(TFDS_PREFIX):
    name, spec_split = _parse_tfds_spec(spec)
    return open_tfds_documents(name, split=spec_split or split,
                               data_dir=tfds_data_dir, text_field=text_field)
  if spec == DEFAULT_CORPUS:
    files = [DEFAULT_CORPUS_FILE]
    format = "plain"
  else:
    files = _resolve_files(spec)
  return _open_local(files, format, cache_dir)


def _parse_tfds_spec(spec: str) -> tuple[str, Optional[str]]:
  body = spec[len(TFDS_PREFIX):]
  name, _, split = body.partition(":")
  if not name:
    raise UserError(f"corpus spec {spec!r}: expected tfds:<name>[/<config>]"
                    "[:<split>]")
  return name, (split or None)


def _resolve_files(spec: str) -> list[pathlib.Path]:
  """The files a local spec names, sorted; UserError when there are none."""
  path = pathlib.Path(spec).expanduser()
  if path.is_file():
    return [path]
  if path.is_dir():
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".")
                                   for part in p.relative_to(path).parts))
    if not files:
      raise UserError(f"corpus folder {path} holds no files")
    return files
  if glob_lib.has_magic(spec):
    files = sorted(pathlib.Path(p) for p in glob_lib.glob(
        os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
    if not files:
      raise UserError(f"corpus glob {spec!r} matches no files")
    return files
  raise UserError(f"corpus file not found: {path} (a corpus is a file, a "
                  "folder, a glob, 'tfds:<name>' or 'default')")


def _open_binary(path: pathlib.Path):
  """Opens `path` for reading bytes, decompressing xz / gzip / bz2."""
  with open(path, "rb") as f:
    head = f.read(6)
  for magic, opener in _MAGIC_OPENERS:
    if head.startswith(magic):
      return opener(path, "rb")
  return open(path, "rb")


def read_lines(path: pathlib.Path) -> Iterator[tuple[int, str]]:
  """Yields (line number from 1, line without its end-of-line) of a text file.

  Decompresses xz / gzip / bz2, drops a leading UTF-8 BOM, and raises a
  UserError naming the file and line for bytes that are not UTF-8.
  """
  try:
    with _open_binary(path) as f:
      for number, raw in enumerate(f, start=1):
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise UserError(
              f"{path} line {number}: not valid UTF-8 (byte "
              f"0x{raw[e.start]:02x} at column {e.start + 1})") from None
        if number == 1:
          line = line.removeprefix("\ufeff")
        yield number, line.rstrip("\r\n")
  except (lzma.LZMAError, EOFError, OSError) as e:  # OSError: BadGzipFile too
    if isinstance(e, FileNotFoundError):
      raise UserError(f"corpus file not found: {path}") from None
    raise UserError(f"{path}: cannot read ({e})") from None


def _detect_format(path: pathlib.Path) -> str:
  for _, line in read_lines(path):
    if line.strip():
      return "wikitext" if WIKITEXT_TITLE.match(line) else "plain"
  return "plain"


def iter_documents(path: pathlib.Path,
                   format: str = "auto") -> Iterator[str]:  # pylint: disable=redefined-builtin
  """Yields the documents of one local file (paragraphs joined by "\\n").

  Lines are stripped of surrounding whitespace and blank lines never reach a
  document. 'plain': a blank line ends a document. 'wikitext': a title line
  (`WIKITEXT_TITLE`) after a blank line starts one and is its first line; the
  blank-line condition keeps formula lines such as ' = 1 henry and
  capacitance C = ' (WikiText-2 test, *Constant k filter*) inside their
  article, so both splits have their 60 articles.
  """
  if format == "auto":
    format = _detect_format(path)
  paragraphs = []
  previous_blank = True
  for _, line in read_lines(path):
    text = line.strip()
    if (format == "wikitext" and previous_blank and paragraphs
        and WIKITEXT_TITLE.match(line)):
      yield "\n".join(paragraphs)
      paragraphs = []
    previous_blank = not text
    if text:
      paragraphs.append(text)
    elif format == "plain" and paragraphs:
      yield "\n".join(paragraphs)
      paragraphs = []
  if paragraphs:
    yield "\n".join(paragraphs)


class LocalTextCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder writing the documents of local text files, in file order."""

  name = "lite_bert_local_text"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Documents of local text files."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """No code folder: it only locates checksum files, which need none here.

    TFDS 4.9.10 finds it through the `importlib_resources` backport, which
    Python >= 3.9 installs lack, so the inherited property fails for a
    builder defined inside a package.
    """
    return None

  def __init__(self, *, files: Sequence[pathlib.Path], text_format: str,
               **kwargs):
    self._files = [pathlib.Path(f) for f in files]
    self._text_format = text_format
    super().__init__(**kwargs)
    # TFDS re-creates a builder from these when a data source is unpickled
    # (e.g. sent to a grain worker process).
    self._original_state.update(files=self._files, text_format=text_format,
                                **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Documents (paragraphs joined by newlines) of: "
        + ", ".join(str(f) for f in self._files),
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    count = 0
    for path in self._files:
      for document in iter_documents(path, self._text_format):
        yield count, {"text": document}
        count += 1
    if not count:
      names = ", ".join(str(f) for f in self._files)
      raise UserError(f"corpus {names} is empty: it has no non-blank line")


@contextlib.contextmanager
def _quiet_tfds():
  """Hides TFDS's progress bars, prints and warnings (errors still show)."""
  was_active = getattr(tqdm_utils, "_active", True)
  verbosity = logging.get_verbosity()
  tfds.display_progress_bar(False)
  logging.set_verbosity(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.display_progress_bar(was_active)
    logging.set_verbosity(verbosity)


def _cache_key(files: Sequence[pathlib.Path], text_format: str) -> str:
  entries = []
  for f in files:
    stat = f.stat()
    entries.append([str(f.resolve()), stat.st_size, stat.st_mtime_ns])
  blob = json.dumps([_CACHE_LAYOUT_VERSION, text_format, entries])
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _open_local(files: Sequence[pathlib.Path], text_format: str,
                cache_dir) -> Documents:
  cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  data_dir = cache_dir / "corpora" / _cache_key(files, text_format)
  builder = LocalTextCorpus(files=files, text_format=text_format,
                            data_dir=os.fspath(data_dir),
                            file_format="array_record")
  with _quiet_tfds():  # is_prepared() warns about a missing folder.
    prepared = builder.is_prepared()
  if not prepared:
    logging.info("Preparing corpus %s into %s", [str(f) for f in files],
                 data_dir)
    try:
      with _quiet_tfds():
        builder.download_and_prepare()
    except BaseException:
      shutil.rmtree(data_dir, ignore_errors=True)
      raise
    (data_dir / "sources.json").write_text(json.dumps(
        {"format": text_format, "files": [str(f.resolve()) for f in files]},
        indent=1))
  description = (str(files[0]) if len(files) == 1
                 else f"{len(files)} files from {files[0].parent}")
  return _open_prepared(builder, "train", "text", description)


def open_tfds_documents(name: str, *, split: str = "train",
                        data_dir: Optional[Union[str, os.PathLike]] = None,
                        text_field: str = "text") -> Documents:
  """Opens a prepared TFDS text dataset `name` ('wiki40b/en', ...) by name.

  Goes through `tfds.builder(name, data_dir=..., try_gcs=False)` (the same as
  `tfds.data_source(name, download=False, try_gcs=False)`): a registered
  builder or a prepared copy found under `data_dir` (no builder code needed).
  """
  data_dir = os.fspath(data_dir) if data_dir else None
  where = data_dir or "the default TFDS data dir"
  try:
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except
    # DatasetNotFoundError for unknown names, others for unreadable metadata.
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise UserError(
        f"tfds has no data for {name!r} under {where}: it is not a registered "
        f"TFDS dataset and no prepared copy was found there ({first_line}); "
        "downloads are off, so prepare it elsewhere with "
        "file_format='array_record' and point tfds_data_dir at it") from None
  with _quiet_tfds():
    prepared = builder.is_prepared()
  if not prepared:
    raise UserError(
        f"tfds has no data for {name!r}: it is not prepared under "
        f"{builder.data_dir} and downloads are off; prepare it with "
        "file_format='array_record' and point tfds_data_dir at it")
  return _open_prepared(builder, split, text_field, f"tfds:{name}:{split}")


def _open_prepared(builder, split: str, text_field: str,
                   description: str) -> Documents:
  """The one reader for local and TFDS corpora: a prepared builder's split."""
  splits = sorted(builder.info.splits.keys())
  if split not in splits:
    raise UserError(f"{description}: no split {split!r}; it has {splits}")
  features = builder.info.features
  if text_field not in features:
    raise UserError(f"{description}: no text field {text_field!r}; its "
                    f"features are {sorted(features.keys())}")
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError as e:
    raise UserError(
        f"{description}: prepared as {builder.info.file_format} under "
        f"{builder.data_dir}; random access needs "
        f"file_format='array_record' ({e})") from None
  return Documents(source, text_field, description)


# Words that end with '.' without ending a sentence (compared lower-cased).
_ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr prof st mt jr sr rev hon gen col capt lt sgt cpl "
    "gov sen rep esq mme mlle vs no nos vol vols ch chap fig pp cf e.g i.e "
    "viz approx dept inc ltd co".split())
# Sentence-final punctuation, any closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_OPENING_QUOTES = "\"'\u201c\u2018(["
_EMPHASIS = "_*"  # Gutenberg marks italics as _word_.


def split_sentences(paragraph: str) -> list[str]:
  """Splits a paragraph into sentences with a punctuation rule (no model).

  A sentence ends at '.', '!' or '?' (possibly repeated and followed by
  closing quotes or brackets) when whitespace follows and then an uppercase
  letter or an opening quote/bracket (emphasis marks '_' / '*' before them
  are skipped). A '.' does not end a sentence after a
  common abbreviation ('Mr.', 'Dr.', 'St.', 'e.g.', ...) or after a single
  letter (initials such as 'H. G. Wells'). Good enough for BERT's
  sentence-pair (NSP/SOP) examples; it never downloads anything.

  Args:
    paragraph: one paragraph of text.

  Returns:
    The sentences, stripped, in order; [] for a blank paragraph. Joining them
    with single spaces gives back the paragraph up to whitespace.
  """
  sentences = []
  start = 0
  for match in _BOUNDARY.finditer(paragraph):
    end = match.end()
    if end >= len(paragraph):
      break
    following = paragraph[end:end + 8].lstrip(_EMPHASIS)[:1]
    if not following or not (following.isupper()
                             or following in _OPENING_QUOTES):
      continue
    punctuation_at = match.start()
    if paragraph[punctuation_at] == "." and match.group().count(".") == 1:
      word_start = paragraph.rfind(" ", start, punctuation_at) + 1
      word = paragraph[word_start:punctuation_at].lstrip(_OPENING_QUOTES)
      if len(word) == 1 and word.isalpha() or word.lower() in _ABBREVIATIONS:
        continue
    sentence = paragraph[start:match.end()].strip()
    if sentence:
      sentences.append(sentence)
    start = end
  tail = paragraph[start:].strip()
  if tail:
    sentences.append(tail)
  return sentences
