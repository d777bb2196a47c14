"""Tokenizers behind one small interface: SentencePiece (ALBERT) and WordPiece.

* `SentencePieceTokenizer` wraps a `sentencepiece` model; `train_sentencepiece`
  trains an ALBERT-style unigram model with `[PAD] [UNK] [CLS] [SEP] [MASK]`
  at ids 0..4.
* `WordPieceTokenizer` wraps Hugging Face `tokenizers` for a BERT checkpoint's
  `tokenizer.json` or `vocab.txt` (+ `tokenizer_config.json`).
* `load_tokenizer(path)` picks the right one for a file or a folder;
  `check_vocab_matches` refuses a model whose embedding table has another size.

Ids never include special tokens unless the caller adds them: `encode` gives
the pieces of the text only. `word_start_mask` marks the ids that begin a word
(for whole-word and n-gram masking) with one numpy gather in a table built
once per vocabulary.
"""

import abc
import os
import pathlib
import time
from typing import Iterable, Iterator, Optional, Sequence, Union

from absl import logging
import numpy as np
import sentencepiece as spm
import tokenizers as hf_tokenizers

from lite_bert import files
from lite_bert.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTENCEPIECE_WORD_START = "\u2581"  # '▁', SentencePiece's whitespace mark.
_SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask")



def _corpora():
  """lite_bert.data.corpora, imported when a tokenizer is trained (it pulls in
  tensorflow-datasets, which loading a tokenizer does not need)."""
  from lite_bert.data import corpora  # pylint: disable=import-outside-toplevel
  return corpora

