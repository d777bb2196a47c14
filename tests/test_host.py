"""lite_bert.host: the machine facts and the start-up re-exec with huge pages for glibc."""

import os
import platform
import subprocess
import sys

from lite_bert import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_huge_page_tunable_is_added_once_and_only_where_it_can_work():
  add = host.tunables_with_huge_pages
  assert add({}, "madvise", "glibc") == "glibc.malloc.hugetlb=1"
  assert add({}, "always", "glibc") == "glibc.malloc.hugetlb=1"
  # The user's own tunables are kept; their own hugetlb choice wins (0 included).
  assert (add({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "madvise", "glibc")
          == "glibc.malloc.trim_threshold=1:glibc.malloc.hugetlb=1")
  assert add({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", "glibc") is None
  assert add({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "madvise", "glibc") is None
  assert add({"LITE_BERT_HUGE_PAGES": "0"}, "madvise", "glibc") is None  # the opt-out
  assert add({}, "never", "glibc") is None  # the kernel gives none: no restart for nothing
  assert add({}, "", "glibc") is None
  assert add({}, "madvise", "") is None  # not glibc (musl, macOS): the variable means nothing


def test_reexec_restarts_once_with_the_tunable_and_the_same_arguments():
  code = ("import os, sys; from lite_bert import host; print('start', flush=True); "
          "host.reexec_with_huge_pages(); print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LITE_BERT_HUGE_PAGES")}
  out = subprocess.run([sys.executable, "-c", code, "a b", "--x=1"], env=env, cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout.splitlines()
  expected = host.tunables_with_huge_pages({}, host.transparent_huge_pages(),
                                           platform.libc_ver()[0])
  # Restarted: the program ran twice from the top, the second time with the tunable.
  assert out[:-1] == (["start", "start"] if expected else ["start"])
  assert out[-1] == f"{expected} {['a b', '--x=1']}"
