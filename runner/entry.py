"""pytest's entry point into softmax-suite (the pytest11 plugin): in any project, the --softmax-suite-NAME
options, and the catalogue added to the run with the suite's plugin only when one of them is given.

Installed but not asked for, it adds one option group and imports no array library, no backend and
none of the suite (benchmarks/plugin_startup.py measures what it costs a project's pytest).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from softmax_suite.runner import options

PLUGIN = "softmax_suite.runner.plugin"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser, short=False)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    asked = options.given([str(arg) for arg in config.invocation_params.args])
    if not asked or config.pluginmanager.has_plugin(PLUGIN):
        return  # not asked for; or this checkout's pytest (its addopts) or `softmax-suite run` loads it
    # Imported by name (not registered as a module): import_plugin also loads what it declares.
    config.pluginmanager.import_plugin(PLUGIN)
    import softmax_suite.suites

    catalogue = Path(softmax_suite.suites.__file__).resolve().parent
    named = False
    for index, arg in enumerate(config.args):
        path, separator, rest = str(arg).partition("::")
        # An id as a run prints it (test_forward.py::test_softmax[...], or suites/test_forward.py::...
        # where pytest names the catalogue's folder too), pasted back.
        found = next((folder / path for folder in (catalogue, catalogue.parent)
                      if not Path(path).exists() and (folder / path).is_file()), None)
        if found is not None:
            config.args[index] = f"{found}{separator}{rest}"
            named = True
        elif Path(path).resolve().is_relative_to(catalogue):
            named = True
    if not named:
        config.args.append(str(catalogue))
