"""Where a BERT-base training step loses to HF torch on CPU: the pieces of one layer, forward
and forward+backward, XLA (jax.jit) against torch, at the step's shape.

  python -m experiments.backward_probe --out=experiments/results/profile_train/backward_pieces

Pieces, on activations [8 x 128 tokens, 768] (BERT-base, batch 8 x 128):
  dense_h_i   x @ W, W [768, 3072]              (a GEMM; the gradient: two more)
  ffn_gelu    gelu(x @ W1) @ W2                 (the feed-forward block)
  layernorm   LayerNorm(x + b), scale only       (x2 per layer, + the embeddings')
  attention   softmax(q k^T / 8) v, 12 heads    (without the projections)
  scores      q k^T alone: 96 small GEMMs [128, 64] x [64, 128] (a batched dot)
and, apart, one AdamW update over 106M parameters, about BERT-base's (optax.adamw in
jax.jit with the state donated, against torch.optim.AdamW with foreach=True).
Each cell is the median of `--repeats` calls after a warm-up, both libraries in
this one process, 2 threads each; a piece's four calls are timed round-robin
(`timing.time_round_robin`, in visits of an untimed then two timed calls), the AdamW states one after the other (the XLA
state is freed before torch allocates its own). Gradients are taken with respect to the
inputs and the weights, as in training. Writes BACKWARD_PIECES.md and
backward_pieces.json into --out.
"""

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments import timing

TOKENS, HIDDEN, INTERMEDIATE, HEADS = 8 * 128, 768, 3072, 12


def median_ms(calls: dict, repeats: int) -> dict:
  """name -> median ms of `repeats` calls each, after one warm-up, timed round-robin."""
  candidates = []
  for name, call in calls.items():
    call()  # warm-up: compiles
    candidates.append(timing.Candidate("piece", name, prepare=dict, target=repeats,
                                       run=functools.partial(timing.timed_call, call)))
  timing.time_round_robin(candidates)
  return {c.impl: statistics.median(c.times) * 1e3 for c in candidates}


def layer_norm(h, scale):
  mean = h.mean(-1, keepdims=True)
  var = ((h - mean) ** 2).mean(-1, keepdims=True)
  return (h - mean) * jax.lax.rsqrt(var + 1e-12) * scale


