"""A throwaway PostgreSQL server for the test session, and a fresh database for each test.

Fixtures (tests/conftest.py registers this module as a plugin):

``postgresql_url``  session: ``postgresql://postgres@127.0.0.1:PORT/chainwatch_test``, a
                    database on a server that lives as long as the test run.
``postgresql_db``   function: the URL of a new empty database on that server, dropped (with
                    its connections) after the test, so suites never see each other's tables.
``postgresql_server``  session: the :class:`PostgresServer` itself (``sql``,
                    ``create_database``, ``drop_database``, ``url``).

The URLs are libpq URIs, as ``psycopg.connect`` takes them. SQLAlchemy reads a bare
``postgresql://`` as psycopg2: name the driver, ``postgresql+psycopg://...``.

How the server runs (:class:`PostgresServer`):

* Binaries: ``postgres`` on PATH, else the newest ``/usr/lib/postgresql/<version>/bin``
  (Debian). None found: the fixture fails and says to run ``bash .ci/tools.sh``, which
  installs Debian's ``postgresql`` package. It never skips: CI must run these tests.
* ``initdb`` into a new temporary directory (trust authentication, which initdb's pg_hba.conf
  grants only to the unix socket and loopback; C locale, UTF-8), then ``postgres`` itself as
  the child, not ``pg_ctl``, which would detach it: listening on 127.0.0.1 only, at a free
  port, its unix socket in the temporary directory, durability off (fsync) for speed.
* As root, ``initdb`` and ``postgres`` run as the ``postgres`` user that Debian's package
  creates (else ``nobody``), which owns the directory: PostgreSQL refuses to run as root.
* It dies with the test run: the kernel sends it SIGQUIT (immediate shutdown) when the
  process that started it dies (PR_SET_PDEATHSIG, set after the switch of user, which would
  clear it; Linux; strictly, when the *thread* that started it ends, so start it from a
  thread that lives as long as the run, as fixtures do). :meth:`PostgresServer.stop` runs at
  fixture teardown and at exit; the directory of a run killed with SIGKILL is removed by the
  next start (:func:`remove_stale_dirs`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from pipeline.broker.processes import parent_death_hook

DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
SESSION_DB = "chainwatch_test"
DIR_PREFIX = "chainwatch-pg-"
INSTALL_HINT = "run `bash .ci/tools.sh` (installs Debian's postgresql package)"
_BINARIES = ("initdb", "pg_ctl", "postgres", "psql")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_POLL_S = 0.02
_BIND_FAILURES = ("could not bind", "could not create any TCP/IP sockets")


class PostgresServerError(RuntimeError):
    """The throwaway server could not be found, started, queried or stopped."""


# --- binaries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binaries:
    """One PostgreSQL installation's ``bin`` directory and its server version."""

    bin_dir: Path
    version: str  # as ``postgres --version`` prints it, e.g. "15.18"

    def __call__(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def _candidate_dirs() -> list[Path]:
    found = shutil.which("postgres")
    on_path = [Path(found).resolve().parent] if found else []
    debian = sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")), key=_version_key, reverse=True)
    return on_path + debian


def find_binaries() -> Binaries | None:
    """The first directory, PATH's then Debian's newest, with initdb, pg_ctl, postgres and psql
    (as .ci/tools.sh looks; pg_ctl is not used, but every installation has it)."""
    for bin_dir in _candidate_dirs():
        if all(os.access(bin_dir / name, os.X_OK) for name in _BINARIES):
            out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                                 text=True, check=False).stdout
            match = re.search(r"\d+(\.\d+)*", out)
            if match:
                return Binaries(bin_dir, match.group(0))
    return None


# --- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account a root process runs PostgreSQL as."""

    name: str
    uid: int
    gid: int


