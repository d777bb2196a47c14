"""The optimizer: AdamW (BERT) or LAMB (ALBERT), its schedule, clipping, accumulation.

`make_optimizer(config.optim, total_steps)` returns an optax transformation and
the learning-rate schedule it follows, so the train loop can log
`schedule_fn(update)` next to the loss. The fields of `config.optim` (all
checked; anything unknown or out of range is a `UserError` naming the field):

  name               'adamw' (BERT: Adam with decoupled weight decay) or 'lamb'
                     (ALBERT: Adam direction, weight decay, then a per-tensor
                     trust ratio ||w|| / ||update||).
  learning_rate      peak learning rate, reached at the end of warmup (> 0).
  warmup_steps       updates of linear warmup from 0 to the peak (int >= 0);
                     None or -1 means "use warmup_fraction".
  warmup_fraction    warmup as a fraction of total_steps (float in [0, 1]);
                     read only when warmup_steps is None or -1.
  decay              after warmup: 'linear' to end_learning_rate at total_steps
                     (BERT), 'cosine' to end_learning_rate, or 'constant'.
  end_learning_rate  learning rate at total_steps for 'linear' and 'cosine'
                     (>= 0, <= learning_rate; 0.0 in BERT).
  weight_decay       decoupled weight decay coefficient (>= 0; BERT and ALBERT
                     use 0.01), applied only where `decay_mask` is True.
  b1, b2             Adam moment decay rates, in [0, 1).
  eps                Adam epsilon (> 0; both recipes use 1e-6).
  clip_norm          clip the (accumulated) gradient to this global L2 norm
                     before the optimizer (BERT: 1.0); 0 or None turns it off.
  accumulation_steps micro-batches whose gradients are averaged into one
                     update (int >= 1); > 1 wraps everything in
                     `optax.MultiSteps`.

Steps: `total_steps`, `warmup_steps` and the schedule's argument all count
*optimizer updates*. With accumulation, one update happens every
`accumulation_steps` calls of `update`, and the schedule's own counter only
advances on those; the learning rate in force at micro-step `m` is
`schedule_fn(m // accumulation_steps)`.

Precision: the moments (Adam mu/nu) take the dtype of the parameters and the
MultiSteps accumulator is float32, so the optimizer state stays float32
because parameters are stored float32 (`model.param_dtype`) even when the
model computes in bfloat16.

Differences from the original TF code, on purpose: the Adam moments are
bias-corrected (optax; BERT's AdamWeightDecayOptimizer and ALBERT's LAMB were
not), and the linear decay starts at the peak at the end of warmup (as in
Hugging Face's `get_linear_schedule_with_warmup`) instead of BERT's decay over
all steps from step 0 that jumps down at the end of warmup.
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from lite_bert.errors import UserError

OPTIMIZERS = ("adamw", "lamb")
DECAYS = ("linear", "cosine", "constant")
# BERT's `exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"]`, plus
# flax's name for the LayerNorm gain.
NO_DECAY_LEAF_NAMES = ("bias", "scale")
NO_DECAY_PATH_PARTS = ("layer_norm", "LayerNorm")

Schedule = Callable[[Any], jax.Array]


def default_optim_config() -> ml_collections.ConfigDict:
  """The BERT recipe (AdamW, linear warmup then linear decay to 0)."""
  return ml_collections.ConfigDict(dict(
      name="adamw",
      learning_rate=1e-4,
      warmup_steps=10_000,
      warmup_fraction=0.0,
      decay="linear",
      end_learning_rate=0.0,
      weight_decay=0.01,
      b1=0.9,
      b2=0.999,
      eps=1e-6,
      clip_norm=1.0,
      accumulation_steps=1,
  ))


def _path_names(path) -> tuple[str, ...]:
  """Key path from `tree_map_with_path` -> the names along it, as strings."""
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return tuple(names)


def decays(path_names: tuple[str, ...]) -> bool:
  """Whether the parameter at this path gets weight decay (and LAMB's trust ratio)."""
  if path_names and path_names[-1] in NO_DECAY_LEAF_NAMES:
    return False
  return not any(part in name for name in path_names
                 for part in NO_DECAY_PATH_PARTS)


def decay_mask(params) -> Any:
  """Pytree of bools, True where weight decay applies.

  False for every bias, every LayerNorm parameter (any path containing
  'layer_norm' or 'LayerNorm', and flax's 'scale' leaves); True for kernels and
  embedding tables, as BERT's `exclude_from_weight_decay`. ALBERT's LAMB uses
  the same list to exclude parameters from layer adaptation.

  Args:
    params: a parameter pytree; leaves may be arrays or `jax.ShapeDtypeStruct`s.

  Returns:
    A pytree of the same structure with a Python bool per leaf.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: decays(_path_names(path)), params)


def _field(optim_config, name: str, default=None):
  value = optim_config.get(name, default)
  return default if value is None else value


def _number(optim_config, name: str, *, low: float, high: float = math.inf,
            low_open: bool = False, high_open: bool = False,
            default=None) -> float:
  """Reads optim.<name> as a float and checks it lies in the given interval."""
  value = _field(optim_config, name, default)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise UserError(f"optim.{name} must be a number, got {value!r}")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high or not math.isfinite(value):
    interval = (("(" if low_open else "[") + f"{low}, {high}" +
                (")" if high_open else "]"))
    raise UserError(f"optim.{name} must be a finite number in {interval}, got {value!r}")
  return float(value)


def warmup_steps_of(optim_config, total_steps: int) -> int:
  """Warmup length in updates: `warmup_steps`, or `warmup_fraction * total_steps`."""
  steps = optim_config.get("warmup_steps")
  if steps is not None and steps != -1:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
      raise UserError(
          f"optim.warmup_steps must be an integer >= 0 (or None/-1 to use "
          f"optim.warmup_fraction), got {steps!r}")
    if steps > total_steps:
      raise UserError(
          f"optim.warmup_steps={steps} is more than the {total_steps} total "
          f"training steps")
    return steps
  fraction = _number(optim_config, "warmup_fraction", low=0.0, high=1.0,
                     default=0.0)
  return int(round(fraction * total_steps))


def make_schedule(decay: str, peak: float, end: float, warmup_steps: int,
                  total_steps: int) -> Schedule:
  """Learning rate as a function of the update count (0-based).

  Linear warmup `peak * step / warmup_steps` for step < warmup_steps, then
  `decay` from `peak` at warmup_steps to `end` at total_steps (held after).

  Args:
    decay: 'linear', 'cosine' or 'constant'.
    peak: learning rate at the end of warmup.
    end: learning rate at total_steps (ignored for 'constant').
    warmup_steps: updates of warmup (0: start at the peak).
    total_steps: updates in the whole run.

  Returns:
    schedule(step) -> float32 scalar; `step` may be a Python int or an array.
  """

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / max(warmup_steps, 1)
    progress = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1),
                        0.0, 1.0)
    if decay == "linear":
      after = peak + (end - peak) * progress
    elif decay == "cosine":
      after = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    else:
      after = jnp.full_like(progress, peak)
    return jnp.where(step < warmup_steps, warm, after).astype(jnp.float32)

  return schedule


def _lamb(schedule: Schedule, b1: float, b2: float, eps: float,
          weight_decay: float) -> optax.GradientTransformation:
  """ALBERT's LAMB: Adam direction + decay, then trust ratio where `decay_mask`."""
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      optax.add_decayed_weights(weight_decay, mask=decay_mask),
      optax.masked(optax.scale_by_trust_ratio(), decay_mask),
      optax.scale_by_learning_rate(schedule),
  )


