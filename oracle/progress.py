"""A progress bar (tqdm, on stderr) for oracle work that takes longer than a second;
SOFTMAX_SUITE_PROGRESS=1 forces it, =0 turns it off, unset it is drawn only on a terminal."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

from tqdm import tqdm

ENVIRONMENT_VARIABLE = "SOFTMAX_SUITE_PROGRESS"
SETTINGS = {"1": "always draw the oracle's progress bar", "0": "never",
            "": "unset: only when stderr is a terminal"}
DELAY_S = 1.0

clock: Callable[[], float] = time.monotonic  # what DELAY_S is measured on (tests replace it)
_guard: Callable[[], AbstractContextManager] = nullcontext
_terminal = True


def set_output_guard(factory: Callable[[], AbstractContextManager] | None, *,
                     terminal: bool = True) -> None:
    """Draw bars inside factory() (pytest: its capture suspended) or, with None, straight to stderr;
    terminal=False: this process has no terminal of its own (a pytest-xdist worker), no bars at all."""
    global _guard, _terminal
    _guard = factory or nullcontext
    _terminal = terminal


def setting() -> str:
    """The value of SOFTMAX_SUITE_PROGRESS ('' when unset); ValueError when it is none of SETTINGS."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if value not in SETTINGS:
        allowed = "; ".join(f"{v} ({what})" if v else what for v, what in SETTINGS.items())
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={value!r} is not a valid setting: use {allowed}")
    return value


class _Advance:
    """advance(count): counts until DELAY_S has passed, then opens the bar (inside the output guard,
    where stderr is the user's) and feeds it."""

    __slots__ = ("bar", "done", "forced", "label", "stack", "start", "total", "waiting")

    def __init__(self, total: int, label: str, forced: bool, stack: ExitStack) -> None:
        self.total, self.label, self.forced, self.stack = total, label, forced, stack
        self.done = 0
        self.bar: tqdm | None = None
        self.waiting = True
        self.start = clock()

    def __call__(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)
            return
        self.done += count
        if self.waiting and clock() - self.start > DELAY_S:
            self.waiting = False
            self.stack.enter_context(_guard())
            if self.forced or sys.stderr.isatty():
                self.bar = self.stack.enter_context(
                    tqdm(total=self.total, initial=self.done, desc=self.label, unit="el",
                         unit_scale=True, file=sys.stderr, leave=False, dynamic_ncols=True))
                self.bar.start_t -= clock() - self.start  # the elapsed time counts from entering
            else:
                self.stack.close()


def _ignore(count: int) -> None:
    pass


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield advance(count) for work of `total` units; a bar labelled `label` appears on stderr
    once more than DELAY_S has passed since entering, and is cleared on leaving."""
    value = setting()
    if total <= 0 or value == "0" or not _terminal:
        yield _ignore
        return
    with ExitStack() as stack:
        yield _Advance(total, label, value == "1", stack)
