"""Any array API namespace (2023.12 standard functions only) as a backend: built in as
`array_api_strict`, and `--backend array-api:<module>` for any other (torch through array_api_compat).

The standard has no scale or mask argument: attention's forms are composed as a user of the standard
writes them, xp.where(mask, x * scale, -inf) on the rows, then the shifted formulas; the VJPs (computed
in closed form, as numpy_backend's) times scale and 0 where masked, their cotangent 0 where masked.
A row with nothing kept gives softmax and log_softmax NaN (0/0), logsumexp -inf.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from softmax_suite.backends.custom import SpecError
from softmax_suite.protocol import ATTENTION_OPTIONS, DTYPES, OPS, Backend, BackendUnavailable

SPEC_PREFIX = "array-api:"
HALF = ("float16", "bfloat16")


def _float_dtypes(xp: Any, device: Any) -> dict[str, Any]:
    """The suite's dtypes the namespace offers on device, by name."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        offered = dict(info().dtypes(device=device, kind="real floating"))
    else:
        offered = {name: getattr(xp, name) for name in ("float32", "float64") if hasattr(xp, name)}
    # Half precision is outside the standard, so info().dtypes() never lists it: a namespace that
    # has it exposes it by name.
    offered |= {name: getattr(xp, name) for name in HALF if hasattr(xp, name)}
    return {name: offered[name] for name in DTYPES if name in offered}


