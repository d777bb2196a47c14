"""The benchmark's results as numbers and text: ratios, targets, the Markdown report.

From a run's rows (`benchmark.json`: roofline, inference, training):
`compute_ratios` (DistilBERT/BERT and ALBERT/BERT latency against their FLOP
ratios, ours against each reference), `evaluate_targets` (each of
`TARGETS_TEXT`, met or not), and `markdown` (BENCHMARKS.md: the tables,
`analysis_lines`' account of what limits each target, the XLA-flag probe's
table, the FLOP formula, the input pipeline next to the training step).
Nothing here measures; every number comes from the rows. The plots are in
`benchmark_plots.py`.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Optional

from experiments.benchmark_inputs import MODELS
from experiments.provenance import REPO
from experiments.xla_probe import probe_markdown

# What the papers / the study claim, as latency ratios to BERT-base.
CLAIMS = {
    "distilbert": dict(
        ratio=410.0 / 668.0,
        text="DistilBERT '60% faster' than BERT-base (Sanh et al. 2019, Table 3: 410 s vs "
             "668 s CPU inference on STS-B, batch 1) -> latency ratio 0.61"),
    "albert": dict(
        ratio=1.0,
        text="ALBERT-base 'not faster' than BERT-base: sharing removes parameters, not "
             "FLOPs -> latency ratio ~1.0"),
}
TARGETS_TEXT = {
    "roofline_8x512": "encoder forward >= 95% of the measured XLA GEMM roofline at 8x512 (fp32)",
    "inference_vs_torch": "inference >= 1.0x HF torch (every model, every grid point)",
    "inference_vs_flax": "inference >= 1.3x HF Flax (every model, every grid point)",
    "training_vs_torch": "training step >= 1.3x HF torch's equivalent step",
    "distil_ratio": "DistilBERT/BERT latency within +-0.03 of the FLOP ratio at every point",
    "albert_ratio": "ALBERT/BERT latency within 0.95-1.05 at every point",
}


def _index(rows: list) -> dict:
  return {(r["model"], r["impl"], r["batch"], r["seq"]): r for r in rows}


# The layout comparisons a run can time (--train-layout / --teacher-layout=both): the
# scanned candidate's impl, its ratios key, and what the report calls it.
LAYOUT_COMPARISONS = (
    ("ours_scanned", "training_layouts",
     "Training layouts (same step, timed interleaved): separately stored layers "
     "(`model.scan_layers=False`) vs the scanned stack"),
    ("ours_scanned_teacher", "teacher_layouts",
     "Teacher layouts in the distillation step (timed interleaved): the frozen teacher's "
     "layers stored separately (`teachers.frozen_layout`) vs its scanned stack"),
)


def compute_ratios(res: dict, models) -> dict:
  """Every ratio is computed here from the rows' medians and analytic FLOPs."""
  out = {"model_vs_bert": [], "ours_vs_reference": [], "training_vs_reference": [],
         "training_model_vs_bert": []}
  inf = _index(res["inference"])
  impls = sorted({r["impl"] for r in res["inference"]})
  points = sorted({(r["batch"], r["seq"]) for r in res["inference"]})
  for impl in impls:
    for b, s in points:
      bert = inf.get(("bert", impl, b, s))
      if bert is None:
        continue
      for m in ("distilbert", "albert"):
        other = inf.get((m, impl, b, s))
        if other is None:
          continue
        ratio = other["median_s"] / bert["median_s"]
        flop_ratio = other["analytic_flops"] / bert["analytic_flops"]
        entry = {"impl": impl, "batch": b, "seq": s, "model": m, "latency_ratio": ratio,
                 "flop_ratio": flop_ratio, "delta_vs_flop_ratio": ratio - flop_ratio,
                 "claim_ratio": CLAIMS[m]["ratio"]}
        if m == "distilbert":
          entry["within_target"] = abs(ratio - flop_ratio) <= 0.03
        else:
          entry["within_target"] = 0.95 <= ratio <= 1.05
        out["model_vs_bert"].append(entry)
  for (m, impl, b, s), r in sorted(inf.items()):
    if impl != "ours":
      continue
    entry = {"model": m, "batch": b, "seq": s, "ours_s": r["median_s"]}
    for ref in ("hf_torch", "hf_flax"):
      other = inf.get((m, ref, b, s))
      if other is not None:
        entry[f"{ref}_s"] = other["median_s"]
        entry[f"speedup_vs_{ref}"] = other["median_s"] / r["median_s"]
    out["ours_vs_reference"].append(entry)
  tr = _index(res.get("training", []))
  for (m, impl, b, s), r in sorted(tr.items()):
    if impl != "ours":
      continue
    other = tr.get((m, "hf_torch", b, s))
    if other is not None:
      out["training_vs_reference"].append(
          {"model": m, "batch": b, "seq": s, "ours_s": r["median_s"],
           "hf_torch_s": other["median_s"],
           "speedup_vs_hf_torch": other["median_s"] / r["median_s"]})
    for impl, key, _ in LAYOUT_COMPARISONS:  # --train-layout / --teacher-layout=both
      scanned = tr.get((m, impl, b, s))
      if scanned is not None:
        out.setdefault(key, []).append(
            {"model": m, "batch": b, "seq": s, "unrolled_s": r["median_s"],
             "scanned_s": scanned["median_s"],
             "speedup_unrolled_vs_scanned": scanned["median_s"] / r["median_s"]})
    bert = tr.get(("bert", "ours", b, s))
    if bert is not None and m != "bert":
      out["training_model_vs_bert"].append(
          {"model": m, "batch": b, "seq": s, "step_ratio": r["median_s"] / bert["median_s"],
           "flop_ratio": r["analytic_flops"] / bert["analytic_flops"]})
  return out


