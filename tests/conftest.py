"""Test-run hook: the tests that share a module's costly fixture run on one xdist worker.

A module-scoped fixture (a finished tiny run, the catalogue of bad inputs, a
trained tokenizer) is built once per worker that runs a test using it. Under
`pytest -n 2` with xdist's default distribution the tests of one module are
spread over both workers, so each such fixture was built twice, side by side
on the same 2 cores. With `--dist loadgroup` (setup.cfg's addopts) a test that
uses a module-scoped fixture of its own module joins that module's xdist
group: every group runs on one worker; the other tests spread as before.
"""

import pytest


def uses_own_module_fixture(item) -> bool:
  """Whether `item` needs a module-scoped fixture defined in its own test module."""
  info = getattr(item, "_fixtureinfo", None)
  if info is None:
    return False
  module = item.nodeid.split("::")[0]
  return any(fixturedef.scope == "module" and fixturedef.baseid == module
             for name in info.names_closure
             for fixturedef in info.name2fixturedefs.get(name, ()))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the markers
def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if uses_own_module_fixture(item):
      item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
