"""The oracle's progress bar: silent for short work, drawn after a second when allowed, off in
xdist workers, visible past pytest's capture, and a clear error for a bad SOFTMAX_SUITE_PROGRESS."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from softmax_suite.oracle import progress as progress_module
from softmax_suite.oracle.progress import ENVIRONMENT_VARIABLE, progress

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
LABEL = "oracle softmax float32 (65536,)"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock, and the module's output as outside pytest (the plugin sets a capture guard)."""
    fake = FakeClock()
    monkeypatch.setattr(progress_module, "clock", fake)
    monkeypatch.setattr(progress_module, "_guard", progress_module._guard)
    monkeypatch.setattr(progress_module, "_terminal", progress_module._terminal)
    progress_module.set_output_guard(None)
    return fake


def work(clock: FakeClock, seconds_per_step: float, steps: int = 3, count: int = 100) -> None:
    with progress(steps * count, LABEL) as advance:
        for _ in range(steps):
            clock.now += seconds_per_step
            advance(count)


def test_work_under_a_second_draws_nothing(clock, monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    work(clock, 0.3)  # 0.9 s in all
    assert capsys.readouterr().err == ""


def test_work_over_a_second_draws_the_label_and_the_total_when_forced(clock, monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    work(clock, 0.6)
    err = capsys.readouterr().err
    assert LABEL in err
    assert "/300" in err  # done/total
    assert "200/300" in err  # the bar opens after the second step, with what was done before


def test_zero_turns_the_bar_off(clock, monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "0")
    work(clock, 0.6)
    assert capsys.readouterr().err == ""


def test_unset_draws_only_on_a_terminal(clock, monkeypatch, capsys) -> None:
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    work(clock, 0.6)  # capsys' stderr is no terminal
    assert capsys.readouterr().err == ""


def test_an_xdist_worker_draws_nothing_even_when_forced(clock, monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    progress_module.set_output_guard(None, terminal=False)
    work(clock, 0.6)
    assert capsys.readouterr().err == ""


def test_the_output_guard_is_held_only_while_a_bar_is_drawn(clock, monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    events = []

    @contextmanager
    def guard():
        events.append("enter")
        yield
        events.append("exit")

    progress_module.set_output_guard(guard)
    work(clock, 0.3)
    assert events == []
    work(clock, 0.6)
    assert events == ["enter", "exit"]


@pytest.mark.parametrize("value", ["yes", "2", "true", " 1"])
def test_a_bad_setting_names_the_variable_and_the_allowed_values(clock, monkeypatch, value) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, value)
    with pytest.raises(ValueError, match=ENVIRONMENT_VARIABLE) as raised, progress(10, LABEL):
        pass
    message = str(raised.value)
    assert repr(value) in message and "1 (" in message and "0 (" in message and "unset" in message


def test_the_bar_shows_past_pytest_capture(pytester: pytest.Pytester, monkeypatch) -> None:
    """In a pytest run with the suite's plugin and capture on, a forced bar reaches the terminal."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    pytester.makepyfile(test_bar=f"""
        from softmax_suite.oracle import progress as module

        def test_long_oracle_work(monkeypatch):
            now = [0.0]
            monkeypatch.setattr(module, "clock", lambda: now[0])
            with module.progress(300, {LABEL!r}) as advance:
                for _ in range(3):
                    now[0] += 0.6
                    advance(100)
    """)
    result = pytester.runpytest_subprocess("-p", "softmax_suite.runner.plugin", "-p", "no:cacheprovider",
                                           "-p", "no:hypothesispytest", "--softmax-suite-backend", "numpy")
    assert result.ret == pytest.ExitCode.OK
    assert LABEL in result.stderr.str()


def test_a_bad_setting_is_a_usage_error_of_the_suite(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "on")
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest_subprocess("-p", "softmax_suite.runner.plugin", "-p", "no:cacheprovider",
                                           "-p", "no:hypothesispytest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{ENVIRONMENT_VARIABLE}='on'" in result.stderr.str()