def evaluate_targets(res: dict) -> list:
  """Each of TARGETS_TEXT the run has numbers for: its value(s) and whether it is met."""
  targets = []
  dtype = res["meta"]["dtype"]
  ours = [r for r in res["inference"] if r["impl"] == "ours"]
  at = [r for r in ours if r["batch"] == 8 and r["seq"] == 512]
  if at:
    worst = min(r["roofline_fraction"] for r in at)
    targets.append({"target": "roofline_8x512", "text": TARGETS_TEXT["roofline_8x512"],
                    "value": {r["model"]: r["roofline_fraction"] for r in at},
                    "met": worst >= 0.95 if dtype == "float32" else None})
  vs = res["ratios"]["ours_vs_reference"]
  for ref, key, need in (("hf_torch", "inference_vs_torch", 1.0),
                         ("hf_flax", "inference_vs_flax", 1.3)):
    values = [e[f"speedup_vs_{ref}"] for e in vs if f"speedup_vs_{ref}" in e]
    if values:
      targets.append({"target": key, "text": TARGETS_TEXT[key],
                      "value": {"min": min(values), "median": statistics.median(values),
                                "max": max(values)},
                      "met": min(values) >= need})
  tv = res["ratios"]["training_vs_reference"]
  if tv:
    values = [e["speedup_vs_hf_torch"] for e in tv]
    targets.append({"target": "training_vs_torch", "text": TARGETS_TEXT["training_vs_torch"],
                    "value": {f"{e['model']} {e['batch']}x{e['seq']}": e["speedup_vs_hf_torch"]
                              for e in tv},
                    "met": min(values) >= 1.3})
  for m, key in (("distilbert", "distil_ratio"), ("albert", "albert_ratio")):
    entries = [e for e in res["ratios"]["model_vs_bert"]
               if e["impl"] == "ours" and e["model"] == m]
    if entries:
      targets.append({"target": key, "text": TARGETS_TEXT[key],
                      "value": {f"{e['batch']}x{e['seq']}": e["latency_ratio"] for e in entries},
                      "met": all(e["within_target"] for e in entries)})
  return targets


def _mb(x) -> str:
  return "-" if x is None else f"{x / 2**20:,.0f}"


def _ms(x) -> str:
  return "-" if x is None else (f"{x * 1e3:,.1f}" if x < 10 else f"{x * 1e3:,.0f}")


def _x(x) -> str:
  return "-" if x is None else f"{x:.2f}"



# torch's GEMM rate over XLA's above which the reports name the GEMM kernels as a limit.
GEMMS_LEVEL = 1.05