class _Ops:
    """The six ops on one namespace; rows are moved to the last axis, half precision is computed
    in float32 and rounded once at the end (a float16 sum of 65536 ones overflows).

    Attention's forms are composed on those rows as numpy_backend composes them, with the namespace's
    own functions: xp.where(mask, rows * scale, -inf); a VJP's cotangent is 0 where masked, its result
    times scale (the chain rule) and 0 where masked."""

    def __init__(self, xp: Any, dtypes: dict[str, Any]) -> None:
        self.xp = xp
        self.half = tuple(dtypes[name] for name in HALF if name in dtypes)
        self.float32 = xp.float32

    def _rows(self, x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        """x with the reduction axis last, widened, times scale, -inf where mask is False."""
        xp = self.xp
        rows = xp.moveaxis(x, axis, -1)
        rows = xp.astype(rows, self.float32) if x.dtype in self.half else rows
        if scale is not None:
            # scale is already rounded into x's dtype: exact in the widened one too.
            rows = rows * scale
        if mask is not None:
            rows = xp.where(self._kept(mask, x, axis), rows, self._constant(-xp.inf, rows))
        return rows

    def _kept(self, mask: Any, x: Any, axis: int) -> Any:
        """mask broadcast to x, the reduction axis last (as _rows lays x out)."""
        xp = self.xp
        return xp.moveaxis(xp.broadcast_to(mask, x.shape), axis, -1)

    def _back(self, rows: Any, x: Any, axis: int) -> Any:
        xp = self.xp
        return xp.astype(xp.moveaxis(rows, -1, axis), x.dtype)

    def _gradient(self, dx: Any, x: Any, axis: int, scale: float | None, mask: Any) -> Any:
        """A VJP's rows back in x's layout and dtype: times scale (the chain rule), 0 where masked."""
        if scale is not None:
            dx = dx * scale
        if mask is not None:
            dx = self.xp.where(self._kept(mask, x, axis), dx, self._constant(0.0, dx))
        return self._back(dx, x, axis)

    def _cotangent(self, g: Any, axis: int, mask: Any) -> Any:
        """g's rows, 0 where masked: a masked output is a constant, its cotangent reaches nothing."""
        rows = self._rows(g, axis)
        if mask is None:
            return rows
        return self.xp.where(self._kept(mask, g, axis), rows, self._constant(0.0, rows))

    def _constant(self, value: float, like: Any) -> Any:
        # The 2023.12 where() takes arrays only; python scalars came in 2024.12.
        return self.xp.asarray(value, dtype=like.dtype, device=like.device)

    def _softmax_rows(self, rows: Any) -> Any:
        xp = self.xp
        if rows.shape[-1] == 0:  # the max of an empty row is implementation-defined (numpy raises)
            return rows
        # NaN propagates through max, and inf - inf is NaN: NaN and +inf rows come out NaN, as does
        # an all -inf row (0/0), as the policy says; -inf entries give exp(-inf) = +0.
        e = xp.exp(rows - xp.max(rows, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def _shifted(self, rows: Any) -> tuple[Any, Any, Any]:
        """(a, d, t): row max, d = x - a, and t = the sum of exp(d) over every entry but one
        argmax, so that the row sum is 1 + t and log1p(t) keeps t's relative accuracy."""
        xp = self.xp
        a = xp.max(rows, axis=-1, keepdims=True)
        d = rows - a
        first = xp.arange(rows.shape[-1], device=rows.device) == xp.argmax(rows, axis=-1, keepdims=True)
        t = xp.sum(xp.where(first, self._constant(0.0, rows), xp.exp(d)), axis=-1, keepdims=True)
        return a, d, t

    def softmax(self, x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        return self._back(self._softmax_rows(self._rows(x, axis, scale, mask)), x, axis)

    def log_softmax(self, x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        xp = self.xp
        rows = self._rows(x, axis, scale, mask)
        if rows.shape[-1] == 0:
            return self._back(rows, x, axis)
        a, d, t = self._shifted(rows)
        # At a +inf entry d = inf - inf is NaN, but the finite entries' d is -inf: the policy
        # makes the whole row NaN. NaN and all -inf rows are NaN already.
        z = xp.where((a > 0) & xp.isinf(a), self._constant(xp.nan, rows), d - xp.log1p(t))
        return self._back(z, x, axis)

    def logsumexp(self, x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        xp = self.xp
        rows = self._rows(x, axis, scale, mask)
        if rows.shape[-1] == 0:
            return xp.full(rows.shape[:-1], -xp.inf, dtype=x.dtype, device=x.device)
        a, _, t = self._shifted(rows)
        # A row with +inf, or only -inf, has a = +-inf: logsumexp is a itself (not inf - inf).
        lse = xp.where(xp.isinf(a), a, a + xp.log1p(t))
        return xp.astype(lse[..., 0], x.dtype)

    def softmax_vjp(self, x: Any, g: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        xp = self.xp
        y, gr = self._softmax_rows(self._rows(x, axis, scale, mask)), self._cotangent(g, axis, mask)
        return self._gradient(y * (gr - xp.sum(gr * y, axis=-1, keepdims=True)), x, axis, scale, mask)

    def log_softmax_vjp(self, x: Any, g: Any, axis: int, scale: float | None = None,
                        mask: Any = None) -> Any:
        xp = self.xp
        y, gr = self._softmax_rows(self._rows(x, axis, scale, mask)), self._cotangent(g, axis, mask)
        return self._gradient(gr - y * xp.sum(gr, axis=-1, keepdims=True), x, axis, scale, mask)

    def logsumexp_vjp(self, x: Any, g: Any, axis: int, scale: float | None = None,
                      mask: Any = None) -> Any:
        xp = self.xp
        rows = self._rows(x, axis, scale, mask)
        gr = xp.expand_dims(xp.astype(g, rows.dtype), axis=-1)
        return self._gradient(self._softmax_rows(rows) * gr, x, axis, scale, mask)


def _converters(xp: Any, device: Any, dtypes: dict[str, Any]) -> tuple[Callable, Callable]:
    """(to_device, to_numpy), both keeping the bits. bfloat16 (ml_dtypes in numpy) travels as
    float32, which holds every bfloat16 exactly (few namespaces take ml_dtypes arrays, and the
    standard has no bit cast); only a NaN's sign and payload may change (torch's cast makes every
    bfloat16 NaN 0xFFFF)."""
    bfloat16 = dtypes.get("bfloat16")

    def to_device(x: np.ndarray, device_name: str) -> Any:
        if x.dtype.name == "bfloat16" and bfloat16 is not None:
            return xp.astype(xp.asarray(x.astype(np.float32), device=device), bfloat16)
        # A writable copy that the namespace may share: the suite's inputs are read-only, which
        # torch warns of.
        return xp.asarray(np.array(x), device=device)

    def to_numpy(y: Any) -> np.ndarray:
        if bfloat16 is not None and y.dtype == bfloat16:
            return to_numpy(xp.astype(y, xp.float32)).astype(ml_dtypes.bfloat16)
        return np.from_dlpack(y) if hasattr(y, "__dlpack__") else np.asarray(y)

    return to_device, to_numpy


def adapter(xp: Any, name: str, device: Any = None, device_name: str = "cpu",
            version: str | None = None) -> Backend:
    """A Backend computing on namespace xp's device (its default one when None), which the suite
    calls device_name; version defaults to xp.__version__. Nothing synchronises: the standard has
    no such call, so a namespace that dispatches asynchronously is timed to its dispatch."""
    info = getattr(xp, "__array_namespace_info__", None)
    if device is None and info is not None:
        device = info().default_device()
    dtypes = _float_dtypes(xp, device)
    ops = _Ops(xp, dtypes)
    to_device, to_numpy = _converters(xp, device, dtypes)
    return Backend(
        name=name,
        version=version or str(getattr(xp, "__version__", "unversioned")),
        ops={op: getattr(ops, op) for op in OPS if hasattr(ops, op)},
        to_device=to_device,
        to_numpy=to_numpy,
        devices=(device_name,),
        dtypes=tuple(dtypes),
        copy=lambda x: xp.asarray(x, copy=True),
        options=ATTENTION_OPTIONS,
        # A row with nothing kept is all -inf: the shifted softmax gives 0/0, NaN (measured on
        # array_api_strict and array-api:numpy), log_softmax NaN, logsumexp -inf.
        fully_masked="nan",
    )


def namespace(module: Any) -> Any:
    """The array API namespace of a module: the module itself when it is one (numpy>=2,
    array_api_strict, jax.numpy), else array_api_compat's wrapper of it (torch, cupy, dask)."""
    module_name = module.__name__
    if hasattr(module, "__array_namespace_info__"):
        return module
    try:
        import array_api_compat
    except ImportError:
        raise BackendUnavailable(f"{module_name!r} is not an array API namespace; array-api-compat "
                                 "wraps the common ones: pip install array-api-compat") from None
    try:
        return array_api_compat.array_namespace(module.asarray(0.0))
    except (AttributeError, TypeError) as error:
        raise SpecError(f"{module_name!r} is not an array library that array_api_compat knows "
                        f"({error})") from None


def load_namespace(spec: str) -> Backend:
    """`array-api:<module>`: the adapter on that module's namespace."""
    module_name = spec.removeprefix(SPEC_PREFIX)
    if not module_name:
        raise SpecError(f"backend spec {spec!r} names no module: {SPEC_PREFIX}<module>, e.g. "
                        f"{SPEC_PREFIX}numpy")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendUnavailable(f"cannot import {module_name!r} ({error})") from None
    # jax.numpy has no __version__ of its own; its package does.
    version = getattr(importlib.import_module(module_name.partition(".")[0]), "__version__", None)
    return adapter(namespace(module), spec, version=str(version) if version else None)


def load() -> Backend:
    try:
        import array_api_strict
    except ImportError as error:
        raise BackendUnavailable(f"array-api-strict is not installed ({error}); "
                                 "pip install array-api-strict") from None
    return adapter(array_api_strict, "array_api_strict")
