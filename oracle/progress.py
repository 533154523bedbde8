"""A progress bar (tqdm, on stderr) for oracle work that takes longer than a second."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from tqdm import tqdm

ENVIRONMENT_VARIABLE = "SOFTMAX_SUITE_PROGRESS"
DELAY_S = 1.0
_guard: list[Callable[[], AbstractContextManager]] = []


def set_output_guard(factory: Callable[[], AbstractContextManager] | None) -> None:
    """A context in which the bar may write to the terminal (pytest: capture suspended)."""
    _guard[:] = [factory] if factory is not None else []


def enabled() -> bool:
    """SOFTMAX_SUITE_PROGRESS=1 forces the bar, =0 turns it off; by default, only on a terminal."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if setting not in ("", "0", "1"):
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={setting!r}: use 1 (always show the oracle's "
                         "progress bar), 0 (never), or leave it unset (only on a terminal)")
    return setting == "1" or (setting == "" and sys.stderr.isatty())


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield advance(count); a bar appears once the work has taken more than DELAY_S."""
    if total <= 0 or not enabled():
        yield lambda count: None
        return
    with (_guard[0]() if _guard else nullcontext()), \
            tqdm(total=total, desc=label, unit="el", unit_scale=True, delay=DELAY_S,
                 file=sys.stderr, leave=False) as bar:
        yield bar.update
