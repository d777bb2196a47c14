#!/usr/bin/env bash
# Creates experiments/.venv-reference: the Hugging Face Flax reference models
# (FlaxBertModel, FlaxAlbertModel, FlaxDistilBertModel) in a virtualenv of their
# own, used by experiments/benchmark.py --reference through
# experiments/reference_flax.py (a subprocess worker).
#
#   bash experiments/reference_env.sh            # create (or re-use) the venv
#   REFERENCE_VENV=/some/path bash experiments/reference_env.sh
#
# Pins: the same jax/jaxlib as the project (so both sides use the same XLA),
# transformers 4.57.6 (the last release that ships the Flax model classes) and
# flax 0.12.8. Checked on this machine: FlaxBertModel, FlaxAlbertModel and
# FlaxDistilBertModel build, load converted weights and run (fp32 and bf16)
# with flax 0.12.8 + jax 0.10.2, so no older flax is needed. No torch: the
# worker reads the weights from an .npz written by the benchmark
# (experiments/benchmark_run.py).
# Needs network access to PyPI only. Ends with a smoke test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${REFERENCE_VENV:-$here/.venv-reference}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
  "jax==0.10.2" "jaxlib==0.10.2" "flax==0.12.8" "transformers==4.57.6" "numpy"

"$venv/bin/python" - <<'PY'
import jax, flax, transformers, numpy as np
from transformers import (AlbertConfig, BertConfig, DistilBertConfig, FlaxAlbertModel,
                          FlaxBertModel, FlaxDistilBertModel)
ids = np.ones((1, 8), np.int32)
for cls, cfg in ((FlaxBertModel, BertConfig(num_hidden_layers=1, hidden_size=32,
                                            num_attention_heads=2, intermediate_size=64)),
                 (FlaxAlbertModel, AlbertConfig(num_hidden_layers=1, hidden_size=32,
                                                num_attention_heads=2, intermediate_size=64,
                                                embedding_size=16)),
                 (FlaxDistilBertModel, DistilBertConfig(n_layers=1, dim=32, n_heads=2,
                                                        hidden_dim=64))):
  cls(cfg, seed=0)(ids)
print(f"reference venv ok: jax {jax.__version__}, flax {flax.__version__}, "
      f"transformers {transformers.__version__}")
PY
echo "$venv/bin/python"
