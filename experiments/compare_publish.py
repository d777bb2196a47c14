"""Publishing a comparison: the report, its plots and the small files behind its numbers.

`publish` copies what `report.md` was computed from (each file a number of
`report_numbers.json` names, the stage records, configs, metrics and dev
predictions, the benchmark's report) to a folder that can be committed, and
records in `sizes.json` the folder sizes measured before the checkpoints
stayed behind, so `--report-only` on the copy writes the same report.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from experiments.compare_numbers import ACCURACY_FILE, REAL_TEACHER_ORIGIN, SIZES_FILE, Sources
from experiments.jobs import write_record

def _source_files(source) -> set:
  """The files a report_numbers.json source names (recursively through its `args`)."""
  if isinstance(source, dict):
    found = {source["file"]} if "file" in source else set()
    for arg in source.get("args", []):
      found |= _source_files(arg)
    return found
  return set()


def _dir_of(source) -> Optional[str]:
  """The folder a `dir_bytes` source (or its first such argument) names."""
  if isinstance(source, dict):
    if "dir_bytes" in source:
      return source["dir_bytes"]
    for arg in source.get("args", []):
      found = _dir_of(arg)
      if found:
        return found
  return None


def publish(root: str, dest: str) -> list:
  """Copies the report, its plots and every small file it was computed from to `dest`.

  Checkpoints and logs stay behind (the sizes in the report were measured on
  `root`); what is copied: report.md, report_numbers.json, the PNGs, run.json,
  stages/*.json, each file a number of the report names, every stage's
  config.json and metrics.jsonl (the loss curves), where `--real-teacher`'s numbers
  came from (real_teacher/origin.json), and the benchmark's
  BENCHMARKS.md, benchmark.json and plots. Returns the copied relative paths.
  """
  import glob  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  root = os.path.abspath(root)
  with open(os.path.join(root, "report_numbers.json")) as f:
    numbers = json.load(f)
  files = set().union(*(_source_files(item["source"]) for item in numbers))
  patterns = ["report.md", "report_numbers.json", "*.png", "run.json", "stages/*.json",
              "*/config.json", "*/metrics.jsonl", "*/predictions_validation.tsv",
              ACCURACY_FILE, REAL_TEACHER_ORIGIN, "benchmark/BENCHMARKS.md",
              "benchmark/benchmark.json", "benchmark/*.png"]
  for pattern in patterns:
    files |= {os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern))}
  sizes = {_dir_of(item["source"]): None for item in numbers if _dir_of(item["source"])}
  sizes = {rel: Sources(root).dir_bytes(rel) for rel in sizes}
  if any(os.path.isdir(os.path.join(root, rel)) for rel in sizes):
    os.makedirs(dest, exist_ok=True)
    write_record(os.path.join(dest, SIZES_FILE), {
        "bytes": {rel: num.value for rel, num in sizes.items() if num is not None},
        "measured_in": root})
  copied = []
  for rel in sorted(files):
    src = os.path.join(root, rel)
    if os.path.isfile(src):
      os.makedirs(os.path.dirname(os.path.join(dest, rel)) or dest, exist_ok=True)
      shutil.copy2(src, os.path.join(dest, rel))
      copied.append(rel)
  return copied
