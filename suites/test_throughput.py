"""Throughput: each op per backend, device, dtype and shape, timed with pytest-benchmark against
the same backend's copy of the same size (softmax_suite.suites.throughput). Runs in one process.

The plugin (runner.plugin) parametrizes `target` over backend x device x dtype x shape (--sweep).
"""

from softmax_suite.suites.accuracy import Target


def test_softmax_throughput(target: Target, check_throughput) -> None:
    check_throughput(target)


def test_log_softmax_throughput(target: Target, check_throughput) -> None:
    check_throughput(target)


def test_logsumexp_throughput(target: Target, check_throughput) -> None:
    check_throughput(target)


def test_softmax_vjp_throughput(target: Target, check_throughput) -> None:
    check_throughput(target)


def test_log_softmax_vjp_throughput(target: Target, check_throughput) -> None:
    check_throughput(target)


def test_logsumexp_vjp_throughput(target: Target, check_throughput) -> None:
    check_throughput(target)
