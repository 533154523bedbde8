"""A user's own code as a backend: `--backend package.module:attr`.

attr is either a softmax function f(x, axis) on numpy arrays, or an object (a class is
instantiated without arguments) with any of the op methods and, optionally, the attributes
name, version, devices, dtypes and the hooks to_device(x, device), to_numpy(y),
synchronize(device, value), copy(x) (for throughput's attainable bandwidth; numpy's copy when
there is no to_device) and describe(device). Ops the object lacks are reported as unsupported.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np

from softmax_suite.protocol import DTYPES, OPS, Backend


class SpecError(ValueError):
    """A `module:attr` spec that cannot be loaded; the message says what to fix."""


def load_spec(spec: str) -> Backend:
    """Import module:attr and wrap it in the protocol."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SpecError(f"backend spec {spec!r} is not of the form package.module:attr")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecError(f"cannot import {module_name!r} for backend {spec!r}: {error}; "
                        "is it installed or on PYTHONPATH?") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SpecError(f"module {module_name!r} has no attribute {attr!r} "
                            f"(backend {spec!r})") from None
    return wrap(target, default_name=spec)


def wrap(target: Any, default_name: str) -> Backend:
    """A Backend for a softmax function, or for an object or class with op methods."""
    if inspect.isclass(target):
        target = target()
    ops = {op: getattr(target, op) for op in OPS if callable(getattr(target, op, None))}
    if not ops:
        if not callable(target):
            raise SpecError(f"{default_name!r} is neither callable nor has any of the op "
                            f"methods {', '.join(OPS)}")
        ops = {"softmax": target}
    version = getattr(target, "version", None) or getattr(
        inspect.getmodule(target), "__version__", "unversioned")
    return Backend(
        name=str(getattr(target, "name", None) or default_name),
        version=str(version),
        ops=ops,
        to_device=getattr(target, "to_device", lambda x, device: x),
        to_numpy=getattr(target, "to_numpy", np.asarray),
        devices=tuple(getattr(target, "devices", ("cpu",))),
        dtypes=tuple(getattr(target, "dtypes", DTYPES)),
        synchronize=getattr(target, "synchronize", lambda device, value: None),
        # The attainable bandwidth of throughput: on numpy arrays (no to_device) numpy's copy.
        copy=getattr(target, "copy", None if hasattr(target, "to_device") else np.copy),
        describe=getattr(target, "describe", lambda device: {}),
    )
