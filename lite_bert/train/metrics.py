"""Where numbers go: JSON lines and TensorBoard in the workdir, a progress line on the console.

`metrics.jsonl` holds one JSON object per write: {"step": int, "split":
"train"|"eval"|..., name: float, ...}. On resume, lines written after the
restored step by a run that was killed are dropped first, so the file reads as
if the run had never been interrupted.
"""

import json
import os
import sys
import time
from typing import Optional

from lite_bert import files
from lite_bert.errors import UserError, clip


def read_metrics(workdir: str, split: Optional[str] = None) -> list[dict]:
  """All records of `workdir/metrics.jsonl` (optionally of one split)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  records = [record for _, record in _records_of(path) if record is not None]
  return [r for r in records if split is None or r.get("split") == split]


def _records_of(path: str):
  """(line, record) of each non-blank line of a metrics.jsonl.

  A last line that is not a whole record (no newline, not JSON: a write cut by
  a kill or a full disk) comes back with record None; any other damage is a
  UserError naming the file and line.
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise UserError(f"cannot read {path}: {e.strerror}") from None
  lines = raw.decode("utf-8", errors="replace").splitlines(keepends=True)
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        raise ValueError("not a metrics record")
    except ValueError:
      if number == len(lines) and not line.endswith("\n"):
        yield line, None
        continue
      raise UserError(f"{path} line {number} is not a metrics record "
                      f"({clip(line.strip(), 60)}); move the file away to start "
                      f"the metrics afresh") from None
    yield line, record


class MetricWriter:
  """Appends metrics to `metrics.jsonl` and TensorBoard events (main process only)."""

  def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    self._truncate_after(resume_step)
    # TensorBoard event files without TensorFlow; imported here because it
    # pulls in torch when present (~1 s), which every CLI start would pay.
    import tensorboardX  # pylint: disable=import-outside-toplevel
    self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """Drops the records of steps after `step` (those a resume from `step` logs again)."""
    if self.enabled:
      self._truncate_after(step)

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    kept, changed = [], False
    for line, record in _records_of(self.path):
      if record is None:  # the torn last line of a killed run: its step is lost anyway
        changed = True
      elif record["step"] <= step:
        kept.append(line)
      else:
        changed = True
    if changed:
      files.atomic_write(self.path, "".join(kept))

  def write(self, step: int, split: str, values: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: float(v) for k, v in values.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for name, value in values.items():
        self._tb.add_scalar(f"{split}/{name}", float(value), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


PROGRESS_EVERY_S = 30.0  # a progress line at least this often, whatever log_every is


class Progress:
  """Steps/s, tokens/s and ETA since the loop (re)started; prints one line per call."""

  def __init__(self, first_step: int, total_steps: int, *, enabled: bool = True,
               peak_flops: Optional[float] = None):
    self.first_step = first_step
    self.total_steps = total_steps
    self.enabled = enabled
    self.start = time.perf_counter()
    self.tokens = 0
    self.flops = 0.0
    self.peak_flops = peak_flops
    self.last_line = time.perf_counter()

  def due(self) -> bool:
    """Whether PROGRESS_EVERY_S has passed since the last line."""
    return self.enabled and time.perf_counter() - self.last_line >= PROGRESS_EVERY_S

  def add_tokens(self, count: int) -> None:
    self.tokens += count

  def add_flops(self, count: float) -> None:
    self.flops += count

  def rates(self, step: int) -> dict:
    """steps/s, tokens/s, ETA; model TFLOP/s and MFU (0..1) when FLOPs are counted."""
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    steps_per_s = (step - self.first_step) / elapsed
    eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
    rates = {"steps_per_s": steps_per_s, "tokens_per_s": self.tokens / elapsed, "eta_s": eta}
    if self.flops:
      rates["model_tflops_per_s"] = self.flops / elapsed / 1e12
      if self.peak_flops:
        rates["mfu"] = self.flops / elapsed / self.peak_flops
    return rates

  def line(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    rates = self.rates(step)
    shown = " ".join(f"{k}={v:.4g}" for k, v in values.items()
                     if k not in ("steps_per_s", "tokens_per_s", "eta_s"))
    eta = rates["eta_s"]
    eta_text = f"{eta / 60:.1f}min" if eta != float("inf") else "?"
    self.last_line = time.perf_counter()
    mfu = f" MFU {100 * rates['mfu']:.2g}%" if "mfu" in rates else ""
    shown = f" {shown}" if shown else ""
    print(f"step {step}/{self.total_steps}{shown} | {rates['steps_per_s']:.2f} steps/s "
          f"{rates['tokens_per_s']:.0f} tok/s{mfu} ETA {eta_text}", file=sys.stdout, flush=True)


def run_summary(config, workdir: str, name: str, *, first_step: int, step: int,
                total_steps: int, train_numbers: dict, eval_numbers: dict, seconds: float,
                config_argument: str = "") -> list:
  """The lines a training run ends on: what it reached, where it is, what to run next."""
  shown = lambda numbers, keys: " ".join(f"{k}={numbers[k]:.4g}" for k in keys if k in numbers)
  resumed = f", resumed from step {first_step}" if first_step else ""
  lines = [f"{name}: {'finished' if step >= total_steps else 'stopped at'} step {step}/"
           f"{total_steps} in {seconds / 60:.1f} min (this run{resumed})"]
  final = shown(train_numbers, ("loss", "mlm_accuracy", "accuracy"))
  evals = " ".join(f"{k}={v:.4g}" for k, v in eval_numbers.items())
  lines.append(f"  final: train {final or '-'}; eval {evals or '-'}")
  best_path = os.path.join(workdir, "best", "best.json")
  if os.path.exists(best_path):
    with open(best_path) as f:
      best = json.load(f)
    lines.append(f"  best: {best['metric']}={best['value']:.4g} at step {best['step']} "
                 f"({os.path.join(workdir, 'best')})")
  lines.append(f"  checkpoints: {os.path.join(workdir, 'checkpoints')}   metrics: "
               f"{os.path.join(workdir, 'metrics.jsonl')}   TensorBoard: "
               f"{os.path.join(workdir, 'tensorboard')}")
  if step < total_steps:
    lines.append("  next: rerun the same command to resume")
    return lines
  cfg = config_argument or "CONFIG"
  run = f"python launch.py --config={cfg} --workdir={workdir}"
  export = f"python -m lite_bert.export --source={workdir} --out={workdir}/hf"
  if config.get("mode") == "finetune":
    commands = [f"{run} --config.mode=evaluate --config.evaluate.split=validation",
                f"{run} --config.mode=predict --config.predict.input=TEXTS.tsv "
                f"--config.predict.output=-", export]
  else:
    commands = [f"{run} --config.mode=evaluate --config.data.eval_corpus=HELD_OUT.txt",
                f"python launch.py --config=configs/finetune.py:sst2,{config.get('arch', 'bert')}"
                f" --workdir={workdir.rstrip('/')}_sst2 --config.finetune.init={workdir}", export]
  lines.append("  next:")
  lines.extend(f"    {command}" for command in commands)
  return lines
