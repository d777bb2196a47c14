"""The comparison report's plots: dev score vs parameters, latency, loss curves, retention.

`write_plots` draws the PNGs that report.md links (`PLOTS`) from the same
files and the same `Num`s as the text (a `compare_report.Report`), with
matplotlib's Agg backend and no timestamp in the files, so `--report-only`
writes them byte for byte the same.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from experiments.compare_plan import COLORS, MODELS, NAMES, STUDY, TASK_NAMES, TASKS, TRAINED_BY

if TYPE_CHECKING:
  from experiments.compare_report import Report

PLOTS = (("accuracy_vs_parameters.png", "dev score vs parameters"),
         ("latency_vs_sequence_length.png", "latency vs sequence length"),
         ("pretraining_loss.png", "pretraining loss"),
         ("distillation_loss.png", "distillation loss"),
         ("retention.png", "retention relative to BERT"),
         ("glue_claim.png", "the 97% claim with 95% intervals"))


def write_plots(root: str, rep: Report) -> None:
  """The PNGs of the report, from the same files (matplotlib, Agg)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  src = rep.src

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(os.path.join(root, name), dpi=100, metadata={"Software": None})
    plt.close(fig)

  # Dev score vs parameters (at this scale).
  params = {m: rep.summary("trained", m, "params_total") for m in MODELS}
  if all(params.values()) and all(rep.glue_score(m) for m in MODELS):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [("SST-2 accuracy", lambda m: rep.dev(m, "sst2", "accuracy"), "o"),
              ("MRPC accuracy", lambda m: rep.dev(m, "mrpc", "accuracy"), "s"),
              ("MRPC F1", lambda m: rep.dev(m, "mrpc", "f1"), "^"),
              ("average", rep.glue_score, "D")]
    for label, fn, marker in series:
      xs = [params[m].value / 1e6 for m in MODELS]
      ax.plot(xs, [fn(m).value for m in MODELS], ls=":", color="gray", lw=0.8)
      for m, x in zip(MODELS, xs):
        ax.scatter([x], [fn(m).value], marker=marker, color=COLORS[m], s=50,
                   label=label if m == "bert" else None)
    for m in MODELS:
      ax.annotate(NAMES[m], (params[m].value / 1e6, rep.glue_score(m).value),
                  textcoords="offset points", xytext=(6, 6), color=COLORS[m])
    ax.set(xlabel="parameters (millions, at this scale)", ylabel="dev score",
           title=f"Dev score vs parameters (scale {rep.scale})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "accuracy_vs_parameters.png")

  # Latency vs sequence length, one panel per batch size.
  points = rep.bench_rows()
  if points:
    batches = sorted({b for b, _ in points})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
      seqs = sorted(s for bb, s in points if bb == b)
      for m in MODELS:
        lat = [rep.latency(m, b, s) for s in seqs]
        ax.plot(seqs, [x.value * 1e3 for x in lat], marker="o", color=COLORS[m],
                label=NAMES[m])
      ax.set(xlabel="sequence length", ylabel="latency (ms)", title=f"batch {b}")
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=8)
    fig.suptitle("Inference latency at base size (encoder forward, median)")
    save(fig, "latency_vs_sequence_length.png")

  def curve(stage, split, key):
    path = f"{stage}/metrics.jsonl"
    if not src.exists(path):
      return [], []
    recs = [r for r in src.raw(path) if r.get("split") == split and key in r]
    return [r["step"] for r in recs], [r[key] for r in recs]

  if any(src.exists(f"{TRAINED_BY[m]}/metrics.jsonl") for m in ("bert", "albert")):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in ("bert", "albert"):
      xs, ys = curve(TRAINED_BY[m], "train", "loss")
      pair = "NSP" if m == "bert" else "SOP"
      axes[0].plot(xs, ys, color=COLORS[m], label=f"{NAMES[m]} (MLM + {pair})")
    for m in MODELS:
      xs, ys = curve(TRAINED_BY[m], "eval", "mlm_loss")
      axes[1].plot(xs, ys, marker="o", color=COLORS[m], label=NAMES[m])
    axes[0].set(xlabel="step", ylabel="training loss", title="Pretraining loss")
    axes[1].set(xlabel="step", ylabel="held-out MLM loss",
                title="Held-out masked-LM loss (each run's own masking)")
    for ax in axes:
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    save(fig, "pretraining_loss.png")

  if src.exists("distill_distilbert/metrics.jsonl"):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    xs, ys = curve("distill_distilbert", "train", "loss")
    axes[0].plot(xs, ys, color=COLORS["distilbert"], label="training loss (triple)")
    xs, ys = curve("distill_distilbert", "eval", "distill_loss")
    axes[0].plot(xs, ys, marker="o", color="black", label="held-out loss")
    xs, ys = curve("distill_distilbert", "eval", "mlm_loss")
    axes[1].plot(xs, ys, marker="o", color=COLORS["distilbert"], label="student")
    _, teacher = curve("distill_distilbert", "eval", "teacher_mlm_loss")
    if teacher:
      axes[1].axhline(teacher[-1], color=COLORS["bert"], ls="--", label="teacher (BERT)")
    axes[0].set(xlabel="step", ylabel="loss", title="Distillation loss")
    axes[1].set(xlabel="step", ylabel="held-out MLM loss", title="Student vs teacher")
    for ax in axes:
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    save(fig, "distillation_loss.png")

  if all(rep.glue_score(m) for m in MODELS):
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [TASK_NAMES[t] for t in TASKS] + ["average"]
    for i, m in enumerate(("distilbert", "albert")):
      vals = [(rep.task_score(m, t) / rep.task_score("bert", t)).value for t in TASKS]
      vals.append((rep.glue_score(m) / rep.glue_score("bert")).value)
      xs = [g + (i - 0.5) * 0.35 for g in range(len(groups))]
      ax.bar(xs, [v * 100 for v in vals], width=0.35, color=COLORS[m], label=f"{NAMES[m]} / BERT")
    ax.axhline(STUDY["distilbert_glue"]["min_retention"] * 100, color="black", ls="--", lw=1,
               label="study: DistilBERT keeps 97%")
    ax.axhline(100, color="gray", lw=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel="% of BERT's dev score", title=f"Retention relative to BERT (scale {rep.scale})")
    ax.set_ylim(bottom=min(50, ax.get_ylim()[0]))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save(fig, "retention.png")

  claim_plot(rep, plt, save)


