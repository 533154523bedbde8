"""Third-party backends through the entry-point group `softmax_suite.backends`: discovered from a
distribution's metadata, listed, defaulted and run; broken or clashing ones reported, never fatal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.backends import registry
from softmax_suite.backends.registry import (
    GROUP,
    PluginWarning,
    Unavailable,
    backend_names,
    check_names,
    load,
)
from softmax_suite.protocol import Backend
from softmax_suite.runner.config import Settings
from softmax_suite.suites import accuracy
from softmax_suite.suites.accuracy import Target

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "softmax-suite-example-plugin"

GOOD = '''
import numpy as np
from softmax_suite.protocol import Backend

def softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)

def load():
    return Backend(name="named-otherwise", version="1.2", ops={"softmax": softmax},
                   to_device=lambda x, device: x, to_numpy=np.asarray, dtypes=("float32", "float64"))
'''

BROKEN = '''
from softmax_suite.protocol import BackendUnavailable

def unavailable():
    raise BackendUnavailable("needs the frobnicator driver")

def crashing():
    raise RuntimeError("the plugin's own bug")
'''

FORMS = '''
import numpy as np

def softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)

class Kernels:
    version = "3"

    def softmax(self, x, axis):
        return softmax(x, axis)

    def log_softmax(self, x, axis):
        return np.log(softmax(x, axis))

def load_kernels():
    return Kernels()
'''

# name: (entry point, what `softmax-suite backends` says of it)
PLUGINS = {
    "tinyplug": ("plug_good:load", "tinyplug 1.2"),
    "noimport": ("plug_missing:load",
                 "noimport: unavailable: plugin of broken-plugins 0.1, plug_missing:load: "
                 "failed to load: ModuleNotFoundError: No module named 'plug_missing'"),
    "nodriver": ("plug_broken:unavailable",
                 "nodriver: unavailable: needs the frobnicator driver (plugin of "
                 "broken-plugins 0.1, plug_broken:unavailable)"),
    "buggy": ("plug_broken:crashing",
              "buggy: unavailable: plugin of broken-plugins 0.1, plug_broken:crashing: "
              "failed to load: RuntimeError: the plugin's own bug"),
}
BROKEN_NAMES = ("noimport", "nodriver", "buggy")


def add_distribution(site: Path, name: str, entries: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata sees one: a *.dist-info folder on sys.path."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{GROUP}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items()))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path, and on PYTHONPATH for subprocesses, that holds the plugins' modules and
    distributions; nothing is installed. The plugin modules it imported are forgotten afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    for module, source in {"plug_good": GOOD, "plug_broken": BROKEN, "plug_forms": FORMS}.items():
        (folder / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(folder), str(REPO), os.environ.get("PYTHONPATH")])))
    yield folder
    for module in [name for name in sys.modules if name.startswith("plug_")]:
        del sys.modules[module]


@pytest.fixture
def plugged(site: Path) -> Path:
    """The site with a good plugin (tinyplug), three broken ones and one named like a built-in."""
    add_distribution(site, "good-plugin", {"tinyplug": PLUGINS["tinyplug"][0]})
    add_distribution(site, "broken-plugins", {name: PLUGINS[name][0] for name in BROKEN_NAMES})
    add_distribution(site, "clashing-plugin", {"numpy": "plug_good:load"})
    return site


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                           *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_a_plugin_is_listed_checked_and_loaded(plugged: Path) -> None:
    with pytest.warns(PluginWarning):
        names = backend_names()
    assert names[:len(registry.BUILTIN)] == list(registry.BUILTIN)
    assert {"tinyplug", "noimport", "nodriver", "buggy"} <= set(names)
    check_names(["tinyplug", "numpy"])
    backend = load("tinyplug")
    assert isinstance(backend, Backend)
    # Selected, recorded and listed by the entry point's name, whatever the plugin calls itself.
    assert (backend.name, backend.version, backend.dtypes) == ("tinyplug", "1.2", ("float32", "float64"))
    record = accuracy.run(Target("softmax", "tinyplug", "cpu", "float64", "glossary"), backend, Settings())
    assert record["status"] == "pass", record
    assert accuracy.run(Target("logsumexp", "tinyplug", "cpu", "float64", "glossary"), backend,
                        Settings())["status"] == "unsupported"


def test_broken_plugins_are_unavailable_with_the_error_named(plugged: Path) -> None:
    with pytest.warns(PluginWarning):
        for name in BROKEN_NAMES:
            unavailable = load(name)
            assert isinstance(unavailable, Unavailable)
            assert f"{name}: unavailable: {unavailable.reason}" == PLUGINS[name][1]


def test_a_name_clash_warns_naming_the_distribution_and_the_builtin_wins(plugged: Path) -> None:
    with pytest.warns(PluginWarning, match=r"backend plugin 'numpy' of clashing-plugin 0\.1 .* is ignored: "
                                           "the built-in backend of that name is used"):
        names = backend_names()
    assert names.count("numpy") == 1
    backend = load("numpy")
    assert isinstance(backend, Backend) and backend.version == np.__version__


def test_two_plugins_of_one_name_the_first_found_wins(site: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    later = tmp_path / "later"
    later.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])
    add_distribution(site, "first-plugin", {"twin": "plug_good:load"})
    add_distribution(later, "second-plugin", {"twin": "plug_broken:crashing"})
    with pytest.warns(PluginWarning, match=r"'twin' of second-plugin 0\.1 .* is ignored: first-plugin 0\.1 "
                                           "provides it already"):
        backend = load("twin")
    assert isinstance(backend, Backend) and backend.version == "1.2"


@pytest.mark.parametrize(("value", "ops", "version"), [
    ("plug_forms:softmax", ["softmax"], None),
    ("plug_forms:Kernels", ["softmax", "log_softmax"], "3"),
    ("plug_forms:load_kernels", ["softmax", "log_softmax"], "3"),
], ids=["function", "class", "loader-of-an-object"])
def test_an_entry_point_may_name_what_module_attr_takes(site: Path, value: str, ops: list[str],
                                                        version: str | None) -> None:
    add_distribution(site, "forms-plugin", {"formed": value})
    backend = load("formed")
    assert isinstance(backend, Backend) and backend.name == "formed" and list(backend.ops) == ops
    assert version is None or backend.version == version
    record = accuracy.run(Target("softmax", "formed", "cpu", "float32", "tied_max"), backend, Settings())
    assert record["status"] == "pass", record


def test_unknown_names_are_told_the_plugins_and_the_closest(plugged: Path) -> None:
    with pytest.warns(PluginWarning), pytest.raises(ValueError) as error:
        check_names(["tinyplugg"])
    message = str(error.value)
    listed = re.search("installed plugins are ([^;]*);", message)
    assert listed and {"tinyplug", *BROKEN_NAMES} <= set(listed.group(1).split(", ")), message
    assert message.endswith("did you mean 'tinyplug'?")


def test_only_declared_plugins_are_backends(site: Path) -> None:
    # plug_good is importable and has a load(), but no distribution declares it.
    with pytest.raises(ValueError, match="unknown backend 'plug_good'"):
        load("plug_good")
    assert all(not name.startswith("plug_") for name in backend_names())


def test_backends_and_the_help_list_plugins_and_warn_of_the_clash(plugged: Path) -> None:
    done = cli("backends")
    assert done.returncode == 0, done.stderr
    for _, listed in PLUGINS.values():
        assert listed in done.stdout
    assert "PluginWarning: backend plugin 'numpy' of clashing-plugin 0.1" in done.stderr
    helped = " ".join(cli("run", "--help").stdout.split())  # argparse wraps the lines
    assert all(f" {name}," in helped for name in PLUGINS), helped


def test_plugins_run_by_default_beside_the_builtins(plugged: Path, tmp_path: Path) -> None:
    """No --backend: every built-in and every plugin; the broken ones are skipped with their reason."""
    results = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_forward.py", "-p", "no:cacheprovider", "-q",
         "--case", "glossary", "--op", "softmax", "--dtype", "float64", "--results", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert results.exists(), done.stdout + done.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert set(registry.BUILTIN) | set(PLUGINS) <= set(lines[0]["backends"])
    status = {r["backend"]: r["status"] for r in lines if r["kind"] == "result"}
    assert status["tinyplug"] == status["numpy"] == "pass"
    # A broken plugin asks nothing: the capability table names it once, with why.
    cannot = {e["backend"]: e["reason"] for e in lines[0]["capabilities"] if e["device"] == "any"}
    for name in BROKEN_NAMES:
        assert name not in status
        assert cannot[name] == PLUGINS[name][1].removeprefix(f"{name}: unavailable: ")


def test_the_example_plugin_runs_end_to_end(tmp_path: Path) -> None:
    try:
        metadata.distribution(EXAMPLE)
    except metadata.PackageNotFoundError:
        if os.environ.get("SOFTMAX_SUITE_REQUIRE_EXAMPLE") == "1":
            pytest.fail(f"{EXAMPLE} is not installed: pip install -e examples/{EXAMPLE}")
        pytest.skip(f"{EXAMPLE} is not installed (pip install -e examples/{EXAMPLE})")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        assert "example" in backend_names()
    listed = cli("backends")
    assert "example 0.1.0" in listed.stdout and "dtypes:  float16, bfloat16, float32" in listed.stdout
    done = cli("run", "--backend", "example", "--case", "glossary,dominant_gap_above,pos_inf,nan,empty,"
               "neg_inf_mask,long_equal_n65k", "--out", str(tmp_path), "-n", "0", "--throughput", "off")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    records = [r for r in records if r["kind"] == "result"]
    forward = [r for r in records if r["op"] in ("softmax", "log_softmax", "logsumexp")]
    assert {r["status"] for r in forward if r["dtype"] != "float64"} == {"pass"}
    # float64 and the VJPs it lacks are asked nothing: the capability table says why, per op and dtype.
    assert not [r for r in records if r["dtype"] == "float64" or r["op"].endswith("_vjp")]
    header = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    cannot = {(e["op"], e["dtype"]) for e in header["capabilities"]}
    assert {(op, "float64") for op in ("softmax", "log_softmax", "logsumexp")} <= cannot
    assert {(op, dtype) for op in ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")
            for dtype in ("float16", "bfloat16", "float32")} <= cannot
