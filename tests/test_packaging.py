"""The distribution as a user installs it: one top-level name, every room inside it, the import
contracts' list of the floor complete, and the wheel working from a project whose own folders are
called backends/ and reports/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("oracle", "backends", "suites", "reports", "runner")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("softmax_suite-*.whl")
    return built


def test_the_wheel_installs_one_top_level_name_holding_every_room(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["softmax_suite"]
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"softmax_suite"}
    for room in ROOMS:
        assert f"softmax_suite/{room}/__init__.py" in names, room
    assert "softmax_suite/suites/known_deviations.toml" in names
    assert "softmax_suite/reports/templates/report.html.j2" in names


def test_the_contracts_name_every_module_of_the_floor() -> None:
    # A floor module left out of "The floor imports no room" would be free to import any room.
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    floor = next(c for c in contracts if c["name"] == "The floor imports no room")
    modules = {f"softmax_suite.{path.stem}" for path in (REPO / "softmax_suite").glob("*.py")
               if path.stem != "__init__"}
    assert set(floor["source_modules"]) == modules


def test_the_wheel_runs_beside_a_project_with_its_own_backends_and_reports(wheel: Path,
                                                                           tmp_path: Path) -> None:
    # A user's project with folders named like the repository's: nothing of softmax-suite may be
    # found under those names, and the user's kernel is tested from the project's root.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel), "-c",
                                str(REPO / "constraints" / "ci.txt")], capture_output=True, text=True,
                               timeout=600)
    if installed.returncode and "No matching distribution" in installed.stderr + installed.stdout:
        pytest.skip(f"the wheel's dependencies cannot be installed here: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr
    project = tmp_path / "project"
    for folder in ("backends", "reports", "suites", "oracle"):
        (project / folder).mkdir(parents=True)
        (project / folder / "__init__.py").write_text("raise ImportError('the project's own package')\n")
    (project / "mykernel.py").write_text(
        "import numpy as np\n\n\ndef softmax(x, axis):\n"
        "    e = np.exp(x - x.max(axis=axis, keepdims=True))\n"
        "    return e / e.sum(axis=axis, keepdims=True)\n")
    done = subprocess.run([str(venv / "bin" / "softmax-suite"), "run", "--backend", "mykernel:softmax",
                           "--case", "glossary", "--dtype", "float32", "--throughput", "off", "-n", "0",
                           "--out", "out"], cwd=project, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(project)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = [json.loads(line) for line in (project / "out" / "results.jsonl").read_text().splitlines()]
    results = [r for r in records if r.get("kind") == "result"]
    # a plain function is tested as softmax; the other ops are unsupported, with the reason
    assert {r["status"] for r in results if r["op"] == "softmax"} == {"pass"}
    assert (project / "out" / "report.html").is_file()
