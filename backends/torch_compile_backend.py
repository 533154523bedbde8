"""torch-compile: torch's ops (and attention's forms of them) through torch.compile, inductor's
generated kernels, as a backend of its own: compiled and eager torch are different code and disagree
(a fused x * scale - max is one such place). VJPs through autograd of the compiled forward, whose
backward AOTAutograd compiles too.

Shapes are compiled dynamic (one kernel for every row length of a dtype and rank), so a run pays a
compile per op, dtype, rank and option set, about a second each on a CPU; inductor keeps them in its
own cache for the next run. Every op's forward is the same wrapper function, and dynamo keeps its
compilations per function code, at most `recompile_limit` (8 by default): past that it runs the
rest eagerly and says so only in a warning, and the backend would test eager torch under this name.
load raises the limit to RECOMPILE_LIMIT (ops x dtypes x option sets, with room).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from softmax_suite.backends import torch_backend
from softmax_suite.protocol import Backend, BackendUnavailable

RECOMPILE_LIMIT = 256


def load(functions: Mapping[str, Callable[..., Any]] | None = None) -> Backend:
    """torch's ops compiled (functions: a user's forward functions, compiled the same way)."""
    try:
        import torch
    except ImportError as error:
        raise BackendUnavailable(
            f"torch is not installed ({error}); pip install torch (CPU wheel: see DEVELOPERS.md)") from None
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch_backend.load(functions, compiler=lambda function: torch.compile(function, dynamic=True),
                              name="torch-compile")
