"""experiments/benchmark.py: its --quick path at the tiny sizes, without references.

No timing is asserted (speed is never a test criterion); the test checks that
the run writes every field, that the analytic FLOP count is the formula in
lite_bert/models/flops.py's docstring (numbers worked out by hand below), that
it agrees with XLA's cost analysis, and that every ratio is computed from the
rows.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import benchmark
from experiments import benchmark_report as report
from experiments import gpu_run
from experiments import timing
from experiments.benchmark_inputs import MODELS, model_config

REPO = pathlib.Path(__file__).resolve().parents[1]

# The tiny sizes (configs/*.py:tiny): H=128, I=512, heads=2; BERT L=4 with
# pooler; DistilBERT L=2, no pooler; ALBERT L=4, E=64, pooler.
ARGS = ["--quick", "--size=tiny", "--no-reference", "--batches=1,2", "--seqs=32",
        "--train-points=2x32", "--train-layout=both", "--teacher-layout=both"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = tmp_path_factory.mktemp("benchmark")
  assert benchmark.main(["--out", str(out)] + ARGS) == 0
  with open(out / "benchmark.json") as f:
    return json.load(f), out


def test_files_and_fields(run):
  res, out = run
  for name in ("benchmark.json", "BENCHMARKS.md", "inference_scaling.png", "ratios.png",
               "training_scaling.png"):
    assert (out / name).stat().st_size > 0, name
  meta = res["meta"]
  for key in ("device_kind", "platform", "jax", "flax", "date", "command", "git", "dtype",
              "grid", "repeat_policy", "cpu_count", "wall_s"):
    assert key in meta, key
  assert meta["command"].startswith("python -m experiments.benchmark ")
  assert meta["reference"] is False and "reference" not in res
  assert res["roofline"]["peak_gflops"]["float32"] > 0
  assert res["roofline"]["square"][0]["m"] == 2048

  rows = res["inference"]
  assert {(r["model"], r["impl"], r["batch"], r["seq"]) for r in rows} == {
      (m, "ours", b, 32) for m in MODELS for b in (1, 2)}
  for r in rows:
    assert r["repeats"] == len(r["times_s"]) >= 1
    assert r["median_s"] > 0 and r["compile_s"] > 0
    assert math.isclose(r["tokens_per_s"], r["batch"] * r["seq"] / r["median_s"])
    assert math.isclose(r["roofline_fraction"],
                        r["analytic_flops"] / r["median_s"] / 1e9 /
                        res["roofline"]["peak_gflops"]["float32"])
    mem = r["xla_memory"]
    assert mem["peak_estimate"] == (mem["argument_size"] + mem["output_size"] +
                                    mem["temp_size"] - mem["alias_size"]) > 0
    assert "others_cpu_fraction" in r["interference"]

  train = res["training"]
  assert {(r["model"], r["impl"], r["batch"], r["seq"]) for r in train} == {
      (m, "ours", 2, 32) for m in MODELS} | {(m, "ours_scanned", 2, 32)
                                             for m in ("bert", "distilbert")} | {
      ("distilbert", "ours_scanned_teacher", 2, 32)}
  for r in train:
    assert math.isclose(r["sequences_per_s"], 2 / r["median_s"])
    assert math.isclose(r["mfu"], r["gflops_per_s"] / res["roofline"]["peak_gflops"]["float32"])
    assert r["optimizer"] == {"bert": "adamw", "distilbert": "adamw", "albert": "lamb"}[r["model"]]
  assert {t["target"] for t in res["targets"]} >= {"distil_ratio", "albert_ratio"}
  text = (out / "BENCHMARKS.md").read_text()
  assert "## Inference" in text and "## Training step" in text and "## Targets" in text


def test_analytic_flops_match_the_hand_formula(run):
  res, _ = run
  cfg = {m: model_config(m, "tiny", "float32") for m in MODELS}
  h, i, v = cfg["bert"].hidden_size, cfg["bert"].intermediate_size, cfg["bert"].vocab_size
  assert (h, i) == (128, 512) and cfg["albert"].embedding_dim == 64
  assert (cfg["bert"].num_layers, cfg["distilbert"].num_layers) == (4, 2)
  assert cfg["distilbert"].vocab_size == v and not cfg["distilbert"].pooler
  by = {(r["model"], r["batch"]): r["analytic_flops"] for r in res["inference"]}
  # Per token per layer: qkv 2*128*384 + output 2*128*128 + FFN 2*2*128*512 = 393,216.
  # Per sequence per layer: QK^T and AV 2*2*32*32*128 = 524,288. Pooler 2*128^2 = 32,768.
  layer = 32 * 393_216 + 524_288
  bert_seq = 4 * layer + 32_768  # 52,461,568
  assert bert_seq == 52_461_568
  assert by[("bert", 1)] == bert_seq
  assert by[("bert", 2)] == 2 * bert_seq
  assert by[("distilbert", 2)] == 2 * (2 * layer)  # 2 layers, no pooler
  projection = 32 * 2 * 64 * 128  # ALBERT's E->H projection, per sequence
  assert by[("albert", 2)] == 2 * (bert_seq + projection)
  train = {r["model"]: r["analytic_flops"] for r in res["training"]}
  positions = 5  # 20 masked positions per 128 tokens, at 32 tokens
  nsp = 2 * 128 * 2
  mlm_bert = positions * (2 * 128 * 128 + 2 * 128 * v)  # transform + tied decoder
  assert train["bert"] == 3 * 2 * (bert_seq + mlm_bert + nsp)
  mlm_albert = positions * (2 * 128 * 64 + 2 * 64 * cfg["albert"].vocab_size)
  assert train["albert"] == 3 * 2 * (bert_seq + projection + mlm_albert + nsp)
  mlm_everywhere = 32 * (2 * 128 * 128 + 2 * 128 * v)
  student = 2 * layer + mlm_everywhere
  teacher = 4 * layer + mlm_everywhere  # the teacher's pooler is unused
  assert train["distilbert"] == 3 * 2 * student + 2 * teacher


def test_analytic_flops_agree_with_xla(run):
  res, _ = run
  for r in res["inference"]:
    ratio = r["xla_flops"] / r["analytic_flops"]
    # XLA also counts element-wise work the matmul count leaves out; exact-erf
    # GELU (BERT, DistilBERT) is the largest part of it at H=128.
    assert 1.0 <= ratio <= (1.04 if r["model"] == "albert" else 1.12), (r["model"], ratio)
    # Inference runs the unrolled layout (the default): no loop, XLA counts every layer;
    # ALBERT's one shared block stays a scan, whose body XLA counts once (corrected for).
    if r["model"] == "albert":
      assert r["xla_flops_counted"] < r["xla_flops"]
    else:
      assert r["xla_flops_counted"] == r["xla_flops"]
  assert res["meta"]["inference_layout"] == "unrolled"
  assert res["meta"]["train_layout"] == res["meta"]["teacher_layout"] == "both"
  assert {(r["model"], r["impl"]) for r in res["training"]} == {
      (m, "ours") for m in MODELS} | {("bert", "ours_scanned"), ("distilbert", "ours_scanned"),
                                      ("distilbert", "ours_scanned_teacher")}
  for r in res["training"]:
    # 'ours' trains separately stored layers beside a frozen teacher stored so too;
    # ALBERT's shared block, 'ours_scanned' (the student) and 'ours_scanned_teacher' (the
    # teacher) scan: one while loop whose body XLA counts once (corrected for).
    if r["model"] == "albert" or r["impl"] in ("ours_scanned", "ours_scanned_teacher"):
      assert r["xla_flops_counted"] < r["xla_flops"]
    else:
      assert r["xla_flops_counted"] == r["xla_flops"]
    # + the optimizer's element-wise updates, large next to a 2x32 batch of a tiny model.
    assert 1.0 <= r["xla_flops"] / r["analytic_flops"] <= 1.3, r["model"]


def test_ratios_are_computed_from_rows(run):
  res, _ = run
  rows = {(r["model"], r["impl"], r["batch"], r["seq"]): r for r in res["inference"]}
  entries = res["ratios"]["model_vs_bert"]
  assert len(entries) == 4  # (distilbert, albert) x 2 points
  for e in entries:
    other, bert = rows[(e["model"], "ours", e["batch"], e["seq"])], rows[
        ("bert", "ours", e["batch"], e["seq"])]
    assert e["latency_ratio"] == other["median_s"] / bert["median_s"]
    assert e["flop_ratio"] == other["analytic_flops"] / bert["analytic_flops"]
    assert e["delta_vs_flop_ratio"] == e["latency_ratio"] - e["flop_ratio"]
  # And recomputing from edited rows changes them: nothing is typed in.
  edited = json.loads(json.dumps(res))
  for r in edited["inference"]:
    if r["model"] == "bert":
      r["median_s"] *= 2
  again = report.compute_ratios(edited, MODELS)["model_vs_bert"]
  for old, new in zip(entries, again):
    assert math.isclose(new["latency_ratio"], old["latency_ratio"] / 2)
  train = {(r["model"], r["impl"]): r for r in res["training"]}
  layouts = res["ratios"]["training_layouts"]
  assert [e["model"] for e in layouts] == ["bert", "distilbert"]
  for e in layouts:
    assert e["speedup_unrolled_vs_scanned"] == (train[(e["model"], "ours_scanned")]["median_s"]
                                                / train[(e["model"], "ours")]["median_s"])
  [e] = res["ratios"]["teacher_layouts"]
  assert e["model"] == "distilbert" and e["speedup_unrolled_vs_scanned"] == (
      train[("distilbert", "ours_scanned_teacher")]["median_s"]
      / train[("distilbert", "ours")]["median_s"])
  targets = {t["target"]: t for t in report.evaluate_targets(dict(edited, ratios={
      **report.compute_ratios(edited, MODELS)}))}
  assert targets["distil_ratio"]["value"] == {
      f"{e['batch']}x{e['seq']}": e["latency_ratio"] for e in again
      if e["model"] == "distilbert"}


def test_reference_speedups_are_computed_from_rows():
  rows = []
  for impl, seconds in (("ours", 1.0), ("hf_torch", 1.5), ("hf_flax", 2.0)):
    for m in MODELS:
      rows.append({"model": m, "impl": impl, "batch": 8, "seq": 128, "median_s": seconds,
                   "analytic_flops": 10})
  train = [{"model": "bert", "impl": "ours", "batch": 8, "seq": 128, "median_s": 2.0,
            "analytic_flops": 30},
           {"model": "bert", "impl": "hf_torch", "batch": 8, "seq": 128, "median_s": 3.0,
            "analytic_flops": 30}]
  ratios = report.compute_ratios({"inference": rows, "training": train}, MODELS)
  for e in ratios["ours_vs_reference"]:
    assert e["speedup_vs_hf_torch"] == 1.5 and e["speedup_vs_hf_flax"] == 2.0
  assert ratios["training_vs_reference"][0]["speedup_vs_hf_torch"] == 1.5


def fake_candidate(name, seconds, warmup_s, policy, order=None):
  """A candidate whose calls return `seconds` in turn (last one repeated), a call right
  after another candidate's 9.0 (as XLA's after torch's); `order` records the calls."""
  calls = iter(list(seconds) + [seconds[-1]] * 20)
  order = [] if order is None else order

  def run():
    after_another = bool(order) and order[-1] != name
    order.append(name)
    return (9.0 if after_another else next(calls)), None, 0.0

  c = timing.Candidate(model=name, impl="ours", prepare=dict, run=run,
                       info={"warmup_s": warmup_s})
  c.target = timing.repeats_for(warmup_s, policy)
  return c


