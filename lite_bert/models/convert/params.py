"""Hugging Face `transformers` BERT / ALBERT / DistilBERT checkpoints <-> lite_bert params.

Reads a checkpoint folder (config.json + model.safetensors, a sharded
model.safetensors.index.json, or pytorch_model.bin) or an in-memory state dict
(name -> numpy array, or torch tensor when torch is installed) and returns the
`PretrainingModel` params tree described in encoder.py and heads.py:

  encoder/...     embeddings, the scanned layers, pooler
  mlm_head/...    transform, layer_norm, output_bias (decoder tied to the
                  word embeddings, as in all three reference models)
  pair_head/...   NSP (BERT) or SOP (ALBERT) classifier

Supported source classes: BertForPreTraining, BertForMaskedLM, BertModel (with
or without the `bert.` prefix), AlbertForPreTraining, AlbertModel,
DistilBertForMaskedLM, DistilBertModel; the encoder part of any other class of
these families (e.g. *ForSequenceClassification) converts too, and its task
head's keys are reported as unused. Parts a checkpoint lacks (the pooler of
BertForMaskedLM, the heads of *Model) are listed in `info['missing']`; callers
initialize them fresh, e.g. with `fill_missing`.

Layout changes: torch Linear weights [out, in] become flax kernels [in, out];
query, key and value fuse into one qkv kernel [H, 3H] (q, k, v along the last
axis, the order `SelfAttention` splits in); per-layer weights stack along a
leading [num_layers] axis, except ALBERT's one shared layer (share='all'),
which carries no layer axis. `hf_state_dict_from_params` is the inverse
(numpy, [out, in]).

For `export.py`, `hf_checkpoint_state_dict` writes the tensors of every
exportable ALBERT form too (E == H, share='none': one layer group per layer).

The tensor side of the Hugging Face conversion: parameter names and layouts.
Configs, class names and tokenizer files are `configs.py`'s
(`load_hf_checkpoint` reads config.json through it); the two are the one
place in lite_bert that knows Hugging Face model names.
"""

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lite_bert import files
from lite_bert.errors import UserError, clip
from lite_bert.models.convert import configs
from lite_bert.models import summary
from lite_bert.models.config import EncoderConfig

# Buffers some checkpoints carry; they hold no weights.
_BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")

# Where each family keeps its encoder body (after the optional base prefix).
_BODY_ROOTS = {
    "bert": ("embeddings.", "encoder.", "pooler."),
    "albert": ("embeddings.", "encoder.", "pooler."),
    "distilbert": ("embeddings.", "transformer."),
}

# The parts of the params tree a checkpoint may or may not hold. `encoder` is
# always required; the others are optional but, if present, complete.
PARTS = ("encoder", "encoder/pooler", "mlm_head", "pair_head")


@dataclasses.dataclass(frozen=True)
class _Spec:
  """One lite_bert leaf and the Hugging Face tensor(s) it is made of.

  path: the leaf's path in the params tree.
  keys: HF names, `{i}` standing for the layer index when `per_layer`.
  kind: 'copy' (same layout), 'linear' (torch [out, in] -> flax [in, out]),
    'fused' (three Linear weights or biases -> one qkv kernel or bias).
  per_layer: the leaf stacks the HF layers along a leading axis.
  part: which of PARTS it belongs to.
  """

  path: Tuple[str, ...]
  keys: Tuple[str, ...]
  kind: str = "copy"
  per_layer: bool = False
  part: str = "encoder"


def _dense(path, hf_name, part="encoder", per_layer=False) -> List[_Spec]:
  """A torch Linear `hf_name` -> flax Dense at `path` (kernel and bias)."""
  return [_Spec(path + ("kernel",), (hf_name + ".weight",), "linear", per_layer, part),
          _Spec(path + ("bias",), (hf_name + ".bias",), "copy", per_layer, part)]


def _layer_norm(path, hf_name, part="encoder", per_layer=False) -> List[_Spec]:
  return [_Spec(path + ("scale",), (hf_name + ".weight",), "copy", per_layer, part),
          _Spec(path + ("bias",), (hf_name + ".bias",), "copy", per_layer, part)]


def _qkv(path, q, k, v, per_layer) -> List[_Spec]:
  return [_Spec(path + ("kernel",), (q + ".weight", k + ".weight", v + ".weight"), "fused",
                per_layer),
          _Spec(path + ("bias",), (q + ".bias", k + ".bias", v + ".bias"), "fused", per_layer)]