def gemm_rates(roof: dict) -> tuple:
  """(XLA's, torch's) 2048^3 fp32 GFLOP/s from a run's roofline (None where not timed)."""
  def rate(key):
    return next((r["gflops"] for r in roof.get(key, [])
                 if r["m"] == 2048 and r["dtype"] == "float32"), None)
  return rate("square"), rate("torch_square")


def gemm_sentence(roof: dict) -> str:
  """What the GEMM libraries allow: XLA's and torch's 2048^3 fp32 rates from this run's
  roofline; where torch's is faster by more than GEMMS_LEVEL, that bounds how close we
  can come."""
  xla, torch_rate = gemm_rates(roof)
  ratio = torch_rate / xla if xla and torch_rate else None
  tail = (" ALBERT is where we are clearly ahead, because HF torch runs ALBERT's tanh-GELU "
          "unfused.")
  if ratio is None or ratio <= GEMMS_LEVEL:
    return ("All three implementations spend nearly all their time in GEMMs (MKL for torch, "
            "YNNPACK for XLA)" + ("" if ratio is None else
                                   f", which run at the same rate here (torch {ratio:.2f}x XLA "
                                   "at 2048^3 fp32)")
            + ", so inference lands near HF torch's." + tail)
  return (f"Here torch's fp32 GEMMs (MKL) run {ratio:.2f}x XLA's (YNNPACK; 2048^3: "
          f"{torch_rate:.0f} vs {xla:.0f} GFLOP/s, the roofline table), and a forward "
          f"is mostly GEMMs: about {1 / ratio:.2f}x HF torch is what the kernels allow, at "
          "best. No XLA:CPU setting closed that gap on the Xeon where it was found "
          "(`experiments/results/xla_probe_xeon`)." + tail)


