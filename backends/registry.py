"""Which backends exist and how to load them: the built-in adapters and `module:attr` specs."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

from backends.custom import load_spec
from backends.protocol import Backend, BackendUnavailable

BUILTIN: dict[str, str] = {
    "numpy": "backends.numpy_backend",
    "scipy": "backends.scipy_backend",
    "torch": "backends.torch_backend",
    "jax": "backends.jax_backend",
}


@dataclass(frozen=True)
class Unavailable:
    """A backend that was asked for but cannot run here, and why."""

    name: str
    reason: str


def check_names(names: list[str]) -> None:
    """Raise ValueError naming any unknown backend, with the valid names and the closest one."""
    for name in names:
        if ":" in name or name in BUILTIN:
            continue
        close = difflib.get_close_matches(name, BUILTIN, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {name!r}: built-in backends are "
                         f"{', '.join(BUILTIN)}, or give your own as package.module:attr{hint}")


def load(name: str) -> Backend | Unavailable:
    """Load a built-in backend by name, or a user's `module:attr` (whose errors propagate)."""
    if ":" in name:
        return load_spec(name)
    check_names([name])
    try:
        return importlib.import_module(BUILTIN[name]).load()
    except BackendUnavailable as error:
        return Unavailable(name, str(error))