def make_optimizer(optim_config: ml_collections.ConfigDict, total_steps: int
                   ) -> tuple[optax.GradientTransformation, Schedule]:
  """Builds the optimizer described by `config.optim` (see the module docstring).

  Args:
    optim_config: the `optim` ConfigDict.
    total_steps: optimizer updates in the whole run (after accumulation).

  Returns:
    (optimizer, schedule_fn): an `optax.GradientTransformation` whose state
    mirrors the params (float32), and schedule_fn(update) -> learning rate.

  Raises:
    UserError: unknown `name`/`decay`, an unknown field, or a value out of range.
  """
  known = set(default_optim_config().keys())
  unknown = sorted(set(optim_config.keys()) - known)
  if unknown:
    raise UserError(f"optim.{unknown[0]} is not a known optimizer field; known: "
                    f"{', '.join(sorted(known))}")
  if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
    raise UserError(f"the total number of training steps must be a positive "
                    f"integer, got {total_steps!r}")

  name = optim_config.get("name")
  if name not in OPTIMIZERS:
    raise UserError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
  decay = _field(optim_config, "decay", "linear")
  if decay not in DECAYS:
    raise UserError(f"optim.decay must be one of {', '.join(DECAYS)}, got {decay!r}")
  peak = _number(optim_config, "learning_rate", low=0.0, low_open=True)
  end = _number(optim_config, "end_learning_rate", low=0.0, high=peak, default=0.0)
  weight_decay = _number(optim_config, "weight_decay", low=0.0, default=0.0)
  b1 = _number(optim_config, "b1", low=0.0, high=1.0, high_open=True, default=0.9)
  b2 = _number(optim_config, "b2", low=0.0, high=1.0, high_open=True, default=0.999)
  eps = _number(optim_config, "eps", low=0.0, low_open=True, default=1e-6)
  clip_norm = _number(optim_config, "clip_norm", low=0.0, default=0.0)
  accumulation_steps = _field(optim_config, "accumulation_steps", 1)
  if (isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int)
      or accumulation_steps < 1):
    raise UserError(f"optim.accumulation_steps must be an integer >= 1, got "
                    f"{accumulation_steps!r}")
  warmup_steps = warmup_steps_of(optim_config, total_steps)

  schedule = make_schedule(decay, peak, end, warmup_steps, total_steps)
  if name == "adamw":
    optimizer = optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                            weight_decay=weight_decay, mask=decay_mask)
  else:
    optimizer = _lamb(schedule, b1, b2, eps, weight_decay)
  if clip_norm > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
  if accumulation_steps > 1:
    optimizer = optax.MultiSteps(
        optimizer, every_k_schedule=accumulation_steps).gradient_transformation()
  return optimizer, schedule
