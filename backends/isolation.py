"""--isolate: each backend is loaded and runs in a worker process of its own, started afresh after it
crashed or was killed; the suite's process never imports it, and knows it by the worker's description.
Requests and outputs cross a pipe as a JSON header and raw array bytes, never as pickle."""

from __future__ import annotations

import atexit
import ctypes
import faulthandler
import json
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NoReturn

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided

from softmax_suite.backends.calls import (
    HOW_TO_RAISE,
    describe_error,
    last_frames,
    output_of,
)
from softmax_suite.backends.registry import Unavailable, load
from softmax_suite.protocol import Backend

STARTUP_S = 120.0  # importing a framework in a fresh process (torch, jax) is no case's time
GRACE_S = 2.0  # from SIGTERM (faulthandler writes the stack) to SIGKILL
# A fresh interpreter: forking a process that runs torch or jax threads is unsafe.
CONTEXT = multiprocessing.get_context("spawn")
PR_SET_PDEATHSIG = 1


class WorkerFailure(Exception):
    """A call that did not come back: its kind (error, timeout or crash), what happened (to follow the
    call's label) and the worker's traceback or stack dump."""

    def __init__(self, kind: str, text: str, trace: str = "") -> None:
        super().__init__(text)
        self.kind = kind
        self.trace = trace


# The wire: a message of JSON, then one message of raw bytes per array it describes.

def _dtype_name(dtype: np.dtype) -> str:
    # ml_dtypes' types have no numpy descriptor ('<V2' is any two bytes): they go by name.
    if dtype.type.__module__ == ml_dtypes.__name__:
        return dtype.name
    return dtype.str


def _dtype(name: str) -> np.dtype:
    return np.dtype(getattr(ml_dtypes, name)) if name.isidentifier() else np.dtype(name)


def pack(array: np.ndarray) -> tuple[dict, np.ndarray]:
    """An array's header entry and the buffer to send. A strided array keeps its strides, with the
    span of memory they cover: a case's memory layout is part of its question."""
    itemsize = array.dtype.itemsize
    meta = {"dtype": _dtype_name(array.dtype), "shape": list(array.shape), "strides": None}
    strided = array.size and not array.flags.c_contiguous and all(
        s > 0 and s % itemsize == 0 for s in array.strides)
    if strided:
        span = 1 + sum((n - 1) * s // itemsize for n, s in zip(array.shape, array.strides, strict=True))
        meta["strides"] = list(array.strides)
        # Through unsigned integers: numpy's as_strided cannot rebuild a float8 dtype ('<f1').
        flat = as_strided(array.view(f"u{itemsize}"), shape=(span,), strides=(itemsize,)).view(array.dtype)
    else:
        flat = np.ascontiguousarray(array).reshape(-1)
    meta["nbytes"] = flat.nbytes
    return meta, flat


def send(conn: Connection, header: dict, arrays: list[np.ndarray]) -> None:
    packed = [pack(a) for a in arrays]
    # default=str: a backend's device description may hold a library's own objects (versions, enums).
    conn.send_bytes(json.dumps({**header, "arrays": [meta for meta, _ in packed]}, default=str).encode())
    for _, flat in packed:
        conn.send_bytes(np.ascontiguousarray(flat).view(np.uint8))


def receive(conn: Connection) -> tuple[dict, list[np.ndarray]]:
    """A header and its arrays, read-only like the suite's inputs. EOFError when the other end is gone."""
    header = json.loads(conn.recv_bytes())
    arrays = []
    for meta in header["arrays"]:
        dtype = _dtype(meta["dtype"])
        # recv_bytes_into an array of the right dtype: aligned, and no copy of the bytes.
        flat = np.empty(meta["nbytes"] // dtype.itemsize, dtype=dtype)
        if meta["nbytes"]:
            conn.recv_bytes_into(flat.view(np.uint8))
        else:
            conn.recv_bytes()
        flat.flags.writeable = False
        if meta["strides"] is None:
            arrays.append(flat.reshape(meta["shape"]))
        else:
            raw = as_strided(flat.view(f"u{flat.itemsize}"), shape=meta["shape"], strides=meta["strides"],
                             writeable=False)
            arrays.append(raw.view(flat.dtype))
    return header, arrays


# The worker process.

def _die_with_parent() -> None:
    """A worker stuck in a backend call dies with the process that started it, even a killed one."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def describe(backend: Backend) -> dict:
    """What the suite's process needs of a backend it does not load, as JSON: its name and version,
    devices, dtypes, ops and what it does not support, and each device's description (for the run's
    environment; one that raises is described by its error, as runner.environment does)."""
    devices = {}
    for device in backend.devices:
        try:
            devices[device] = dict(backend.describe(device))
        except Exception as error:  # a description is information, never a failure
            devices[device] = {"unavailable": f"{type(error).__name__}: {error}"}
    return {"name": backend.name, "version": backend.version, "ops": list(backend.ops),
            "devices": list(backend.devices), "absent_devices": dict(backend.absent_devices),
            "dtypes": list(backend.dtypes),
            "unsupported": [[op, dtype, why] for (op, dtype), why in backend.unsupported.items()],
            "options": list(backend.options), "fully_masked": backend.fully_masked,
            "max_length": backend.max_length, "finite_only": backend.finite_only, "descriptions": devices}


def serve(spec: str, conn: Connection, fault_file: str) -> None:
    """The worker's life: load the backend by its name, describe it or say why it could not load it
    (failure: "usage" for a spec that names nothing loadable, "unavailable", or "error"), then answer
    calls until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it ends this process
    _die_with_parent()
    with open(fault_file, "w") as faults:
        # Where a crash or the parent's SIGTERM at a timeout found the backend, for the record.
        faulthandler.enable(faults)
        faulthandler.register(signal.SIGTERM, faults, chain=True)
        try:
            backend = load(spec)
        except ValueError as error:  # a spec error (SpecError): a usage error in the parent, as without
            send(conn, {"ok": False, "failure": "usage", "text": str(error), "traceback": ""}, [])
            return
        except Exception as error:  # the parent reports it: the backend is unavailable, or a call's error
            send(conn, {"ok": False, "failure": "error", "text": f"{type(error).__name__}: {error}",
                        "traceback": last_frames(error)}, [])
            return
        if isinstance(backend, Unavailable):
            send(conn, {"ok": False, "failure": "unavailable", "text": backend.reason, "traceback": ""}, [])
            return
        send(conn, {"ok": True, "backend": describe(backend)}, [])
        while True:
            try:
                request, inputs = receive(conn)
            except EOFError:
                return
            try:
                # Array options (a mask, a loss's targets and weights) are sent after the op's own inputs.
                named = request.get("array_options", [])
                options = {**request.get("keywords", {}), **dict(zip(named, inputs[len(inputs) - len(named):],
                                                                     strict=True))}
                inputs = inputs[:len(inputs) - len(named)]
                got = output_of(backend, request["op"], request["device"], request["axis"], inputs, options)
            except BaseException as error:  # whatever the backend does is the parent's to record
                send(conn, {"ok": False, "text": describe_error(error), "traceback": last_frames(error)}, [])
            else:
                send(conn, {"ok": True}, [got])


# The parent's side.

def _backend_frames(dump: str) -> str:
    """faulthandler's dump down to the frame that called the backend: the worker's own frames
    below it, and the list of extension modules after it, say nothing of the backend."""
    lines = dump.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if line.rstrip().endswith(f" in {serve.__name__}")
                and __file__ in line), len(lines))
    return "".join(lines[:end])


