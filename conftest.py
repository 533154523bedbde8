"""pytest wiring for this checkout: the suite's options, fixtures and results collector."""

pytest_plugins = ["softmax_suite.runner.plugin"]