def unprivileged_user() -> RunAs | None:
    """None when not root; else ``postgres`` (Debian's package creates it), else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunAs(name, entry.pw_uid, entry.pw_gid)
    raise PostgresServerError("running as root and there is no `postgres` or `nobody` user to "
                              f"run PostgreSQL as; {INSTALL_HINT} or run the tests as a user")


def _child_env() -> dict[str, str]:
    """This environment without PG* settings (PGDATA, PGHOST, ...), which would redirect us."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the directories of earlier runs whose test process and server are both gone
    (a run killed with SIGKILL cannot clean up); return them."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(DIR_PREFIX + "*"):
        try:
            owner = int((path / "owner.pid").read_text())
        except (OSError, ValueError):  # not ours, or a run writing it right now
            continue
        try:
            server = (path / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            server = ""
        if not _alive(owner) and not (server.isdigit() and _alive(int(server))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --- the server ------------------------------------------------------------------------------


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, up from :meth:`start` to :meth:`stop`.

    >>> PostgresServer(Binaries(Path("/usr/lib/postgresql/15/bin"), "15.18"))
    PostgresServer(version='15.18', state='stopped')
    """

    def __init__(self, binaries: Binaries, startup_timeout_s: float = 60.0) -> None:
        self.binaries = binaries
        self.startup_timeout_s = startup_timeout_s
        self.run_as = unprivileged_user()
        self.port = 0
        self.base_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0  # how long start() took, initdb included

    def __repr__(self) -> str:
        state = f"port {self.port}" if self.process else "stopped"
        return f"PostgresServer(version={self.binaries.version!r}, state={state!r})"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self._dir() / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _dir(self) -> Path:
        if self.base_dir is None:
            raise PostgresServerError("the server is not started; call start() first")
        return self.base_dir

    def _popen(self, argv: list[str], *, server: bool = False) -> subprocess.Popen[bytes]:
        """Run ``argv`` as :attr:`run_as`, logging to :attr:`log_path`; a ``server`` in its
        own session, dying with this process."""
        run_as = self.run_as
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_child_env(), cwd=self._dir(),
                user=run_as.uid if run_as else None, group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None, start_new_session=server,
                preexec_fn=parent_death_hook(signal.SIGQUIT) if server else None)  # noqa: PLW1509 - it only calls prctl

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return " | ".join([line for line in text.splitlines() if line.strip()][-lines:])

    # - start -

    def start(self) -> PostgresServer:
        """initdb, then postgres on a free port; return once it accepts connections."""
        if self.process is not None:
            return self
        began = time.monotonic()
        remove_stale_dirs()
        self.base_dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        (self.base_dir / "owner.pid").write_text(str(os.getpid()))
        atexit.register(self.stop)  # until stop() unregisters it
        try:
            if self.run_as is not None:
                os.chown(self.base_dir, self.run_as.uid, self.run_as.gid)
            self._initdb()
            for _attempt in range(3):  # another process may take the free port first
                if self._launch():
                    break
            else:
                raise PostgresServerError(f"postgres could not bind a port 3 times; its log "
                                          f"ends: {self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        return self

    def _initdb(self) -> None:
        argv = [self.binaries("initdb"), "-D", str(self._dir() / "data"), "-U", SUPERUSER,
                "--auth=trust", "--no-locale", "--encoding=UTF8", "--no-sync"]
        initdb = self._popen(argv)
        try:
            status = initdb.wait(self.startup_timeout_s)
        except subprocess.TimeoutExpired:
            initdb.kill()
            initdb.wait()
            raise PostgresServerError(f"initdb took over {self.startup_timeout_s:g} s; its log "
                                      f"ends: {self.log_tail()}") from None
        if status != 0:
            raise PostgresServerError(f"initdb exited with status {status}; its log ends: "
                                      f"{self.log_tail()}")

    def _launch(self) -> bool:
        """Start postgres; True once ready, False if it could not bind its port."""
        self.port = free_port()
        argv = [self.binaries("postgres"), "-D", str(self._dir() / "data"),
                "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self._dir()),
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200"]
        offset = self.log_path.stat().st_size
        self.process = self._popen(argv, server=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._ready():
            status = self.process.poll()
            if status is not None:
                self.process = None
                log = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if any(text in log for text in _BIND_FAILURES):
                    return False
                raise PostgresServerError(f"postgres exited with status {status} before it was "
                                          f"ready; its log ends: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise PostgresServerError(f"postgres was not ready within "
                                          f"{self.startup_timeout_s:g} s; its log ends: "
                                          f"{self.log_tail()}")
            time.sleep(_POLL_S)
        return True

    def _ready(self) -> bool:
        """postmaster.pid names our process and says "ready" (what ``pg_ctl -w`` waits for)."""
        assert self.process is not None
        try:
            lines = (self._dir() / "data" / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (len(lines) >= 8 and lines[0] == str(self.process.pid)
                and lines[7].strip() == "ready")

    # - use -

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement with psql as the superuser; its unaligned output."""
        if self.process is None:
            raise PostgresServerError("the server is not running; call start() first")
        done = subprocess.run(
            [self.binaries("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.url(dbname), "-c", statement],
            capture_output=True, text=True, env=_child_env(), check=False, timeout=60)
        if done.returncode != 0:
            raise PostgresServerError(f"psql failed ({done.returncode}) on {statement!r}: "
                                      f"{done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a unique name unless given); its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        if not _NAME.fullmatch(name):
            raise PostgresServerError(f"database name {name!r}: use [a-z_][a-z0-9_]*, up to 63")
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database and end its connections (``WITH (FORCE)``, PostgreSQL 13+)."""
        force = " WITH (FORCE)" if self.binaries.major >= 13 else ""
        self.sql(f'DROP DATABASE IF EXISTS "{name}"{force}')

    # - stop -

    def stop(self, timeout_s: float = 15.0) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; remove the dir.
        Harmless when stopped already."""
        atexit.unregister(self.stop)
        process, self.process = self.process, None
        if process is not None:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                try:
                    process.wait(timeout_s / 2)
                    break
                except subprocess.TimeoutExpired:
                    continue
            process.wait()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None


def free_port() -> int:
    """A loopback port nobody listens on right now (postgres binds with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """The session's running :class:`PostgresServer`."""
    binaries = find_binaries()
    if binaries is None:
        pytest.fail("PostgreSQL binaries (initdb, pg_ctl, postgres, psql) not found on PATH or "
                    f"in {DEBIAN_BIN_DIRS}: {INSTALL_HINT}", pytrace=False)
    with PostgresServer(binaries) as server:
        yield server


@pytest.fixture(scope="session")
def postgresql_url(postgresql_server: PostgresServer) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/chainwatch_test``, up for the whole session."""
    return postgresql_server.create_database(SESSION_DB)


@pytest.fixture
def postgresql_db(postgresql_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh empty database, dropped (connections and all) after the test."""
    url = postgresql_server.create_database()
    yield url
    postgresql_server.drop_database(url.rsplit("/", 1)[1])