def attention(x):
  q = x.reshape(8, 128, HEADS, HIDDEN // HEADS)
  k, v = q * 1.01, q * 0.99
  probs = jax.nn.softmax(jnp.einsum("bqnd,bknd->bnqk", q, k) * 0.125, axis=-1)
  return jnp.einsum("bnqk,bknd->bqnd", probs, v)


def scores(x):
  q = x.reshape(8, 128, HEADS, HIDDEN // HEADS).transpose(0, 2, 1, 3)
  return jnp.einsum("bnqd,bnkd->bnqk", q, q * 1.01)


JAX_PIECES = {
    "dense_h_i": lambda w, x: (x @ w["w1"]).sum(),
    "ffn_gelu": lambda w, x: (jax.nn.gelu(x @ w["w1"], approximate=False) @ w["w2"]).sum(),
    "layernorm": lambda w, x: layer_norm(x + w["b"], w["scale"]).sum(),
    "attention": lambda w, x: attention(x).sum() + 0 * w["b"].sum(),
    "scores": lambda w, x: scores(x).sum() + 0 * w["b"].sum(),
}


def torch_pieces(torch, x, w1, w2, scale):
  def scores_(h):
    q = h.reshape(8, 128, HEADS, HIDDEN // HEADS).transpose(1, 2)
    return q @ (q * 1.01).transpose(-1, -2)

  def attn(h):
    q = h.reshape(8, 128, HEADS, HIDDEN // HEADS).transpose(1, 2)
    return torch.softmax(q @ (q * 1.01).transpose(-1, -2) * 0.125, -1) @ (q * 0.99)
  return {
      "dense_h_i": lambda: (x @ w1).sum(),
      "ffn_gelu": lambda: (torch.nn.functional.gelu(x @ w1) @ w2).sum(),
      "layernorm": lambda: torch.nn.functional.layer_norm(x, (HIDDEN,), scale, None, 1e-12).sum(),
      "attention": lambda: attn(x).sum(),
      "scores": lambda: scores_(x).sum(),
  }


def adamw_row(torch, repeats: int) -> dict:
  """One AdamW step over 106M fp32 parameters (about BERT-base's 110M, as 12 + 1 arrays)."""
  import optax  # pylint: disable=import-outside-toplevel
  shapes = [(HIDDEN, 9 * HIDDEN + 2 * INTERMEDIATE // 3)] * 12 + [(30522 + 512, HIDDEN)]
  params = [jnp.full(shape, 0.01, jnp.float32) for shape in shapes]
  grads = [jnp.full(shape, 1e-3, jnp.float32) for shape in shapes]
  optimizer = optax.adamw(1e-4, weight_decay=0.01)

  def update(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  step = jax.jit(update, donate_argnums=(0, 1))
  state = {"params": params, "opt": optimizer.init(params)}

  def xla_call():
    state["params"], state["opt"] = step(state["params"], state["opt"], grads)
    jax.block_until_ready(state["params"])

  xla_ms = median_ms({"xla": xla_call}, repeats)["xla"]
  state.clear()  # frees the XLA arrays before torch allocates its own
  params = grads = None
  tparams = [torch.nn.Parameter(torch.full(shape, 0.01)) for shape in shapes]
  for p in tparams:
    p.grad = torch.full(p.shape, 1e-3)
  topt = torch.optim.AdamW(tparams, lr=1e-4, weight_decay=0.01, foreach=True)
  torch_ms = median_ms({"torch": topt.step}, repeats)["torch"]
  return {"piece": "adamw_update", "parameters": sum(int(np.prod(s)) for s in shapes),
          "xla_ms": xla_ms, "torch_ms": torch_ms}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  import torch  # pylint: disable=import-outside-toplevel  # the reference, test-only dependency
  torch.set_num_threads(2)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((TOKENS, HIDDEN), np.float32)
  w1 = rng.standard_normal((HIDDEN, INTERMEDIATE), np.float32) * 0.02
  w2 = rng.standard_normal((INTERMEDIATE, HIDDEN), np.float32) * 0.02
  scale = rng.standard_normal((HIDDEN,), np.float32)
  weights = {"w1": jnp.asarray(w1), "w2": jnp.asarray(w2), "scale": jnp.asarray(scale),
             "b": jnp.zeros((HIDDEN,), jnp.float32)}
  jx = jnp.asarray(x)
  tx, tw1, tw2 = (torch.tensor(a, requires_grad=True) for a in (x, w1, w2))
  reference = torch_pieces(torch, tx, tw1, tw2, torch.tensor(scale))
  rows = []
  for name, piece in JAX_PIECES.items():
    forward = jax.jit(piece)
    both = jax.jit(jax.value_and_grad(piece, argnums=(0, 1)))

    def torch_both(piece_fn=reference[name]):
      for tensor in (tx, tw1, tw2):
        tensor.grad = None
      piece_fn().backward()

    def torch_forward(piece_fn=reference[name]):
      with torch.no_grad():
        piece_fn()

    row = {"piece": name, **median_ms({
        "xla_forward_ms": lambda: jax.block_until_ready(forward(weights, jx)),
        "xla_forward_backward_ms": lambda: jax.block_until_ready(both(weights, jx)),
        "torch_forward_ms": torch_forward,
        "torch_forward_backward_ms": torch_both}, args.repeats)}
    rows.append(row)
    print(row, flush=True)
  rows.append(adamw_row(torch, args.repeats))
  print(rows[-1], flush=True)
  os.makedirs(args.out, exist_ok=True)
  header = (f"`python -m experiments.backward_probe {' '.join(argv or sys.argv[1:])}` on "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; "
            f"medians of {args.repeats} calls, ms.")
  lines = ["# One BERT-base layer's pieces, forward and forward+backward: XLA vs torch", "",
           header, "",
           "| piece | XLA fwd | XLA fwd+bwd | ratio | torch fwd | torch fwd+bwd | ratio | "
           "XLA/torch fwd+bwd |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["piece"] == "adamw_update":
      lines += ["", f"AdamW update over {r['parameters']:,} parameters: XLA {r['xla_ms']:.0f} ms, "
                f"torch {r['torch_ms']:.0f} ms (XLA/torch {r['xla_ms'] / r['torch_ms']:.2f})."]
      continue
    lines.append(
        f"| {r['piece']} | {r['xla_forward_ms']:.1f} | {r['xla_forward_backward_ms']:.1f} | "
        f"{r['xla_forward_backward_ms'] / r['xla_forward_ms']:.2f} | {r['torch_forward_ms']:.1f} "
        f"| {r['torch_forward_backward_ms']:.1f} | "
        f"{r['torch_forward_backward_ms'] / r['torch_forward_ms']:.2f} | "
        f"{r['xla_forward_backward_ms'] / r['torch_forward_backward_ms']:.2f} |")
  with open(os.path.join(args.out, "BACKWARD_PIECES.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(args.out, "backward_pieces.json"), "w") as f:
    json.dump({"header": header, "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
