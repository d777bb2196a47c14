"""The one train loop: pretraining, distillation and fine-tuning all run through `train()`.

What varies between jobs is a `Job`: how to initialise params, the objective
(`loss_fn`), the input iterator and the evaluation. Everything else is here,
once: mesh and shardings, optimizer, jitted step, checkpoints (train state +
data iterator state), metrics, progress, resume, the non-finite guard.

The loop reads the step metrics back to the host at least every
`config.train.sync_every` steps. That read is also the host sync that keeps
XLA's CPU collectives from deadlocking when many sharded steps are queued
(measured: a loop that never waits aborts in the CPU rendezvous).
"""

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from lite_bert.errors import UserError
from lite_bert.models import encoder as encoder_lib
from lite_bert.train import setup
from lite_bert.train import checkpoint as checkpoint_lib
from lite_bert.train import guards
from lite_bert.train import mesh as mesh_lib
from lite_bert.train import metrics as metrics_lib
from lite_bert.train import objectives
from lite_bert.train import optim
from lite_bert.train import peak as peak_lib

PyTree = Any


@dataclasses.dataclass
class Job:
  """The part of a run that differs between pretrain, distill and finetune.

  Attributes:
    name: shown in logs.
    init_params: rng -> params; pure and jittable (random init of the model).
    loss_fn: (params, frozen, batch, rng, deterministic) -> (loss, metrics of
      sums/counts; see objectives.py).
    make_train_iter: data_state or None -> iterator of host-local numpy batches
      with `get_state()` (a JSON-able dict); data_state resumes it exactly.
    evaluate: Optional (params, frozen, to_global) -> dict of eval numbers,
      called every `config.train.eval_every` steps and at the end;
      `to_global(host_batch)` puts a host batch on the loop's mesh.
    load_params: Optional params -> params, applied once on a fresh start (not
      on resume) to put pretrained weights into the random init (host side),
      in the stacked layout (`pretrained.load`'s) whatever `model.scan_layers`.
    frozen: a pytree the objective reads but never trains (a teacher's
      params), placed on the mesh once.
    meta: JSON-able description of the model, stored with every checkpoint
      and compared on restore so an incompatible config is refused.
    on_eval: Optional (step, params, eval_numbers) -> None, called after each
      evaluation (e.g. to keep the best-dev checkpoint).
    step_flops: Optional host batch -> analytic model FLOPs of this process's
      rows of a step (`models.flops.step_flops`), for the model-FLOPs
      utilisation every progress line and metrics record shows.
    max_shapes: how many batch shapes the step may see (dynamic padding);
      each new one is compiled, and announced as "shape k of at most n".
  """

  name: str
  init_params: Callable[[jax.Array], PyTree]
  loss_fn: Callable[..., tuple[jax.Array, dict]]
  make_train_iter: Callable[[Optional[dict]], Iterator[dict]]
  meta: dict
  evaluate: Optional[Callable[[PyTree, PyTree], dict]] = None
  load_params: Optional[Callable[[PyTree], PyTree]] = None
  frozen: PyTree = None
  on_eval: Optional[Callable[[int, PyTree, dict], None]] = None
  step_flops: Optional[Callable[[dict], float]] = None
  max_shapes: int = 1


def all_finite(tree) -> jax.Array:
  """True (a traced bool) when every floating-point leaf of `tree` is finite.

  (A fused sum of `leaf * 0` per leaf, NaN when the leaf holds an inf or a NaN, ran
  faster alone but made the BERT-base step 1.13-1.17x slower:
  `experiments/results/profile_train/finite_sum`.)"""
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


ON_NONFINITE = ("stop", "skip")


