"""Fixtures that run real `petrel serve` processes.

`make_broker(extra_args=())` starts a broker on a free port (`--port 0`, the port is read from the
`listening on http://HOST:PORT` line on stdout) with a fresh data dir and returns a
`petrel_support.Broker` (url, data_dir, pid, kill9(), terminate(), restart()). `broker` is one such
broker with default flags. Every process is SIGKILLed (its whole process group) and every temp dir
removed at teardown, even when the test failed; the broker's log tail is printed for failed tests.

Set PETREL_BIN to the `petrel` executable (the Makefile's `test-process` target does)."""

from __future__ import annotations

import os

import pytest

from petrel_support import Broker, new_root, remove_root


def _binary() -> str:
    path = os.environ.get("PETREL_BIN", "")
    if not path:
        pytest.skip("PETREL_BIN is not set: build with `swift build --product petrel` and set PETREL_BIN=.build/debug/petrel")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(f"PETREL_BIN={path!r} is not an executable file")
    return path


@pytest.fixture
def petrel_bin() -> str:
    return _binary()


class _Brokers:
    def __init__(self, binary: str):
        self.binary = binary
        self.made: list[tuple[Broker, str]] = []

    def __call__(self, extra_args=()) -> Broker:
        root = new_root()
        b = Broker(self.binary, root, extra_args)
        self.made.append((b, root))
        return b.start()

    def cleanup(self, failed: bool) -> None:
        for b, root in self.made:
            b.cleanup()
            if failed:
                print(f"\n[{b.url} data={b.data_dir}]\n{b.log_tail()}")
            remove_root(root)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def _failed(request) -> bool:
    return any(getattr(getattr(request.node, "rep_" + w, None), "failed", False) for w in ("setup", "call"))


@pytest.fixture
def make_broker(request, petrel_bin):
    brokers = _Brokers(petrel_bin)
    try:
        yield brokers
    finally:
        brokers.cleanup(_failed(request))


@pytest.fixture
def broker(make_broker) -> Broker:
    return make_broker()


@pytest.fixture(scope="module")
def module_broker(request):
    """One broker shared by a module's tests (the bad-input battery)."""
    brokers = _Brokers(_binary())
    try:
        yield brokers()
    finally:
        brokers.cleanup(False)


# -- clusters (cluster_support.py) ------------------------------------------------------------------

class _Clusters:
    def __init__(self, binary: str):
        self.binary = binary
        self.made: list = []

    def __call__(self, size: int = 3, extra_args=(), wait: bool = True, **kw):
        from cluster_support import Cluster
        root = new_root("petrel-cluster-")
        c = Cluster(self.binary, root, size=size, extra_args=extra_args, **kw)
        self.made.append((c, root))
        return c.start(wait=wait)

    def cleanup(self, failed: bool) -> None:
        for c, root in self.made:
            c.cleanup()
            if failed:
                print("\n" + c.log_tails())
            remove_root(root)


@pytest.fixture
def make_cluster(request, petrel_bin):
    """`make_cluster(size=3, extra_args=(), wait=True)` starts a cluster_support.Cluster of `size`
    `petrel serve` processes on 127.0.0.1 (free ports, a random secret, data under a temp dir) and,
    with `wait`, waits for every node's /readyz. Every process is SIGKILLed and the temp dir removed at
    teardown; the logs are printed for a failed test."""
    clusters = _Clusters(petrel_bin)
    try:
        yield clusters
    finally:
        clusters.cleanup(_failed(request))


@pytest.fixture
def cluster(make_cluster):
    """Three brokers, all ready."""
    return make_cluster(3)