def _death(code: int | None) -> str:
    if code is None:
        return "closed its pipe without an answer"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        return f"died with {name} (signal {-code})"
    return f"exited with status {code}" if code else "exited (status 0) without an answer"


LIVE: set[Worker] = set()  # the workers this process runs now, for shutdown()
CALL_DEATH = "; the next call starts a fresh one"


class Worker:
    """The parent's end of one backend's worker process: started at the first call, and afresh after
    it died or was killed."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.faults: Path | None = None

    def call(self, op: str, device: str, axis: int, inputs: list[np.ndarray], limit: float,
             options: dict[str, Any] | None = None) -> np.ndarray:
        """The op's output, or WorkerFailure: the backend's error, a timeout (the worker is killed at
        the limit; 0: none) or a crash."""
        options = options or {}
        named = [name for name, value in options.items() if isinstance(value, np.ndarray)]
        keywords = {name: value for name, value in options.items() if name not in named}
        if self.process is None:
            loaded = self.start(limit)
            if not loaded["ok"]:
                raise WorkerFailure("error", f"could not be loaded in its worker process: {loaded['text']}",
                                    loaded["traceback"])
        try:
            send(self.conn, {"op": op, "device": device, "axis": axis, "keywords": keywords,
                             "array_options": named}, [*inputs, *(options[name] for name in named)])
        except OSError:  # the pipe broke: it died since its last answer
            raise self._died(CALL_DEATH) from None
        reply, arrays = self._reply(limit, f"no result within the case timeout of {limit:g} s", CALL_DEATH)
        if not reply["ok"]:
            raise WorkerFailure("error", reply["text"], reply["traceback"])
        return arrays[0]

    def close(self) -> None:
        """End the worker: it reads the closed pipe and returns; one that does not is killed."""
        if self.process is None:
            return
        self.conn.close()
        self.process.join(GRACE_S)
        self._stop()

    def start(self, limit: float) -> dict:
        """Start the worker process: its first message, the backend it loaded described ("ok" and
        "backend": describe's) or why it could not load it ("failure", "text" and "traceback", as
        serve sends them). WorkerFailure when it crashed or hung meanwhile (killed past the limit, or
        STARTUP_S if longer; 0: none)."""
        parent, child = CONTEXT.Pipe()
        handle, path = tempfile.mkstemp(prefix="softmax-suite-worker-", suffix=".txt")
        os.close(handle)
        process = CONTEXT.Process(target=serve, args=(self.spec, child, path), daemon=True,
                                  name=f"softmax-suite backend {self.spec}")
        process.start()
        child.close()  # else the pipe outlives the worker, and its death reads as silence
        self.process, self.conn, self.faults = process, parent, Path(path)
        LIVE.add(self)
        startup = max(limit, STARTUP_S) if limit else 0.0
        reply, _ = self._reply(startup, f"the worker process did not load the backend within {startup:g} s",
                               " while it loaded the backend")
        if not reply["ok"]:
            self.close()
        return reply

    def _reply(self, limit: float, late: str, death: str) -> tuple[dict, list[np.ndarray]]:
        """The worker's next message; WorkerFailure when it is late (then killed) or died (death
        follows the cause in the message)."""
        if not wait([self.conn, self.process.sentinel], timeout=limit or None):
            raise self._killed(late)
        try:
            return receive(self.conn)
        except (EOFError, OSError):
            raise self._died(death) from None

    def _killed(self, late: str) -> WorkerFailure:
        self.process.terminate()
        self.process.join(GRACE_S)
        trace = self._stop()
        return WorkerFailure("timeout", f"timed out: {late}; its worker process was killed; {HOW_TO_RAISE}",
                             trace)

    def _died(self, death: str) -> WorkerFailure:
        self.process.join(GRACE_S)  # the pipe closes a moment before the exit status is known
        code = self.process.exitcode
        trace = self._stop()
        return WorkerFailure("crash", f"crashed: the backend process {_death(code)}{death}", trace)

    def _stop(self) -> str:
        """Kill the process if it still runs, forget it, and return what faulthandler wrote."""
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        try:
            trace = _backend_frames(self.faults.read_text(errors="replace"))
            self.faults.unlink()
        except OSError:
            trace = ""
        LIVE.discard(self)
        self.process = self.conn = self.faults = None
        return trace


@atexit.register
def shutdown() -> None:
    """End every worker process this process started (at the end of the session, and at exit)."""
    workers = list(LIVE)
    for worker in workers:
        worker.conn.close()  # all of them first: they exit in parallel
    for worker in workers:
        worker.close()


def _in_worker(*args: Any) -> NoReturn:
    """An isolated backend's ops and conversions: they exist in its worker process only."""
    raise RuntimeError("an isolated backend runs in its worker process: call it with Isolated.call")


