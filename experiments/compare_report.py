"""The comparison's report.md: every section of its text, each number from a stage folder's file.

`Report` reads the stage folders (through `compare_numbers.Sources`) and
renders the sections: the header (runs, commits, machines), the study's
claims with our verdicts, parameters, inference latency and memory, training
at this scale, fine-tuning, size on disk, wall time per stage, the plots.
`report` writes report.md, report_numbers.json (every number's source) and
the plots (`compare_plots`); `--report-only` rewrites them byte for byte.
"""

from __future__ import annotations

import os
from typing import Optional

from experiments import verdicts
from experiments.compare_numbers import (ACCURACY_FILE, REAL_TEACHER_FILE,
                                         REAL_TEACHER_ORIGIN, Ledger, Num, Sources, ms_fmt,
                                         real_teacher_variant, reduce_nums, study,
                                         write_accuracy_stats)
from experiments.compare_plan import (MODELS, NAMES, SCALES, STUDY, TASK_NAMES, TASKS,
                                      TRAINED_BY, corpus_label, make_plan, mlm_result,
                                      pretraining_stages)
from experiments.compare_plots import PLOTS, write_plots
from experiments.jobs import shown_path, write_record
from lite_bert import files

def interval_relation(word: str) -> str:
  """Where a retention interval lies for its verdict word (models above the majority)."""
  where = {"agrees": "lies at or above", "disagrees": "lies below"}.get(word, "straddles")
  return f"the interval {where} the study's figure less its rounding"


def md_table(header: list, rows: list) -> list:
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
          ["| " + " | ".join(row) + " |" for row in rows] + [""])


def code(text) -> str:
  return "`" + str(text).replace("`", "'") + "`"


