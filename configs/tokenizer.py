r"""Train a SentencePiece tokenizer (`mode=tokenizer`).

  python launch.py --config=configs/tokenizer.py --workdir=/tmp/tok \
      --config.data.corpus=../shared/data/wikitext/wikitext-2-raw/wiki.valid.raw

prints the corpus, the training time, the special ids (pad=0 unk=1 cls=2
sep=3 mask=4), a held-out sentence with its pieces and decoding, and tokens
per word / [UNK] count / exact round trips on paragraphs held out from
training; it writes `/tmp/tok/tokenizer/spm.model`, `spm.vocab` and
`report.json`. Point pretraining at it with
`--config.tokenizer.path=/tmp/tok/tokenizer/spm.model` (its vocab_size must
equal `model.vocab_size`).
"""

from ml_collections import config_dict


def get_config(arg=None) -> config_dict.ConfigDict:
  """The tokenizer-training config; `arg` (after ':') is unused."""
  del arg
  config = config_dict.ConfigDict()
  config.mode = "tokenizer"
  config.seed = 0  # held-out paragraphs and SentencePiece's sentence sampling

  config.data = config_dict.ConfigDict()
  # 'default' (embedded public-domain books), a local path (file, folder,
  # glob; plain text with blank lines between documents, WikiText raw,
  # .xz/.gz), or 'tfds:<name>[:split]'.
  config.data.corpus = "default"
  config.data.format = "auto"  # auto | plain | wikitext (layout of local files)

  config.tokenizer = config_dict.ConfigDict()
  config.tokenizer.vocab_size = 8000  # pieces, the 5 special and 256 byte pieces included
  config.tokenizer.model_type = "unigram"  # unigram (ALBERT) | bpe
  config.tokenizer.lower_case = True  # fold case in the model, as ALBERT does
  config.tokenizer.character_coverage = 0.9995  # share of characters with their own piece
  config.tokenizer.byte_fallback = True  # rare characters as UTF-8 bytes, never [UNK]
  config.tokenizer.max_sentences = 300_000  # sentences sampled to train on (caps time)
  config.tokenizer.max_sentence_chars = 2048  # longer sentences are cut
  config.tokenizer.heldout_paragraphs = 500  # paragraphs kept out of training, for the report
  return config
