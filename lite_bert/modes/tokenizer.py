"""`mode=tokenizer`: trains a SentencePiece model on a corpus and reports on it.

  python launch.py --config=configs/tokenizer.py --workdir=/tmp/tok

Writes `<workdir>/tokenizer/spm.model` (+ `spm.vocab`, `report.json`) and
prints the vocabulary size, a round-trip example and tokens per word on
paragraphs held out from training. Pretraining runs use the model with
`--config.tokenizer.path=<workdir>/tokenizer/spm.model`.
"""

import json
import os
import time

import numpy as np

from lite_bert.data import corpora
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.train import setup


def _held_out_paragraphs(documents, count: int, seed: int) -> set:
  """(document, line) positions of `count` paragraphs drawn uniformly."""
  sizes = np.array([doc.count("\n") + 1 for doc in documents])
  count = min(count, int(sizes.sum()) // 10)
  if count <= 0:
    return set()
  chosen = np.random.default_rng(seed).choice(sizes.sum(), count, replace=False)
  starts = np.cumsum(sizes) - sizes
  doc_ids = np.searchsorted(starts, chosen, side="right") - 1
  return {(int(d), int(c - starts[d])) for d, c in zip(doc_ids, chosen)}


def _training_paragraphs(documents, held_out: set):
  for d in range(len(documents)):
    for line_number, paragraph in enumerate(documents[d].split("\n")):
      if (d, line_number) not in held_out:
        yield paragraph


def run(config, workdir: str) -> None:
  """Trains `config.tokenizer` on `config.data.corpus` into <workdir>/tokenizer."""
  tok_config = config.tokenizer
  documents = corpora.open_corpus(config.data.corpus, format=config.data.format)
  held_out = _held_out_paragraphs(documents, tok_config.heldout_paragraphs,
                                  config.seed)
  held_out_text = [documents[d].split("\n")[line]
                   for d, line in sorted(held_out)]
  out_dir = os.path.join(workdir, "tokenizer")
  print(f"training a {tok_config.model_type} sentencepiece model of "
        f"{tok_config.vocab_size} pieces on {config.data.corpus} "
        f"({len(documents)} documents, {len(held_out)} paragraphs held out)",
        flush=True)
  start = time.perf_counter()
  model_path = tokenizers.train_sentencepiece(
      _training_paragraphs(documents, held_out),
      tok_config.vocab_size,
      os.path.join(out_dir, "spm"),
      do_lower_case=tok_config.lower_case,
      model_type=tok_config.model_type,
      character_coverage=tok_config.character_coverage,
      byte_fallback=tok_config.byte_fallback,
      max_sentences=tok_config.max_sentences,
      max_sentence_chars=tok_config.max_sentence_chars,
      seed=config.seed)
  train_seconds = time.perf_counter() - start
  tokenizer = tokenizers.SentencePieceTokenizer(model_path)
  report = {"model": model_path, "vocab_size": tokenizer.vocab_size,
            "train_seconds": round(train_seconds, 2),
            "corpus": str(config.data.corpus), "documents": len(documents),
            "heldout_paragraphs": len(held_out_text)}
  print(f"saved {model_path} ({tokenizer.vocab_size} pieces; special ids "
        f"pad={tokenizer.pad_id} unk={tokenizer.unk_id} cls={tokenizer.cls_id} "
        f"sep={tokenizer.sep_id} mask={tokenizer.mask_id}) in "
        f"{train_seconds:.1f}s")
  if not held_out_text:
    print("corpus too small to hold out paragraphs: no held-out report")
  else:
    report.update(_held_out_report(tokenizer, held_out_text))
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  setup.write_config(config, workdir)  # a failed run leaves no config.json behind


def _held_out_report(tokenizer, paragraphs) -> dict:
  """Prints and returns round-trip and tokens-per-word figures."""
  example = corpora.split_sentences(paragraphs[0])[0][:300]
  ids = tokenizer.encode(example)
  pieces = [tokenizer.id_to_token(i) for i in ids]
  print(f"example : {example}")
  print(f"pieces  : {' '.join(pieces)}")
  print(f"decoded : {tokenizer.decode(ids)}")
  encoded = tokenizer.encode_batch(paragraphs)
  num_tokens = sum(len(e) for e in encoded)
  num_words = sum(len(p.split()) for p in paragraphs)
  if num_words == 0:
    raise UserError("the held-out paragraphs have no words")
  round_trips = sum(tokenizer.decode(e) == tokenizer.normalize(p)
                    for e, p in zip(encoded, paragraphs))
  all_ids = np.concatenate([np.asarray(e, np.int64) for e in encoded])
  unknown = int((all_ids == tokenizer.unk_id).sum())
  print(f"held-out: {len(paragraphs)} paragraphs, {num_words} words, "
        f"{num_tokens} tokens = {num_tokens / num_words:.3f} tokens/word; "
        f"{unknown} [UNK]; {round_trips}/{len(paragraphs)} round-trip "
        "exactly (after normalization)")
  return {"heldout_words": num_words, "heldout_tokens": num_tokens,
          "tokens_per_word": round(num_tokens / num_words, 4),
          "heldout_unk": unknown, "heldout_round_trips": round_trips}