class Report:
  """Everything `report.md` shows, read from the stage folders."""

  def __init__(self, root: str):
    self.root = root
    self.src = Sources(root)
    self.n = Ledger()
    self.run = self.src.raw("run.json") if self.src.exists("run.json") else {
        "settings": {}, "invocations": []}
    self.settings = self.run["settings"]
    self.scale = self.settings.get("scale", "?")

  # ---- helpers

  def summary(self, which: str, m: str, key: str) -> Optional[Num]:
    return self.src.get(f"summary_{which}_{m}/summary.json", key)

  def trained(self, m: str) -> str:
    return TRAINED_BY[m]

  def earlier_phases(self, m: str) -> list:
    """The pretraining stages that ran before TRAINED_BY's, in order, those found."""
    stages = pretraining_stages(self.scale, m)[:-1] if self.scale in SCALES else []
    return [stage for stage in stages if self.src.exists(f"{stage}/config.json")]

  def final_step(self, stage: str) -> Optional[Num]:
    return self.src.get(f"{stage}/config.json", "train", "num_steps")

  def dev(self, m: str, task: str, metric: str) -> Optional[Num]:
    return self.src.get(f"finetune_{m}_{task}/eval_validation.json", metric)

  def task_score(self, m: str, task: str) -> Optional[Num]:
    """GLUE's score of a task: SST-2 accuracy; MRPC the mean of accuracy and F1."""
    if task == "mrpc":
      acc, f1 = self.dev(m, task, "accuracy"), self.dev(m, task, "f1")
      return None if acc is None or f1 is None else reduce_nums("mean", [acc, f1])
    return self.dev(m, task, "accuracy")

  def one_class(self, m: str, task: str) -> bool:
    """Whether the fine-tuned model predicts the same label for every dev example."""
    path = self.src.path(f"finetune_{m}_{task}/predictions_validation.tsv")
    if not os.path.exists(path):
      return False
    with open(path) as f:
      return len({line.rstrip("\n").split("\t")[-1] for line in list(f)[1:]}) == 1

  def glue_score(self, m: str) -> Optional[Num]:
    scores = [self.task_score(m, t) for t in TASKS]
    return None if None in scores else reduce_nums("mean", scores)

  def bench_rows(self) -> list:
    if not self.src.exists("benchmark/benchmark.json"):
      return []
    rows = self.src.raw("benchmark/benchmark.json", "inference")
    return sorted({(r["batch"], r["seq"]) for r in rows if r["impl"] == "ours"},
                  key=lambda p: (p[0], p[1]))

  def latency(self, m: str, b: int, s: int) -> Optional[Num]:
    return self.src.get("benchmark/benchmark.json", "inference",
                        {"model": m, "impl": "ours", "batch": b, "seq": s}, "median_s")

  def ratio(self, m: str, b: int, s: int, field: str = "latency_ratio") -> Optional[Num]:
    return self.src.get("benchmark/benchmark.json", "ratios", "model_vs_bert",
                        {"model": m, "impl": "ours", "batch": b, "seq": s}, field)

  def points(self, difference: Num) -> str:
    """A signed difference of scores in words, 'X points below' / 'X points above' (the
    report's numbers carry no sign)."""
    side = "below" if difference.value < 0 else "above"
    return f"{self.n(abs(difference), '.1f', 100)} points {side}"

  def wall(self, stage: str) -> Optional[Num]:
    return self.src.get(f"stages/{stage}.json", "wall_s")

  # ---- sections

  def header(self) -> list:
    lines = [f"# BERT, DistilBERT and ALBERT side by side (scale {code(self.scale)})", "",
             "Written by " + code("python -m experiments.compare") + " from the stage folders "
             "of " + code(shown_path(self.root)) + " (" + code("--report-only") +
             " rewrites it without running anything). Every number below comes from a file of "
             "those folders (" + code("report_numbers.json") + " names it) or from the study.",
             ""]
    invocations = self.run["invocations"]
    for i, inv in enumerate(invocations):
      git = inv["git"]
      # A stage redone by a later run (its folder deleted) no longer feeds the report.
      later = {s for other in invocations[i + 1:] for s in other.get("stages", [])}
      ran = inv.get("stages", [])
      kept = [s for s in ran if s not in later]
      names = lambda stage_names: ", ".join(code(s) for s in stage_names)
      stages = (f"; stages: {names(kept) or 'none kept'}"
                + (f" (redone later: {names(s for s in ran if s in later)})"
                   if len(kept) < len(ran) else "")) if ran else ""
      lines.append(f"- run {code(inv['date'])}: commit {code(git['commit'][:12])}"
                   f"{' (uncommitted changes)' if git['dirty'] else ''}, machine "
                   f"{code(inv['machine']['cpu'])} with {code(inv['machine']['cpu_count'])} "
                   f"CPU cores ({code(inv['machine']['platform'])}), command "
                   f"{code(inv['command'])}{stages}")
    if self.src.exists("benchmark/benchmark.json"):
      meta = self.src.raw("benchmark/benchmark.json", "meta")
      lines.append(f"- benchmark device: {code(meta['device_kind'])} ({code(meta['platform'])}), "
                   f"dtype {code(meta['dtype'])}, jax {code(meta['jax'])}")
    return lines + [""]

  def claims(self) -> list:
    n = self.n
    rows = []

    def counts(key, m, field="params_total", which="base"):
      ours = self.summary(which, m, field)
      claim = study(key)
      if ours is None:
        return [n.study_claim(key), "n/a", "not measured yet"]
      rel = abs(ours - claim) / claim
      tol = study(key, "tolerance")
      agrees = rel.value <= tol.value
      verdict = (f"{'agrees' if agrees else 'disagrees'}: ours differs by {n(rel, '.1f', 100)}%, "
                 f"{'within' if agrees else 'more than'} the {n(tol, '.0f', 100)}% a figure "
                 f"rounded to millions allows")
      return [n.study_claim(key), f"{n(ours, '.2f', 1e-6)}M", verdict]

    def fewer(key, m):
      ours_m, bert = self.summary("base", m, "params_total"), self.summary(
          "base", "bert", "params_total")
      if ours_m is None or bert is None:
        return [n.study_claim(key), "n/a", "not measured yet"]
      fewer_pct = (1 - ours_m / bert) * 100
      diff = abs(fewer_pct - study(key))
      agrees = diff.value <= STUDY[key]["points"]
      layers_m = self.src.get(f"summary_base_{m}/summary.json", "model", "num_layers")
      why = (f"{NAMES[m]} keeps {n(layers_m, '.0f')} layers of BERT's "
             f"{n(self.src.get('summary_base_bert/summary.json', 'model', 'num_layers'), '.0f')}"
             " and all of its embeddings" if m == "distilbert" else
             "one set of layer weights shared by all layers, and factorized embeddings")
      verdict = (f"{'agrees' if agrees else 'disagrees'}: ours {n(fewer_pct, '.1f')}% fewer, "
                 f"{n(diff, '.1f')} points from the study ({why})")
      return [n.study_claim(key), f"{n(fewer_pct, '.1f')}% fewer", verdict]

    rows.append(counts("bert_params", "bert"))
    rows.append(counts("distilbert_params", "distilbert"))
    rows.append(fewer("distilbert_fewer", "distilbert"))
    rows.append(counts("albert_params", "albert"))
    rows.append(fewer("albert_fewer", "albert"))
    rows.append(counts("bert_embeddings", "bert", "params_embeddings"))
    row = counts("albert_embeddings", "albert", "params_embeddings")
    vocab = self.src.get("summary_base_albert/summary.json", "model", "vocab_size")
    emb = self.src.get("summary_base_albert/summary.json", "model", "embedding_size")
    total = self.summary("base", "albert", "params_embeddings")
    if (vocab is not None and emb is not None and total is not None
        and vocab.value * emb.value > STUDY["albert_embeddings"]["value"]):
      word = vocab * emb
      rest = total - word
      row[2] += (f". The word table alone is V x E = {n(vocab, ',.0f')} x {n(emb, '.0f')} = "
                 f"{n(word, '.2f', 1e-6)}M, more than the study's figure; positions, token "
                 f"types, LayerNorm and the E-to-H projection add {n(rest, '.2f', 1e-6)}M, so "
                 f"the study rounds down or counts only part of the table")
    rows.append(row)
    rows.append(self.speed_claim("distilbert_faster", "distilbert"))
    rows.append(self.glue_claim())
    rows.append(self.real_teacher_claim())
    rows.append(self.speed_claim("albert_not_faster", "albert"))
    return (["## The study says / we measured", ""] +
            md_table(["the study says", "we measured", "verdict"], rows))

  def speed_claim(self, key: str, m: str) -> list:
    n = self.n
    points = self.bench_rows()
    ratios = [(b, s, self.ratio(m, b, s)) for b, s in points]
    ratios = [(b, s, r) for b, s, r in ratios if r is not None]
    if not ratios:
      return [n.study_claim(key), "n/a", "not measured yet"]
    flops = [self.ratio(m, b, s, "flop_ratio") for b, s, _ in ratios]
    def span(nums):
      lo, hi = reduce_nums("min", nums), reduce_nums("max", nums)
      if format(lo.value, ".2f") == format(hi.value, ".2f"):
        return n(lo, ".2f")
      return f"{n(lo, '.2f')}–{n(hi, '.2f')}"
    size = self.settings.get("bench_size", "base")
    if key == "distilbert_faster":
      limit = study(key, "max_ratio")
      bad = [(b, s, r) for b, s, r in ratios if r.value > limit.value]
      crit = f"latency ratio to BERT at most {n(limit, '.1f')}"
      sanh = (f"Sanh et al. measured {n(study(key, 'sanh_distilbert_s'), '.0f')} s vs "
              f"{n(study(key, 'sanh_bert_s'), '.0f')} s, a ratio of "
              f"{n(study(key, 'sanh_distilbert_s') / study(key, 'sanh_bert_s'), '.2f')}")
      why = f"it runs half of BERT's layers, so its FLOP ratio is {span(flops)}; {sanh}"
    else:
      low, high = study(key, "min_ratio"), study(key, "max_ratio")
      bad = [(b, s, r) for b, s, r in ratios if not low.value <= r.value <= high.value]
      crit = f"latency ratio to BERT within {n(low, '.1f')}–{n(high, '.1f')}"
      layers = self.src.get(f"summary_{size}_albert/summary.json", "model", "num_layers")
      why = (f"sharing removes parameters, not computation: it runs "
             f"{n(layers, '.0f')} layers like BERT, FLOP ratio {span(flops)}")
      faster = [(b, s) for b, s, r in bad if r.value < low.value]
      albert_w = self.src.get(f"summary_{size}_albert/summary.json", "params_layers")
      bert_w = self.src.get(f"summary_{size}_bert/summary.json", "params_layers")
      scanned = self.src.raw("benchmark/benchmark.json", "meta").get(
          "inference_layout", "scanned") == "scanned"
      if faster and scanned and albert_w is not None and bert_w is not None:
        why += (f"; where it is faster ({', '.join(f'{b}x{s}' for b, s in faster)}) a "
                f"forward does little arithmetic per weight, and BERT's scanned layer stack "
                f"first copies each layer's weights out of the stacked arrays "
                f"({n(bert_w * 4, '.0f', 1e-6)} MB per forward in fp32: the compiled XLA:CPU "
                f"code runs a dynamic-slice fusion before every GEMM), while ALBERT's one "
                f"shared layer ({n(albert_w * 4, '.0f', 1e-6)} MB) is read in place")
    measured = span([r for _, _, r in ratios])
    if not bad:
      verdict = f"agrees: {crit} at every point of the grid, at {size} size ({why})"
    elif len(bad) < len(ratios):
      verdict = (f"partly agrees: {crit} except at " +
                 ", ".join(f"{b}x{s} ({n(r, '.2f')})" for b, s, r in bad) + f" ({why})")
    else:
      verdict = f"disagrees: no point of the grid meets the {crit} ({why})"
    return [n.study_claim(key), f"latency ratio {measured}", verdict]

  def glue_claim(self) -> list:
    """97%: DistilBERT's macro dev score over BERT's, with its interval and the majority class."""
    n = self.n
    key = "distilbert_glue"
    if not self.src.exists(ACCURACY_FILE):
      return [n.study_claim(key), "n/a", "not measured yet"]
    stats = self.src.raw(ACCURACY_FILE)
    get = lambda *keys: self.src.get(ACCURACY_FILE, *keys)
    steps = self.final_step("pretrain_bert")
    names = " + ".join(TASK_NAMES[t] for t in TASKS)
    majority = "; ".join(f"{TASK_NAMES[t]} {n(get('tasks', t, 'majority_score'), '.1f', 100)}"
                         for t in TASKS)
    earlier = "; ".join(  # the phases before pretrain_bert, if the scale has them
        f"{n(self.final_step(stage), ',.0f')} on "
        f"{n(self.src.get(f'{stage}/config.json', 'data', 'max_seq_length'), '.0f')}-token "
        f"sequences in {code(stage)}" for stage in self.earlier_phases("bert"))
    scale_note = (f"At scale {code(self.scale)}, after {n(steps, ',.0f')} pretraining steps in "
                  f"{code('pretrain_bert')}{f' (before them: {earlier})' if earlier else ''}, "
                  f"one seed a model; the study's figure is for BERT-base pretrained to "
                  f"convergence, on all of GLUE")
    confidence = lambda: n(Num.of(0.95), ".0f", 100)  # each use is a number of the text
    if not stats["intervals"]:
      scores = "; ".join(f"{NAMES[m]} " + ", ".join(
          f"{TASK_NAMES[t]} {n(self.task_score(m, t), '.1f', 100)}" for t in TASKS)
          for m in ("bert", "distilbert"))
      return [n.study_claim(key), "n/a",
              f"inconclusive: the fine-tuning runs' per-example dev predictions were not kept, "
              f"so no interval can be drawn. Scores: {scores}; the majority class scores "
              f"{majority} (GLUE score, %). {scale_note}"]
    retention = get("variants", "distilbert", "retention")
    ci = lambda: (f"{confidence()}% CI "
                  f"{n(get('variants', 'distilbert', 'retention_ci', 0), '.1f', 100)} to "
                  f"{n(get('variants', 'distilbert', 'retention_ci', 1), '.1f', 100)}%")
    points = self.points
    below = [f"{NAMES[m]} on {TASK_NAMES[t]} scores "
             f"{n(get('tasks', t, 'variants', m, 'mean'), '.1f', 100)}, its {confidence()}% CI "
             f"from {points(get('tasks', t, 'variants', m, 'minus_majority_ci', 0))} to "
             f"{points(get('tasks', t, 'variants', m, 'minus_majority_ci', 1))} the majority"
             for m in ("bert", "distilbert") for t in TASKS
             if stats["tasks"][t]["variants"][m]["vs_majority"] != "above"]
    word = stats["variants"]["distilbert"]["retention_verdict"]
    why = f"not above the majority class: {'; '.join(below)}" if below else interval_relation(word)
    verdict = (f"{word}: ours keeps {n(retention, '.1f', 100)}% ({ci()}) of BERT's {names} "
               f"score; {why}. Majority class: {majority} (GLUE score, %). {scale_note}")
    measured = f"{n(retention, '.1f', 100)}% of BERT's score ({ci()})"
    return [n.study_claim(key), measured, verdict]

  def real_teacher_claim(self) -> list:
    """97% again, with a real pretrained teacher: the distill study's retention
    (`--real-teacher`, REAL_TEACHER_FILE), its interval, majority classes and latency."""
    n = self.n
    key = "distilbert_glue_real_teacher"
    if not self.src.exists(REAL_TEACHER_FILE):
      return [n.study_claim(key), "n/a",
              "not measured in this comparison: " + code("--real-teacher=DIR") + " takes a "
              + code("python -m experiments.distill_study") + " folder"]
    numbers = self.src.raw(REAL_TEACHER_FILE)
    variant = real_teacher_variant(numbers)
    get = lambda *keys: self.src.get(REAL_TEACHER_FILE, *keys)
    var = lambda *keys: get("variants", variant, *keys)
    confidence = lambda: n(Num.of(0.95), ".0f", 100)
    pct = lambda num: n(num, ".1f", 100)
    tasks = [t for t in numbers["tasks_order"] if t in numbers["tasks"]]
    names = " + ".join(numbers["tasks"][t]["name"] for t in tasks)
    ci = lambda *keys: f"{confidence()}% CI {pct(var(*keys, 0))} to {pct(var(*keys, 1))}"
    latency = get("latency", "mean_ratio")
    at = (f", at a latency ratio of {n(latency, '.2f')} to the teacher (measured in the same "
          f"run)" if latency is not None else "")
    measured = (f"{pct(var('retention'))}% of the teacher's {names} score "
                f"({ci('retention_ci')}%){at}")
    task_var = lambda t, m, *keys: get("tasks", t, "variants", m, *keys)
    points = self.points
    below = [f"{'the teacher' if m == 'teacher' else 'the student'} on "
             f"{numbers['tasks'][t]['name']} scores {pct(task_var(t, m, 'mean'))}, its "
             f"{confidence()}% CI from {points(task_var(t, m, 'minus_majority_ci', 0))} to "
             f"{points(task_var(t, m, 'minus_majority_ci', 1))} the majority"
             for m in ("teacher", variant) for t in tasks
             if numbers["tasks"][t]["variants"][m]["vs_majority"] != "above"]
    word = verdicts.retention(
        tuple(numbers["variants"][variant]["retention_ci"]),
        student_above=numbers["variants"][variant]["above_majority_on_every_task"],
        teacher_above=numbers["variants"]["teacher"]["above_majority_on_every_task"])
    why = f"not above the majority class: {'; '.join(below)}" if below else interval_relation(word)
    layers = lambda who: get("latency", "points", 0, f"{who}_layers")
    recipe = ("general + task distillation (the fine-tuned teacher's soft labels)"
              if variant == "task" else "general distillation")
    origin = (self.src.raw(REAL_TEACHER_ORIGIN, "folder")
              if self.src.exists(REAL_TEACHER_ORIGIN) else REAL_TEACHER_FILE)
    versus = ""
    if var("minus_init") is not None:
      versus = (f" Against the same student fine-tuned without distillation: "
                f"{points(var('minus_init'))} ({confidence()}% CI from "
                f"{points(var('minus_init_ci', 0))} to {points(var('minus_init_ci', 1))}), "
                f"{numbers['variants'][variant]['vs_init']}.")
    majority = "; ".join(f"{numbers['tasks'][t]['name']} "
                         f"{pct(get('tasks', t, 'majority_score'))}" for t in tasks)
    verdict = (f"{word}: {code('all-MiniLM-L6-v2')} ({n(layers('teacher'), '.0f')} layers, "
               f"fine-tuned) "
               f"teaching a {n(layers('student'), '.0f')}-layer student cut from it, "
               f"{recipe}, means over seeds ({code(shown_path(origin))}, its report.md); "
               f"{why}.{versus} Majority class: {majority} (GLUE score, %)")
    return [n.study_claim(key), measured, verdict]

  def parameters(self) -> list:
    n = self.n
    rows = []
    for m in MODELS:
      g = lambda k, m=m: self.summary("base", m, k)
      bert = self.summary("base", "bert", "params_total")
      total = g("params_total")
      fewer = None if total is None or bert is None else (1 - total / bert)
      heads = g("params_with_heads")
      rows.append([NAMES[m], n(total, ",.0f"), n(g("params_embeddings"), ",.0f"),
                   n(g("params_layers"), ",.0f"), n(g("params_pooler"), ",.0f"),
                   n(heads, ",.0f"), n(fewer, ".1f", 100),
                   n(None if heads is None else heads * 4, ".0f", 1e-6)])
    return (["## Parameters at base size", "",
             "From " + code("mode=summary") + " on " + code("configs/<model>.py:base") +
             " (" + code("summary_base_<model>/summary.json") + "): total = embeddings + "
             "encoder layers + pooler, as the papers count; the pretraining heads come on top.",
             ""] +
            md_table(["model", "total", "embeddings", "encoder layers", "pooler",
                      "with pretraining heads", "fewer than BERT (%)",
                      "fp32 weights with heads (MB)"], rows))

  def models_at_scale(self) -> list:
    n = self.n
    rows = []
    phased = [m for m in MODELS if self.earlier_phases(m)]
    # Each model's training stages in order: its earlier phases, if it had any.
    stages = [(m, stage) for m in MODELS for stage in [*self.earlier_phases(m), self.trained(m)]]
    for m, stage in stages:
      cfg = lambda *k, stage=stage: self.src.get(f"{stage}/config.json", *k)
      summ = lambda k, m=m: self.summary("trained", m, k)
      emb = cfg("model", "embedding_size")
      rows.append([NAMES[m], code(stage), n(cfg("model", "num_layers"), ".0f"),
                   n(cfg("model", "hidden_size"), ".0f"),
                   n(emb, ".0f") if emb is not None else "= hidden",
                   n(cfg("model", "vocab_size"), ",.0f"), n(summ("params_total"), ",.0f"),
                   n(cfg("train", "num_steps"), ",.0f"), n(cfg("data", "batch_size"), ".0f"),
                   n(cfg("data", "max_seq_length"), ".0f"),
                   code(self.src.raw(f"{stage}/config.json", "optim", "name"))
                   if self.src.exists(f"{stage}/config.json") else "n/a",
                   n(cfg("optim", "learning_rate"), ".5f")])
    lines = ["## Training at this scale", "",
             f"The three models trained at scale {code(self.scale)}, on the corpus "
             f"{code(self.settings.get('corpus', '?'))}, with one shared sentencepiece "
             f"vocabulary ({code('tokenizer/')}); DistilBERT is distilled from the BERT above "
             f"(teacher layers spread evenly, student initialised from them)." +
             (f" {' and '.join(NAMES[m] for m in phased)} trained in phases, each "
              f"continuing from the one before ({code('pretrain.init')}) with a new optimizer "
              f"and schedule: first on short sequences ({code('pretrain_<model>_short')}), a "
              f"sequence-length warmup as BERT's two phases (128, then 512 tokens); the table "
              f"lists the phases in order, {code('pretrain_<model>')} last." if phased else ""), ""]
    lines += md_table(["model", "stage", "layers", "hidden", "embedding", "vocabulary",
                       "parameters", "steps", "batch", "sequence length", "optimizer",
                       "learning rate"], rows)
    # Held-out masked LM: the in-training evaluation, then one masking for all three.
    held_corpus = self.settings.get("eval_corpus", "") if self.settings else ""
    wiki_corpus = self.settings.get("wikitext", "") if self.settings else ""
    held = corpus_label(held_corpus) if self.settings else "?"
    wiki = corpus_label(wiki_corpus) if self.settings else "?"
    rows = []
    for m in MODELS:
      stage = self.trained(m)
      steps = self.final_step(stage)
      metrics = f"{stage}/metrics.jsonl"
      train_loss = last_eval = last_unigram = None
      if steps is not None and self.src.exists(metrics):
        train_loss = self.src.get(metrics, {"split": "train", "step": steps.value}, "loss")
        last_eval = self.src.get(metrics, {"split": "eval", "step": steps.value}, "mlm_accuracy")
        last_unigram = self.src.get(metrics, {"split": "eval", "step": steps.value},
                                    "mlm_unigram_accuracy")
      ev = lambda corpus, k, stage=stage: self.src.get(mlm_result(stage, corpus), k)
      rows.append([NAMES[m], n(train_loss, ".3f"), n(last_eval, ".4f"), n(last_unigram, ".4f"),
                   n(ev(held_corpus, "mlm_accuracy"), ".4f"),
                   n(ev(held_corpus, "mlm_unigram_accuracy"), ".4f"),
                   n(ev(held_corpus, "mlm_perplexity"), ".1f"),
                   n(ev(wiki_corpus, "mlm_accuracy"), ".4f"),
                   n(ev(wiki_corpus, "mlm_perplexity"), ".1f")])
    tokens = self.src.get(mlm_result("pretrain_bert", wiki_corpus), "masked_tokens")
    tokens_held = self.src.get(mlm_result("pretrain_bert", held_corpus), "masked_tokens")
    lines += [f"Held-out masked LM. 'In training' is the run's own last evaluation on "
              f"{code(held)} with its own masking (ALBERT: n-gram, the others: single tokens). "
              f"The other columns come from {code('mode=evaluate')} on the final checkpoints, "
              f"single-token masking and the same masked tokens for all three "
              f"({n(tokens_held, ',.0f')} on {code(held)}, {n(tokens, ',.0f')} on "
              f"{code(wiki)}). The unigram level is the accuracy of always guessing the most "
              f"frequent masked token of those batches: a model at it has learned word "
              f"frequencies, not context.", ""]
    lines += md_table(["model", "final training loss (own objective)", "in training: MLM accuracy",
                       "in training: unigram level", f"{held}: MLM accuracy",
                       f"{held}: unigram level", f"{held}: perplexity",
                       f"{wiki}: MLM accuracy", f"{wiki}: perplexity"], rows)
    lines += self.whole_heldout_split(held_corpus)
    distil = "distill_distilbert/metrics.jsonl"
    steps = self.final_step("distill_distilbert")
    if steps is not None and self.src.exists(distil):
      g = lambda k: self.src.get(distil, {"split": "eval", "step": steps.value}, k)
      lines += [f"Distillation, last evaluation on {code(held)} (its own batches): student "
                f"MLM accuracy {n(g('mlm_accuracy'), '.4f')} (loss {n(g('mlm_loss'), '.3f')}) "
                f"vs the teacher's {n(g('teacher_mlm_accuracy'), '.4f')} (loss "
                f"{n(g('teacher_mlm_loss'), '.3f')}); KL to the teacher "
                f"{n(g('kl'), '.3f')}, cosine loss {n(g('cosine_loss'), '.3f')}.", ""]
    return lines

  def whole_heldout_split(self, corpus: str) -> list:
    """The held-out table's numbers again on the whole split of `corpus`, where it was
    scored (`mode=evaluate` with `data.eval_batches=0`, `evaluate_mlm_<corpus>_all.json`)."""
    n = self.n
    rows = []
    for m in MODELS:
      rel = mlm_result(self.trained(m), corpus, whole=True)
      if not self.src.exists(rel):
        continue
      g = lambda *k, rel=rel: self.src.get(rel, *k)
      accuracy, unigram = g("mlm_accuracy"), g("mlm_unigram_accuracy")
      rows.append([NAMES[m], n(g("masked_tokens"), ",.0f"), n(accuracy, ".4f"),
                   f"{n(g('mlm_accuracy_ci95', 0), '.4f')}-{n(g('mlm_accuracy_ci95', 1), '.4f')}",
                   n(unigram, ".4f"),
                   n(accuracy / unigram if accuracy and unigram else None, ".1f"),
                   n(g("mlm_perplexity"), ".1f")])
    if not rows:
      return []
    written = os.path.basename(mlm_result("", corpus, whole=True))
    return [f"The whole held-out split, every full batch of {code(corpus_label(corpus))}'s "
            f"first epoch (the {code('eval_heldout_<model>')} command with "
            f"{code('--config.data.eval_batches=0')}, run after the study, written to "
            f"{code(written)}), single-token masking, the same masked tokens for every model; "
            f"the interval is a 95% Wilson interval (`scipy.stats.binomtest`) counting each "
            f"masked token as an independent draw.",
            ""] + md_table(["model", "masked tokens", "MLM accuracy", "95% interval",
                            "unigram level", "times the unigram level", "perplexity"], rows)

  def disk(self) -> list:
    n = self.n
    rows = []
    for m in MODELS:
      stage = self.trained(m)
      steps = self.final_step(stage)
      ckpt = None if steps is None else self.src.dir_bytes(
          f"{stage}/checkpoints/{steps.value}")
      rows.append([NAMES[m], n(ckpt, ".2f", 2**-20),
                   n(self.src.dir_bytes(f"finetune_{m}_sst2/best/params"), ".2f", 2**-20)])
    return (["## Size on disk at this scale", "",
             "Bytes of the files, measured on disk: the final training checkpoint (params, "
             "optimizer moments, data position) and the fine-tuned SST-2 weights alone "
             f"({code('best/params')}). At base size the fp32 weights are in the table above.",
             ""] + md_table(["model", "training checkpoint (MiB)",
                             "fine-tuned SST-2 weights (MiB)"], rows))

  def benchmark(self) -> list:
    n = self.n
    points = self.bench_rows()
    if not points:
      return ["## Inference at base size", "", "Not measured yet.", ""]
    meta = self.src.raw("benchmark/benchmark.json", "meta")
    rows = []
    for b, s in points:
      lat = {m: self.latency(m, b, s) for m in MODELS}
      other = self.src.get("benchmark/benchmark.json", "inference",
                           {"model": "bert", "impl": "ours", "batch": b, "seq": s},
                           "interference", "others_cpu_fraction")
      rows.append([f"{b}x{s}"] + [n(lat[m], ms_fmt(lat[m].value), 1e3) if lat[m] else "n/a"
                                  for m in MODELS] +
                  [n(self.ratio("distilbert", b, s), ".2f"),
                   n(self.ratio("distilbert", b, s, "flop_ratio"), ".2f"),
                   n(self.ratio("albert", b, s), ".2f"),
                   n(self.ratio("albert", b, s, "flop_ratio"), ".2f"), n(other, ".0f", 100)])
    mem_rows = []
    for b, s in points:
      cells = []
      for field in (("xla_memory", "peak_estimate"), ("rss_peak_delta_bytes",)):
        for m in MODELS:
          cells.append(n(self.src.get("benchmark/benchmark.json", "inference",
                                      {"model": m, "impl": "ours", "batch": b, "seq": s},
                                      *field), ".0f", 2**-20))
      mem_rows.append([f"{b}x{s}"] + cells)
    lines = ["## Inference at base size", "",
             f"Encoder forward of BERT-base, DistilBERT-base and ALBERT-base, measured by "
             f"{code('experiments/benchmark.py')} in one process, the three models interleaved "
             + ("in visits (an untimed call, then timed ones) " if meta.get("visit") else
                "call by call ")
             + f"({code('benchmark/BENCHMARKS.md')} has the details; its command is "
             f"in the wall-time table). Medians of the timed calls after compilation and a "
             f"warm-up; ratios from the benchmark's own {code('ratios')}; 'others' CPU' is the "
             f"share of the CPUs other processes used while the point was timed. "
             + (f"The layers run unrolled, each layer's weights their own arrays (the inference "
                f"layout, {code('--inference-layout=unrolled')}); the scanned training layout "
                f"makes XLA:CPU copy every BERT layer's weights out of the stacked arrays "
                f"before its matmuls."
                if meta.get("inference_layout", "scanned") == "unrolled" else
                f"The layers run in the scanned training layout "
                f"({code('--inference-layout=scanned')})."), ""]
    lines += md_table(["batch x seq", "BERT (ms)", "DistilBERT (ms)", "ALBERT (ms)",
                       "DistilBERT / BERT", "FLOP ratio", "ALBERT / BERT", "FLOP ratio",
                       "others' CPU (%)"], rows)
    lines += ["Peak memory (MiB): what XLA allocates for the call (arguments + outputs + "
              "temporaries), and the growth of the process's peak resident memory while timing.",
              ""]
    lines += md_table(["batch x seq"] + [f"{NAMES[m]} XLA" for m in MODELS] +
                      [f"{NAMES[m]} RSS growth" for m in MODELS], mem_rows)
    return lines

  def finetuning(self) -> list:
    n = self.n
    rows = []
    bert_glue = self.glue_score("bert")
    for m in MODELS:
      glue = self.glue_score(m)
      ret = lambda t, m=m: (None if self.task_score(m, t) is None or
                            self.task_score("bert", t) is None else
                            self.task_score(m, t) / self.task_score("bert", t))
      mark = lambda t, m=m: " (one class)" if self.one_class(m, t) else ""
      rows.append([NAMES[m], n(self.dev(m, "sst2", "accuracy"), ".4f") + mark("sst2"),
                   n(self.dev(m, "mrpc", "accuracy"), ".4f") + mark("mrpc"),
                   n(self.dev(m, "mrpc", "f1"), ".4f") + mark("mrpc"),
                   n(glue, ".4f"), n(ret("sst2"), ".1f", 100), n(ret("mrpc"), ".1f", 100),
                   n(None if glue is None or bert_glue is None else glue / bert_glue, ".1f",
                     100)] + [self.versus_majority(m, t) for t in TASKS])
    cfg = lambda t, *k: self.src.get(f"finetune_bert_{t}/config.json", *k)
    lines = ["## Fine-tuning (dev sets)", "",
             f"Each model fine-tuned from its own checkpoint with one recipe: SST-2 "
             f"{n(cfg('sst2', 'train', 'num_steps'), ',.0f')} steps, MRPC "
             f"{n(cfg('mrpc', 'train', 'num_steps'), ',.0f')} steps, batch "
             f"{n(cfg('sst2', 'data', 'batch_size'), '.0f')}, learning rate "
             f"{n(cfg('sst2', 'optim', 'learning_rate'), '.5f')} with linear warmup and decay; "
             f"scores of the final step ({code('finetune_<model>_<task>/eval_validation.json')}"
             f"). The average is GLUE's: SST-2 accuracy and the mean of MRPC accuracy and F1, "
             f"averaged; retention is the score divided by BERT's. '(one class)': the model "
             f"predicts the same label for every dev example "
             f"({code('predictions_validation.tsv')}), the majority-class score. 'vs the "
             f"majority class': the model's GLUE score of the task minus the majority "
             f"class's, its {n(Num.of(0.95), '.0f', 100)}% bootstrap interval over dev "
             f"examples in points ({code(ACCURACY_FILE)}); **inconclusive** where the "
             f"interval does not lie wholly above the majority's score: that model's score "
             f"may be a guess.", ""]
    lines += md_table(["model", "SST-2 accuracy", "MRPC accuracy", "MRPC F1", "average",
                       "SST-2 retention (%)", "MRPC retention (%)", "average retention (%)"] +
                      [f"{TASK_NAMES[t]} vs the majority class" for t in TASKS], rows)
    return lines

  def versus_majority(self, m: str, task: str) -> str:
    """'**inconclusive**: X points below to Y points above (majority M)' (or 'above: ...')
    for one model and task, from ACCURACY_FILE; what is missing when it has no interval."""
    if not self.src.exists(ACCURACY_FILE):
      return "n/a"
    stats = self.src.raw(ACCURACY_FILE)
    majority = self.src.get(ACCURACY_FILE, "tasks", task, "majority_score")
    if not stats.get("intervals"):
      return (f"no interval (predictions not kept); majority "
              f"{self.n(majority, '.1f', 100)}")
    n = self.n
    ci = lambda i: self.src.get(ACCURACY_FILE, "tasks", task, "variants", m,
                                "minus_majority_ci", i)
    word = ("above" if stats["tasks"][task]["variants"][m]["vs_majority"] == "above"
            else "**inconclusive**")
    return (f"{word}: {self.points(ci(0))} to {self.points(ci(1))} "
            f"(majority {n(majority, '.1f', 100)})")

  def walls(self, stage_names: list) -> list:
    n = self.n
    rows, nums = [], []
    for name in stage_names:
      if not self.src.exists(f"stages/{name}.json"):
        continue
      record = self.src.raw(f"stages/{name}.json")
      wall = self.wall(name)
      nums.append(wall)
      attempts = len(record["attempts"])
      # A record left "running" has no end: the stage runs now, or was killed mid-way.
      status = record.get("status", "?")
      status = "unfinished (running, or killed: rerun to resume)" if status == "running" else status
      rows.append([code(name), n(wall, ".0f") + (" (resumed)" if attempts > 1 else ""),
                   status, code(record["command"])])
    total = reduce_nums("sum", nums) if nums else None
    return (["## Wall time per stage", "",
             f"Total {n(total, '.1f', 1 / 60)} min; a resumed stage counts all its attempts "
             f"({code('stages/<stage>.json')}, logs in {code('logs/')}).", ""] +
            md_table(["stage", "wall time (s)", "status", "command"], rows))

  def plots(self) -> list:
    out = []
    for name, what in PLOTS:
      if os.path.exists(os.path.join(self.root, name)):
        out.append(f"![{what}]({name})")
        out.append("")
    return ["## Plots", ""] + out

  def render(self, stage_names: list) -> str:
    lines = self.header() + self.claims() + self.parameters() + self.benchmark()
    lines += self.models_at_scale() + self.finetuning() + self.disk()
    lines += self.walls(stage_names) + self.plots()
    return "\n".join(lines).rstrip() + "\n"



def stage_names(root: str, settings: dict) -> list:
  """The plan's stage names for these settings (none without settings)."""
  if not settings:
    return []
  return [s.name for s in make_plan(root, settings)]


def report(root: str) -> str:
  """Writes report.md, report_numbers.json and the plots from `root`'s files; returns the text."""
  root = os.path.abspath(root)
  write_accuracy_stats(root)
  rep = Report(root)
  write_plots(root, rep)  # first: the report links the plots that exist
  text = rep.render(stage_names(root, rep.settings))
  files.atomic_write(os.path.join(root, "report.md"), text)
  write_record(os.path.join(root, "report_numbers.json"), rep.n.items)
  return text