class Tokenizer(abc.ABC):
  """Text <-> ids, with the special ids the encoder and the masking need.

  Attributes:
    source: the file the vocabulary came from (for error messages).
    vocab_size: V, number of ids (the model's embedding rows must equal it).
    pad_id, unk_id, cls_id, sep_id, mask_id: ids of the special tokens.
  """

  source: str
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  _word_start_table: np.ndarray  # [V] bool

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, no special tokens added."""

  @abc.abstractmethod
  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`[encode(t) for t in texts]`, computed in parallel in native code."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; special tokens (pad/cls/sep/mask) are dropped."""

  @abc.abstractmethod
  def id_to_token(self, i: int) -> str:
    """The vocabulary entry of id `i` (a piece or a WordPiece token)."""

  @property
  def special_ids(self) -> np.ndarray:
    """[5] int32: pad, unk, cls, sep and mask ids, in that order."""
    return np.array([self.pad_id, self.unk_id, self.cls_id, self.sep_id,
                     self.mask_id], np.int32)

  def word_start_mask(self, ids: np.ndarray) -> np.ndarray:
    """True where an id begins a new word; same shape as `ids` (any shape).

    SentencePiece: pieces starting with '▁'. WordPiece: tokens not starting
    with '##'. Special tokens count as word starts.
    """
    return self._word_start_table[np.asarray(ids)]

  def _finish_init(self, word_starts: np.ndarray) -> None:
    word_starts = np.asarray(word_starts, bool)
    word_starts[self.special_ids] = True
    self._word_start_table = word_starts


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model (`.model`), as ALBERT uses.

  Special tokens are found by their pieces (`[PAD]`/`<pad>`, `[UNK]`/`<unk>`,
  `[CLS]`, `[SEP]`, `[MASK]`), so ALBERT's own `spiece.model` loads as well as
  the models `train_sentencepiece` writes.
  """

  def __init__(self, model_path: Union[str, os.PathLike], *,
               do_lower_case: bool = False, num_threads: int = -1):
    """Loads `model_path`.

    Args:
      model_path: a SentencePiece `.model` file.
      do_lower_case: lower-case text in Python before encoding. Models from
        `train_sentencepiece(do_lower_case=True)` fold case in their own
        normalizer and need no help; ALBERT's released models need True.
      num_threads: threads for `encode_batch` (-1: all cores).
    """
    self.source = os.fspath(model_path)
    self._do_lower_case = do_lower_case
    self._num_threads = num_threads
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.Load(self.source)
    except (OSError, RuntimeError) as e:
      raise UserError(f"{self.source}: not a SentencePiece model ({e})") from None
    self.vocab_size = self._sp.GetPieceSize()
    self.pad_id = self._special_id("pad", ("[PAD]", "<pad>"), self._sp.pad_id())
    self.unk_id = self._special_id("unk", ("[UNK]", "<unk>"), self._sp.unk_id())
    self.cls_id = self._special_id("cls", ("[CLS]",), -1)
    self.sep_id = self._special_id("sep", ("[SEP]",), -1)
    self.mask_id = self._special_id("mask", ("[MASK]",), -1)
    pieces = [self._sp.IdToPiece(i) for i in range(self.vocab_size)]
    self._finish_init(np.array(
        [p.startswith(SENTENCEPIECE_WORD_START) or self._sp.IsControl(i)
         or self._sp.IsUnknown(i) for i, p in enumerate(pieces)], bool))

  def _special_id(self, role: str, pieces: Sequence[str], model_id: int) -> int:
    if model_id >= 0:
      return model_id
    for piece in pieces:
      i = self._sp.PieceToId(piece)
      if self._sp.IdToPiece(i) == piece:
        return i
    raise UserError(f"{self.source}: the SentencePiece model has no {role} "
                    f"token (looked for {' or '.join(pieces)})")

  def _prepare(self, text: str) -> str:
    return text.lower() if self._do_lower_case else text

  def encode(self, text: str) -> list[int]:
    return self._sp.Encode(self._prepare(text))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.Encode([self._prepare(t) for t in texts],
                           num_threads=self._num_threads)

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.Decode([int(i) for i in ids])

  def id_to_token(self, i: int) -> str:
    return self._sp.IdToPiece(int(i))

  def normalize(self, text: str) -> str:
    """`text` as the model sees it: what `decode(encode(text))` gives back.

    (Model normalization such as NFKC, case folding and whitespace
    collapsing; exact for any text when the model has byte fallback.)
    """
    normalized = self._sp.Normalize(self._prepare(text))
    return normalized.replace(SENTENCEPIECE_WORD_START, " ").strip(" ")


class WordPieceTokenizer(Tokenizer):
  """BERT's WordPiece through Hugging Face `tokenizers` (Rust, parallel)."""

  def __init__(self, path: Union[str, os.PathLike], *,
               do_lower_case: Optional[bool] = None):
    """Loads a `tokenizer.json` or a `vocab.txt`.

    Args:
      path: `tokenizer.json` (normalizer and all come from it) or `vocab.txt`
        (BERT's normalizer and pre-tokenizer are rebuilt around it).
      do_lower_case: for `vocab.txt` only; None reads `do_lower_case` (and
        `strip_accents`, `tokenize_chinese_chars`) from the
        `tokenizer_config.json` next to it, else True (uncased BERT).
        Ignored for `tokenizer.json`, whose normalizer already says.
    """
    path = pathlib.Path(path)
    self.source = os.fspath(path)
    if not path.is_file():
      raise UserError(f"tokenizer file not found: {path}")
    config = _read_json(path.parent / "tokenizer_config.json")
    special = _special_token_names(path.parent, config)
    if path.suffix == ".json":
      try:
        self._tok = hf_tokenizers.Tokenizer.from_file(self.source)
      except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"{path}: not a tokenizers JSON file ({e})") from None
      # A checkpoint's tokenizer.json may pin truncation/padding (MiniLM:
      # 128); ids here are never cut or padded.
      self._tok.no_truncation()
      self._tok.no_padding()
    else:
      self._tok = _wordpiece_from_vocab(path, config, do_lower_case, special)
    model = self._tok.model
    if not isinstance(model, hf_tokenizers.models.WordPiece):
      raise UserError(f"{path}: a {type(model).__name__} tokenizer, not "
                      "WordPiece; only WordPiece (BERT) tokenizer.json files "
                      "and SentencePiece .model files are supported")
    vocab = self._tok.get_vocab(with_added_tokens=True)
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    for role in _SPECIAL_ROLES:
      token = special[role]
      if token not in vocab:
        raise UserError(f"{path}: the vocabulary has no {role} token "
                        f"{token!r}")
      setattr(self, f"{role}_id", vocab[token])
    prefix = model.continuing_subword_prefix
    tokens = [self._tok.id_to_token(i) or "" for i in range(self.vocab_size)]
    self._finish_init(np.array([not t.startswith(prefix) for t in tokens]))

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    encodings = self._tok.encode_batch_fast(list(texts),
                                            add_special_tokens=False)
    return [e.ids for e in encodings]

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def id_to_token(self, i: int) -> str:
    token = self._tok.id_to_token(int(i))
    if token is None:
      raise IndexError(f"id {i} is outside the vocabulary of {self.source} "
                       f"({self.vocab_size} tokens)")
    return token