def test_noisy_candidates_get_more_calls_and_steady_ones_do_not():
  policy = timing.REPEATS["full"]
  order = []
  # (0.5: the untimed calls that follow the candidate's own call)
  noisy = fake_candidate("noisy", [0.5, 0.97, 1.18, 1.21, 0.5, 1.0, 1.0], 1.0, policy, order)
  steady = fake_candidate("steady", [1.0, 1.02, 0.99], 1.0, policy, order)
  # over long_s: min_long calls, never extended
  long = fake_candidate("long", [5.0, 7.0, 6.0, 5.5], 5.0, policy, order)
  timing.time_round_robin([noisy, steady, long])
  assert [len(c.times) for c in (noisy, steady, long)] == [3, 3, policy["min_long"]] == [3, 3, 4]
  # Visits: one untimed call (it takes the slow call after another candidate's), then
  # two timed ones; the order rotates; no timed call is a call after another's.
  assert order == ["noisy"] * 3 + ["steady"] * 3 + ["long"] * 3 + ["steady"] * 2 + [
      "long"] * 3 + ["noisy"] * 2
  assert 9.0 not in noisy.times + steady.times + long.times
  assert [c.untimed_calls for c in (noisy, steady, long)] == [2, 2, 2]
  timing.time_noisy_again([noisy, steady, long], policy)
  assert len(noisy.times) == policy["spread_max"] == 7
  assert noisy.times == [0.97, 1.18, 1.21, 1.0, 1.0, 1.0, 1.0]
  assert timing.summarize_times(noisy)["median_s"] == 1.0
  assert timing.summarize_times(noisy)["untimed_calls"] == 4
  assert len(steady.times) == 3 and len(long.times) == 4
  # A fixed --repeats policy is never extended; a lone candidate is timed call after call.
  fixed = timing.fixed_repeats(3)
  again = fake_candidate("fixed", [0.97, 1.18, 1.21], 1.0, fixed)
  timing.time_round_robin([again])
  timing.time_noisy_again([again], fixed)
  assert again.times == [0.97, 1.18, 1.21] and again.untimed_calls == 0


