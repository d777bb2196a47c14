from lite_bert import host; host.reexec_with_huge_pages()
import time, statistics, sys, resource, os, jax
from experiments.benchmark_candidates import init_params, our_training, torch_training
from experiments.benchmark_inputs import model_config
cfgs = {m: model_config(m, "base", "float32") for m in ("bert", "distilbert", "albert")}
params = init_params({"bert": cfgs["bert"]})["bert"]
ours = our_training("bert", cfgs, params, 8, 128, size="base", teacher_params=None,
                    deterministic_loss=False, layout="unrolled")
ours.prepare()
torch_c = torch_training("bert", cfgs, params, 8, 128, size="base", dtype="float32", teacher_params=None)
torch_c.prepare()
print("GLIBC_TUNABLES", os.environ.get("GLIBC_TUNABLES"))
def t(name, c):
  r0 = resource.getrusage(resource.RUSAGE_SELF); s = time.perf_counter(); c.run()
  d = time.perf_counter() - s; r1 = resource.getrusage(resource.RUSAGE_SELF)
  print(f"{name:6s} {d*1e3:6.0f} ms  minflt {r1.ru_minflt-r0.ru_minflt:7d}  sys {r1.ru_stime-r0.ru_stime:5.2f} s  user {r1.ru_utime-r0.ru_utime:5.2f}", flush=True)
for r in range(3):
  t("ours", ours); t("ours", ours); t("torch", torch_c); t("ours", ours)