def _read_json(path: pathlib.Path) -> dict:
  if not path.is_file():
    return {}
  return files.read_json_object(os.fspath(path))


def _special_token_names(folder: pathlib.Path, config: dict) -> dict:
  """role -> token string, from special_tokens_map.json / tokenizer_config."""
  names = dict(zip(_SPECIAL_ROLES, SPECIAL_TOKENS))
  special_map = _read_json(folder / "special_tokens_map.json")
  for role in _SPECIAL_ROLES:
    for source in (special_map, config):
      value = source.get(f"{role}_token")
      if isinstance(value, dict):  # {"content": "[PAD]", ...}
        value = value.get("content")
      if isinstance(value, str):
        names[role] = value
        break
  return names


def _wordpiece_from_vocab(vocab_path: pathlib.Path, config: dict,
                          do_lower_case: Optional[bool],
                          special: dict) -> hf_tokenizers.Tokenizer:
  """BERT's tokenizer around a vocab.txt, as transformers' BertTokenizer."""
  try:
    vocab = hf_tokenizers.models.WordPiece.read_file(os.fspath(vocab_path))
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{vocab_path}: cannot read the WordPiece vocab ({e})"
                   ) from None
  if not vocab:
    raise UserError(f"{vocab_path}: the WordPiece vocab is empty")
  if do_lower_case is None:
    do_lower_case = bool(config.get("do_lower_case", True))
  tok = hf_tokenizers.Tokenizer(hf_tokenizers.models.WordPiece(
      vocab=vocab, unk_token=special["unk"], max_input_chars_per_word=100))
  tok.normalizer = hf_tokenizers.normalizers.BertNormalizer(
      clean_text=True,
      handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
      strip_accents=config.get("strip_accents"),
      lowercase=do_lower_case)
  tok.pre_tokenizer = hf_tokenizers.pre_tokenizers.BertPreTokenizer()
  tok.decoder = hf_tokenizers.decoders.WordPiece(prefix="##")
  tok.add_special_tokens([t for t in special.values() if t in vocab])
  return tok


def load_tokenizer(path: Union[str, os.PathLike], *,
                   do_lower_case: Optional[bool] = None) -> Tokenizer:
  """Loads a tokenizer from a file or from a folder holding one.

  Args:
    path: a SentencePiece `.model`, a `tokenizer.json`, a `vocab.txt`, or a
      folder with one of them (looked for in that order: `tokenizer.json`,
      `vocab.txt`, `spm.model`, `spiece.model`, any single `*.model`).
    do_lower_case: see `SentencePieceTokenizer` / `WordPieceTokenizer`; None
      takes `do_lower_case` from a `tokenizer_config.json` next to the file
      (SentencePiece: else False; WordPiece vocab.txt: else True).

  Raises:
    UserError: no such file, or nothing a tokenizer can be built from.
  """
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    path = _tokenizer_file_in(path)
  elif not path.is_file():
    raise UserError(f"tokenizer not found: {path}")
  if path.suffix == ".model":
    if do_lower_case is None:
      config = _read_json(path.parent / "tokenizer_config.json")
      do_lower_case = bool(config.get("do_lower_case", False))
    return SentencePieceTokenizer(path, do_lower_case=do_lower_case)
  if path.name.endswith(".json") or path.suffix == ".txt":
    return WordPieceTokenizer(path, do_lower_case=do_lower_case)
  raise UserError(f"{path}: not a tokenizer file; expected a SentencePiece "
                  "'.model', a 'tokenizer.json' or a 'vocab.txt'")


