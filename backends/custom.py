"""A user's own code as a backend: `--backend FRAMEWORK:package.module:attr` on a framework's arrays
(FRAMEWORK: numpy, torch, jax, mlx, cupy), or `--backend package.module:attr` on numpy arrays.

attr is a softmax function f(x, axis), or an object (a class is instantiated without arguments) with any
of the op methods (softmax(x, axis), ..., softmax_vjp(x, g, axis), ...) and, optionally, the attributes
name, version, devices, dtypes and the hooks to_device(x, device), to_numpy(y), synchronize(device,
value), copy(x) (throughput's attainable bandwidth) and describe(device), which replace the framework's.
An object whose ops take attention's keyword arguments lists them in `options` ("scale", "mask") and
declares `fully_masked` ("nan" or "zero": softmax_suite.protocol); `max_length` bounds the rows it takes.
A loss is a cross_entropy(x, axis, target, reduction, ...) method (and, optionally, cross_entropy_vjp(x,
g, axis, target, reduction, ...)): it always gets target= and reduction=, and only the loss options it
lists in `options` ("ignore_index", "label_smoothing", "weight"); a case that sets another is not asked
of it. A plain function is only ever a softmax, never a loss.

The framework's built-in adapter (its load(functions)) runs the user's functions: its conversions
(bfloat16 included), devices, synchronisation and copy, and the VJPs of the forward ops through its
automatic differentiation (torch, jax, mlx), so that a hand-written backward is what they test. A VJP
method of the object replaces the framework's. A VJP that cannot be taken is unsupported, with why.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from softmax_suite.backends.builtin import BUILTIN, FRAMEWORKS, loader
from softmax_suite.ops import FORWARD_OPS, LOSS_OPS, OPS, is_vjp
from softmax_suite.protocol import FULLY_MASKED, OPTIONS, Backend

# The frameworks without automatic differentiation: a user's VJPs there are only the object's methods.
NO_AUTODIFF = ("numpy", "cupy")
# What an error on numpy arrays says when the function wanted a framework's: the spec to use instead.
FRAMEWORK_HINTS = {"Tensor": "torch", "jax": "jax", "mlx": "mlx", "cupy": "cupy"}


class SpecError(ValueError):
    """A backend spec that cannot be loaded; the message says what to fix."""


def split_spec(spec: str) -> tuple[str | None, str]:
    """(framework, package.module:attr) of `FRAMEWORK:package.module:attr`; (None, spec) of a spec
    without a framework."""
    first, _, rest = spec.partition(":")
    if ":" in rest and first in BUILTIN:
        if first not in FRAMEWORKS:
            raise SpecError(f"backend {spec!r}: {first} does not run a user's functions; the frameworks that "
                            f"do are {', '.join(FRAMEWORKS)} (a Triton kernel called on torch tensors is "
                            f"torch:{rest})")
        return first, rest
    return None, spec


def load_spec(spec: str) -> Backend:
    """Import the spec's package.module:attr and make it a Backend on its framework's arrays."""
    framework, target = split_spec(spec)
    module_name, _, attr = target.partition(":")
    if not module_name or not attr or ":" in attr:
        raise SpecError(f"backend spec {spec!r} is not of the form package.module:attr or "
                        f"FRAMEWORK:package.module:attr (FRAMEWORK: {', '.join(FRAMEWORKS)})")
    # A module in the folder the command runs in is found, as `python -m` finds it (last, so that
    # it shadows nothing installed).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecError(f"cannot import {module_name!r} for backend {spec!r}: {error}; "
                        "is it installed or on PYTHONPATH?") from None
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            hint = (f"; a function on {module_name} arrays is given as {module_name}:package.module:attr"
                    if framework is None and module_name in FRAMEWORKS else "")
            raise SpecError(f"module {module_name!r} has no attribute {attr!r} "
                            f"(backend {spec!r}){hint}") from None
    return wrap(found, default_name=spec, framework=framework)


def wrap(target: Any, default_name: str, framework: str | None = None) -> Backend:
    """A Backend for a softmax function, or for an object or class with op methods, on the arrays of
    framework (None: numpy arrays, or the object's own through its hooks)."""
    if framework is not None and framework not in FRAMEWORKS:
        raise SpecError(f"framework {framework!r} does not run a user's functions: the frameworks that do "
                        f"are {', '.join(FRAMEWORKS)}")
    if inspect.isclass(target):
        target = target()
    methods = {op: getattr(target, op) for op in OPS if callable(getattr(target, op, None))}
    if not methods:
        if not callable(target):
            raise SpecError(f"{default_name!r} is neither callable nor has any of the op "
                            f"methods {', '.join(OPS)}")
        methods = {"softmax": target}
    forwards = {op: function for op, function in methods.items() if not is_vjp(op)}
    make = loader(framework or "numpy")
    base: Backend = make(forwards)
    # An adapter that embeds the user's functions (torch-attention: an attention function, through
    # Q = X, K = V = I) makes its ops of them; the functions given replace none of its ops.
    embeds = bool(getattr(make, "embeds_functions", False))
    ops = {**base.ops, **{op: function for op, function in methods.items()
                          if not (embeds and op in forwards)}}
    if framework is None:
        ops = {op: _hinted(function, op) for op, function in ops.items()}
    unsupported = {key: why for key, why in base.unsupported.items() if key[0] not in methods}
    without = framework or "numpy"
    declared = tuple(getattr(target, "dtypes", base.dtypes))
    for op in FORWARD_OPS:
        vjp = f"{op}_vjp"
        if op in ops and vjp not in ops and without in NO_AUTODIFF:
            signature = "x, g, axis, target, reduction, ..." if op in LOSS_OPS else "x, g, axis"
            unsupported.update({(vjp, dtype): f"{without} has no automatic differentiation to take {vjp} "
                                f"through the {op} given: give the object a {vjp}({signature}) method"
                                for dtype in declared})
    version = str(getattr(target, "version", None) or getattr(
        inspect.getmodule(target), "__version__", "unversioned"))
    own_arrays = framework is None and hasattr(target, "to_device")
    devices = tuple(getattr(target, "devices", base.devices))
    absent = {device: why for device, why in base.absent_devices.items() if device in devices}
    absent.update({device: f"{framework or 'numpy'} has no device {device!r} here"
                   for device in devices if device not in base.devices and device not in absent})
    return Backend(
        name=str(getattr(target, "name", None) or default_name),
        version=f"{version} ({framework} {base.version})" if framework else version,
        ops=ops,
        to_device=getattr(target, "to_device", base.to_device),
        to_numpy=getattr(target, "to_numpy", base.to_numpy),
        devices=tuple(device for device in devices if device in base.devices or own_arrays),
        absent_devices={} if own_arrays else absent,
        dtypes=declared,
        unsupported=unsupported,
        synchronize=getattr(target, "synchronize", base.synchronize),
        # On its own arrays (a to_device hook), the object's copy or none: numpy's would time another thing.
        copy=getattr(target, "copy", None if own_arrays else base.copy),
        describe=getattr(target, "describe", (lambda device: {}) if own_arrays else base.describe),
        options=_declared_options(target, base.options),
        fully_masked=_declared_convention(target, base.fully_masked),
        max_length=_declared_length(target, base.max_length),
        finite_only=bool(getattr(target, "finite_only", base.finite_only)),
    )


def _declared_options(target: Any, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The keyword arguments the object's ops take (attribute options; else the framework's), each one of
    OPTIONS."""
    options = tuple(getattr(target, "options", default))
    unknown = [option for option in options if option not in OPTIONS]
    if unknown:
        raise SpecError(f"options {unknown!r}: an op takes only {', '.join(OPTIONS)} as keyword arguments")
    return options


def _declared_length(target: Any, default: int | None = None) -> int | None:
    """The longest row the object's ops take (attribute max_length: a kernel's head dimension; else the
    framework's)."""
    length = getattr(target, "max_length", default)
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise SpecError(f"max_length = {length!r}: give the longest row the ops take, a positive integer")
    return length


def _declared_convention(target: Any, default: str = "nan") -> str:
    """What the object's forward ops give on a fully masked row (attribute fully_masked; else the
    framework's)."""
    convention = getattr(target, "fully_masked", default)
    if convention not in FULLY_MASKED:
        raise SpecError(f"fully_masked = {convention!r}: declare one of {', '.join(FULLY_MASKED)} (what "
                        "softmax gives on a row whose every entry is masked)")
    return convention


def _hinted(function: Any, op: str) -> Any:
    """function, called on numpy arrays; an error that shows it wanted a framework's arrays names the
    spec that gives them (`--backend torch:package.module:attr`)."""
    def call(*args: Any, **options: Any) -> Any:
        try:
            return function(*args, **options)
        except Exception as error:
            text = f"{type(error).__name__} {error}"
            wanted = next((name for word, name in FRAMEWORK_HINTS.items() if word in text), None)
            if wanted is None or "numpy" not in text.lower():
                raise
            raise TypeError(f"{error} -- {op} was called on numpy arrays; a function on {wanted} arrays is "
                            f"given as --backend {wanted}:package.module:attr") from error
    return call
