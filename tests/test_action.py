"""The GitHub Action (action.yml and its script .github/actions/run.sh) and the example workflow
(docs/softmax-suite-ci.yml): their commands parse with the CLI, uploads always run, nothing waits
for a self-hosted runner, and the script, run for real, explains the missing first baseline and
fails a planted regression and a failing backend."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import metadata
from pathlib import Path

import pytest
import yaml

from softmax_suite.runner.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".github" / "actions" / "run.sh"
ACTION = yaml.safe_load((REPO / "action.yml").read_text())
WORKFLOW = yaml.safe_load((REPO / "docs" / "softmax-suite-ci.yml").read_text())
INPUTS = ACTION["inputs"]
EXPRESSION = re.compile(r"\$\{\{\s*([\w.-]+)\s*\}\}")
# What a matrix or an input holds in a run, where the action's default is empty.
SAMPLES = {"matrix.host": "cpu", "inputs.backend": "numpy", "inputs.device": "cpu",
           "inputs.baseline": "ci/baseline.json", "inputs.args": "--dtype float32 -n 2"}


def steps(document: dict) -> list[dict]:
    """The steps of an action (runs.steps) or of every job of a workflow."""
    if "runs" in document:
        return document["runs"]["steps"]
    return [step for job in document["jobs"].values() for step in job["steps"]]


def sample(text: str) -> str:
    """text with each ${{ inputs.* }} or ${{ matrix.* }} replaced by a value it takes in a run."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name in SAMPLES:
            return SAMPLES[name]
        assert name.startswith("inputs."), f"no sample value for ${{{{ {name} }}}}: add one to SAMPLES"
        return str(INPUTS[name.removeprefix("inputs.")]["default"])
    return EXPRESSION.sub(value, text)


def uses_of_the_action(workflow: dict) -> list[dict]:
    """The `with:` of every step that uses this repository's action (`./` here, owner/softmax-suite@v1
    in another repository)."""
    return [step.get("with", {}) for step in steps(workflow)
            if step.get("uses") == "./" or "/softmax-suite@" in step.get("uses", "")]


def run_argv(given: dict) -> list[str]:
    """The `softmax-suite run` arguments the action's script builds from these inputs (its own
    commands are checked by running it, below)."""
    settings = {name: str(given.get(name, spec["default"])) for name, spec in INPUTS.items()}
    argv = ["run", "--out", settings["out"], "--throughput", settings["throughput"]]
    for name in ("backend", "device", "baseline"):
        argv += [f"--{name}", settings[name]] if settings[name] else []
    return argv + shlex.split(settings["args"])


def test_every_softmax_suite_command_parses() -> None:
    commands = [sample(line.strip()) for document in (ACTION, WORKFLOW) for step in steps(document)
                for line in step.get("run", "").splitlines() if line.strip().startswith("softmax-suite ")]
    assert {shlex.split(c)[1] for c in commands} >= {"merge", "report"}  # the gate job's
    parser = build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])  # exits (fails the test) on an invalid command
    uses = uses_of_the_action(WORKFLOW)
    assert uses, "the example workflow does not use the action"
    samples = {name.removeprefix("inputs."): value for name, value in SAMPLES.items()
               if name.startswith("inputs.")}
    for given in [*uses, samples]:
        parser.parse_args(run_argv({name: sample(str(value)) for name, value in given.items()}))


