"""Which backends exist and how to load them: the built-in adapters, installed plugins (entry
points of the group `softmax_suite.backends`), and the `module:attr` and `array-api:<module>` specs."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from softmax_suite.backends.array_api_backend import SPEC_PREFIX, load_namespace
from softmax_suite.backends.builtin import BUILTIN, loader
from softmax_suite.backends.custom import load_spec, wrap
from softmax_suite.protocol import OPS, Backend, BackendUnavailable

GROUP = "softmax_suite.backends"


@dataclass(frozen=True)
class Unavailable:
    """A backend that was asked for but cannot run here, and why; or, opt_in, one a run asks only by
    name (backends.builtin.OPT_IN)."""

    name: str
    reason: str
    opt_in: bool = False


class PluginWarning(UserWarning):
    """An installed plugin that is not used: its name is a built-in's, another plugin's, or a spec."""


@dataclass(frozen=True)
class Plugin:
    """A backend that an installed distribution declares in the entry-point group."""

    name: str
    entry_point: metadata.EntryPoint

    @property
    def distribution(self) -> str:
        dist = self.entry_point.dist
        return f"{dist.name} {dist.version}" if dist is not None else "an unnamed distribution"


_warned: set[tuple[str, str]] = set()


def plugins() -> dict[str, Plugin]:
    """The installed plugins by name, in discovery order; one whose name is taken is left out
    with a PluginWarning naming its distribution (a built-in always wins)."""
    found: dict[str, Plugin] = {}
    for entry_point in metadata.entry_points(group=GROUP):
        plugin = Plugin(entry_point.name, entry_point)
        if plugin.name in BUILTIN:
            taken = "the built-in backend of that name is used"
        elif plugin.name in found:
            taken = f"{found[plugin.name].distribution} provides it already"
        elif ":" in plugin.name or "," in plugin.name:
            taken = "a name with ':' or ',' cannot be selected (':' makes a module:attr spec)"
        else:
            found[plugin.name] = plugin
            continue
        message = (f"backend plugin {plugin.name!r} of {plugin.distribution} ({GROUP} entry point "
                   f"{plugin.entry_point.value}) is ignored: {taken}")
        # Once per process and installation: names are listed and checked several times a run.
        dist = plugin.entry_point.dist
        key = (message, str(dist.locate_file("")) if dist is not None else "")
        if key not in _warned:
            _warned.add(key)
            warnings.warn(message, PluginWarning, stacklevel=2)
    return found


def backend_names() -> list[str]:
    """Every backend that can be named: the built-ins, then the installed plugins."""
    return [*BUILTIN, *plugins()]


def check_names(names: list[str]) -> None:
    """Raise ValueError naming any unknown backend, with the valid names and the closest one."""
    known = backend_names()
    for name in names:
        if ":" in name or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        installed = [known_name for known_name in known if known_name not in BUILTIN]
        plugged = f"; installed plugins are {', '.join(installed)}" if installed else ""
        raise ValueError(f"unknown backend {name!r}: built-in backends are {', '.join(BUILTIN)}"
                         f"{plugged}; or give your own as package.module:attr, or "
                         f"{SPEC_PREFIX}<module> for an array API namespace{hint}")


def load(name: str) -> Backend | Unavailable:
    """Load a built-in backend or an installed plugin by name, or a user's spec: `array-api:<module>`
    (unavailable when the module is not installed) or `module:attr`. A spec's other errors
    propagate; a plugin's never do (it becomes Unavailable)."""
    try:
        if name.startswith(SPEC_PREFIX):
            return load_namespace(name)
        if ":" in name:
            return load_spec(name)
        if name not in BUILTIN:
            found = plugins()
            if name in found:
                return _load_plugin(found[name])
            check_names([name])
        return loader(name)()
    except BackendUnavailable as error:
        return Unavailable(name, str(error))


def _is_loader(provided: Any) -> bool:
    """Whether an entry point's object is a load() to call, rather than what wrap() takes: a class,
    an object with op methods, or a softmax function f(x, axis)."""
    if inspect.isclass(provided) or not callable(provided) or any(hasattr(provided, op) for op in OPS):
        return False
    try:
        inspect.signature(provided).bind()
    except (TypeError, ValueError):  # arguments required, or no signature to read
        return False
    return True


def _load_plugin(plugin: Plugin) -> Backend | Unavailable:
    """The plugin's Backend, named as its entry point; whatever its import or load() raises makes
    it Unavailable with the error named, never a crash of the run."""
    origin = f"plugin of {plugin.distribution}, {plugin.entry_point.value}"
    try:
        provided = plugin.entry_point.load()
        if _is_loader(provided):
            provided = provided()
        backend = provided if isinstance(provided, Backend) else wrap(provided, default_name=plugin.name)
    except BackendUnavailable as error:
        return Unavailable(plugin.name, f"{error} ({origin})")
    except Exception as error:  # a broken plugin is reported with the backends; the others still run
        return Unavailable(plugin.name, f"{origin}: failed to load: {type(error).__name__}: {error}")
    return dataclasses.replace(backend, name=plugin.name)