def check_config(config, *, check_schedule: bool = True) -> None:
  """Refuses a bad `train` / `optim` / `checkpoint` section before any work is done.

  `train()` calls it first; the modes call it before they write anything
  into the workdir (a trained tokenizer, a copied one), so a config error
  leaves the workdir as it was. `check_schedule=False` skips what depends on
  `train.num_steps` (fine-tuning sets it from `finetune.epochs` later).

  Raises:
    UserError: naming the field.
  """
  tcfg = config.train

  def integer(section, name, low):
    value = config[section][name]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise UserError(f"{section}.{name} must be an integer >= {low}, got {value!r}")

  seed = config.get("seed", 0)
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
    raise UserError(f"seed must be an integer in [0, 2**32), got {seed!r}")
  for name, low in (("num_steps", 1), ("log_every", 1), ("sync_every", 1),
                    ("eval_every", 0), ("stop_after", 0)):
    integer("train", name, low)
  if tcfg.on_nonfinite not in ON_NONFINITE:
    raise UserError(f"train.on_nonfinite must be one of {ON_NONFINITE}, got "
                    f"{tcfg.on_nonfinite!r}")
  integer("checkpoint", "every_steps", 1)
  max_to_keep = config.checkpoint.max_to_keep
  if max_to_keep is not None:
    integer("checkpoint", "max_to_keep", 1)
  accumulation = config.optim.get("accumulation_steps", 1)
  if (isinstance(accumulation, bool) or not isinstance(accumulation, int)
      or accumulation < 1):
    raise UserError(f"optim.accumulation_steps must be an integer >= 1, got {accumulation!r}")
  check_batch_and_mesh(config)
  if check_schedule:
    if tcfg.num_steps < accumulation:
      raise UserError(f"train.num_steps={tcfg.num_steps} is fewer than "
                      f"optim.accumulation_steps={accumulation}: no update would be made")
    optim.make_optimizer(config.optim, int(tcfg.num_steps) // accumulation)


def check_batch_and_mesh(config) -> None:
  """Refuses a batch or mesh the devices cannot run, before anything is written.

  The global batch must be a positive integer that splits over the processes,
  and each process's share over its devices in the mesh; `mesh.num_devices`
  must exist. Joins a multi-process job first (the mesh spans all processes).

  Raises:
    UserError: naming the field and what it must be.
  """
  for name in ("batch_size", "max_seq_length"):
    value = config.data[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserError(f"data.{name} must be an integer >= 1, got {value!r}")
  mesh_lib.maybe_initialize_distributed(config)
  mesh = mesh_lib.make_mesh(config.mesh)  # checks mesh.num_devices
  processes, batch = jax.process_count(), config.data.batch_size
  local_devices = len(mesh.local_devices)
  if batch % processes or (batch // processes) % local_devices:
    raise UserError(
        f"data.batch_size={batch} does not split over the mesh: each of the {processes} "
        f"process(es) takes batch/{processes} examples, which must be a multiple of its "
        f"{local_devices} device(s); use a multiple of {processes * local_devices}")


def train_step(state: dict, frozen: PyTree, batch: dict, *, loss_fn, optimizer,
               base_rng: jax.Array):
  """One update. Pure: (state, frozen, global batch) -> (new state, step metrics).

  A non-finite loss, gradient or new state (params, optimizer moments) leaves
  params and optimizer state unchanged and sets `nonfinite` = 1; whether that
  stops the run is decided on the host at the next sync
  (`config.train.on_nonfinite`). Either way no
  non-finite value ever enters the state, hence never a checkpoint.
  """
  rng = jax.random.fold_in(base_rng, state["step"])
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, metrics), grads = grad_fn(state["params"], frozen, batch, rng, False)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, new_opt_state = optimizer.update(grads, state["opt_state"], state["params"])
  new_params = optax.apply_updates(state["params"], updates)
  # A finite loss and gradient can still overflow the update (a huge learning
  # rate, Adam's second moment): the new state is checked too, in the graph.
  finite = finite & all_finite(new_params) & all_finite(new_opt_state)
  keep = lambda new, old: jax.tree_util.tree_map(
      lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = {
      "step": state["step"] + 1,
      "params": keep(new_params, state["params"]),
      "opt_state": keep(new_opt_state, state["opt_state"]),
  }
  metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                 nonfinite=1.0 - finite.astype(jnp.float32))
  return new_state, metrics


def sum_metrics(records: list[dict]) -> dict:
  """Adds up the per-step metric dicts read back from the device."""
  totals = {}
  for record in records:
    for key, value in record.items():
      totals[key] = totals.get(key, 0.0) + float(value)
  return totals


def train_summary(totals: dict, num_steps: int, learning_rate: float) -> dict:
  """Readable train metrics from the totals of `num_steps` steps."""
  out = objectives.summarize(totals)
  out["loss"] = totals["loss"] / num_steps
  out["grad_norm"] = totals["grad_norm"] / num_steps
  out["learning_rate"] = learning_rate
  out["nonfinite_steps"] = totals.get("nonfinite", 0.0)
  return out


def train(config, workdir: str, job: Job) -> dict:
  """Runs (or resumes) `job` in `workdir` for `config.train.num_steps` steps.

  Returns the last train and eval numbers.
  """
  started = time.perf_counter()
  check_config(config)
  tcfg = config.train
  total_steps = int(tcfg.num_steps)
  is_main = jax.process_index() == 0

  # ---------------------------------------------------------------- mesh
  mesh_lib.maybe_initialize_distributed(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # ------------------------------------------------ model and optimizer
  accumulation = int(config.optim.accumulation_steps)
  optimizer, schedule = optim.make_optimizer(config.optim, total_steps // accumulation)
  base_rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(base_rng)

  def init_state(rng):
    params = job.init_params(rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": optimizer.init(params)}

  abstract_state = jax.eval_shape(init_state, init_rng)
  state_shardings = {
      "step": replicated,
      "params": mesh_lib.param_shardings(mesh, abstract_state["params"], config.mesh.fsdp),
      "opt_state": mesh_lib.param_shardings(mesh, abstract_state["opt_state"],
                                            config.mesh.fsdp),
  }

  # --------------------------------------------------------- checkpoint
  # Validate, then write: a fresh run creates `checkpoints/`, `config.json` and
  # its metrics only once its data is known to be usable (below), so a refused
  # run leaves the workdir as it was.
  checkpoint_dir = os.path.join(workdir, "checkpoints")
  make_checkpointer = functools.partial(
      checkpoint_lib.Checkpointer, checkpoint_dir, max_to_keep=config.checkpoint.max_to_keep,
      save_every_steps=config.checkpoint.every_steps, async_save=config.checkpoint.async_save)
  resuming = os.path.isdir(checkpoint_dir)
  if jax.process_count() > 1:  # every process decides before process 0 may create it
    multihost_utils.sync_global_devices("lite_bert_checked_checkpoint_folder")
  checkpointer = make_checkpointer() if resuming else None
  # Closed on any error too: an open manager's background threads would print
  # tracebacks at exit after the one-line error (and a save in flight commits).
  writer = None
  try:
    restored = None if checkpointer is None else checkpointer.restore_latest_good(
        abstract_state, state_shardings, meta_now=job.meta)
    window: list = []  # per-step host metrics since the last log line
    if restored is not None:
      state = restored.state
      # The checkpoint carries the data position and the unlogged metric window,
      # so a resumed run reads and logs exactly what an uninterrupted one would.
      data_state, window = restored.data_state["iterator"], restored.data_state["window"]
      first_step = int(state["step"])
      setup.check_same_run(config, workdir)
      if is_main:
        print(f"{job.name}: resumed from step {first_step} in {workdir}", flush=True)
    else:
      state = jax.jit(init_state, out_shardings=state_shardings)(init_rng)
      if job.load_params is not None:  # written for the stacked layout that readers give
        cfg = setup.encoder_config(config)
        params = jax.device_get(state["params"])
        if cfg.scan_layers:
          params = job.load_params(params)
        else:
          params = encoder_lib.stack_layers(params, cfg)
          params = encoder_lib.unstack_layers(job.load_params(params), cfg)
        params = jax.device_put(params, state_shardings["params"])
        state = {"step": state["step"], "params": params,
                 "opt_state": jax.jit(optimizer.init,
                                      out_shardings=state_shardings["opt_state"])(params)}
      data_state, first_step = None, 0

    # -------------------------------------------------------------- input
    # Opened before anything is written: it checks the data (a corpus too
    # small for the pair objective, a bad seed) with the workdir untouched.
    train_iter = job.make_train_iter(data_state)
    to_global = functools.partial(mesh_lib.host_batch_to_global, mesh=mesh)
    # Reads (and on resume truncates) metrics.jsonl: a damaged one is refused here.
    writer = metrics_lib.MetricWriter(workdir, resume_step=first_step, enabled=is_main)
    if is_main:  # only now: a refused run leaves the run's config.json as it was
      setup.write_config(config, workdir)
    if checkpointer is None:
      checkpointer = make_checkpointer()

    frozen = job.frozen
    if frozen is not None:
      frozen_shardings = mesh_lib.param_shardings(
          mesh, jax.eval_shape(lambda: frozen), config.mesh.fsdp)
      frozen = jax.device_put(frozen, frozen_shardings)

    # -------------------------------------------------------- update step
    step_fn = jax.jit(
        functools.partial(train_step, loss_fn=job.loss_fn, optimizer=optimizer,
                          base_rng=step_rng),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0)

    # ---------------------------------------------------------------- loop
    peak, peak_source = (None, "")
    if job.step_flops is not None:
      peak, peak_source = peak_lib.device_peak(str(config.model.get("dtype", "float32")))
    progress = metrics_lib.Progress(first_step, total_steps, enabled=is_main, peak_flops=peak)
    if is_main and job.step_flops is not None:
      print(f"{job.name}: utilisation (MFU) against {peak_source}", flush=True)
    pending: list = []  # device metrics not yet read back
    skipped: list = []  # steps whose update was skipped (on_nonfinite=skip)
    last_good_step = first_step
    train_numbers, eval_numbers = {}, {}
    step = first_step
    shapes: set = set()  # batch shapes compiled so far
    sync_every = max(1, min(int(tcfg.sync_every), int(tcfg.log_every)))
    with guards.SigtermFlag() as sigterm:  # preemption: save at the next step, exit 0
      while step < total_steps:
        try:
          host_batch = next(train_iter)
        except StopIteration:
          raise UserError(f"{job.name}: the training data ran out at step {step}") from None
        progress.add_tokens(int(np.sum(host_batch["attention_mask"])) * jax.process_count())
        if job.step_flops is not None:
          progress.add_flops(job.step_flops(host_batch) * jax.process_count())
        batch = to_global(host_batch)
        shape = tuple(batch["input_ids"].shape)
        if shape not in shapes:  # a new shape is compiled: say so before the wait
          shapes.add(shape)
          if is_main:
            of = f" of at most {job.max_shapes}" if job.max_shapes > 1 else ""
            print(f"{job.name}: compiling the train step for batch shape {shape[0]}x{shape[1]} "
                  f"(shape {len(shapes)}{of})", flush=True)
        state, step_metrics = step_fn(state, frozen, batch)
        pending.append(step_metrics)
        step += 1
        if is_main and step == first_step + 1:
          print(f"{job.name}: step {step} started {time.perf_counter() - started:.1f} s after "
                f"launch; then a line every {tcfg.log_every} steps or "
                f"{metrics_lib.PROGRESS_EVERY_S:.0f} s", flush=True)

        is_log = step % tcfg.log_every == 0 or step == total_steps
        is_eval = job.evaluate is not None and (
            (tcfg.eval_every and step % tcfg.eval_every == 0) or step == total_steps)
        stop_now = step == tcfg.stop_after or sigterm.received
        is_save = step % config.checkpoint.every_steps == 0 or step == total_steps or stop_now
        if step % sync_every == 0 or is_log or is_eval or is_save:
          read = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
          pending = []
          window.extend(read)
          bad = [step - len(read) + i + 1 for i, m in enumerate(read) if m["nonfinite"] > 0]
          if bad and tcfg.on_nonfinite == "stop":
            raise UserError(
                f"{job.name}: non-finite loss, gradient or update at step {bad[0]} (steps "
                f"{last_good_step + 1}..{step} ran since the last check; no checkpoint was "
                f"written after step {last_good_step}). Lower the learning rate, or set "
                f"--config.train.on_nonfinite=skip")
          skipped.extend(bad)
          last_good_step = step

        if not is_log and progress.due():  # a long log_every: still a line every ~30 s
          progress.line(step, {})
        if is_log:
          lr = float(schedule((step - 1) // accumulation))
          train_numbers = train_summary(sum_metrics(window), len(window), lr)
          train_numbers.update(progress.rates(step))
          writer.write(step, "train", train_numbers)
          progress.line(step, {k: train_numbers[k] for k in train_numbers
                               if k in ("loss", "mlm_accuracy", "pair_accuracy", "accuracy",
                                        "learning_rate")})
          window = []

        if is_eval:
          eval_numbers = job.evaluate(state["params"], frozen, to_global)
          writer.write(step, "eval", eval_numbers)
          if is_main:
            print(f"eval @ {step}: " + " ".join(f"{k}={v:.4g}" for k, v in eval_numbers.items()),
                  flush=True)
          if job.on_eval is not None:
            job.on_eval(step, state["params"], eval_numbers)

        if is_save:
          checkpointer.save(step, state, {"iterator": train_iter.get_state(), "window": window},
                            job.meta, force=True)
        if stop_now:
          if is_main:
            why = "SIGTERM" if sigterm.received else "train.stop_after"
            print(f"{job.name}: saved and stopping after step {step} ({why})", flush=True)
          break
    checkpointer.close()  # waits for the last save: a failed one is reported below
  except checkpoint_lib.CheckpointWriteError:
    checkpointer.abandon()
    if writer is not None:  # no metrics for steps that have no checkpoint
      writer.truncate_after((checkpointer.committed_steps() or [0])[-1])
      writer.close()
    raise
  except BaseException:
    if checkpointer is not None:
      checkpointer.abandon()
    if writer is not None:
      writer.close()
    raise

  writer.close()
  if skipped and is_main:
    shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
    print(f"{job.name}: skipped {len(skipped)} update(s) with a non-finite loss, gradient "
          f"or update (train.on_nonfinite=skip): step(s) {shown}", flush=True)
  if is_main:
    lines = metrics_lib.run_summary(
        config, workdir, job.name, first_step=first_step, step=step, total_steps=total_steps,
        train_numbers=train_numbers, eval_numbers=eval_numbers,
        seconds=time.perf_counter() - started, config_argument=setup.CONFIG_ARGUMENT.get())
    print("\n".join(lines), flush=True)
  return {"train": train_numbers, "eval": eval_numbers, "step": step, "params": state["params"]}