def _tokenizer_file_in(folder: pathlib.Path) -> pathlib.Path:
  for name in ("tokenizer.json", "vocab.txt", "spm.model", "spiece.model"):
    if (folder / name).is_file():
      return folder / name
  models = sorted(folder.glob("*.model"))
  if len(models) == 1:
    return models[0]
  if models:
    raise UserError(f"tokenizer folder {folder} holds several SentencePiece "
                    f"models ({', '.join(m.name for m in models)}); name one")
  raise UserError(f"tokenizer folder {folder} holds no tokenizer.json, "
                  "vocab.txt or SentencePiece .model file")


def check_vocab_matches(tokenizer: Tokenizer, model_vocab_size: int,
                        where: str) -> None:
  """UserError unless the model's vocab size equals the tokenizer's.

  Args:
    tokenizer: the tokenizer that will make the ids.
    model_vocab_size: rows of the model's word-embedding table.
    where: where `model_vocab_size` came from, e.g. 'config.model.vocab_size'
      or a checkpoint path.
  """
  if int(model_vocab_size) != tokenizer.vocab_size:
    raise UserError(
        f"vocab size mismatch: the model has {model_vocab_size} token ids "
        f"({where}) but the tokenizer has {tokenizer.vocab_size} "
        f"({tokenizer.source})")


def training_sentences(texts: Iterable[str], *,
                       max_sentence_chars: int = 2048) -> Iterator[str]:
  """Sentences of texts (documents or paragraphs), for tokenizer training.

  Each line of each text is split with `corpora.split_sentences`; sentences
  longer than `max_sentence_chars` are cut at the last space before it.
  """
  for text in texts:
    for line in text.split("\n"):
      for sentence in _corpora().split_sentences(line):
        if len(sentence) > max_sentence_chars:
          cut = sentence.rfind(" ", 0, max_sentence_chars)
          sentence = sentence[:cut if cut > 0 else max_sentence_chars]
        yield sentence


