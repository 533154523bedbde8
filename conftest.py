"""pytest in this checkout: the suite's options also spelled short (--backend beside --softmax-suite-backend).
The plugin itself is loaded by pyproject.toml's addopts: a conftest.py that declares plugins would break
pytest in another project that runs this checkout's catalogue (an editable install)."""

import pytest

from softmax_suite.runner import options


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser, short=True)
