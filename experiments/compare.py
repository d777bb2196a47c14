r"""The comparative study in one command: BERT, DistilBERT (distilled from that BERT) and ALBERT.

  python -m experiments.compare --workdir=workdirs/compare_small --scale=small
  python -m experiments.compare --workdir=workdirs/compare_small --report-only

checks, side by side and in one run, the claims of "A Comparative Analysis of
DistilBERT and ALBERT" (`STUDY` below: BERT-base 110M parameters, DistilBERT
66M, ALBERT-base 12M; embeddings 23M vs 3M; DistilBERT 60% faster at 97% of
BERT's GLUE score; ALBERT not faster). Every stage is one plain command (a
`python launch.py ...` run, or the benchmark) in its own folder under
`--workdir`:

  summary_base_<model>     parameter counts at base size (`mode=summary`)
  summary_trained_<model>  the same for the models as trained at this scale
  tokenizer                one sentencepiece vocabulary for all three models
  pretrain_bert, pretrain_albert   MLM+NSP / MLM+SOP on the Gutenberg books
  distill_distilbert       DistilBERT distilled from pretrain_bert (`mode=distill`)
  eval_<corpus>_<model>    `mode=evaluate` of each: masked-LM accuracy and
                           perplexity on held-out Gutenberg books and on
                           WikiText, one masking, the same masked tokens for all
                           three (results land in the trained workdir)
  finetune_<model>_<task>  SST-2 and MRPC, dev scores (`eval_validation.json`)
  benchmark                `experiments/benchmark.py` at base size: inference
                           latency and memory over a batch x length grid

A stage whose final outputs exist is skipped; an interrupted one resumes from
its checkpoint when the command is run again (or just `--workdir=DIR`: the
settings DIR was made with; delete a stage's folder to redo it). `--stages=pretrain_albert,finetune` runs only those stages (their inputs
must exist). Each stage's command, log (`logs/<stage>.log`) and wall time
(`stages/<stage>.json`; an interrupted attempt counts until its log's last
write) are kept. Then `report.md` and its PNG plots are written from those
files alone; `--report-only` rewrites them without running anything, byte for
byte the same. `report_numbers.json` names the source of every number in
`report.md` (a JSON file and key, a folder's size on disk, a figure of the
study, or arithmetic on those); `tests/test_compare.py` checks each one.

Scales (`SCALES`): `tiny` (the configs' tiny models, 300 steps: 40 minutes
measured on 2 CPU cores shared with other jobs, less on idle ones), `small` (4
layers of 256, 3,000 steps: about four hours on 2 CPU cores), `long`
(`small`'s models without dropout, 1,500 steps of 128 x 32 tokens, then 3,000
and 6,000 of 32 x 128 continuing from them, a sequence-length warmup that leaves
the unigram plateau: about 2-3 hours a model, resumable across sessions), `base`
(the real BERT-base / DistilBERT / ALBERT-base, 100k steps of 256 sequences: an
accelerator). The parameter counts and the benchmark are at base size at every
scale. Step counts, the corpora, the benchmark grid and the evaluation size can
be overridden (`--pretrain-steps`, `--corpus`, `--batches`, `--seqs`,
`--eval-batches`, ...; `--help` lists them).

`--real-teacher=DIR` takes a `python -m experiments.distill_study` folder (e.g. the
committed `experiments/results/distill_study`): its distill_numbers.json is copied to
`real_teacher/` and the claims table sets its retention (all-MiniLM-L6-v2 -> a 3-layer
student, SST-2 + MRPC, with its interval, majority classes and latency ratio) beside
the study's 97%, next to the from-scratch DistilBERT's row.

The pieces: `compare_plan.py` (the study, the scales, the stages' commands),
`jobs.py` (running a stage: log, wall time, resume), `compare_numbers.py`
(each number with its source), `compare_report.py` (report.md),
`compare_plots.py` (its PNGs) and `compare_publish.py` (the committed copy).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from experiments import jobs
from experiments import provenance
from experiments.compare_numbers import real_teacher_problem, take_real_teacher
from experiments.compare_plan import SCALES, make_plan, settings_of
from experiments.compare_publish import publish
from experiments.compare_report import report


def run_all(args, root: str) -> None:
  """Runs the stages of the comparison in `root` that are not done (or those of --stages)."""
  run_path = os.path.join(root, "run.json")
  run = jobs.read_json(run_path) if os.path.exists(run_path) else None
  if args.scale is None:
    if run is None:
      jobs.refuse(f"--scale is required: {root} holds no comparison to resume")
    settings = run["settings"]  # resume with the settings the folder was made with
  else:
    settings = settings_of(args)
  if run is not None and run["settings"] != settings:
    changed = sorted(k for k in settings if run["settings"].get(k) != settings[k])
    jobs.refuse(f"{root} holds a comparison made with other settings ({changed} differ; it "
                f"has --scale={run['settings']['scale']}); rerun it with the same flags, or use "
                f"another --workdir")
  stages = make_plan(root, settings)
  chosen = jobs.select(stages, args.stages)
  todo, skipped = jobs.pending(chosen)
  jobs.check_needs(todo, stages)
  command = "python -m experiments.compare " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  run = run or {"settings": settings, "invocations": []}
  if todo:
    run["invocations"].append({"date": jobs.now_iso(), "command": command,
                               "git": provenance.git_info(), "machine": provenance.machine(),
                               "stages": [s.name for s in todo]})
    jobs.write_record(run_path, run)
  elif not os.path.exists(run_path):
    jobs.write_record(run_path, run)
  if skipped:
    print(f"done already (delete a stage's folder to redo it): {', '.join(skipped)}")
  for stage in chosen:
    path = jobs.record_path(root, stage.name)
    if (stage not in todo and os.path.exists(path)
        and jobs.read_json(path)["command"] != stage.command):
      print(f"warning: {stage.name} was run with another command than this version plans; "
            f"delete {jobs.shown_path(stage.workdir)} to redo it", flush=True)
  jobs.run_stages(todo, root, echo=args.echo)


# ------------------------------------------------------------------------ main


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m experiments.compare",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="folder of the stages and the report")
  p.add_argument("--scale", choices=sorted(SCALES), default=None,
                 help="tiny | small | long | base; omitted: the settings --workdir was made with")
  p.add_argument("--report-only", action="store_true",
                 help="rewrite report.md and the plots from the stage folders, run nothing")
  p.add_argument("--stages", default="", help="run only these stages or groups (comma list)")
  p.add_argument("--publish", default="",
                 help="then copy the report, plots and the small files behind its numbers "
                      "(no checkpoints) to this folder, e.g. experiments/results/compare")
  p.add_argument("--echo", action=argparse.BooleanOptionalAction, default=True,
                 help="show the stages' output (always in logs/<stage>.log)")
  p.add_argument("--corpus", default="", help="pretraining corpus (default: Gutenberg train)")
  p.add_argument("--eval-corpus", default="",
                 help="held-out corpus (default: Gutenberg validation books)")
  p.add_argument("--wikitext", default="", help="out-of-domain corpus (default: WikiText-2 valid)")
  p.add_argument("--pretrain-steps", type=int, default=0)
  p.add_argument("--distill-steps", type=int, default=0)
  p.add_argument("--finetune-steps", type=int, default=0, help="steps of every fine-tuning run")
  p.add_argument("--finetune-pad-multiple", type=int, default=0,
                 help="finetune.pad_multiple (0: the config's); the sequence length pads every "
                      "batch to one shape, one compilation (few-step tests)")
  p.add_argument("--eval-batches", type=int, default=0, help="held-out batches per evaluation")
  p.add_argument("--tokenizer-sentences", type=int, default=0)
  p.add_argument("--batches", default="", help="benchmark batch sizes, e.g. 1,8")
  p.add_argument("--seqs", default="", help="benchmark sequence lengths, e.g. 128,512")
  p.add_argument("--bench-size", default="base", choices=("base", "tiny"),
                 help="model size the benchmark times (base; tiny only for quick checks)")
  p.add_argument("--real-teacher", default="",
                 help="a `python -m experiments.distill_study` folder (e.g. "
                      "experiments/results/distill_study): its distill_numbers.json is copied "
                      "in and the report sets its real-teacher retention beside the study's 97%%")
  args = p.parse_args(argv)
  if args.real_teacher:
    problem = real_teacher_problem(args.real_teacher)
    if problem:  # refused before anything is written
      jobs.refuse(problem)
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  root = os.path.abspath(args.workdir)  # made by the first record written into it
  if not args.report_only:
    run_all(args, root)
  elif not os.path.exists(os.path.join(root, "run.json")):
    jobs.refuse(f"{root} has no run.json: not a comparison folder")
  if args.real_teacher:
    take_real_teacher(args.real_teacher, root)
  report(root)
  print(f"wrote {os.path.join(root, 'report.md')}")
  if args.publish:
    copied = publish(root, args.publish)
    print(f"published {len(copied)} files to {args.publish}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
