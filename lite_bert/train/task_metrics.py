"""The official GLUE metrics, from scikit-learn and scipy (never re-implemented here).

accuracy, f1 (positive class, MRPC/QQP), matthews_corrcoef (CoLA), pearson and
spearman (STS-B). Values are fractions in [0, 1] (correlations in [-1, 1]).
"""

from typing import Sequence

import numpy as np
import scipy.stats
import sklearn.metrics


def compute(metric_names: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> dict:
  """predictions, labels: [examples] class ids (or floats for regression)."""
  out = {}
  for name in metric_names:
    if name == "accuracy":
      out[name] = float(sklearn.metrics.accuracy_score(labels, predictions))
    elif name == "f1":
      out[name] = float(sklearn.metrics.f1_score(labels, predictions))
    elif name == "matthews_corrcoef":
      out[name] = float(sklearn.metrics.matthews_corrcoef(labels, predictions))
    elif name == "pearson":
      out[name] = float(scipy.stats.pearsonr(predictions, labels)[0])
    elif name == "spearman":
      out[name] = float(scipy.stats.spearmanr(predictions, labels)[0])
    else:
      raise ValueError(f"unknown metric {name!r}")
  return out