def claim_plot(rep: Report, plt, save) -> None:
  """glue_claim.png: each measured retention with its 95% interval against the study's
  97% and the 96.5% an interval must clear (the from-scratch DistilBERT when its runs
  kept predictions; the real teacher's student with `--real-teacher`)."""
  from experiments import verdicts  # pylint: disable=import-outside-toplevel
  from experiments.compare_numbers import (  # pylint: disable=import-outside-toplevel
      ACCURACY_FILE, REAL_TEACHER_FILE, real_teacher_variant)
  rows = []  # (label, retention, (low, high))
  if rep.src.exists(ACCURACY_FILE) and rep.src.raw(ACCURACY_FILE).get("intervals"):
    entry = rep.src.raw(ACCURACY_FILE, "variants", "distilbert")
    rows.append((f"from scratch (scale {rep.scale}):\nDistilBERT / BERT",
                 entry["retention"], entry["retention_ci"]))
  if rep.src.exists(REAL_TEACHER_FILE):
    numbers = rep.src.raw(REAL_TEACHER_FILE)
    entry = numbers["variants"][real_teacher_variant(numbers)]
    rows.append(("real teacher: all-MiniLM-L6-v2\n-> student cut from it",
                 entry["retention"], entry["retention_ci"]))
  if not rows:
    return
  fig, ax = plt.subplots(figsize=(7, 1.8 + 0.9 * len(rows)))
  for i, (label, value, (low, high)) in enumerate(rows):
    ax.errorbar([value * 100], [i], xerr=[[(value - low) * 100], [(high - value) * 100]],
                fmt="o", color=COLORS["distilbert"], capsize=4)
  ax.axvline(verdicts.STUDY_RETENTION * 100, color="black", ls="--", lw=1,
             label="study: DistilBERT keeps 97%")
  ax.axvline((verdicts.STUDY_RETENTION - verdicts.STUDY_ROUNDING) * 100, color="gray", ls=":",
             lw=1, label="an interval must clear 96.5% to agree")
  ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
  ax.set_ylim(-1.3, len(rows) - 0.4)  # room for the legend below the rows
  ax.set(xlabel="% of the teacher's dev score (95% bootstrap interval)",
         title="DistilBERT keeps 97%: what we measured")
  ax.legend(fontsize=7, loc="lower left")
  ax.grid(axis="x", alpha=0.3)
  save(fig, "glue_claim.png")
