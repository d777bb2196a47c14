"""Speed and memory of the lite_bert encoders, against Hugging Face, in ONE run.

  python -m experiments.benchmark --out=experiments/results/benchmark --reference
  python -m experiments.benchmark --out=/tmp/b --quick --no-reference      # ~1 min
  python -m experiments.benchmark --out=/tmp/b --quick --size=tiny --no-reference  # tests
  python -m experiments.benchmark --out=/tmp/b --xla-flag-probe   # XLA CPU flags vs bf16/fp32
  python -m experiments.benchmark --out=experiments/results/malloc_probe --xla-flag-probe \
      --probe-variants=default,glibc_malloc_hugetlb --probe-rounds=3   # the allocator A/B

What one run measures (all on the same machine, in the same process, the
implementations interleaved so that drift and other load hit them alike, in
visits of one untimed call then two timed ones, `timing.VISIT`):

1. Roofline: a large fp32 (and the run's dtype) matmul through XLA (2048^2 and
   4096^2; the best median is this machine's "peak"), plus matmuls of the
   shapes the model runs, and the same in torch when references are on.
   On a GPU the peak is a datasheet number keyed by `device_kind` instead.
2. Inference: encoder forward (embeddings, the layers, pooler) of
   BERT-base, DistilBERT-base and ALBERT-base over batch x sequence length;
   by default in the unrolled layout (`--inference-layout=unrolled`:
   `EncoderConfig.scan_layers=False`, the trained params converted once with
   `unstack_layers`, each layer's weights their own arrays). XLA:CPU copies a
   scanned layer's weights out of the stacked [L, ...] arrays before its GEMMs
   (a dynamic-slice fusion per weight; 340 MB per BERT-base forward in fp32),
   which at batch 1 cost BERT-base ~20% (1x64: 106 -> 86 ms) and made shared-
   weight ALBERT look faster than BERT; `--inference-layout=scanned` measures
   the training layout.
   median latency over timed repeats after one warm-up call (XLA compilation
   is done before, and timed apart). Memory: XLA's compiled memory analysis
   (arguments + outputs + temporaries - aliased; exact for what XLA
   allocates) and the process's peak-RSS growth during the timed calls (VmHWM
   reset through /proc/self/clear_refs; includes allocator behaviour).
3. Training step: one jitted `lite_bert.train.loop.train_step` (the step the
   train loop runs, incl. the non-finite guard) with each model's objective
   and optimizer from its config: BERT MLM+NSP with AdamW, ALBERT MLM+SOP with
   LAMB (MLM at `P = 20 * seq / 128` gathered positions), DistilBERT's triple
   loss (student + frozen BERT-base teacher forward, MLM logits at every
   position, alpha_ce=5, alpha_mlm=2, alpha_cos=1, T=2) with AdamW.
4. References (`--reference`): Hugging Face transformers PyTorch models with
   the same weights (converted by `lite_bert.models.convert`), 2 threads,
   eval + inference_mode for inference, and a training step with the
   equivalent objective (gathered MLM positions, NSP/SOP, the same triple
   loss) + torch AdamW + grad clipping; and HF's Flax models (jitted forward)
   in their own virtualenv through the `experiments/reference_flax.py`
   worker.

Model FLOPs are counted analytically (matmuls only, 2 FLOPs per
multiply-add; the formula is in `lite_bert/models/flops.py`, and the report
repeats it) and cross-checked against XLA's `compiled.cost_analysis()`,
corrected for the scanned layers whose loop body XLA counts once (the raw
counted value is kept in the JSON too).

Utilisation = analytic FLOPs / median time / peak.

This file is the command line; the pieces:

  benchmark_run.py         Benchmark: the run, measuring, retries, --resume
  benchmark_candidates.py  what is timed: our / HF torch / HF Flax inference and
                           training steps, parity of the references
  benchmark_inputs.py      the models' configs and the synthetic inputs
  timing.py                Candidate, interleaved timed calls, CPU interference
  roofline.py              the machine's GEMM peak
  torch_reference.py       the HF torch models, losses, optimizer
  reference_flax_client.py the HF Flax worker's client (reference_flax.py)
  benchmark_report.py      ratios, targets, BENCHMARKS.md
  benchmark_plots.py       the PNG plots
  xla_probe.py             --xla-flag-probe (each setting in xla_probe_child.py)
  lite_bert/models/flops.py  the FLOP model and XLA's count
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if __name__ == "__main__":
  # As launch.py runs: glibc's transparent huge pages for the step's buffers (ours and
  # torch's alike, one process); --xla-flag-probe's children start without them.
  from lite_bert import host
  host.reexec_with_huge_pages()

from experiments.benchmark_inputs import MODELS
from experiments.benchmark_plots import write_plots
from experiments.benchmark_report import markdown
from experiments.benchmark_run import Benchmark
from experiments.reference_flax_client import REFERENCE_VENV_PYTHON
from experiments.xla_probe import probe_markdown, xla_flag_probe


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="folder for benchmark.json, BENCHMARKS.md, PNGs")
  p.add_argument("--markdown", default=None,
                 help="write the Markdown report here instead of <out>/BENCHMARKS.md (it also "
                      "includes <out>/xla_flags_probe.json when that exists)")
  p.add_argument("--quick", action="store_true",
                 help="small grid (batch 1,8 x seq 64,128; training 8x128), few repeats")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--size", default="base", choices=("base", "tiny"),
                 help="configs/<model>.py size (tiny: for tests)")
  p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=False,
                 help="also time HF torch and HF Flax (default: off)")
  p.add_argument("--reference-python", default=REFERENCE_VENV_PYTHON,
                 help="python of the HF Flax reference venv (experiments/reference_env.sh)")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--batches", default="", help="override the grid's batch sizes, e.g. 1,8")
  p.add_argument("--seqs", default="", help="override the grid's sequence lengths")
  p.add_argument("--train-points", default="", help="override training points, e.g. 8x128")
  p.add_argument("--skip-training", action="store_true")
  p.add_argument("--repeats", type=int, default=0,
                 help="timed calls per candidate and point (default 0: as many as fill the "
                      "time budget of the repeat policy, at least 2-3)")
  p.add_argument("--inference-layout", default="unrolled", choices=("unrolled", "scanned"),
                 help="layers as separate arrays (EncoderConfig.scan_layers=False, the "
                      "inference layout) or the scanned training layout")
  p.add_argument("--train-layout", default="unrolled", choices=("unrolled", "scanned", "both"),
                 help="the layers our training step runs: separately stored "
                      "(`model.scan_layers=False`, the faster XLA:CPU step) or the scanned "
                      "stacked ones (ALBERT's shared layer scans either way); 'both' times "
                      "the scanned step too, interleaved, as impl 'ours_scanned'")
  p.add_argument("--teacher-layout", default="unrolled", choices=("unrolled", "scanned", "both"),
                 help="the frozen BERT teacher's layers in DistilBERT's distillation step: "
                      "separately stored (`teachers.frozen_layout`, as the library runs a "
                      "teacher) or the scanned stack; 'both' times the scanned-teacher step "
                      "too, interleaved, as impl 'ours_scanned_teacher'")
  p.add_argument("--resume", action="store_true",
                 help="carry on from <out>/partial.json (written after every point) of an "
                      "interrupted run with the same settings")
  p.add_argument("--report-only", action="store_true",
                 help="write benchmark.json / BENCHMARKS.md / plots from <out>/partial.json "
                      "without measuring anything more")
  p.add_argument("--retries", type=int, default=0,
                 help="time a point again (up to N times) when other processes used more "
                      "than 25%% of the CPUs during it; the least busy attempt is kept")
  p.add_argument("--wait-idle", type=float, default=0.0,
                 help="before each measured point, wait up to this many seconds for other "
                      "processes to use < 10%% of the CPUs (0: do not wait)")
  p.add_argument("--no-plots", action="store_true")
  p.add_argument("--xla-flag-probe", action="store_true",
                 help="instead of the benchmark: GEMMs under each XLA CPU setting")
  p.add_argument("--probe-model", action=argparse.BooleanOptionalAction, default=True,
                 help="with --xla-flag-probe: also time BERT-base 8x128 per setting")
  p.add_argument("--probe-variants", default="",
                 help="with --xla-flag-probe: only these settings (comma-separated names of "
                      "xla_probe.PROBE_VARIANTS)")
  p.add_argument("--probe-rounds", type=int, default=1,
                 help="with --xla-flag-probe: run the settings this many times, interleaved")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.xla_flag_probe:
    probe = xla_flag_probe(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "xla_flags_probe.json"), "w") as f:
      json.dump(probe, f, indent=1)
    with open(os.path.join(args.out, "XLA_FLAGS_PROBE.md"), "w") as f:
      f.write(probe_markdown(probe))
    return 0
  bench = Benchmark(args)
  try:
    res = bench.run()
  finally:
    if bench.flax is not None:
      bench.flax.close()
  res["plots"] = [] if args.no_plots else write_plots(res, args.out)
  with open(os.path.join(args.out, "benchmark.json"), "w") as f:
    json.dump(res, f, indent=1, default=str)
  probe_path = os.path.join(args.out, "xla_flags_probe.json")
  probe = None
  if os.path.exists(probe_path):
    with open(probe_path) as f:
      probe = json.load(f)
  md_path = args.markdown or os.path.join(args.out, "BENCHMARKS.md")
  image_dir = os.path.relpath(args.out, os.path.dirname(os.path.abspath(md_path)))
  text = markdown(res, probe, "" if image_dir == "." else image_dir)
  with open(md_path, "w") as f:
    f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
