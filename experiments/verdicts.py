"""The words of the study's accuracy verdicts, decided from intervals (pure functions, no I/O).

A verdict is only as strong as its evidence: every function here takes a 95%
confidence interval and returns "inconclusive" when the interval cannot
decide. The study's figures are rounded to whole percents (DistilBERT keeps
"97%"), so a retention agrees with it when its whole interval lies at or above
the figure less half a percent.
"""

from __future__ import annotations

from typing import Optional

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
ABOVE, NOT_ABOVE = "above", "not above"
BETTER, WORSE = "better", "worse"

STUDY_RETENTION = 0.97  # DistilBERT keeps 97% of BERT's GLUE score (Sanh et al., 2019)
STUDY_ROUNDING = 0.005  # the study rounds to whole percents


def versus_baseline(difference_ci: tuple[float, float]) -> str:
  """`above` when the interval of (model - majority class) lies entirely above 0."""
  low, _ = difference_ci
  return ABOVE if low > 0.0 else NOT_ABOVE


def retention(ratio_ci: tuple[float, float], *, figure: float = STUDY_RETENTION,
              rounding: float = STUDY_ROUNDING, student_above: bool = True,
              teacher_above: bool = True) -> str:
  """The verdict on "the student keeps `figure` of the teacher's score".

  agrees: the interval lies at or above figure - rounding (it keeps at least
    the study's figure, within the study's own rounding);
  disagrees: the interval lies entirely below figure - rounding;
  inconclusive: it straddles figure - rounding, or either model is not above
    the majority-class baseline (a ratio of two guesses means nothing).
  """
  if not (student_above and teacher_above):
    return INCONCLUSIVE
  low, high = ratio_ci
  threshold = figure - rounding
  if low >= threshold:
    return AGREES
  if high < threshold:
    return DISAGREES
  return INCONCLUSIVE


def comparison(difference_ci: tuple[float, float]) -> str:
  """`better` / `worse` when the interval of (a - b) excludes 0, else inconclusive."""
  low, high = difference_ci
  if low > 0.0:
    return BETTER
  if high < 0.0:
    return WORSE
  return INCONCLUSIVE


def describe(ci: Optional[tuple[float, float]], scale: float = 100.0, digits: int = 1) -> str:
  """'[a, b]' in percent (or `scale`) for reports; '-' without an interval."""
  if ci is None:
    return "-"
  return f"[{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"
