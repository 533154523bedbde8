"""No pickle anywhere: loading a pickle runs whatever code the file names, and the suite reads files
(oracle cache entries, results, baselines) that other processes and hosts wrote. A cheap guard
against a future change: the project's own sources are parsed, and each use of pickle is named by
file and line."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIPPED = {".git", ".venv", "venv", "build", "dist", "node_modules", "__pycache__", "site-packages",
           "test-artifacts", "softmax-suite-out"}
# The rooms whose code runs in a user's run. There multiprocessing may start processes (spawn
# pickles only the parent's own arguments to its child) but must not carry data by pickle: its
# queues, pools, managers and Connection.send/recv do; send_bytes/recv_bytes do not.
ROOMS = ("backends", "oracle", "reports", "suites")
PICKLING_CARRIERS = {"Queue", "SimpleQueue", "JoinableQueue", "Pool", "Manager", "ProcessPoolExecutor"}
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "joblib"}
UNSAFE_YAML = ("yaml.load", "yaml.unsafe_load", "yaml.full_load")


def sources(root: Path = REPO) -> list[Path]:
    return sorted(path for path in root.rglob("*.py")
                  if not SKIPPED.intersection(path.relative_to(root).parts)
                  and not any(part.endswith(".egg-info") for part in path.relative_to(root).parts))


def dotted(node: ast.AST | None) -> str:
    """'np.load' for the callee of np.load(...); '' for anything but a dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((given.value for given in call.keywords if given.arg == name), None)


def constant(node: ast.expr | None) -> object:
    """The value of a constant argument; None when absent, Ellipsis when not a constant."""
    if node is None:
        return None
    return node.value if isinstance(node, ast.Constant) else ...


def problems(path: Path, root: Path = REPO) -> list[str]:
    """'file:line: what' for each use of pickle in one source file."""
    relative = path.relative_to(root)
    room = relative.parts[0] in ROOMS
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        where = f"{relative}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            found += [f"{where}: imports {module}" for module in modules if module.split(".")[0] in PICKLERS]
            if room and isinstance(node, ast.ImportFrom):
                found += [f"{where}: {alias.name} pickles what it carries" for alias in node.names
                          if alias.name in PICKLING_CARRIERS]
        elif isinstance(node, ast.Call):
            callee = dotted(node.func)
            allow = constant(keyword(node, "allow_pickle"))
            if allow not in (None, False):
                found.append(f"{where}: {callee or 'a call'} with allow_pickle other than False")
            elif callee in ("np.load", "numpy.load") and allow is not False:
                found.append(f"{where}: {callee} without allow_pickle=False")
            if callee.split(".")[0] in PICKLERS or callee.endswith("read_pickle"):
                found.append(f"{where}: {callee}")
            if room and callee.startswith(("multiprocessing.", "concurrent.futures.")) and \
                    callee.rsplit(".", 1)[1] in PICKLING_CARRIERS:
                found.append(f"{where}: {callee} pickles what it carries")
            if room and isinstance(node.func, ast.Attribute) and node.func.attr in ("send", "recv") and \
                    "conn" in dotted(node.func.value).lower():
                found.append(f"{where}: Connection.{node.func.attr} pickles; use {node.func.attr}_bytes")
            if callee == "torch.load" and constant(keyword(node, "weights_only")) is not True:
                found.append(f"{where}: torch.load without weights_only=True")
            loader = keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if callee in UNSAFE_YAML and (callee != "yaml.load" or "Safe" not in dotted(loader)):
                found.append(f"{where}: {callee} without a SafeLoader (it builds any Python object)")
    return found


def test_the_scan_sees_the_project_and_catches_each_form(tmp_path: Path) -> None:
    names = {path.relative_to(REPO).as_posix() for path in sources()}
    # The oracle's cache is the one place that loads numpy files; the scan must see it.
    assert {"oracle/store.py", "runner/plugin.py", "tests/test_no_pickle.py"} <= names
    planted = tmp_path / "oracle" / "planted.py"
    planted.parent.mkdir()
    planted.write_text("\n".join([
        "import pickle", "from multiprocessing import Pool", "np.load('x.npz')",
        "np.save('x.npy', x, allow_pickle=True)", "pickle.load(open('f', 'rb'))", "yaml.load(text)",
        "conn.send({'x': 1})", "multiprocessing.Queue()",
        # Fine: what the project does.
        "np.load('x.npz', allow_pickle=False)", "yaml.load(text, Loader=yaml.SafeLoader)",
        "import multiprocessing", "conn.send_bytes(b'{}')", "CONTEXT.Process(target=serve)"]) + "\n")
    lines = sorted(int(problem.split(":")[1]) for problem in problems(planted, tmp_path))
    assert lines == [1, 2, 3, 4, 5, 6, 7, 8]


def test_no_source_of_the_project_uses_pickle() -> None:
    found = [problem for path in sources() for problem in problems(path)]
    assert not found, "pickle in the project's sources:\n" + "\n".join(found)