def analysis_lines(res: dict, probe: Optional[dict]) -> list:
  """Where we stand against each target and what limits it, from this run's numbers."""
  meta, roof = res["meta"], res["roofline"]
  peak = roof["peak_gflops"].get(meta["dtype"])
  lines = ["## Where we stand and what limits it", ""]
  if meta["device_kind"] == "cpu":
    xla_gemm, torch_gemm = gemm_rates(roof)
    if xla_gemm:
      lines.append(
          f"- Roofline: a 2048^3 fp32 matmul runs at {xla_gemm:.0f} GFLOP/s "
          f"through XLA" + (f" and {torch_gemm:.0f} through torch" if torch_gemm else "")
          + " on this machine, in this run; every utilisation below is relative to the best "
          f"XLA GEMM ({peak:.0f} GFLOP/s), not to a datasheet.")
  ours = {(r["model"], r["batch"], r["seq"]): r for r in res["inference"] if r["impl"] == "ours"}
  if ours:
    best = max(ours.values(), key=lambda r: r["roofline_fraction"])
    lines.append(
        f"- Encoder forward: {min(r['roofline_fraction'] for r in ours.values()):.0%} to "
        f"{best['roofline_fraction']:.0%} of that peak (best: {best['model']} "
        f"{best['batch']}x{best['seq']}); "
        + ", ".join(f"{m} 8x512 {ours[(m, 8, 512)]['roofline_fraction']:.0%}"
                    for m in MODELS if (m, 8, 512) in ours)
        + ". 8x512 falls short of the 95% target: besides the GEMMs a forward runs "
        "memory-bound work they do not absorb (LayerNorms, GELU, the softmax over "
        "batch x heads x seq x seq scores: 96 MiB per layer at 8x512), and the GEMMs "
        "themselves reach the 2048^3 rate only at favourable shapes (model-shaped GEMMs in "
        "the roofline table). At batch 1 a forward does little arithmetic per weight byte.")
  vs = res["ratios"]["ours_vs_reference"]
  for ref, name in (("hf_torch", "HF torch"), ("hf_flax", "HF Flax")):
    vals = [e[f"speedup_vs_{ref}"] for e in vs if f"speedup_vs_{ref}" in e]
    if vals:
      lines.append(f"- Inference vs {name} (same weights, same machine, interleaved): median "
                   f"{statistics.median(vals):.2f}x, range {min(vals):.2f}x-{max(vals):.2f}x "
                   f"over {len(vals)} points (> 1: ours faster).")
  if any("speedup_vs_hf_torch" in e for e in vs):
    lines.append("  " + gemm_sentence(roof))
  for _, key, what in LAYOUT_COMPARISONS:
    layouts = res["ratios"].get(key) or []
    if layouts:
      lines.append(f"- {what}: " + ", ".join(
          f"{e['model']} {e['batch']}x{e['seq']} {e['speedup_unrolled_vs_scanned']:.2f}x"
          for e in layouts) + " (> 1: separate layers faster).")
  tv = res["ratios"]["training_vs_reference"]
  if tv:
    xla_gemm, torch_gemm = gemm_rates(roof)
    lines.append(
        "- Training step vs HF torch (same objective and optimizer, dropout on): " + ", ".join(
            f"{e['model']} {e['batch']}x{e['seq']} {e['speedup_vs_hf_torch']:.2f}x" for e in tv)
        + ". Our step does no extra arithmetic (XLA's FLOP count is "
        + "{:.2f}-{:.2f}x the analytic one".format(*(f(
            r["xla_flops"] / r["analytic_flops"] for r in res.get("training", [])
            if r["impl"] == "ours" and r.get("xla_flops")) for f in (min, max)))
        + ", and the MLM head runs on the gathered positions only), so the gap is in "
        + (f"the GEMM kernels first (torch's {torch_gemm / xla_gemm:.2f}x XLA's here, "
           "above), then in "
           if xla_gemm and torch_gemm and torch_gemm > GEMMS_LEVEL * xla_gemm else "")
        + "non-GEMM time and memory traffic: XLA's temporaries for the step (forward "
        "activations kept for the backward pass, gradients) are "
        + ", ".join(f"{r['model']} {r['batch']}x{r['seq']} {r['xla_memory']['temp_size'] / 2**30:.1f}"
                    for r in res.get("training", []) if r["impl"] == "ours"
                    and (r.get("xla_memory") or {}).get("temp_size"))
        + " GiB, written and read once per step. Where the rest goes, op by op (XLA's trace "
        "of the BERT-base 8x128 step summed by op kind): `python -m "
        "experiments.profile_train_step --op-breakdown`, committed in "
        "`experiments/results/profile_train/op_breakdown`.")
  for m, band in (("distilbert", "the FLOP ratio +-0.03"), ("albert", "0.95-1.05")):
    es = [e for e in res["ratios"]["model_vs_bert"] if e["impl"] == "ours" and e["model"] == m]
    if not es:
      continue
    out = [e for e in es if not e["within_target"]]
    text = (f"- {m}/BERT latency: {min(e['latency_ratio'] for e in es):.2f}-"
            f"{max(e['latency_ratio'] for e in es):.2f} (FLOP ratio "
            f"{es[0]['flop_ratio']:.2f}); {len(es) - len(out)} of {len(es)} points within {band}")
    if out:
      text += "; outside: " + ", ".join(f"{e['batch']}x{e['seq']} {e['latency_ratio']:.2f}"
                                         for e in out)
    layout = res["meta"].get("inference_layout", "scanned")
    if m == "albert" and layout != "scanned":
      text += (". Sharing removes parameters, not FLOPs. The layers ran unrolled, each BERT layer's "
               "weights their own arrays (`--inference-layout=unrolled`); in the scanned training "
               "layout XLA:CPU copies every layer's weights out of the stacked arrays before its "
               "GEMMs, which slows BERT at small batches and made ALBERT look faster there (measure it "
               "with `--inference-layout=scanned`)")
    elif m == "albert":
      text += (". Sharing removes parameters, not FLOPs. Where ALBERT is faster (small batches, "
               "little arithmetic per weight) what differs in the compiled code is a copy: BERT's `nn.scan` takes "
               "each layer's weights out of the stacked [L, ...] arrays, and XLA:CPU "
               "materializes that slice (a dynamic-slice fusion before every GEMM fusion in the "
               "compiled HLO; 340 MB per forward in fp32), while ALBERT's shared weights are "
               "read in place")
      flax = {(e["batch"], e["seq"]): e["latency_ratio"] for e in res["ratios"]["model_vs_bert"]
              if e["impl"] == "hf_flax" and e["model"] == "albert"}
      at = [flax[(e["batch"], e["seq"])] for e in out if (e["batch"], e["seq"]) in flax]
      if at:
        text += (f". HF Flax, whose layers are separate arrays, has ALBERT/BERT {min(at):.2f}-"
                 f"{max(at):.2f} at those points")
    lines.append(text + ".")
  if probe:
    by = {v["variant"]: v for v in probe["variants"]}
    default = by.get("default", {})
    ok = [v for v in probe["variants"] if isinstance(v.get("bf16_2048_f32acc"), (int, float))]
    if ok and default.get("fp32_2048"):
      plain = max(ok, key=lambda v: v.get("bf16_2048", 0))
      acc = max(ok, key=lambda v: v["bf16_2048_f32acc"])
      amx = any(f.startswith("amx") for f in probe["meta"]["cpu_flags"])
      text = (f"- bf16 on CPU: {len(probe['variants'])} settings tried (table below). A bf16 "
              f"matmul with a bf16 result is widened to fp32 first in every one of them "
              f"(best {plain['bf16_2048']:.0f} GFLOP/s at 2048^3, {plain['variant']}), slower "
              f"than fp32 ({default['fp32_2048']:.0f}). Asking for an fp32 result "
              f"(`preferred_element_type`) gives a native bf16 kernel: "
              f"{acc['bf16_2048_f32acc']:.0f} GFLOP/s ({acc['variant']}), "
              f"{acc['bf16_2048_f32acc'] / acc['fp32_2048']:.2f}x its fp32 "
              f"({acc['fp32_2048']:.0f}); with default settings "
              f"{default['bf16_2048_f32acc']:.0f} vs {default['fp32_2048']:.0f}, "
              f"{default['bf16_2048_f32acc'] / default['fp32_2048']:.2f}x. Our models use "
              f"that form for every matmul in bf16 (`encoder.flat_matmul`)")
      f32, b16 = default.get("bert_base_8x128_float32_ms"), default.get("bert_base_8x128_bfloat16_ms")
      if f32 and b16:
        text += f": BERT-base 8x128 forward {f32:,.0f} ms fp32 -> {b16:,.0f} ms bf16 ({f32 / b16:.2f}x)"
      text += (". AMX cannot be tried on this machine: its CPU reports no `amx` flags "
               "(it has `avx512_bf16`)" if not amx else
               ". The CPU has AMX; no setting made XLA use it")
      lines.append(text + ".")
  if meta["device_kind"] == "cpu":
    lines.append("- GPU targets (MFU on an H100, GPU latency table): not measured here; this "
                 "run had no GPU. `--dtype=bfloat16` on a GPU machine uses the datasheet peak "
                 "table (`GPU_PEAK_TFLOPS`).")
  return lines + [""]