def _specs(cfg: EncoderConfig, arch: str, prefix: str) -> Tuple[List[_Spec], Dict[str, str]]:
  """The full name mapping of one family, and its tied keys.

  Returns (specs, tied): `tied` maps an HF key that duplicates another
  (the MLM decoder tied to the word embeddings, BERT's second copy of the
  output bias) to the key it must equal.
  """
  p = prefix
  emb = ("encoder", "embeddings")
  specs = [
      _Spec(emb + ("word_embeddings", "embedding"), (p + "embeddings.word_embeddings.weight",)),
      _Spec(emb + ("position_embeddings", "embedding"),
            (p + "embeddings.position_embeddings.weight",)),
  ]
  if cfg.type_vocab_size:
    specs.append(_Spec(emb + ("token_type_embeddings", "embedding"),
                       (p + "embeddings.token_type_embeddings.weight",)))
  specs += _layer_norm(emb + ("layer_norm",), p + "embeddings.LayerNorm")

  layers = ("encoder", "layers")
  att, ffn = layers + ("attention",), layers + ("ffn",)
  if arch == "bert":
    l = p + "encoder.layer.{i}."
    specs += _qkv(att + ("qkv",), l + "attention.self.query", l + "attention.self.key",
                  l + "attention.self.value", per_layer=True)
    specs += _dense(att + ("output",), l + "attention.output.dense", per_layer=True)
    specs += _layer_norm(att + ("layer_norm",), l + "attention.output.LayerNorm", per_layer=True)
    specs += _dense(ffn + ("intermediate",), l + "intermediate.dense", per_layer=True)
    specs += _dense(ffn + ("output",), l + "output.dense", per_layer=True)
    specs += _layer_norm(ffn + ("layer_norm",), l + "output.LayerNorm", per_layer=True)
    specs += _dense(("encoder", "pooler"), p + "pooler.dense", part="encoder/pooler")
    specs += _dense(("mlm_head", "transform"), "cls.predictions.transform.dense", "mlm_head")
    specs += _layer_norm(("mlm_head", "layer_norm"), "cls.predictions.transform.LayerNorm",
                         "mlm_head")
    specs.append(_Spec(("mlm_head", "output_bias"), ("cls.predictions.bias",), part="mlm_head"))
    specs += _dense(("pair_head", "classifier"), "cls.seq_relationship", "pair_head")
    tied = {"cls.predictions.decoder.weight": p + "embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias"}
  elif arch == "albert":
    # One layer group with one layer, applied num_layers times (share='all').
    l = p + "encoder.albert_layer_groups.0.albert_layers.0."
    specs += _dense(emb + ("projection",), p + "encoder.embedding_hidden_mapping_in")
    specs += _qkv(att + ("qkv",), l + "attention.query", l + "attention.key",
                  l + "attention.value", per_layer=False)
    specs += _dense(att + ("output",), l + "attention.dense")
    specs += _layer_norm(att + ("layer_norm",), l + "attention.LayerNorm")
    specs += _dense(ffn + ("intermediate",), l + "ffn")
    specs += _dense(ffn + ("output",), l + "ffn_output")
    specs += _layer_norm(ffn + ("layer_norm",), l + "full_layer_layer_norm")
    specs += _dense(("encoder", "pooler"), p + "pooler", part="encoder/pooler")
    specs += _dense(("mlm_head", "transform"), "predictions.dense", "mlm_head")
    specs += _layer_norm(("mlm_head", "layer_norm"), "predictions.LayerNorm", "mlm_head")
    specs.append(_Spec(("mlm_head", "output_bias"), ("predictions.bias",), part="mlm_head"))
    specs += _dense(("pair_head", "classifier"), "sop_classifier.classifier", "pair_head")
    tied = {"predictions.decoder.weight": p + "embeddings.word_embeddings.weight",
            "predictions.decoder.bias": "predictions.bias"}
  else:  # distilbert
    l = p + "transformer.layer.{i}."
    specs += _qkv(att + ("qkv",), l + "attention.q_lin", l + "attention.k_lin",
                  l + "attention.v_lin", per_layer=True)
    specs += _dense(att + ("output",), l + "attention.out_lin", per_layer=True)
    specs += _layer_norm(att + ("layer_norm",), l + "sa_layer_norm", per_layer=True)
    specs += _dense(ffn + ("intermediate",), l + "ffn.lin1", per_layer=True)
    specs += _dense(ffn + ("output",), l + "ffn.lin2", per_layer=True)
    specs += _layer_norm(ffn + ("layer_norm",), l + "output_layer_norm", per_layer=True)
    specs += _dense(("mlm_head", "transform"), "vocab_transform", "mlm_head")
    specs += _layer_norm(("mlm_head", "layer_norm"), "vocab_layer_norm", "mlm_head")
    specs.append(_Spec(("mlm_head", "output_bias"), ("vocab_projector.bias",),
                       part="mlm_head"))
    tied = {"vocab_projector.weight": p + "embeddings.word_embeddings.weight"}
  wanted = {"encoder", "mlm_head"}
  if cfg.pooler:
    wanted.add("encoder/pooler")
    if arch != "distilbert":
      wanted.add("pair_head")
  return [s for s in specs if s.part in wanted], tied


