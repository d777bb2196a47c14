"""What the benchmark times: one `Candidate` per (model, implementation, grid point).

Each builder returns a `timing.Candidate` whose `prepare` compiles (or loads)
and warms up once, returning the row's fixed fields (compile and warm-up
seconds, XLA's memory and FLOP counts, the objective), and whose `run` is one
timed call:

  our_inference    our encoder forward, jitted, in the run's inference layout
  torch_inference  the HF torch model, eval + inference_mode
  flax_inference   the HF Flax model, in the reference worker's process
  our_training     one `lite_bert.train.loop.train_step` with the model's
                   objective and optimizer (DistilBERT: its triple loss with a
                   frozen BERT teacher)
  torch_training   the equivalent HF torch step (same objective, torch AdamW)

plus `init_params` (the random weights every implementation shares) and
`parity` (ours vs each reference on the same weights). `benchmark_run.py`
decides which candidates run together and times them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import numpy as np

import jax
import jax.numpy as jnp

from experiments.benchmark_inputs import (MODELS, make_inputs, make_pretraining_batch,
                                          optim_config)
from experiments.timing import Candidate, timed_call
from experiments.torch_reference import (torch_adamw, torch_autocast, torch_distillation_loss,
                                         torch_model, torch_pretraining_loss, torch_tensors)
from lite_bert import teachers
from lite_bert.models import convert
from lite_bert.models.config import EncoderConfig
from lite_bert.models.encoder import Encoder, unstack_layers
from lite_bert.models.flops import (corrected_xla_flops, masked_positions_per_seq, xla_flops,
                                    xla_memory)
from lite_bert.models.heads import PretrainingModel
from lite_bert.train import loop as loop_lib
from lite_bert.train import objectives
from lite_bert.train import optim


def init_params(cfgs: dict) -> dict:
  """PretrainingModel params per model (the encoder part drives inference)."""
  params = {}
  for m in (m for m in MODELS if m in cfgs):
    cfg = cfgs[m]
    model = PretrainingModel(cfg, pair_head=m != "distilbert")
    ids = jnp.ones((1, 8), jnp.int32)
    params[m] = jax.jit(lambda rng, model=model, ids=ids: model.init(rng, ids)["params"])(
        jax.random.key({"bert": 0, "distilbert": 1, "albert": 2}[m]))
  return params


# ---- inference

def inference_model(cfg: EncoderConfig, params, layout: str) -> tuple[Encoder, Any]:
  """The encoder and its params in `layout` (`--inference-layout`: 'unrolled' or 'scanned')."""
  if layout == "scanned":
    return Encoder(cfg), params
  return (Encoder(dataclasses.replace(cfg, scan_layers=False)),
          unstack_layers(params, cfg))


def our_inference(m: str, cfg: EncoderConfig, params, batch: int, seq: int,
                  layout: str) -> Candidate:
  """Our encoder forward at batch x seq (`params`: the encoder's, in the scanned layout)."""
  inputs = {k: jnp.asarray(v) for k, v in make_inputs(cfg, batch, seq).items()}
  state = {}
  # share='all' scans in either layout (see EncoderConfig.scan_layers)
  scans = layout == "scanned" or cfg.share == "all"
  scanned = [(cfg, batch, seq, False)] if scans else []

  def prepare():
    enc, layout_params = inference_model(cfg, params, layout)

    def forward(p, ids, mask, types):
      return enc.apply({"params": p}, ids, mask, types, deterministic=True)

    args = (layout_params, inputs["input_ids"], inputs["attention_mask"],
            inputs.get("token_type_ids"))
    start = time.perf_counter()
    compiled = jax.jit(forward).lower(*args).compile()
    compile_s = time.perf_counter() - start
    state["call"] = lambda: jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    state["call"]()
    warm = time.perf_counter() - start
    counted = xla_flops(compiled)
    return {"compile_s": compile_s, "warmup_s": warm, "xla_memory": xla_memory(compiled),
            "xla_flops_counted": counted,
            "xla_flops": corrected_xla_flops(counted, scanned)}

  def cleanup():
    state.clear()

  return Candidate(m, "ours", prepare, lambda: timed_call(state["call"]), cleanup)


def torch_inference(m: str, cfg: EncoderConfig, tmodel, batch: int, seq: int,
                    dtype: str) -> Candidate:
  """The HF torch model `tmodel`'s forward at batch x seq, computing in `dtype`."""
  import torch
  inputs = torch_tensors(make_inputs(cfg, batch, seq))

  def call():
    with torch.inference_mode(), torch_autocast(dtype):
      tmodel(**inputs)

  def prepare():
    start = time.perf_counter()
    call()
    return {"warmup_s": time.perf_counter() - start, "compile_s": 0.0,
            "attn_implementation": tmodel.config._attn_implementation}

  return Candidate(m, "hf_torch", prepare, lambda: timed_call(call))


def flax_inference(flax, m: str, cfg: EncoderConfig, batch: int, seq: int,
                   tmp: str) -> Candidate:
  """The HF Flax model `m` (loaded in the worker `flax`) at batch x seq; inputs under `tmp`."""
  key = f"{batch}x{seq}"
  path = os.path.join(tmp, f"{m}_{key}.npz")
  np.savez(path, **make_inputs(cfg, batch, seq))

  def prepare():
    return flax.call(cmd="prepare", name=m, key=key, ids=path)

  def run():
    r = flax.call(cmd="time", name=m, key=key)
    return r["seconds"], r["rss_peak_delta_bytes"], r["cpu_s"]

  return Candidate(m, "hf_flax", prepare, run,
                   lambda: flax.call(cmd="drop", name=m, key=key))


def parity(m: str, cfg: EncoderConfig, params, refs, *, layout: str, dtype: str, flax,
           tmp: str) -> dict:
  """Max |difference| of last_hidden_state, ours vs each reference, same weights."""
  import torch
  inputs = make_inputs(cfg, 2, 16, seed=123)
  enc, layout_params = inference_model(cfg, params["encoder"], layout)
  ours = enc.apply({"params": layout_params}, *(
      jnp.asarray(inputs[k]) if k in inputs else None
      for k in ("input_ids", "attention_mask", "token_type_ids")))["last_hidden_state"]
  ours = np.asarray(ours, np.float32)
  out = {}
  with torch.inference_mode(), torch_autocast(dtype):
    theirs = refs["torch"][m](**torch_tensors(inputs))[0].float().numpy()
  out["hf_torch_max_abs_diff"] = float(np.max(np.abs(ours - theirs)))
  if m in refs["flax_loaded"]:
    path = os.path.join(tmp, f"parity_{m}.npz")
    np.savez(path, **inputs)
    flax.call(cmd="prepare", name=m, key="parity", ids=path)
    npy = os.path.join(tmp, f"parity_{m}.npy")
    flax.call(cmd="output", name=m, key="parity", path=npy)
    flax.call(cmd="drop", name=m, key="parity")
    out["hf_flax_max_abs_diff"] = float(np.max(np.abs(ours - np.load(npy))))
  return out


# ---- training

def our_training(m: str, cfgs: dict, params, batch: int, seq: int, *, size: str,
                 teacher_params, deterministic_loss: bool,
                 layout: str = "scanned", impl: str = "ours",
                 teacher_layout: str = "unrolled") -> Candidate:
  """One jitted training step of model `m` (`cfgs`: every model's config, BERT the teacher).

  `teacher_params`: the frozen BERT teacher's (DistilBERT only), stacked;
  `deterministic_loss`: also record the loss without dropout (to compare with HF torch's);
  `layout`: 'unrolled' trains separately stored layers (`scan_layers=False`);
  `teacher_layout`: the frozen teacher's, 'unrolled' as `teachers.frozen_layout` runs it in
  the library, or 'scanned'.
  """
  cfg = cfgs[m]
  if layout == "unrolled" and cfg.share != "all":
    cfg = dataclasses.replace(cfg, scan_layers=False)
    params = unstack_layers(params, cfg)
  model = PretrainingModel(cfg, pair_head=m != "distilbert")
  data = {k: jnp.asarray(v) for k, v in make_pretraining_batch(cfg, batch, seq).items()}
  frozen = None
  # XLA counts a scanned stack's block once; separately stored layers are all counted.
  stacks = [(cfg, batch, seq, True)] if cfg.scan_layers or cfg.share == "all" else []
  if m == "distilbert":
    tcfg, frozen = cfgs["bert"], teacher_params
    if teacher_layout == "unrolled":
      tcfg, frozen = teachers.frozen_layout(tcfg, teacher_params)
    teacher = PretrainingModel(tcfg, pair_head=False)
    if tcfg.scan_layers:
      stacks.append((tcfg, batch, seq, False))

    def loss_fn(p, frozen, batch_, rng, deterministic):
      s = model.apply({"params": p}, batch_["input_ids"], batch_["attention_mask"], None,
                      None, deterministic=deterministic, rngs={"dropout": rng})
      t = teacher.apply({"params": frozen}, batch_["input_ids"], batch_["attention_mask"],
                        None, None, deterministic=True)
      return objectives.distillation_loss(s, t, batch_, alpha_ce=5.0, alpha_mlm=2.0,
                                          alpha_cos=1.0, temperature=2.0)
    objective = "distillation: 5*T^2*KL(T=2) + 2*MLM + 1*cosine, teacher BERT-" + size
  else:
    inner = objectives.pretraining_loss_fn(model)
    loss_fn = lambda p, frozen, b, rng, det: inner(p, b, rng, det)
    objective = ("MLM (gathered, P=%d) + %s" % (masked_positions_per_seq(seq),
                                                "NSP" if m == "bert" else "SOP"))
  ocfg = optim_config(m, size)
  optimizer, _ = optim.make_optimizer(ocfg, total_steps=1_000_000)
  st = {}

  def prepare():
    state = {"step": jnp.zeros((), jnp.int32),
             "params": jax.tree_util.tree_map(jnp.array, params),
             "opt_state": optimizer.init(params)}
    step = jax.jit(functools.partial(loop_lib.train_step, loss_fn=loss_fn,
                                     optimizer=optimizer, base_rng=jax.random.key(0)),
                   donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, frozen, data).compile()
    compile_s = time.perf_counter() - start
    st["state"] = state

    def call():
      st["state"], metrics = compiled(st["state"], frozen, data)
      jax.block_until_ready((st["state"], metrics))
      st["loss"] = metrics["loss"]

    st["call"] = call
    start = time.perf_counter()
    call()
    warm = time.perf_counter() - start
    counted = xla_flops(compiled)
    info = {}
    if deterministic_loss:  # the loss without dropout, to compare with HF torch's
      info["deterministic_loss"] = float(jax.jit(
          lambda p, f, d: loss_fn(p, f, d, jax.random.key(1), True)[0])(params, frozen, data))
    return {**info, "compile_s": compile_s, "warmup_s": warm, "xla_memory": xla_memory(compiled),
            "xla_flops_counted": counted, "xla_flops": corrected_xla_flops(counted, stacks),
            "objective": objective, "optimizer": ocfg.name}

  def cleanup():
    st["final_loss"] = float(st["loss"])
    st.clear()

  return Candidate(m, impl, prepare, lambda: timed_call(st["call"]), cleanup)


def torch_training(m: str, cfgs: dict, params, batch: int, seq: int, *, size: str, dtype: str,
                   teacher_params) -> Candidate:
  """HF torch's equivalent of `our_training` (same objective, torch AdamW + clipping)."""
  import torch
  cfg = cfgs[m]
  data = torch_tensors(make_pretraining_batch(cfg, batch, seq))
  if m != "distilbert":
    data_ = dict(data)
  else:
    data_ = {k: v for k, v in data.items() if k != "token_type_ids"}
  st = {}

  def prepare():
    state = convert.hf_state_dict_from_params(params, cfg, m)
    if m == "distilbert":
      student = torch_model(m, cfg, state, "mlm")
      tstate = convert.hf_state_dict_from_params(teacher_params, cfgs["bert"], "bert")
      # BertForMaskedLM has no pooler (ours computes it and XLA drops it, unused).
      tstate = {k: v for k, v in tstate.items() if not k.startswith("bert.pooler.")}
      teacher = torch_model("bert", cfgs["bert"], tstate, "mlm").eval()
      for p in teacher.parameters():
        p.requires_grad_(False)
      loss = lambda: torch_distillation_loss(student, teacher, data_)
      model = student
    else:
      model = torch_model(m, cfg, state, "pretraining")
      loss = lambda: torch_pretraining_loss(model, m, data_)
    model.eval()
    with torch.no_grad(), torch_autocast(dtype):
      loss_det = float(loss())
    model.train()
    opt = torch_adamw(model, optim_config(m, size))
    clip = float(optim_config(m, size).clip_norm or 0.0)

    def call():
      opt.zero_grad(set_to_none=True)
      with torch_autocast(dtype):
        value = loss()
      value.backward()
      if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
      opt.step()
      st["loss"] = value

    st["call"] = call
    start = time.perf_counter()
    call()
    return {"warmup_s": time.perf_counter() - start, "compile_s": 0.0,
            "optimizer": "torch AdamW" + (" + clip" if clip else ""),
            "deterministic_loss": loss_det,
            "attn_implementation": model.config._attn_implementation}

  def cleanup():
    st.clear()

  return Candidate(m, "hf_torch", prepare, lambda: timed_call(st["call"]), cleanup)