def test_uploads_always_run_and_the_gate_job_runs_when_a_host_failed() -> None:
    # A failing run is the one whose report is needed: an upload that only follows success loses it.
    uploads = [step for document in (ACTION, WORKFLOW) for step in steps(document)
               if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(uploads) == 2
    for step in uploads:
        assert "always()" in str(step.get("if")), step
    for name, job in WORKFLOW["jobs"].items():
        if job.get("needs"):
            # Without a status function a job is skipped as soon as one it needs failed or was skipped.
            assert re.search(r"!cancelled\(\)|always\(\)", str(job.get("if"))), name


def test_no_job_waits_for_a_self_hosted_runner_by_default() -> None:
    # A job that no runner's labels match is queued for a day, and the jobs that need it with it.
    for name, job in WORKFLOW["jobs"].items():
        labels = [str(label) for label in (job["runs-on"] if isinstance(job["runs-on"], list)
                                           else [job["runs-on"]])]
        entries = job.get("strategy", {}).get("matrix", {}).get("include", [])
        for label in list(labels):  # a runner the matrix chooses: each entry's
            chosen = re.fullmatch(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", label)
            labels += [str(entry.get(chosen.group(1))) for entry in entries] if chosen else []
        if any("self-hosted" in str(label) for label in labels):
            assert "vars." in str(job.get("if")), f"{name}: a self-hosted job must be opted in by a variable"
    assert "self-hosted" in str(WORKFLOW["jobs"]), "the GPU host's example is gone"


def test_the_action_script_and_workflow_agree_on_names() -> None:
    runs = yaml.safe_dump(ACTION["runs"])
    assert set(re.findall(r"inputs\.([\w-]+)", runs)) <= set(INPUTS), "a step reads an input not declared"
    for given in uses_of_the_action(WORKFLOW):
        assert set(given) <= set(INPUTS), f"the workflow gives the action inputs it lacks: {given}"
    # The script reads its settings from SUITE_* variables: each one it reads is set, and only those.
    script = SCRIPT.read_text()
    given_env = {name for step in steps(ACTION) for name in step.get("env", {})}
    assert set(re.findall(r"\b(SUITE_[A-Z_]+)", script)) == given_env
    # Each output the action declares is one the script writes.
    written = set(re.findall(r'^\s*echo "([\w-]+)=', script, re.MULTILINE))
    for name, output in ACTION["outputs"].items():
        step, key = re.fullmatch(r"\$\{\{ steps\.(\w+)\.outputs\.([\w-]+) \}\}", output["value"]).groups()
        assert step == "upload" or key in written, name
    extras = set(metadata("softmax-suite").get_all("Provides-Extra"))
    for given in uses_of_the_action(WORKFLOW):
        assert set(given.get("extras", "").split(",")) - {""} <= extras, given["extras"]


def action_step(step: str, tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess, str, dict]:
    """Run one step of the action's script in tmp_path as GitHub would: (the process, the step
    summary it wrote, its outputs)."""
    bin_dir = Path(sys.executable).parent
    assert shutil.which("softmax-suite", path=str(bin_dir)), f"softmax-suite is not installed in {bin_dir}"
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    summary.unlink(missing_ok=True)
    outputs.unlink(missing_ok=True)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SUITE_")}
    environment.update(PATH=f"{bin_dir}{os.pathsep}{environment['PATH']}", PYTHONPATH=str(REPO),
                       GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(outputs), **settings)
    done = subprocess.run(["bash", str(SCRIPT), step], capture_output=True, text=True, cwd=tmp_path,
                          env=environment, timeout=300)
    written = outputs.read_text() if outputs.exists() else ""
    return done, summary.read_text() if summary.exists() else "", dict(
        line.split("=", 1) for line in written.splitlines())


PLANTED = {"SUITE_BACKEND": "tests.planted_backend:Softmax", "SUITE_THROUGHPUT": "off",
           "SUITE_ARGS": "--op softmax --case random_n1k_s10 -n 0", "SUITE_BASELINE": "ci/baseline.json"}


def test_the_first_baseline_is_explained_and_then_a_planted_regression_fails(tmp_path: Path) -> None:
    done, summary, outputs = action_step("run", tmp_path, **PLANTED, SUITE_OUT="first")
    assert done.returncode == 0 and outputs["exit-code"] == "0", done.stdout + done.stderr
    assert "## softmax-suite: **passed**" in summary
    # No baseline yet is not a failure, but said in the log and the summary with the way out.
    assert "::warning title=softmax-suite: no baseline yet::ci/baseline.json does not exist" in done.stdout
    assert "**No baseline yet**" in summary
    assert "commit its `new-baseline.json` as `ci/baseline.json`" in summary
    assert outputs["new-baseline"] == "first/new-baseline.json"
    (tmp_path / "ci").mkdir()
    shutil.copy(tmp_path / "first" / "new-baseline.json", tmp_path / "ci" / "baseline.json")
    # 3 ULP up stays within softmax's error budget (the check passes) but past the baseline's
    # 0.5 ULP x 2 + 1: only the gate can fail it, so exit 1 shows the baseline was gated against.
    done, summary, outputs = action_step("run", tmp_path, **PLANTED, SUITE_OUT="later", PLANTED_ERROR="3")
    assert done.returncode == 0 and outputs["exit-code"] == "1", done.stdout + done.stderr
    assert "## softmax-suite: **failed**" in summary and "| accuracy | 1 | 0 |" in summary
    assert "## softmax-suite gate: **1 regression(s)**" in summary
    assert ("| fail | `accuracy/planted/cpu/float32/softmax/random_n1k_s10` | "
            "accuracy regressed |") in summary
    assert "No baseline yet" not in summary
    # The last step, after the upload, fails the action on the suite's verdict.
    done, summary, _ = action_step("verdict", tmp_path, SUITE_EXIT_CODE=outputs["exit-code"],
                                   SUITE_ARTIFACT_URL="https://example.invalid/artifact")
    assert done.returncode == 1 and summary == "[Download the report and results](https://example.invalid/artifact)\n"


def test_a_failing_backend_fails_without_a_baseline(tmp_path: Path) -> None:
    # No max shift overflows exp on equal_large (tests/test_bad_implementations.py).
    done, summary, outputs = action_step(
        "run", tmp_path, SUITE_BACKEND="tests.bad_softmax:NoMaxShift", SUITE_THROUGHPUT="off",
        SUITE_ARGS="--op softmax --dtype float32 --case equal_large -n 0")
    assert done.returncode == 0 and outputs["exit-code"] == "1", done.stdout + done.stderr
    assert "## softmax-suite: **failed**" in summary and "| accuracy | 0 | 1 |" in summary
    assert "Not gated: the action was given no `baseline`." in summary


@pytest.mark.parametrize(("settings", "words"), [
    ({"SUITE_ARGS": "--case 'dominant*"}, "args: No closing quotation in \"--case 'dominant*\""),
    ({"SUITE_OUT": ""}, "out: empty; name the folder for the results"),
    ({"SUITE_EXIT_CODE": ""}, "exit-code: '' is no exit status; the run step did not finish"),
])
def test_bad_settings_are_named_with_their_fix(tmp_path: Path, settings: dict, words: str) -> None:
    done, _, _ = action_step("verdict" if "SUITE_EXIT_CODE" in settings else "run", tmp_path, **settings)
    assert done.returncode == 2 and words in done.stdout + done.stderr, done.stdout + done.stderr
