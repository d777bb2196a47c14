"""The prepared GPU run (#23): one command, under 8 minutes on one H200, nothing downloaded.

  # here, once: copy ml-collections (pure Python, all the image lacks) into .gpu_site/
  python -m experiments.gpu_run --prepare
  # on the GPU machine (the device tool, carry=[".gpu_site"]):
  PYTHONPATH=.gpu_site PYTHONUNBUFFERED=1 python3 -m experiments.gpu_run --out=$OUT/gpu
  # here, and in CI: the same path at the tiny sizes on the CPU
  python -m experiments.gpu_run --out=/tmp/gpu_dry --dry-run

It runs `experiments/benchmark.py` once, in bf16, measuring side by side:
  * the pretraining step of BERT-base, DistilBERT (with its BERT-base teacher)
    and ALBERT-base at 256 x 128 (throughput in sequences/s, and MFU against
    the datasheet's dense bf16 peak, `lite_bert/train/peak.py`);
  * the same steps in Hugging Face torch on the same GPU (`--reference`; the
    HF Flax worker is skipped when its virtualenv is absent);
  * inference latency at batch 1 and 32 x sequence 128 and 512.
The benchmark's import path needs none of grain, tensorflow-datasets,
array_record, submitit or tensorboardX (the GPU image lacks them; the test
checks it), only ml-collections besides what the image has. The HF torch side was
run on this CPU with the image's transformers 5.17.0 (its wheel on PyPI's disk copy,
put on PYTHONPATH; tiny sizes, `--reference`): fp32 outputs equal ours within
1.2e-6 for all three models and the training losses match, so the reference
needs nothing carried either. Attention takes
`jax.nn.dot_product_attention(implementation="cudnn")` on a GPU in bf16 when no
attention probabilities or attention dropout are needed
(`--config.model.attention_dropout_rate=0` in a training recipe).
"""

import argparse
import os
import shutil
import sys
from typing import Optional, Sequence

from experiments import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GPU_ARGS = ["--size=base", "--dtype=bfloat16", "--reference", "--batches=1,32",
            "--seqs=128,512", "--train-points=256x128", "--no-plots", "--repeats=5"]
# The same path at the tiny sizes and a small grid, on whatever device is there.
DRY_RUN_ARGS = ["--size=tiny", "--dtype=bfloat16", "--quick", "--no-reference", "--batches=1",
                "--seqs=32", "--train-points=2x32", "--no-plots"]
ABSENT_ON_THE_GPU = ("grain", "tensorflow_datasets", "array_record", "submitit", "tensorboardX")


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="folder for benchmark.json and BENCHMARKS.md")
  parser.add_argument("--dry-run", action="store_true",
                      help="tiny sizes, no references: the same code path on a CPU")
  parser.add_argument("--prepare", action="store_true",
                      help="copy ml-collections into .gpu_site/ (git-ignored) to carry along")
  args = parser.parse_args(argv)
  if not args.prepare and not args.out:
    parser.error("--out is required")
  if args.prepare:
    import ml_collections  # pylint: disable=import-outside-toplevel
    source = os.path.dirname(ml_collections.__file__)
    target = os.path.join(REPO, ".gpu_site", "ml_collections")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*_test.py"))
    print(f"gpu_run: copied {source} -> {target}; carry .gpu_site")
    return 0
  status = benchmark.main([f"--out={args.out}"] + (DRY_RUN_ARGS if args.dry_run else GPU_ARGS))
  loaded = sorted(name for name in ABSENT_ON_THE_GPU if sys.modules.get(name) is not None)
  print(f"gpu_run: modules the GPU image lacks that this run imported: {loaded or 'none'}")
  return status or (1 if loaded else 0)


if __name__ == "__main__":
  sys.exit(main())