def same_cpu(meta: dict, probe_meta: dict) -> bool:
  """Whether an --xla-flag-probe result was measured on the CPU this run's `meta` names."""
  return (meta.get("cpu_model") == probe_meta.get("cpu_model")
          and sorted(meta.get("cpu_flags", [])) == sorted(probe_meta.get("cpu_flags", [])))


def markdown(res: dict, probe: Optional[dict] = None, image_dir: str = "") -> str:
  """The run as Markdown; `probe`: an --xla-flag-probe result to include (left out, with a
  line saying so, when it was measured on another CPU); images under `image_dir`."""
  meta = res["meta"]
  probe_elsewhere = probe if probe and not same_cpu(meta, probe["meta"]) else None
  if probe_elsewhere:
    probe = None
  lines = [f"# lite_bert benchmark ({meta['dtype']}, {meta['size']}"
           f"{', quick' if meta['quick'] else ''})", ""]
  lines += [f"- device: {meta['device_kind']} ({meta['cpu_model']}, {meta['cpu_count']} cores;"
            f" flags {' '.join(meta['cpu_flags'])})",
            f"- date: {meta['date']}; git commit {meta['git']['commit'][:12]}"
            f"{' (dirty tree)' if meta['git']['dirty'] else ''}",
            f"- jax {meta['jax']}, jaxlib {meta.get('jaxlib')}, flax {meta['flax']}, optax "
            f"{meta['optax']}" + (f", torch {meta['torch']} ({meta['torch_threads']} threads), "
                                  f"transformers {meta['transformers']}"
                                  if meta.get("torch") else ""),
            f"- command: `{meta['command']}` (wall {meta.get('wall_s', 0) / 60:.1f} min)"
            + (" wrote this report from the rows measured by the sessions below"
               if meta.get("report_only") else ""),
            f"- XLA_FLAGS: `{meta['XLA_FLAGS'] or '(none)'}`"] + [
            f"- rows carried over (--resume) from the session of {r['date']} (commit "
            f"{r['git']['commit'][:12]}{' (dirty tree)' if r['git'].get('dirty') else ''}"
            f"{', wall %.1f min' % (r['wall_s'] / 60) if r.get('wall_s') else ''}): "
            f"`{r.get('command', '?')}`" for r in meta.get("resumed", [])
            if not meta.get("report_only") or "--report-only" not in r.get("command", "")] + [
            "- repeats: 1 warm-up call after compilation, then "
            + (f"{res['meta']['repeat_policy']['fixed']} timed calls per candidate (--repeats)"
               if res['meta']['repeat_policy'].get('fixed') else
               f"timed calls filling ~{res['meta']['repeat_policy']['budget_s']} s per candidate "
               f"(min {res['meta']['repeat_policy']['min']}, max "
               f"{res['meta']['repeat_policy']['max']}; {res['meta']['repeat_policy']['min_long']}"
               f" when a call takes > {res['meta']['repeat_policy']['long_s']} s)"
               + (f"; a candidate whose calls spread by more than "
                  f"{res['meta']['repeat_policy']['spread']:.0%} of their median gets more "
                  f"calls, up to {res['meta']['repeat_policy']['spread_max']}"
                  if res['meta']['repeat_policy'].get('spread_max') else ""))
            + (f", implementations interleaved in visits of {visit['untimed']} untimed and "
               f"up to {visit['timed']} timed calls (a call right after another "
               f"implementation's ran slower; `timing.VISIT`)"
               if (visit := res['meta'].get('visit')) else
               ", implementations interleaved call by call")
            + f"; medians reported. A point during which other processes used > 25% of the "
            f"CPUs is timed again (up to --retries times, "
            f"{'as each session set it' if meta.get('report_only') else res['meta']['retries']};"
            f" the least busy attempt is kept).",
            "- interference: per point in the tables ('others' CPU %') and the JSON." if
            meta.get("report_only") else
            f"- interference: other processes used "
            f"{res['interference'].get('others_cpu_fraction', float('nan')):.0%} of the CPUs "
            f"during the run (per-point values in the JSON).", ""]
  roof = res["roofline"]
  lines += ["## Roofline", "", f"Source: {roof['source']}.", ""]
  if "square" in roof:
    lines += ["| GEMM (m x k x n) | dtype | XLA GFLOP/s | torch GFLOP/s |", "|---|---|---|---|"]
    torch_rows = {(r["m"], r["k"], r["n"], r["dtype"]): r for r in
                  roof.get("torch_square", []) + roof.get("torch_model_shaped", [])}
    for r in roof["square"] + roof["model_shaped"]:
      t = torch_rows.get((r["m"], r["k"], r["n"], r["dtype"]))
      lines.append(f"| {r['m']} x {r['k']} x {r['n']} | {r['dtype']} | {r['gflops']:.0f} | "
                   f"{t['gflops']:.0f} |" if t else
                   f"| {r['m']} x {r['k']} x {r['n']} | {r['dtype']} | {r['gflops']:.0f} | - |")
    for r in roof.get("end_of_run", []):
      lines.append(f"| {r['m']} x {r['k']} x {r['n']} (end of run) | {r['dtype']} | "
                   f"{r['gflops']:.0f} | - |")
  lines += ["", "Peak used for utilisation: " + ", ".join(
      f"{d} {v:.0f} GFLOP/s" for d, v in roof["peak_gflops"].items() if v), ""]
  if res.get("reference"):
    ref = res["reference"]
    lines += ["## References", "",
              f"- HF Flax worker python: `{ref['flax_python']}`; versions "
              f"{json.dumps(ref.get('flax_versions'))}; loaded: {ref['flax_loaded']}"
              + (f"; error: {ref['flax_error']}" if ref.get("flax_error") else ""),
              "- same weights (our params converted with `hf_state_dict_from_params`): max |diff|"
              " of last_hidden_state, 2x16 input: " + "; ".join(
                  f"{m}: " + ", ".join(f"{k.replace('_max_abs_diff', '')} {v:.1e}"
                                       for k, v in d.items())
                  for m, d in ref["parity"].items()), ""]
  lines += ["## Inference (encoder forward)", "",
            "| model | batch x seq | ours ms | HF torch ms | HF Flax ms | ours vs torch | "
            "ours vs Flax | ours GFLOP/s | % of peak | XLA/analytic FLOPs | ours XLA MiB "
            "(temp) | RSS growth MiB ours / torch / Flax | others' CPU % |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  inf = _index(res["inference"])
  for (m, impl, b, s), r in sorted(inf.items(), key=lambda kv: (MODELS.index(kv[0][0]),
                                                                kv[0][3], kv[0][2])):
    if impl != "ours":
      continue
    t, f = inf.get((m, "hf_torch", b, s)), inf.get((m, "hf_flax", b, s))
    mem = r.get("xla_memory") or {}
    lines.append(
        f"| {m} | {b}x{s} | {_ms(r['median_s'])} | {_ms(t and t['median_s'])} | "
        f"{_ms(f and f['median_s'])} | {_x(t and t['median_s'] / r['median_s'])} | "
        f"{_x(f and f['median_s'] / r['median_s'])} | {r['gflops_per_s']:.0f} | "
        f"{r['roofline_fraction']:.0%} | "
        f"{_x(r.get('xla_flops') and r['xla_flops'] / r['analytic_flops'])} | "
        f"{_mb(mem.get('peak_estimate'))} ({_mb(mem.get('temp_size'))}) | "
        f"{_mb(r.get('rss_peak_delta_bytes'))} / {_mb(t and t.get('rss_peak_delta_bytes'))} / "
        f"{_mb(f and f.get('rss_peak_delta_bytes'))} | "
        f"{r['interference'].get('others_cpu_fraction', float('nan')):.0%} |")
  lines += ["", "'ours vs X' = X's median latency / ours (> 1: ours faster). 'others' CPU %': "
            "share of the 2 CPUs other processes used while the point was timed.", ""]
  lines += ["## Model ratios (latency / BERT-base latency, same implementation)", "",
            "| impl | batch x seq | DistilBERT/BERT | FLOP ratio | delta | ALBERT/BERT | "
            "FLOP ratio |", "|---|---|---|---|---|---|---|"]
  by = {}
  for e in res["ratios"]["model_vs_bert"]:
    by.setdefault((e["impl"], e["seq"], e["batch"]), {})[e["model"]] = e
  for (impl, s, b), d in sorted(by.items()):
    di, al = d.get("distilbert"), d.get("albert")
    lines.append(
        f"| {impl} | {b}x{s} | {_x(di and di['latency_ratio'])}"
        f"{'' if not di or di['within_target'] or impl != 'ours' else ' (!)'} | "
        f"{_x(di and di['flop_ratio'])} | "
        f"{'-' if not di else format(di['delta_vs_flop_ratio'], '+.3f')} | "
        f"{_x(al and al['latency_ratio'])}"
        f"{'' if not al or al['within_target'] or impl != 'ours' else ' (!)'} | "
        f"{_x(al and al['flop_ratio'])} |")
  lines += ["", "Claims: " + " / ".join(c["text"] for c in CLAIMS.values()) + ".",
            "(!) = outside the target band (ours only).", ""]
  train = res.get("training") or []
  if train:
    lines += ["## Training step", "",
              "| model | impl | batch x seq | objective / optimizer | step ms | seq/s | "
              "tokens/s | analytic GFLOP | XLA/analytic | MFU (of peak) | memory MiB | "
              "loss w/o dropout | others' CPU % |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in train:
      mem = (r.get("xla_memory") or {}).get("peak_estimate") or r.get("rss_peak_delta_bytes")
      lines.append(
          f"| {r['model']} | {r['impl']} | {r['batch']}x{r['seq']} | "
          f"{r.get('objective', 'same objective')} / {r.get('optimizer')} | "
          f"{_ms(r['median_s'])} | {r['sequences_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
          f"{r['analytic_flops'] / 1e9:,.0f} | "
          f"{_x(r.get('xla_flops') and r['xla_flops'] / r['analytic_flops'])} | "
          f"{r['mfu']:.0%} | {_mb(mem)} | "
          f"{'-' if r.get('deterministic_loss') is None else format(r['deterministic_loss'], '.4f')} | "
          f"{r['interference'].get('others_cpu_fraction', float('nan')):.0%} |")
    lines += ["", "Memory: ours = XLA memory analysis (args + outputs + temps - donated); "
              "hf_torch = peak RSS growth during a step. 'loss w/o dropout': the objective on "
              "the same batch and weights with dropout off (shows the objectives match).", ""]
    lines += data_pipeline_lines(train)
    tv = res["ratios"]["training_vs_reference"]
    if tv:
      lines += ["Ours vs HF torch (training, > 1: ours faster): " + ", ".join(
          f"{e['model']} {e['batch']}x{e['seq']} {e['speedup_vs_hf_torch']:.2f}x" for e in tv),
          ""]
  lines += ["## Targets", "", "| target | value | met |", "|---|---|---|"]
  for t in res["targets"]:
    value = ", ".join(f"{k} {v:.2f}" for k, v in t["value"].items())
    lines.append(f"| {t['text']} | {value} | "
                 f"{'n/a' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
  lines += [""] + analysis_lines(res, probe)
  if probe_elsewhere:
    m = probe_elsewhere["meta"]
    lines += [f"The XLA-flag probe beside this report (`xla_flags_probe.json`) was measured on "
              f"another CPU ({m.get('cpu_model')}, {m.get('date')}), so it is left out; rerun "
              "`--xla-flag-probe` with the same --out on this machine to include one.", ""]
  if probe:
    lines += probe_markdown(probe).replace("# CPU settings", "## CPU settings").splitlines() + [""]
  lines += ["## FLOP formula", "", "```", res["flops_formula"].rstrip(), "```", ""]
  for p in res.get("plots", []):
    path = os.path.join(image_dir, os.path.basename(p)) if image_dir else os.path.basename(p)
    lines.append(f"![{os.path.basename(p)}]({path})")
  return "\n".join(lines) + "\n"


DATA_BENCHMARK = os.path.join(REPO, "experiments", "results", "data_benchmark.json")
DATA_RECIPE = {"bert": "bert_wordpiece_nsp_whole_word", "albert": "albert_sentencepiece_sop_ngram3",
               "distilbert": "distilbert_wordpiece_single_token"}


def data_pipeline_lines(train: list, path: str = DATA_BENCHMARK) -> list:
  """The input pipeline's measured sequences/s (one core, seq 128) next to what each step eats."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    data = json.load(f)
  lines = [f"Input pipeline vs training step at seq 128 (pipeline: {path.split(REPO + '/')[-1]}, "
           f"one {data['cpu']} core, {data['date']}; sequences/s):", "",
           "| model | pipeline recipe | pipeline 1st epoch | pipeline later epochs | "
           "step consumes (ours) | pipeline / step (1st epoch) |", "|---|---|---|---|---|---|"]
  for r in train:
    recipe = data["recipes"].get(DATA_RECIPE.get(r["model"], ""))
    if r["impl"] != "ours" or r["seq"] != data["max_seq_length"] or recipe is None:
      continue
    first = recipe["first_epoch_seq_per_s"]
    lines.append(f"| {r['model']} {r['batch']}x{r['seq']} | {DATA_RECIPE[r['model']]} | "
                 f"{first:,.0f} | {recipe['steady_seq_per_s']:,.0f} | "
                 f"{r['sequences_per_s']:,.1f} | {first / r['sequences_per_s']:,.0f}x |")
  return lines + [""]
