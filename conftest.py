"""pytest wiring for this checkout: the suite's plugin, and its options spelled short (--backend, as
well as --softmax-suite-backend everywhere)."""

import pytest

from softmax_suite.runner import options

pytest_plugins = ["softmax_suite.runner.plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser, short=True)
