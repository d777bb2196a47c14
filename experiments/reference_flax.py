"""Worker: Hugging Face's Flax encoders (the classes the client names in `load`).

Started by `experiments/benchmark.py --reference` with the python of
`experiments/.venv-reference` (see `experiments/reference_env.sh`), so the
reference runs in its own environment while every number still comes from one
benchmark run. It imports nothing from lite_bert.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout
(everything else the libraries print goes to stderr). Commands:

  {"cmd": "versions"}
      -> {"ok": true, "jax": ..., "flax": ..., "transformers": ..., "device_kind": ...}
  {"cmd": "load", "name": "bert", "arch": "bert|albert|distilbert",
   "config": {HF config kwargs},
   "config_class": "BertConfig", "model_class": "FlaxBertModel",
   "weights": "/path/state.npz", "dtype": "float32"}
      -> builds the model, puts the given weights in it (HF's own
         `convert_pytorch_state_dict_to_flax`, from numpy), jits its forward
         (`train=False`; HF's Flax models are not jitted by themselves).
  {"cmd": "prepare", "name": ..., "key": "8x128", "ids": "/path/inputs.npz"}
      -> lowers and compiles the forward for these inputs, runs it once
         (warm-up) and answers compile_s, warmup_s, XLA's memory and cost
         analysis of the compiled forward.
  {"cmd": "time", "name": ..., "key": ...}
      -> runs the compiled forward once: {"seconds": wall time until
         `block_until_ready`, "cpu_s": process CPU time, "rss_peak_delta_bytes":
         peak RSS growth during the call (VmHWM reset through
         /proc/self/clear_refs), or null}.
  {"cmd": "output", "name": ..., "key": ...}
      -> {"path": .npy of last_hidden_state (float32)}, for the parity check.
  {"cmd": "drop", "name": ..., "key": ...}  frees one compiled point.
  {"cmd": "quit"}
"""

import json
import os
import sys
import time
import traceback

# Only the protocol goes to stdout.
_PROTOCOL = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _rss(field: str):
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _reset_peak_rss() -> bool:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _memory_stats(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  out = {k: int(getattr(m, k + "_in_bytes")) for k in
         ("argument_size", "output_size", "alias_size", "temp_size")}
  out["peak_estimate"] = (out["argument_size"] + out["output_size"] + out["temp_size"]
                          - out["alias_size"])
  return out


def _flops(compiled):
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost.get("flops", 0.0)) if cost else None


class Worker:

  def __init__(self):
    self.models = {}  # name -> (forward jit, params, arch)
    self.points = {}  # (name, key) -> (compiled, args)

  def versions(self, _):
    import flax
    import transformers
    return {"jax": jax.__version__, "flax": flax.__version__,
            "transformers": transformers.__version__,
            "device_kind": jax.devices()[0].device_kind, "python": sys.executable}

  def load(self, req):
    import transformers
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax
    arch = req["arch"]
    # The client names the classes (lite_bert.models.convert knows HF's names).
    config_cls = getattr(transformers, req["config_class"])
    model_cls = getattr(transformers, req["model_class"])
    dtype = jnp.dtype(req.get("dtype", "float32"))
    model = model_cls(config_cls(**req["config"]), seed=0, dtype=dtype)
    with np.load(req["weights"]) as data:
      state = {k: data[k] for k in data.files}
    params = convert_pytorch_state_dict_to_flax(state, model)
    expected = jax.tree_util.tree_structure(model.params)
    if jax.tree_util.tree_structure(params) != expected:
      raise ValueError(f"converted params do not match {model_cls.__name__}'s tree")
    params = jax.device_put(params)
    model.params = params  # one copy of the weights

    if arch == "distilbert":
      def forward(params, ids, mask, token_types):
        del token_types
        return model(ids, mask, params=params, train=False).last_hidden_state
    else:
      def forward(params, ids, mask, token_types):
        out = model(ids, mask, token_types, params=params, train=False)
        return out.last_hidden_state, out.pooler_output
    self.models[req["name"]] = (jax.jit(forward), params, arch)
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    return {"model_class": model_cls.__name__, "param_count": count}

  def prepare(self, req):
    forward, params, _ = self.models[req["name"]]
    with np.load(req["ids"]) as data:
      ids = jnp.asarray(data["input_ids"])
      mask = jnp.asarray(data["attention_mask"])
      types = jnp.asarray(data["token_type_ids"]) if "token_type_ids" in data.files else None
    start = time.perf_counter()
    compiled = forward.lower(params, ids, mask, types).compile()
    compile_s = time.perf_counter() - start
    args = (params, ids, mask, types)
    self.points[(req["name"], req["key"])] = (compiled, args)
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return {"compile_s": compile_s, "warmup_s": time.perf_counter() - start,
            "xla_memory": _memory_stats(compiled), "xla_flops": _flops(compiled)}

  def time(self, req):
    compiled, args = self.points[(req["name"], req["key"])]
    base = _rss("VmRSS")
    reset = _reset_peak_rss()
    cpu = time.process_time()
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = _rss("VmHWM")
    delta = max(0, peak - base) if (reset and peak is not None and base is not None) else None
    return {"seconds": seconds, "rss_peak_delta_bytes": delta, "cpu_s": cpu}

  def output(self, req):
    compiled, args = self.points[(req["name"], req["key"])]
    out = compiled(*args)
    hidden = out[0] if isinstance(out, tuple) else out
    path = req["path"]
    np.save(path, np.asarray(hidden, np.float32))
    return {"path": path}

  def drop(self, req):
    self.points.pop((req["name"], req["key"]), None)
    return {}


def main():
  worker = Worker()
  for line in sys.stdin:
    line = line.strip()
    if not line:
      continue
    req = json.loads(line)
    if req["cmd"] == "quit":
      break
    try:
      reply = getattr(worker, req["cmd"])(req)
      reply["ok"] = True
    except Exception as e:  # pylint: disable=broad-except
      reply = {"ok": False, "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()}
    _PROTOCOL.write(json.dumps(reply) + "\n")
    _PROTOCOL.flush()


if __name__ == "__main__":
  main()