def test_report_includes_analysis_and_probe(run):
  res, _ = run
  probe = {"meta": {"cpu_model": res["meta"]["cpu_model"], "cpu_flags": ["avx512_bf16"],
                    "jax": "x", "date": "d"},
           "variants": [
               {"variant": "default", "env": {}, "fp32_2048": 200.0, "bf16_2048": 160.0,
                "bf16_2048_f32acc": 380.0, "bert_base_8x128_float32_ms": 1000.0,
                "bert_base_8x128_bfloat16_ms": 500.0, "bert_base_train_8x128_float32_ms": 4000.0,
                "bf16_dot_upcast_to_f32": True},
               {"variant": "glibc", "env": {"GLIBC_TUNABLES": "x"}, "fp32_2048": 201.0,
                "bf16_2048": 150.0, "bf16_2048_f32acc": 400.0,
                "bert_base_train_8x128_float32_ms": 3200.0, "bf16_dot_upcast_to_f32": True}]}
  res = dict(res, meta=dict(res["meta"], cpu_flags=["avx512_bf16"]))  # the probe's CPU
  text = report.markdown(res, probe, image_dir="benchmark")
  assert "## Where we stand and what limits it" in text
  assert "## CPU settings vs GEMM throughput" in text
  # numbers come from the probe, each bf16 rate against the fp32 rate of its own setting:
  # best 400 / 201 = 1.99x (glibc), default 380 / 200 = 1.90x; forward 1000 -> 500 ms (2.00x)
  assert "400 GFLOP/s (glibc), 1.99x its fp32 (201); with default settings 380 vs 200, 1.90x" in text
  assert "1,000 ms fp32 -> 500 ms bf16 (2.00x)" in text
  # The training step by setting: the median of each setting's rounds against default's.
  assert "- glibc: 3,200 ms (1.25x default)" in text
  assert "no `amx` flags" in text
  assert "](benchmark/inference_scaling.png)" in text
  # A probe measured on another CPU is left out, and the report says so.
  elsewhere = dict(probe, meta=dict(probe["meta"], cpu_model="Other CPU", date="2026-01-02"))
  text = report.markdown(res, elsewhere, image_dir="benchmark")
  assert "## CPU settings vs GEMM throughput" not in text and "bf16 on CPU" not in text
  assert "measured on another CPU (Other CPU, 2026-01-02), so it is left out" in text


