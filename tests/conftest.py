"""Shared fixtures: a private Mosquitto per test session (restartable), a private
PostgreSQL per test session with a fresh database per test, temp dirs; and how the suite
runs in parallel (``make test``: pytest-xdist, ``--dist loadgroup``).

Parallel runs (docs/decisions/0170-parallel-test-suite.md):

* Each xdist worker is a test session of its own: session fixtures (the ``broker``, the
  ``postgres`` server) exist once per worker, on free ports, under the worker's own
  temp dir.
* A test marked ``isolated`` (timing, rates, RSS, FUSE power cuts, Docker, anything
  that loads the machine on purpose) runs in the xdist group ``isolated``: one worker
  runs all of them, one after the other, so they never run alongside each other.
* Tests sharing a module- or class-scoped fixture stay together on one worker (the
  fixture is built once, as in a serial run); the browser tests (tests/e2e) too, so
  one Chromium runs at a time.
* The groups are scheduled longest-first (the isolated chain, then the grouped
  modules, then single integration tests, then unit tests), so the longest chain
  starts at once instead of trailing at the end.
* Temp dirs: unless ``--basetemp`` is given, every run gets a fresh one of its own
  (``$TMPDIR/tgt-XXXXXXXX``), removed when the run passed and kept (path printed) when
  it failed — never pytest's shared ``/tmp/pytest-of-<user>``, where runs from other
  worktrees prune each other's directories.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MOSQUITTO, Broker
from tests.support.postgres import PostgresServer, PostgresUnavailable

ISOLATED_GROUP = "isolated"
BROWSER_GROUP = "browser"
_OWN_BASETEMP = pytest.StashKey[Path]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before the tmp_path plugin reads it. xdist workers get <basetemp>/popen-gwN from
    # the controller, so only the controller (or a serial run) makes one.
    if config.option.basetemp is None and not _is_worker(config):
        own = Path(tempfile.mkdtemp(prefix="tgt-"))  # short: FUSE control sockets live below
        config.option.basetemp = str(own)
        config.stash[_OWN_BASETEMP] = own


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own is not None and exitstatus == 0:
        shutil.rmtree(own, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    own = terminalreporter.config.stash.get(_OWN_BASETEMP, None)
    if own is not None and exitstatus != 0 and own.exists():
        terminalreporter.write_line(f"test temp dirs kept for inspection: {own}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """In a parallel run, a test marked ``exclusive`` runs while no other test of this run
    does (tight sub-second bounds: one busy neighbour is enough to break them); every
    other test holds a shared lock meanwhile — setup (module fixtures included) and
    teardown too. Two flock files in the run's basetemp: the gate keeps new shared
    holders out while an exclusive one waits (flock alone would let them starve it)."""
    config = item.config
    if not _is_worker(config):
        return (yield)
    root = Path(config.option.basetemp).parent  # <run>/popen-gwN → <run>
    exclusive = item.get_closest_marker("exclusive") is not None
    with open(root / "gate.lock", "a") as gate, open(root / "run.lock", "a") as run:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(run, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            if not exclusive:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(gate, fcntl.LOCK_UN)


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module-, class- or package-scoped fixture (which its
    neighbours share: they must run on the same worker to build it once)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs and defs[-1].scope in ("module", "class", "package")
        for defs in info.name2fixturedefs.values()
    )


@pytest.hookimpl(tryfirst=True)  # before xdist appends the group to the node id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test in its xdist group and order the groups longest-first (in a
    parallel run only: a serial run keeps the files' order)."""
    ranks: dict[int, int] = {}
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            rank = 1  # grouped by hand
        elif item.get_closest_marker(ISOLATED_GROUP) or item.get_closest_marker("exclusive"):
            item.add_marker(pytest.mark.xdist_group(ISOLATED_GROUP))
            rank = 0
        elif item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.xdist_group(BROWSER_GROUP))
            rank = 1
        elif _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(f"module:{item.path.name}"))
            rank = 1
        elif item.get_closest_marker("integration") is not None:
            rank = 2
        else:
            rank = 3
        ranks[id(item)] = rank
    if _is_worker(config):
        # Stable: every worker computes the same order (xdist checks the collections
        # are identical), and tests within a module keep their order.
        items.sort(key=lambda item: ranks[id(item)])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run in parallel without the groups: xdist passes a test's group to the
    scheduler by appending ``@group`` to its node id, and a pytest that ignores that
    (9.2, pytest-xdist#1386) would silently run isolated tests side by side."""
    if not (_is_worker(session.config) and session.config.getvalue("loadgroup")):
        return
    for item in session.items:
        mark = item.get_closest_marker("xdist_group")
        if mark is not None and "@" not in item.nodeid.rpartition("]")[2]:
            raise pytest.UsageError(
                f"xdist groups are not in effect ({item.nodeid} has no @{mark.args[0]}): "
                "this pytest/pytest-xdist pair cannot run the suite in parallel safely; "
                "use the versions pyproject.toml pins, or `make test-serial`"
            )


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A private Mosquitto on a free loopback port, persistence on (one per xdist
    worker: each worker is a session of its own)."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(
            "mosquitto binary not found: run `make test` (it installs it) or apt-get install mosquitto"
        )
    with Broker(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that restart or kill it."""
    with Broker(tmp_path / "mosquitto") as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL (initdb into a temp dir, a free loopback port), one per pytest
    process. Tests that stop or kill it must start it again before they end."""
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's PostgreSQL, dropped afterwards."""
    name = postgres.new_database_name(request.node.name)
    url = postgres.create_database(name)
    yield url
    if postgres.postmaster_pid() is not None:
        postgres.drop_database(name)