def _to_numpy(value: Any, key: str) -> np.ndarray:
  """A state-dict value as a numpy array; torch tensors only if torch is installed."""
  if isinstance(value, np.ndarray):
    return value
  if type(value).__module__.split(".")[0] == "torch":
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:  # pragma: no cover - a torch tensor implies torch
      raise UserError(f"state dict entry {key} is a torch tensor but torch cannot be "
                      f"imported: {e}") from e
    tensor = value.detach().cpu()
    if tensor.dtype == torch.bfloat16:
      tensor = tensor.float()
    return tensor.numpy()
  return np.asarray(value)


def _abstract_params(cfg: EncoderConfig, pair_head: bool) -> dict:
  return summary.abstract_pretraining_params(cfg, pair_head=pair_head)


def _leaf(tree: Mapping[str, Any], path: Tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: dict, path: Tuple[str, ...], value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _hf_shapes(spec: _Spec, shape: Tuple[int, ...]) -> List[Tuple[int, ...]]:
  """Shapes of the HF tensors behind one layer's slice `shape` of a leaf."""
  if spec.kind == "copy":
    return [tuple(shape)]
  if spec.kind == "linear":
    return [tuple(reversed(shape))]
  # fused: kernel [H, 3H] <- three [H, H] weights; bias [3H] <- three [H].
  if len(shape) == 2:
    return [(shape[1] // 3, shape[0])] * 3
  return [(shape[0] // 3,)] * 3


def _combine(spec: _Spec, arrays: List[np.ndarray]) -> np.ndarray:
  if spec.kind == "copy":
    return arrays[0]
  if spec.kind == "linear":
    return arrays[0].T
  if arrays[0].ndim == 2:
    return np.concatenate([a.T for a in arrays], axis=1)
  return np.concatenate(arrays, axis=0)


def _split(spec: _Spec, value: np.ndarray) -> List[np.ndarray]:
  """Inverse of `_combine`."""
  if spec.kind == "copy":
    return [value]
  if spec.kind == "linear":
    return [value.T]
  parts = np.split(value, 3, axis=-1)
  return [p.T for p in parts] if value.ndim == 2 else parts


def _layer_keys(spec: _Spec, num_layers: int) -> List[List[str]]:
  """The HF keys of a spec, one list per layer (one list if not per layer)."""
  if not spec.per_layer:
    return [list(spec.keys)]
  return [[k.format(i=i) for k in spec.keys] for i in range(num_layers)]


def _find_prefix(keys, arch: str) -> str:
  prefix = arch + "."
  if any(k.startswith(prefix + root) for k in keys for root in _BODY_ROOTS[arch]):
    return prefix
  return ""


def _check_arch(cfg: EncoderConfig, arch: str) -> None:
  if arch not in configs.ARCHS:
    raise UserError(f"arch={arch!r} is not supported; lite_bert converts "
                    f"{configs.ARCHS}")
  share = "all" if arch == "albert" else "none"
  if cfg.share != share:
    raise UserError(f"a Hugging Face {arch} checkpoint converts to model.share={share!r}, "
                    f"got model.share={cfg.share!r}")
  if (arch == "albert") != (cfg.embedding_dim != cfg.hidden_size):
    raise UserError(
        f"a Hugging Face {arch} checkpoint needs model.embedding_size "
        f"{'!=' if arch == 'albert' else '=='} hidden_size, got embedding_size="
        f"{cfg.embedding_dim}, hidden_size={cfg.hidden_size}")
  if arch == "distilbert" and (cfg.type_vocab_size or cfg.pooler):
    raise UserError("a Hugging Face DistilBERT checkpoint has no token types and no pooler: "
                    "set model.type_vocab_size=0 and model.pooler=False")


def params_from_hf_state_dict(state_dict: Mapping[str, Any], cfg: EncoderConfig,
                              arch: str) -> Tuple[dict, dict]:
  """Converts a Hugging Face state dict into a lite_bert PretrainingModel params tree.

  Args:
    state_dict: HF name -> numpy array (or torch tensor, if torch is
      installed), with or without the base-model prefix (`bert.`, `albert.`,
      `distilbert.`).
    cfg: the target architecture (see `configs.encoder_config_from_hf`);
      every tensor's shape is checked against it.
    arch: 'bert', 'albert' or 'distilbert'.

  Returns:
    (params, info). `params` holds numpy arrays in `cfg.param_dtype` under
    `encoder` (always; without `pooler` if the checkpoint has none),
    `mlm_head` and `pair_head` (when the checkpoint has them). `info` has
      arch, prefix: the family and the base-model prefix found;
      converted, missing: which of PARTS were converted / are absent (the
        caller initializes the missing ones fresh, see `fill_missing`);
      unused_keys: tensors outside the encoder body that were not used (e.g.
        a sequence-classification head);
      ignored_keys: buffers (position_ids) and tied duplicates checked equal.

  Raises:
    UserError naming the key for: a missing encoder tensor (or a part present
    only in part), a shape that does not match `cfg`, an untied MLM decoder
    (lite_bert ties it to the word embeddings), and encoder-body tensors the
    config does not account for (e.g. more layers than `cfg.num_layers`).
  """
  _check_arch(cfg, arch)
  keys = list(state_dict)
  prefix = _find_prefix(keys, arch)
  specs, tied = _specs(cfg, arch, prefix)
  pair_head = cfg.pooler and arch != "distilbert"
  target = _abstract_params(cfg, pair_head)
  dtype = jnp.dtype(cfg.param_dtype)
  arrays = {}  # key -> numpy, converted lazily

  def array(key):
    if key not in arrays:
      arrays[key] = _to_numpy(state_dict[key], key)
    return arrays[key]

  # A tied duplicate stands in for its canonical key when that one is absent.
  alias = {}
  for dup, canonical in tied.items():
    if canonical not in state_dict and dup in state_dict:
      alias[canonical] = dup

  def source(key):
    return alias.get(key, key)

  # Which optional parts the checkpoint holds: all of their keys, or none.
  by_part = {}
  for spec in specs:
    for layer in _layer_keys(spec, cfg.num_layers):
      by_part.setdefault(spec.part, []).extend(layer)
  present = {}
  for part, part_keys in by_part.items():
    missing = [k for k in part_keys if source(k) not in state_dict]
    if missing and (part == "encoder" or len(missing) < len(part_keys)):
      more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
      raise UserError(f"Hugging Face {arch} state dict lacks {part} tensor(s) "
                      f"{missing[:5]}{more}")
    present[part] = not missing

  params, used = {}, set()
  for spec in specs:
    if not present[spec.part]:
      continue
    leaf = _leaf(target, spec.path)
    shape = leaf.shape[1:] if spec.per_layer else leaf.shape
    expected = _hf_shapes(spec, shape)
    per_layer = []
    for layer in _layer_keys(spec, cfg.num_layers):
      parts = []
      for key, want in zip(layer, expected):
        got = array(source(key))
        if tuple(got.shape) != want:
          raise UserError(f"Hugging Face tensor {source(key)} has shape {tuple(got.shape)}, "
                          f"the config expects {want} (for {'/'.join(spec.path)})")
        parts.append(got)
        used.add(source(key))
      per_layer.append(_combine(spec, parts))
    value = np.stack(per_layer) if spec.per_layer else per_layer[0]
    _set(params, spec.path, np.asarray(value, dtype))

  ignored = []
  for dup, canonical in tied.items():
    if dup in state_dict and dup not in used:
      if canonical in state_dict and not np.array_equal(array(dup), array(canonical)):
        raise UserError(f"Hugging Face tensor {dup} differs from {canonical}; lite_bert ties "
                        f"the MLM decoder to the word embeddings and cannot hold both")
      ignored.append(dup)
  ignored += [k for k in keys if k.endswith(_BUFFER_SUFFIXES)]
  leftover = [k for k in keys if k not in used and k not in ignored]
  body = [k for k in leftover if k.startswith(prefix)
          and k[len(prefix):].startswith(_BODY_ROOTS[arch])]
  if body:
    more = f" (and {len(body) - 5} more)" if len(body) > 5 else ""
    raise UserError(f"Hugging Face {arch} state dict has encoder tensor(s) the config does not "
                    f"account for: {body[:5]}{more} (num_layers={cfg.num_layers}, "
                    f"share={cfg.share!r})")
  info = dict(
      arch=arch,
      prefix=prefix,
      converted=[p for p in PARTS if present.get(p)],
      missing=[p for p in PARTS if p in present and not present[p]],
      unused_keys=sorted(leftover),
      ignored_keys=sorted(ignored),
  )
  return params, info


def hf_state_dict_from_params(params: Mapping[str, Any], cfg: EncoderConfig, arch: str,
                              prefix: Optional[str] = None) -> Dict[str, np.ndarray]:
  """The inverse mapping: lite_bert params -> HF state dict of numpy arrays.

  Writes every part `params` holds (encoder, pooler, mlm_head, pair_head) under
  the names of the *ForPreTraining / *ForMaskedLM class; `prefix` defaults to
  the family's base prefix (`bert.` ...), '' gives *Model names. Tied
  duplicates (the MLM decoder weight) are not written.
  """
  _check_arch(cfg, arch)
  prefix = arch + "." if prefix is None else prefix
  specs, _ = _specs(cfg, arch, prefix)
  out = {}
  for spec in specs:
    try:
      value = np.asarray(_leaf(params, spec.path))
    except KeyError:
      continue
    per_layer = list(value) if spec.per_layer else [value]
    for layer_keys, layer_value in zip(_layer_keys(spec, cfg.num_layers), per_layer):
      for key, part in zip(layer_keys, _split(spec, layer_value)):
        out[key] = np.ascontiguousarray(part)
  return out


def fill_missing(params: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict:
  """`fresh`'s tree with every leaf that `params` also has taken from `params`.

  Use it to complete a converted tree (e.g. a checkpoint without pooler or
  heads) with freshly initialized params, or to start a ClassificationModel
  from a converted encoder. Raises UserError if a shared leaf's shape differs.
  """
  def merge(path, new):
    try:
      old = _leaf(params, tuple(k.key for k in path))
    except (KeyError, TypeError):
      return new
    if tuple(np.shape(old)) != tuple(new.shape):
      name = "/".join(k.key for k in path)
      raise UserError(f"converted param {name} has shape {tuple(np.shape(old))}, the model "
                      f"expects {tuple(new.shape)}")
    return jnp.asarray(old, new.dtype)
  return jax.tree_util.tree_map_with_path(merge, dict(fresh))


def read_hf_state_dict(folder: str) -> Dict[str, np.ndarray]:
  """Reads model.safetensors (or its sharded index) or pytorch_model.bin from `folder`."""
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single = os.path.join(folder, "model.safetensors")
  index = single + ".index.json"
  binary = os.path.join(folder, "pytorch_model.bin")
  try:
    if os.path.exists(single):
      return load_file(single)
    if os.path.exists(index):
      weight_map = files.read_json_object(index, dict_fields=("weight_map",))["weight_map"]
      shards = sorted({str(shard) for shard in weight_map.values()})
      state = {}
      for shard in shards:
        state.update(load_file(os.path.join(folder, shard)))
      return state
  except (OSError, ValueError, KeyError, SafetensorError) as e:
    # A truncated or foreign file: the library's own words, cut to one short line.
    raise UserError(f"cannot read the safetensors checkpoint in {folder}: "
                    f"{type(e).__name__}: {clip(str(e))}") from e
  if os.path.exists(binary):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise UserError(f"{binary} is a torch pickle and torch is not installed; convert it to "
                      f"model.safetensors or install torch") from e
    try:
      state = torch.load(binary, map_location="cpu", weights_only=True)
    except Exception as e:  # pylint: disable=broad-except  # truncated or not a torch file
      raise UserError(f"cannot read {binary}: {type(e).__name__}: {clip(str(e))}") from e
    return {k: _to_numpy(v, k) for k, v in state.items()}
  raise UserError(f"{folder} has no model.safetensors, model.safetensors.index.json or "
                  f"pytorch_model.bin")


def load_hf_checkpoint(folder: str) -> Tuple[EncoderConfig, dict, dict]:
  """Loads a Hugging Face checkpoint folder: (EncoderConfig, params, info).

  `info` is `params_from_hf_state_dict`'s, plus `pair_head` (whether the
  family's PretrainingModel has an NSP/SOP head) and `hf_config` (the
  config.json dict).
  """
  hf_config = files.read_json_object(os.path.join(folder, "config.json"))
  cfg, arch, pair_head = configs.encoder_config_from_hf(hf_config)
  params, info = params_from_hf_state_dict(read_hf_state_dict(folder), cfg, arch)
  info.update(pair_head=pair_head, hf_config=hf_config)
  return cfg, params, info


# --------------------------------------------- lite_bert -> checkpoint tensors

def _numpy_tree(tree: Any) -> Any:
  if hasattr(tree, "items"):
    return {k: _numpy_tree(v) for k, v in tree.items()}
  return np.asarray(tree)


def _map(fn, tree):
  if hasattr(tree, "items"):
    return {k: _map(fn, v) for k, v in tree.items()}
  return fn(tree)


def _albert_state_dict(params: dict, cfg: EncoderConfig, prefix: str) -> dict:
  """ALBERT names for share='all' or 'none', with E == H as an identity projection.

  `hf_state_dict_from_params` names share='all', E != H models; the other
  forms are written through it: a placeholder E in the (name-only) config, an
  explicit identity projection for E == H, and one layer group per layer for
  share='none'.
  """
  params = dict(params)
  naming_cfg = cfg
  if cfg.embedding_dim == cfg.hidden_size:
    encoder = dict(params["encoder"])
    encoder["embeddings"] = dict(encoder["embeddings"])
    encoder["embeddings"]["projection"] = {
        "kernel": np.eye(cfg.hidden_size, dtype=np.float32),
        "bias": np.zeros(cfg.hidden_size, np.float32)}
    params["encoder"] = encoder
    naming_cfg = dataclasses.replace(cfg, embedding_size=cfg.hidden_size + 1)
  naming_cfg = dataclasses.replace(naming_cfg, share="all")
  if cfg.share == "all":
    return hf_state_dict_from_params(params, naming_cfg, "albert", prefix)
  layers = params["encoder"]["layers"]
  group0 = prefix + "encoder.albert_layer_groups.0."
  out = {}
  for i in range(cfg.num_layers):
    one = dict(params)
    one["encoder"] = dict(params["encoder"])
    one["encoder"]["layers"] = _map(lambda x: x[i], layers)
    state = hf_state_dict_from_params(one, naming_cfg, "albert", prefix)
    for key, value in state.items():
      if key.startswith(group0):
        out[f"{prefix}encoder.albert_layer_groups.{i}." + key[len(group0):]] = value
      elif i == 0:
        out[key] = value
  return out


def hf_checkpoint_state_dict(params: Mapping[str, Any], cfg: EncoderConfig,
                             arch: str) -> Dict[str, np.ndarray]:
  """A checkpoint's tensors (float32 numpy), named for the class `params` fills.

  The class is `configs.hf_architecture(arch, params)`: *Model names
  (no prefix) without an MLM head, else `arch.`-prefixed ones.

  Unlike `hf_state_dict_from_params`, also the ALBERT forms lite_bert does not
  read back: E == H (an identity E->H projection) and share='none' (one layer
  group per layer). Parts other than encoder, mlm_head and pair_head are left out.
  """
  params = {k: v for k, v in _numpy_tree(params).items()
            if k in ("encoder", "mlm_head", "pair_head")}
  base_model = "mlm_head" not in params
  prefix = "" if base_model else arch + "."
  if arch == "albert":
    state = _albert_state_dict(params, cfg, prefix)
  else:
    state = hf_state_dict_from_params(params, cfg, arch, prefix)
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
