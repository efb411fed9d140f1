"""A private PostgreSQL for the tests: ``initdb`` into a temp dir, ``pg_ctl start`` on a
free 127.0.0.1 port — never the server that may run on this machine on 5432.

One :class:`PostgresServer` per pytest process (the session fixture in tests/conftest.py)
and one fresh database per test (``pg_url``): initdb costs seconds, ``CREATE DATABASE``
a fraction of one. The server runs with ``fsync`` on (the crash tests kill it with
SIGKILL and expect every committed row back) but small memory settings, since several
test sessions share this machine.

PostgreSQL refuses to run as root. When the tests run as root (CI containers, this
machine) the server runs as the ``postgres`` system user (the Debian package creates it)
or else ``nobody``, through ``setpriv``; its temp dir is created under /tmp (pytest's own
tmp dirs are mode 0700 and unreadable to that user) and removed by :meth:`close`.

Every wait is bounded. Only loopback addresses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from simulators.broker import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
"""The bootstrap superuser's name, whoever runs the server process."""

T = TypeVar("T")


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL server binaries, or no way to run them (the reason says which)."""


def find_bindir() -> Path:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are: ``pg_config --bindir`` when it
    points at the server binaries, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/", path)
        return int(match.group(1)) if match else 0

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)[::-1]
    ]
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: run `make test` "
        "(it installs them as root) or `sudo apt-get install postgresql`"
    )


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        "running as root and neither a 'postgres' nor a 'nobody' user exists: PostgreSQL "
        "refuses to run as root (create one, or run the tests as an ordinary user)"
    )


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private loop in a worker thread, so sync code and
    code already inside a running loop (an async test) can both call it."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=120)


class PostgresServer:
    """A PostgreSQL cluster of its own in a temp dir, on a fixed free loopback port.

    ``start()`` / ``stop()`` / ``kill9()`` may be repeated: the data dir and the port stay,
    so a restarted server has every committed row and the same URLs."""

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        shared_buffers: str = "32MB",
        max_connections: int = 100,
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.account = _server_account()
        self.base = Path(tempfile.mkdtemp(prefix="tidegate-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log_path = self.base / "server.log"
        self.port = free_port(HOST)
        self.shared_buffers = shared_buffers
        self.max_connections = max_connections
        self._initialised = False
        self._db_counter = 0

    # -- process control ---------------------------------------------------------------

    def _command(self, argv: Sequence[str]) -> list[str]:
        if self.account is None:
            return list(argv)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PostgresUnavailable(
                "running as root without `setpriv` (util-linux): cannot start PostgreSQL as an "
                "unprivileged user"
            )
        return [
            setpriv,
            f"--reuid={self.account.pw_uid}",
            f"--regid={self.account.pw_gid}",
            "--clear-groups",
            *argv,
        ]

    def _run(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.bindir}:/usr/bin:/bin",
            "HOME": str(self.base),
            "LANG": "C",
            "LC_ALL": "C",
            "TZ": "UTC",
        }
        # cwd: the server user may not be able to enter the caller's directory.
        return subprocess.run(
            self._command(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
            env=env,
            check=False,
        )

    def _initdb(self) -> None:
        if self.account is not None:
            os.chown(self.base, self.account.pw_uid, self.account.pw_gid)
        self.socket_dir.mkdir(mode=0o700)
        if self.account is not None:
            os.chown(self.socket_dir, self.account.pw_uid, self.account.pw_gid)
        done = self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                # initdb's own fsyncs only protect against a power cut during initdb; the
                # server itself runs with fsync on.
                "--no-sync",
            ],
            timeout=120,
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# tests/support/postgres.py\n"
                f"listen_addresses = '{HOST}'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"max_connections = {self.max_connections}\n"
                f"shared_buffers = {self.shared_buffers}\n"
                "fsync = on\n"
                "synchronous_commit = on\n"
                "full_page_writes = on\n"
                "timezone = 'UTC'\n"
                "log_timezone = 'UTC'\n"
                "max_wal_size = 256MB\n"
                "log_min_messages = warning\n"
            )
        self._initialised = True

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart after :meth:`stop` / :meth:`kill9`) on the same port and data
        dir; returns once the server accepts connections (crash recovery included)."""
        first = not self._initialised
        if first:
            self._initdb()
        for _attempt in range(3):
            done = self._pg_ctl_start(timeout)
            # Another process may have taken the free port since we chose it: on the very
            # first start only (a restart must keep its port), choose another.
            if done.returncode == 0 or not first or "already in use" not in self.log_tail():
                break
            self.port = free_port(HOST)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"pg_ctl start on port {self.port} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}\n{self.log_tail()}"
            )

    def _pg_ctl_start(self, timeout: float) -> subprocess.CompletedProcess[str]:
        return self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                f"-p {self.port}",
            ],
            timeout=timeout + 10,
        )

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """``pg_ctl stop -m mode`` (fast: roll back open transactions, checkpoint, exit)."""
        done = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "stop",
                "-D",
                str(self.data),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
            ],
            timeout=timeout + 10,
        )
        if done.returncode != 0 and self.postmaster_pid() is not None:
            raise AssertionError(f"pg_ctl stop failed: {done.stderr.strip()}\n{self.log_tail()}")

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (from postmaster.pid), or None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill9(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and every child (backends, checkpointer, walwriter...)
        at once, like a crash: no shutdown checkpoint; the next start runs recovery."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(v) for v in victims) or _exists(pid):
            # The postmaster is not our child (pg_ctl daemonises it): init reaps it. Until
            # then its zombie holds the pid in postmaster.pid and a new postmaster would
            # refuse to start ("lock file already exists"), so wait for the pid to vanish.
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL processes survived SIGKILL: {victims}")
            time.sleep(0.02)

    def close(self) -> None:
        """Stop the server (killing it if a clean stop fails) and remove its temp dir."""
        try:
            if self.postmaster_pid() is not None:
                try:
                    self.stop("immediate", timeout=20)
                except (AssertionError, subprocess.SubprocessError, OSError):
                    self.kill9()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def require_password(self, role: str, password: str) -> None:
        """Create login role ``role`` that must authenticate with ``password``
        (scram-sha-256 over TCP; every other role keeps trust auth)."""
        await self.execute(f"CREATE ROLE {_ident(role)} LOGIN PASSWORD '{password}'")
        hba = self.data / "pg_hba.conf"
        rule = f"host all {role} {HOST}/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())
        await self.execute("SELECT pg_reload_conf()")
        # The postmaster reloads on its SIGHUP, a moment later: wait until the role is
        # refused without its password.
        import asyncpg

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(
                    f"postgresql://{role}@{HOST}:{self.port}/postgres",
                    password="",
                    passfile="/nonexistent",
                    timeout=5,
                )
            except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
                return
            except asyncpg.PostgresError as exc:
                if "password" in str(exc):
                    return
                raise
            await conn.close()
            await asyncio.sleep(0.05)
        raise AssertionError("pg_hba.conf reload did not take effect")

    # -- databases and SQL ---------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL for ``database`` as the superuser (trust auth, no password)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def new_database_name(self, hint: str = "t") -> str:
        """A database name not used before in this server's life (``hint`` sanitised)."""
        self._db_counter += 1
        clean = re.sub(r"[^a-z0-9_]", "_", hint.lower())[:40].strip("_") or "t"
        return f"{clean}_{self._db_counter}"

    async def create_database_async(self, name: str, template: str | None = None) -> str:
        """``CREATE DATABASE name`` (from ``template`` when given); returns its URL."""
        tmpl = f" TEMPLATE {_ident(template)}" if template else ""
        await self.execute(f"CREATE DATABASE {_ident(name)}{tmpl}")
        return self.url(name)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Synchronous :meth:`create_database_async`."""
        return _run_sync(self.create_database_async(name, template))

    async def drop_database_async(self, name: str) -> None:
        await self.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    def drop_database(self, name: str) -> None:
        _run_sync(self.drop_database_async(name))

    async def execute(self, sql: str, *args: object, database: str = "postgres") -> str:
        """Run one statement (or several without arguments) on a short-lived connection;
        returns the status tag, like psql would print."""
        import asyncpg

        conn = await asyncpg.connect(self.url(database), timeout=30)
        try:
            status: str = await conn.execute(sql, *args)
            return status
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: object, database: str = "postgres") -> list[Any]:
        """Rows (asyncpg Records) of one query on a short-lived connection."""
        import asyncpg

        conn = await asyncpg.connect(self.url(database), timeout=30)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    def execute_sync(self, sql: str, *args: object, database: str = "postgres") -> str:
        return _run_sync(self.execute(sql, *args, database=database))

    def fetch_sync(self, sql: str, *args: object, database: str = "postgres") -> list[Any]:
        return _run_sync(self.fetch(sql, *args, database=database))


def _ident(name: str) -> str:
    """``name`` quoted as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): count it as dead (its parent reaps it).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _exists(pid: int) -> bool:
    """Whether ``pid`` names any process, a zombie included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (PostgreSQL's processes are all direct children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
    return found
