"""`python -m lite_bert.export`: a lite_bert workdir (or a folder it reads) as a transformers folder.

  python -m lite_bert.export --source=WORKDIR --out=DIR [--step=N] [--arch=albert]

The command line around `models/export.py` (which writes the folder from a
loaded model and knows nothing of workdirs): it loads the source with
`pretrained.load` and reports one line, or one `error:` line with status 2.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from lite_bert import pretrained
from lite_bert.errors import UserError
from lite_bert.models import export


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m lite_bert.export",
      description="Export a lite_bert workdir (or a Hugging Face folder lite_bert reads) "
                  "as a transformers checkpoint folder.")
  parser.add_argument("--source", required=True,
                      help="lite_bert workdir or Hugging Face checkpoint folder")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step of a workdir (default: latest)")
  parser.add_argument("--arch", choices=export.FAMILIES, default=None,
                      help="transformers family (default: the source's own)")
  args = parser.parse_args(argv)
  try:
    loaded = pretrained.load(args.source, step=args.step, choose_with="--step={step}")
    info = export.export_huggingface(loaded, None, args.out, arch=args.arch)
  except UserError as e:
    if os.environ.get("LITE_BERT_DEBUG") == "1":
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  extra = f"; not exported: {', '.join(info['not_exported'])}" if info["not_exported"] else ""
  tokenizer_note = "" if loaded.tokenizer is not None else " (no tokenizer found)"
  print(f"wrote {info['architecture']} ({info['tensors']} tensors) to {info['out_dir']}: "
        f"{', '.join(info['files'])}{tokenizer_note}{extra}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
