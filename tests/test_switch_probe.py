"""The switch probe's bookkeeping: which call follows which, and the medians per kind."""

from experiments import switch_probe


def test_label_calls_names_what_each_call_follows():
  seq = ["ours", "ours", "torch", "ours", "sleep", "ours"] * 2
  assert switch_probe.label_calls(seq) == [
      "first", "ours after ours", "torch after ours", "ours after torch", "sleep after ours",
      "ours after sleep", "ours after ours", "ours after ours", "torch after ours",
      "ours after torch", "sleep after ours", "ours after sleep"]


def test_summarize_medians_per_label_and_switch_cost():
  def call(setting, label, wall, sys_s):
    return {"setting": setting, "label": label, "round": 0, "wall_s": wall, "sys_s": sys_s}
  calls = [call("hugetlb1", "ours after ours", w, 0.3) for w in (3.0, 3.4, 3.5)]
  calls += [call("hugetlb1", "ours after torch", w, 3.0) for w in (5.0, 4.8)]
  calls += [call("hugetlb1", "ours after sleep", 4.0, 2.0)]
  calls += [call("hugetlb0", "ours after ours", 2.0, 0.1)]
  s = switch_probe.summarize(calls)
  one = s["hugetlb1"]
  assert one["by_label"]["ours after ours"] == {"calls": 3, "wall_s": 3.4, "sys_s": 0.3}
  assert one["by_label"]["ours after torch"]["wall_s"] == 4.9
  assert abs(one["switch_cost"] - 4.9 / 3.4) < 1e-12
  assert abs(one["pause_cost"] - 4.0 / 3.4) < 1e-12
  # A setting without those kinds of call has no such costs.
  assert s["hugetlb0"]["switch_cost"] is None and s["hugetlb0"]["pause_cost"] is None
