"""How pytest-xdist shares the catalogue among workers: every item of one case and dtype on one worker,
so that the oracle of an input is computed once per run, with node ids left as pytest takes them."""

from __future__ import annotations

from xdist.scheduler.loadscope import LoadScopeScheduling

from softmax_suite.dtypes import DTYPES


def scope_of(nodeid: str) -> str:
    """The work unit of an item: "dtype-case" for the suite's ids (backend-device-dtype-case, then a
    cotangent kind for a VJP), whose reference the items share; the node id itself for any other."""
    _, bracket, params = nodeid.rpartition("[")
    if not bracket or not params.endswith("]"):
        return nodeid
    parts = params[:-1].split("-")
    # From the right: a backend's own name may hold a dtype's name, a case's or a cotangent's never do.
    at = next((i for i in range(len(parts) - 2, -1, -1) if parts[i] in DTYPES), None)
    if at is None or at < 2:
        return nodeid
    return f"{parts[at]}-{parts[at + 1]}"


class CaseScheduling(LoadScopeScheduling):
    """pytest-xdist's load-by-scope scheduling with scope_of for the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)
