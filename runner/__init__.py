"""The runner: the CLI, the pytest plugin and its session, selection, configuration, resume and
reproducers."""
