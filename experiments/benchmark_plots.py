"""The benchmark's plots: latency and memory scaling, model ratios, training steps.

`write_plots(res, out)` draws a run's rows (`benchmark.json`) into
`inference_scaling.png`, `ratios.png` (DistilBERT/BERT and ALBERT/BERT
against their FLOP ratios and the papers' claims) and `training_scaling.png`
under `out`, and returns the paths it wrote.
"""

from __future__ import annotations

import os

from experiments.benchmark_report import CLAIMS


def write_plots(res: dict, out: str) -> list:
  """The run's PNG plots under `out`; returns their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  paths = []
  colors = {"bert": "tab:blue", "distilbert": "tab:orange", "albert": "tab:green"}
  styles = {"ours": "-", "ours_scanned": "-.", "ours_scanned_teacher": "-.", "hf_torch": "--",
            "hf_flax": ":"}
  rows = res["inference"]
  batches = sorted({r["batch"] for r in rows})
  seqs = sorted({r["seq"] for r in rows})

  def memory(r):
    return (r.get("xla_memory") or {}).get("peak_estimate") or r.get("rss_peak_delta_bytes")

  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  b_fix = 8 if 8 in batches else batches[-1]
  s_fix = seqs[-1]
  for (m, impl) in sorted({(r["model"], r["impl"]) for r in rows}):
    sel = sorted((r for r in rows if r["model"] == m and r["impl"] == impl
                  and r["batch"] == b_fix), key=lambda r: r["seq"])
    label = f"{m} {impl}"
    if sel:
      axes[0, 0].plot([r["seq"] for r in sel], [r["median_s"] * 1e3 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
      axes[1, 0].plot([r["seq"] for r in sel], [(memory(r) or 0) / 2**20 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
    sel = sorted((r for r in rows if r["model"] == m and r["impl"] == impl
                  and r["seq"] == s_fix), key=lambda r: r["batch"])
    if sel:
      axes[0, 1].plot([r["batch"] for r in sel], [r["median_s"] * 1e3 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
      axes[1, 1].plot([r["batch"] for r in sel], [(memory(r) or 0) / 2**20 for r in sel],
                      styles[impl], marker="o", color=colors[m], label=label)
  axes[0, 0].set(title=f"inference latency vs sequence length (batch {b_fix})",
                 xlabel="sequence length", ylabel="ms")
  axes[0, 1].set(title=f"inference latency vs batch (seq {s_fix})", xlabel="batch",
                 ylabel="ms")
  axes[1, 0].set(title=f"memory vs sequence length (batch {b_fix})", xlabel="sequence length",
                 ylabel="MiB (ours: XLA args+out+temp; HF: peak RSS growth)")
  axes[1, 1].set(title=f"memory vs batch (seq {s_fix})", xlabel="batch",
                 ylabel="MiB (ours: XLA args+out+temp; HF: peak RSS growth)")
  for ax in axes.flat:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f"lite_bert inference scaling, {res['meta']['device_kind']}, "
               f"{res['meta']['dtype']}")
  fig.tight_layout()
  path = os.path.join(out, "inference_scaling.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  paths.append(path)

  ratios = [e for e in res["ratios"]["model_vs_bert"]]
  if ratios:
    fig, ax = plt.subplots(figsize=(10, 5))
    labels = [f"{b}x{s}" for b, s in sorted({(e["batch"], e["seq"]) for e in ratios})]
    xs = {lab: i for i, lab in enumerate(labels)}
    for m, marker in (("distilbert", "o"), ("albert", "s")):
      for impl in sorted({e["impl"] for e in ratios}):
        sel = [e for e in ratios if e["model"] == m and e["impl"] == impl]
        if sel:
          ax.plot([xs[f"{e['batch']}x{e['seq']}"] for e in sel],
                  [e["latency_ratio"] for e in sel], styles[impl], marker=marker,
                  color=colors[m], label=f"{m}/bert {impl}")
      sel = [e for e in ratios if e["model"] == m and e["impl"] == "ours"]
      ax.plot([xs[f"{e['batch']}x{e['seq']}"] for e in sel], [e["flop_ratio"] for e in sel],
              color=colors[m], alpha=0.4, lw=6, label=f"{m}/bert FLOP ratio")
      ax.axhline(CLAIMS[m]["ratio"], color=colors[m], ls="-.", lw=1,
                 label=f"{m} claim {CLAIMS[m]['ratio']:.2f}")
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set(ylabel="latency / BERT-base latency", xlabel="batch x seq",
           title="DistilBERT/BERT and ALBERT/BERT latency ratios vs FLOP ratio and claims")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = os.path.join(out, "ratios.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

  train = res.get("training") or []
  if train:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for (m, impl) in sorted({(r["model"], r["impl"]) for r in train}):
      sel = sorted((r for r in train if r["model"] == m and r["impl"] == impl),
                   key=lambda r: (r["seq"], r["batch"]))
      labels = [f"{r['batch']}x{r['seq']}" for r in sel]
      axes[0].plot(labels, [r["median_s"] * 1e3 for r in sel], styles[impl], marker="o",
                   color=colors[m], label=f"{m} {impl}")
      axes[1].plot(labels, [(memory(r) or 0) / 2**20 for r in sel], styles[impl],
                   marker="o", color=colors[m], label=f"{m} {impl}")
    axes[0].set(title="training step time", xlabel="batch x seq", ylabel="ms")
    axes[1].set(title="training step memory", xlabel="batch x seq",
                ylabel="MiB (ours: XLA; HF: peak RSS growth)")
    for ax in axes:
      ax.set_yscale("log")
      ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, "training_scaling.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths
