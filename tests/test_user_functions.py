"""A user's own functions as they are: `--backend FRAMEWORK:package.module:attr`, the Python API
(softmax_suite.check, assert_accurate) and the pytest plugin in another project, with the example
project under examples/kernel-author as the user's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from softmax_suite import assert_accurate, check
from softmax_suite.backends.custom import SpecError
from softmax_suite.backends.registry import load
from softmax_suite.protocol import DTYPES, STANDARD_DTYPES, Backend, BackendUnavailable
from softmax_suite.runner.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "kernel-author"
torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's module and tests/ importable here and in subprocesses, the example's bug not planted."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(EXAMPLE), str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MYKERNELS_PLANT_BUG", raising=False)


def planted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's bug planted here (imported first, unplanted, so that undoing it unplants it) and
    in subprocesses."""
    import mykernels

    monkeypatch.setattr(mykernels, "PLANT_BUG", True)
    monkeypatch.setenv("MYKERNELS_PLANT_BUG", "1")


# -- FRAMEWORK:package.module:attr ------------------------------------------------------------------

def test_a_torch_function_runs_on_torch_tensors_with_autograd_vjps() -> None:
    backend = load("torch:mykernels:torch_softmax")
    assert isinstance(backend, Backend) and backend.name == "torch:mykernels:torch_softmax"
    # torch's conversions: bfloat16 too; its VJPs are the function's own backward, through autograd.
    assert backend.dtypes == STANDARD_DTYPES and backend.version.startswith("unversioned (torch ")
    assert set(backend.ops) == {"softmax", "softmax_vjp"} and not backend.unsupported


def test_a_planted_bug_in_the_backward_is_caught_and_the_forward_passes(monkeypatch) -> None:
    planted(monkeypatch)
    checked = check("torch:mykernels:torch_softmax", cases="glossary,random_n1k_s1", invariants=False)
    vjp = [r for r in checked.records if r["op"] == "softmax_vjp"]
    # y g instead of y (g - <g, y>): off by y <g, y>, which every cotangent kind the two cases list
    # makes nonzero. Caught in every record but one: bfloat16's budget for a row of 1000 (first order
    # n u = 1000 x 2^-8, about 4 times the value) admits the random cotangent's relative error there.
    assert {r["status"] for r in vjp if r["dtype"] != "bfloat16"} == {"fail"}
    passed = [(r["case"], r["cotangent"]) for r in vjp if r["status"] == "pass"]
    assert passed == [("random_n1k_s1", "random")]
    assert {r["status"] for r in checked.records if r["op"] == "softmax"} == {"pass"}
    assert not checked.passed


def test_a_forward_only_kernel_has_its_vjp_unsupported_with_why() -> None:
    checked = check("torch:tests.user_kernels:forward_only", cases="glossary", dtypes="float32",
                    invariants=False)
    assert {(r["op"], r["status"]) for r in checked.records} == {("softmax", "pass")}
    # The VJP is not asked: the capability table says why.
    (why,) = [e["reason"] for e in checked.capabilities if e["op"] == "softmax_vjp"]
    assert "forward-only" in why and "torch.autograd.Function" in why
    assert checked.passed  # what was asked of it passed; the rest it cannot answer


def test_a_jitted_jax_function_and_its_vjp_through_jax() -> None:
    checked = check("jax:mykernels:jax_softmax", cases="glossary,random_n1k_s1", invariants=False)
    assert {r["op"] for r in checked.records} == {"softmax", "softmax_vjp"}
    assert checked.passed, checked.summary()


def test_a_jax_function_without_a_differentiation_rule_has_its_vjp_unsupported() -> None:
    backend = load("jax:tests.user_kernels:opaque")
    reason = backend.why_unsupported("softmax_vjp", "float32")
    assert reason is not None and "jax cannot differentiate softmax" in reason and "custom_vjp" in reason
    assert backend.why_unsupported("softmax", "float32") is None


def test_numpy_has_no_autodiff_so_a_numpy_functions_vjp_says_how_to_give_one() -> None:
    backend = load("mykernels:numpy_softmax")
    reason = backend.why_unsupported("softmax_vjp", "float64")
    assert reason == ("numpy has no automatic differentiation to take softmax_vjp through the softmax given: "
                      "give the object a softmax_vjp(x, g, axis) method")


def test_a_torch_function_given_on_numpy_arrays_names_the_spec_to_use() -> None:
    checked = check("mykernels:torch_softmax", cases="glossary", dtypes="float32", ops="softmax",
                    invariants=False)
    (record,) = checked.records
    assert record["status"] == "error"
    assert "must be Tensor, not numpy.ndarray" in record["message"]
    assert "--backend torch:package.module:attr" in record["message"]


def test_an_objects_name_is_its_name_everywhere(tmp_path: Path, capsys) -> None:
    code = main(["run", "--backend", "torch:tests.user_kernels:Fused", "--case", "glossary", "--dtype",
                 "float32", "--throughput", "off", "-n", "0", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    records = [line for line in lines if line["kind"] == "result"]
    assert {r["backend"] for r in records} == {"fused"}
    assert {r["backend_spec"] for r in records} == {"torch:tests.user_kernels:Fused"}
    assert lines[0]["backends"]["fused"]["spec"] == "torch:tests.user_kernels:Fused"
    assert all("[fused-cpu-float32-glossary" in r["nodeid"] for r in records)
    assert {r["backend_version"] for r in records} == {f"1.2 (torch {torch.__version__})"}


def test_two_backends_of_one_name_are_a_usage_error(tmp_path: Path, capsys) -> None:
    code = main(["run", "--backend", "torch:tests.user_kernels:Fused,torch:tests.user_kernels:FusedAgain",
                 "--case", "glossary", "--throughput", "off", "-n", "0", "--out", str(tmp_path)])
    said = capsys.readouterr()
    assert code == 2
    assert "two backends are named 'fused'" in said.out + said.err


@pytest.mark.parametrize(("spec", "expected"), [
    ("triton:mykernels:torch_softmax", "triton does not run a user's functions"),
    ("torch:mykernels", "a function on torch arrays is given as torch:package.module:attr"),
    ("torch:no_such_module:f", "cannot import 'no_such_module'"),
    ("torch:mykernels:nothing", "has no attribute 'nothing'"),
])
def test_a_bad_framework_spec_says_what_to_fix(spec: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        load(spec)


# -- the Python API ---------------------------------------------------------------------------------

def test_check_takes_the_function_itself_and_finds_its_spec() -> None:
    from mykernels import torch_softmax

    checked = check(torch_softmax, framework="torch", cases="glossary", dtypes="bfloat16")
    assert checked.spec == "torch:mykernels:torch_softmax" and checked.passed
    # accuracy of softmax and its VJP (glossary lists 4 cotangent kinds) and softmax's invariants; the
    # function gives no log_softmax or logsumexp: 4 ops the capability table names, in the one dtype
    assert len(checked.records) == 1 + 4 + 1
    assert {e["op"] for e in checked.capabilities} == {"log_softmax", "logsumexp", "log_softmax_vjp",
                                                       "logsumexp_vjp"}
    assert checked.records[0]["nodeid"] == \
        "test_forward.py::test_softmax[torch:mykernels:torch_softmax-cpu-bfloat16-glossary]"


def test_assert_accurate_fails_with_the_table_and_the_ids(monkeypatch) -> None:
    planted(monkeypatch)
    from mykernels import torch_softmax

    with pytest.raises(AssertionError) as raised:
        assert_accurate(torch_softmax, framework="torch", cases="glossary", dtypes="float32")
    text = str(raised.value)
    assert "torch:mykernels:torch_softmax is not accurate" in text
    assert "test_gradients.py::test_softmax_vjp[torch:mykernels:torch_softmax-cpu-float32-glossary-" in text
    assert "--softmax-suite-backend torch:mykernels:torch_softmax" in text


def test_the_reproducer_of_a_caught_bug_exits_1(monkeypatch, tmp_path: Path) -> None:
    planted(monkeypatch)
    checked = check("torch:mykernels:torch_softmax", cases="glossary", dtypes="float32", ops="softmax_vjp",
                    cotangents="random")
    (record,) = checked.failures
    script = tmp_path / "repro.py"
    script.write_text(checked.reproducer(record))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "still fails" in done.stdout
    monkeypatch.delenv("MYKERNELS_PLANT_BUG")
    fixed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert fixed.returncode == 0 and "passes now" in fixed.stdout, fixed.stdout + fixed.stderr


def test_a_function_defined_in_a_test_runs_but_has_no_reproducer() -> None:
    def local_softmax(x, axis):
        return torch.softmax(x, axis)

    checked = check(local_softmax, framework="torch", cases="glossary", dtypes="float32", invariants=False)
    assert checked.spec is None and checked.passed
    with pytest.raises(ValueError, match="define it in a module"):
        checked.reproducer(checked.records[0])


def test_nothing_answered_is_not_a_pass() -> None:
    checked = check("torch:tests.user_kernels:forward_only", ops="softmax_vjp", cases="glossary")
    # One per dtype, the float8 formats too (torch lists them; its CPU refuses them).
    assert not checked.records and len(checked.capabilities) == len(DTYPES)
    assert not checked.passed and "nothing was answered: softmax is forward-only" in checked.summary()


@pytest.mark.parametrize(("arguments", "error", "expected"), [
    ({"backend": "numpy", "ops": "softmax_grad"}, ValueError, "did you mean 'softmax_vjp'?"),
    ({"backend": "numpy", "dtypes": "fp8"}, ValueError, "no dtype matches 'fp8'"),
    ({"backend": "numpy", "cases": "glosary"}, ValueError, "did you mean 'glossary'?"),
    ({"backend": "numpy", "devices": "cuda"}, ValueError, "no device matches 'cuda': valid are cpu"),
    ({"backend": "numpy", "framework": "torch"}, ValueError, "give the spec as 'torch:numpy'"),
    ({"backend": "array-api:no_such_namespace"}, BackendUnavailable, "no_such_namespace"),
    ({"backend": "numpi"}, ValueError, "did you mean 'numpy'?"),
    ({"backend": len, "framework": "tensorflow"}, ValueError, "the frameworks that do are numpy, torch"),
])
def test_the_api_names_a_bad_argument(arguments: dict, error: type, expected: str) -> None:
    with pytest.raises(error, match=expected):
        check(**arguments)


# -- the example project and the pytest plugin, from the project's own folder ------------------------

def pytest_in(folder: Path, *args: str, bug: bool = False) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MYKERNELS_PLANT_BUG": "1" if bug else "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:hypothesispytest", *args],
                          cwd=folder, env=environment, capture_output=True, text=True, timeout=600)


def test_the_example_projects_tests_pass_and_catch_the_planted_bug() -> None:
    clean = pytest_in(EXAMPLE, "-q", "test_mykernels.py")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    buggy = pytest_in(EXAMPLE, "-q", "test_mykernels.py", bug=True)
    assert buggy.returncode == 1
    assert "FAILED test_mykernels.py::test_torch_softmax_and_its_backward" in buggy.stdout
    assert "2 passed" in buggy.stdout  # jax and numpy are untouched


def test_the_plugin_runs_the_catalogue_in_another_project_and_its_ids_paste_back() -> None:
    spec = "torch:mykernels:torch_softmax"
    selection = ["--softmax-suite-backend", spec, "--softmax-suite-case", "glossary",
                 "--softmax-suite-dtype", "float32", "-m", "not throughput"]
    run = pytest_in(EXAMPLE, "-q", "-rf", *selection, bug=True)
    failed = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("FAILED test_gradients")]
    # glossary lists 4 cotangent kinds; the buggy backward fails each; the example's own file fails too
    assert len(failed) == 4, run.stdout + run.stderr
    again = pytest_in(EXAMPLE, "-q", failed[0], "--softmax-suite-backend", spec, bug=True)
    assert again.returncode == 1 and "1 failed" in again.stdout, again.stdout + again.stderr
    # softmax-suite run names the catalogue's folder too (suites/test_forward.py::...): that pastes back too.
    named = pytest_in(EXAMPLE, "-q", "suites/test_forward.py::test_softmax[torch:mykernels:torch_softmax-cpu-"
                      "float32-glossary]", "--softmax-suite-backend", spec)
    assert named.returncode == 0 and "1 passed" in named.stdout, named.stdout + named.stderr


def test_the_plugin_installed_but_not_asked_for_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_modules.py").write_text(
        "import sys\n"
        "def test_nothing_of_the_suite_is_loaded():\n"
        "    loaded = {name for name in sys.modules if name.startswith('softmax_suite')}\n"
        "    assert loaded <= {'softmax_suite', 'softmax_suite.runner', 'softmax_suite.runner.entry',\n"
        "                      'softmax_suite.runner.options', 'softmax_suite.ops', 'softmax_suite.dtypes',\n"
        "                      'softmax_suite.backends', 'softmax_suite.backends.builtin'}, loaded\n"
        "    assert 'numpy' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:randomly"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "softmax-suite" in subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=tmp_path,
                                             capture_output=True, text=True, timeout=300).stdout