@dataclass(frozen=True)
class Isolated(Backend):
    """A backend whose op calls run in its worker process (suites.accuracy.call_backend asks it);
    its name, devices, dtypes and device descriptions are what the worker said of it."""

    spec: str = ""
    worker: Worker | None = field(default=None, compare=False, repr=False)

    @classmethod
    def load(cls, spec: str, limit: float) -> Isolated | Unavailable:
        """The backend that spec (a built-in's name, a plugin's, or module:attr) names, loaded in a
        worker process, which goes on to answer its calls; this process never imports it. One that
        crashes or hangs (past limit or STARTUP_S, as Worker.start) while it is imported or loaded
        is Unavailable, with what happened and where (faulthandler's stack): it costs only itself.
        ValueError for a spec the worker cannot load (as registry.load raises)."""
        worker = Worker(spec)
        try:
            loaded = worker.start(limit)
        except WorkerFailure as failure:
            return Unavailable(spec, "\n".join(filter(None, [str(failure), failure.trace.rstrip()])))
        if loaded["ok"]:
            return cls.described(spec, worker, loaded["backend"])
        if loaded["failure"] == "usage":
            raise ValueError(loaded["text"])
        if loaded["failure"] == "unavailable":
            return Unavailable(spec, loaded["text"])
        return Unavailable(spec, "\n".join(filter(None, [
            f"could not be loaded in its worker process: {loaded['text']}", loaded["traceback"].rstrip()])))

    @classmethod
    def described(cls, spec: str, worker: Worker, description: Mapping[str, Any]) -> Isolated:
        """The backend as its worker process described it (describe)."""
        descriptions = description["descriptions"]
        return cls(name=description["name"], version=description["version"],
                   ops=dict.fromkeys(description["ops"], _in_worker), to_device=_in_worker,
                   to_numpy=_in_worker, devices=tuple(description["devices"]),
                   absent_devices=description["absent_devices"], dtypes=tuple(description["dtypes"]),
                   unsupported={(op, dtype): why for op, dtype, why in description["unsupported"]},
                   options=tuple(description["options"]), fully_masked=description["fully_masked"],
                   max_length=description["max_length"], finite_only=description["finite_only"],
                   describe=descriptions.__getitem__, spec=spec, worker=worker)

    def call(self, op: str, device: str, axis: int, inputs: list[np.ndarray], limit: float,
             options: dict[str, Any] | None = None) -> np.ndarray:
        return self.worker.call(op, device, axis, inputs, limit, options)