@pytest.mark.slow
def test_the_prepared_gpu_run_works_without_the_packages_the_gpu_image_lacks(tmp_path):
  """`experiments/gpu_run.py --dry-run`: its code path, with grain, tensorflow-datasets,
  array_record, submitit and tensorboardX made unimportable, writes its results."""
  block = "; ".join(f"sys.modules[{name!r}] = None" for name in gpu_run.ABSENT_ON_THE_GPU)
  code = (f"import sys; {block}; from experiments import gpu_run; "
          f"sys.exit(gpu_run.main(['--out={tmp_path}', '--dry-run']))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=900, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  assert "imported: none" in out.stdout
  with open(tmp_path / "benchmark.json") as f:
    res = json.load(f)
  assert {row["model"] for row in res["training"]} == set(MODELS)
  assert res["meta"]["dtype"] == "bfloat16"


def test_study_size_is_the_model_the_comparison_trains():
  """`--size=study_<scale>` (profile_train_step, the XLA probe) times compare_plan's model."""
  from experiments import compare_plan  # pylint: disable=import-outside-toplevel
  for m in ("bert", "albert"):
    cfg = model_config(m, "study_long", "float32")
    want = compare_plan.SCALES["long"]["model"][m]
    assert {k: getattr(cfg, k) for k in want} == want
    assert cfg.dtype == "float32"
  assert not model_config("bert", "study_long", "float32").scan_layers
  assert model_config("bert", "study_small", "bfloat16").dropout_rate == 0.1
  assert model_config("bert", "study_small", "bfloat16").dtype == "bfloat16"
  with pytest.raises(ValueError, match="study_bogus.*study_long"):
    model_config("bert", "study_bogus", "float32")


def test_gemm_sentence_follows_the_measured_gemm_rates():
  def roof(xla, torch):
    return {"square": [{"m": 2048, "dtype": "float32", "gflops": xla}],
            "torch_square": [{"m": 2048, "dtype": "float32", "gflops": torch}]}
  slower = report.gemm_sentence(roof(270.0, 330.0))
  assert "torch's fp32 GEMMs (MKL) run 1.22x XLA's" in slower and "about 0.82x HF torch" in slower
  level = report.gemm_sentence(roof(189.0, 187.0))
  assert "run at the same rate here (torch 0.99x XLA" in level and "1.22x" not in level
  assert "inference lands near HF torch's" in report.gemm_sentence({})
  assert report.gemm_rates(roof(270.0, 330.0)) == (270.0, 330.0)
  assert report.gemm_rates({}) == (None, None)


def test_report_only_without_a_partial_run_is_refused_before_anything_is_measured(
    tmp_path, capsys):
  out = tmp_path / "bench"
  with pytest.raises(SystemExit) as refused:
    benchmark.main([f"--out={out}", "--report-only"] + ARGS)
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert refused.value.code == 2
  assert err == [f"error: --report-only: no {out}/partial.json to report"]
  assert not out.exists()