def train_sentencepiece(
    texts_or_files: Union[str, os.PathLike, Iterable[str]],
    vocab_size: int,
    out_prefix: Union[str, os.PathLike],
    *,
    do_lower_case: bool = True,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    byte_fallback: bool = True,
    max_sentences: int = 1_000_000,
    max_sentence_chars: int = 2048,
    seed: int = 0,
    num_threads: Optional[int] = None,
    corpus_format: str = "auto",
    cache_dir: Optional[Union[str, os.PathLike]] = None,
) -> str:
  """Trains an ALBERT-style SentencePiece model; returns the `.model` path.

  The pieces `[PAD] [UNK] [CLS] [SEP] [MASK]` get ids 0..4 (the last three
  as control symbols: text never produces them). Sentences come from
  `training_sentences`; SentencePiece keeps a uniform sample of at most
  `max_sentences` of them.

  Args:
    texts_or_files: a corpus spec for `corpora.open_corpus` (path, glob,
      'tfds:...', 'default'), or an iterable of texts (documents, paragraphs
      or sentences; lines are split into sentences).
    vocab_size: V, the number of pieces including the 5 special ones (and
      the 256 byte pieces when `byte_fallback`).
    out_prefix: writes `<out_prefix>.model` and `<out_prefix>.vocab`.
    do_lower_case: fold case in the model's normalizer (`nmt_nfkc_cf`), as
      ALBERT lower-cases; False keeps case (`nmt_nfkc`).
    model_type: 'unigram' (ALBERT) or 'bpe'.
    character_coverage: share of characters covered by single-char pieces.
    byte_fallback: encode characters outside the vocabulary as UTF-8 byte
      pieces instead of [UNK], so every text round-trips.
    max_sentences: the cap on sentences SentencePiece samples and trains on.
    max_sentence_chars: longer sentences are cut to this many characters.
    seed: SentencePiece's random seed (sampling of the sentences).
    num_threads: training threads; None uses every core.
    corpus_format: 'auto' | 'plain' | 'wikitext', for a path spec.
    cache_dir: `open_corpus` cache for a path spec.

  Raises:
    UserError: no text, a bad option, or a vocab_size the text cannot fill.
  """
  if model_type not in ("unigram", "bpe"):
    raise UserError(f"tokenizer model_type must be 'unigram' or 'bpe', got "
                    f"{model_type!r}")
  min_size = len(SPECIAL_TOKENS) + (256 if byte_fallback else 0) + 1
  if vocab_size < min_size:
    raise UserError(f"tokenizer vocab_size {vocab_size} is too small: the "
                    f"special and byte pieces alone take {min_size - 1}")
  if isinstance(texts_or_files, (str, os.PathLike)):
    texts = _corpora().open_corpus(texts_or_files, format=corpus_format,
                                cache_dir=cache_dir)
  else:
    texts = texts_or_files
  count = 0

  def sentences():
    nonlocal count
    for sentence in training_sentences(texts,
                                       max_sentence_chars=max_sentence_chars):
      count += 1
      yield sentence

  out_prefix = pathlib.Path(out_prefix)
  out_prefix.parent.mkdir(parents=True, exist_ok=True)
  spm.set_random_generator_seed(seed)
  start = time.perf_counter()
  try:
    spm.SentencePieceTrainer.Train(
        sentence_iterator=sentences(),
        model_prefix=os.fspath(out_prefix),
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        normalization_rule_name="nmt_nfkc_cf" if do_lower_case else "nmt_nfkc",
        pad_id=0, pad_piece=SPECIAL_TOKENS[0],
        unk_id=1, unk_piece=SPECIAL_TOKENS[1],
        bos_id=-1, eos_id=-1,
        control_symbols=list(SPECIAL_TOKENS[2:]),
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        # In bytes: a sentence of max_sentence_chars is never dropped.
        max_sentence_length=4 * max_sentence_chars + 4,
        num_threads=num_threads or os.cpu_count() or 1,
        minloglevel=1,
    )
  except RuntimeError as e:
    message = str(e)
    if count == 0:
      raise UserError("tokenizer training got no text (the corpus has no "
                      "sentences)") from None
    if "Vocabulary size" in message or "vocab_size" in message:
      raise UserError(f"tokenizer vocab_size {vocab_size} does not fit the "
                      f"training text ({count} sentences): {message}"
                     ) from None
    raise
  logging.info("Trained SentencePiece (%d pieces) on %d sentences in %.1fs",
               vocab_size, count, time.perf_counter() - start)
  model_path = f"{out_prefix}.model"
  if not os.path.isfile(model_path):
    raise RuntimeError(f"SentencePiece wrote no {model_path}")
  return model_path


def train_sentencepiece_on_documents(
    documents: Iterable[str],
    *,
    vocab_size: int,
    model_path: Union[str, os.PathLike],
    lower_case: bool = True,
    max_sentences: int = 1_000_000,
    seed: int = 0,
) -> str:
  """`train_sentencepiece` on open documents, writing exactly `model_path`.

  Args:
    documents: texts (e.g. `corpora.open_corpus(...)`), paragraphs split by
      "\\n".
    vocab_size: V, pieces in the model.
    model_path: where the model goes; it must end in '.model' (the '.vocab'
      is written next to it).
    lower_case: fold case in the model (ALBERT's do_lower_case).
    max_sentences: cap on the sentences SentencePiece trains on.
    seed: SentencePiece's sampling seed.
  """
  model_path = os.fspath(model_path)
  if not model_path.endswith(".model"):
    raise UserError(f"tokenizer model path {model_path} must end in '.model'")
  return train_sentencepiece(documents, vocab_size,
                             model_path[:-len(".model")],
                             do_lower_case=lower_case,
                             max_sentences=max_sentences, seed=seed)
