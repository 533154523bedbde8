"""What machine and software a run measured: CPU model and cores, Python, library versions, and
per backend and device what the adapter reports (threads used, GPU model and driver)."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from softmax_suite.protocol import Backend

LIBRARIES = ("numpy", "scipy", "torch", "jax", "jaxlib", "mpmath", "pytest", "pytest-benchmark")
# `softmax-suite run` hands the command the user typed to the throughput process it starts,
# whose own argv is pytest's.
COMMAND_VARIABLE = "SOFTMAX_SUITE_COMMAND"


def invoked_command() -> list[str]:
    """The command that produced the run, as the user typed it."""
    handed = os.environ.get(COMMAND_VARIABLE)
    return json.loads(handed) if handed else [Path(sys.argv[0]).name, *sys.argv[1:]]


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Installed versions of the libraries a run depends on (absent ones left out)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def describe(backends: dict[str, object]) -> dict:
    """The environment of a run over these backends (unavailable ones are skipped)."""
    devices = {}
    for name, backend in backends.items():
        if isinstance(backend, Backend):
            for device in backend.devices:
                try:
                    devices[f"{name}/{device}"] = dict(backend.describe(device))
                except Exception as error:  # a description is information, never a failure
                    devices[f"{name}/{device}"] = {"unavailable": f"{type(error).__name__}: {error}"}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions(), "devices": devices}
