"""Integration tests of tests/postgres.py against the real PostgreSQL server it starts.

The fixtures give a working server (psycopg connects, tables round-trip), fresh databases do
not see each other, the server runs unprivileged, and nothing is left behind: stop() ends the
process and removes its directory, and a SIGKILLed parent takes the server with it.
Without the binaries the fixture fails, with the command that installs them, and never skips.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from tests.postgres import PostgresServer, find_binaries, remove_stale_dirs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
URL = re.compile(r"postgresql://postgres@127\.0\.0\.1:(\d+)/(\w+)")


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _server() -> PostgresServer:
    binaries = find_binaries()
    assert binaries is not None, "no PostgreSQL binaries: run `bash .ci/tools.sh`"
    return PostgresServer(binaries)


def test_session_url_round_trips_rows(postgresql_url: str) -> None:
    match = URL.fullmatch(postgresql_url)
    assert match, postgresql_url
    assert match.group(2) == "chainwatch_test"
    with psycopg.connect(postgresql_url) as conn:
        assert conn.info.server_version >= 130000
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
        conn.execute("CREATE TEMPORARY TABLE alerts (id serial PRIMARY KEY, kind text, "
                     "score double precision)")
        conn.execute("INSERT INTO alerts (kind, score) VALUES (%s, %s), (%s, %s)",
                     ("rug_pull", 0.9, "wash_trading", 0.4))
        rows = conn.execute("SELECT kind, score FROM alerts ORDER BY id").fetchall()
    assert rows == [("rug_pull", 0.9), ("wash_trading", 0.4)]


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_empty_database(postgresql_db: str, postgresql_url: str,
                                               run: int) -> None:
    # the same table name in both runs: each sees an empty database of its own
    assert postgresql_db != postgresql_url
    with psycopg.connect(postgresql_db) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE alerts (id int PRIMARY KEY)")
        conn.execute("INSERT INTO alerts VALUES (%s)", (run,))


def test_two_databases_do_not_see_each_other(postgresql_server: PostgresServer) -> None:
    first, second = postgresql_server.create_database(), postgresql_server.create_database()
    try:
        with psycopg.connect(first) as a, psycopg.connect(second) as b:
            a.execute("CREATE TABLE alerts (id int)")
            a.commit()
            assert b.execute("SELECT to_regclass('public.alerts')").fetchone() == (None,)
            b.execute("CREATE TABLE alerts (id text)")  # no clash
    finally:
        for url in (first, second):
            postgresql_server.drop_database(url.rsplit("/", 1)[1])


def test_drop_ends_open_connections_and_removes_the_database(
        postgresql_server: PostgresServer) -> None:
    url = postgresql_server.create_database()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url) as conn:
        postgresql_server.drop_database(name)  # the test forgot to close: dropped anyway
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    listed = postgresql_server.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
    assert listed == "0"


def test_server_runs_unprivileged_listening_on_loopback_only(
        postgresql_server: PostgresServer) -> None:
    assert postgresql_server.pid is not None
    assert Path(f"/proc/{postgresql_server.pid}").stat().st_uid != 0
    assert postgresql_server.sql("SHOW listen_addresses") == "127.0.0.1"
    hba = postgresql_server.sql("SELECT DISTINCT type || ' ' || coalesce(address, '') "
                                "FROM pg_hba_file_rules ORDER BY 1")
    assert hba.splitlines() == ["host 127.0.0.1", "host ::1", "local"]


def test_stop_ends_the_server_and_removes_its_directory() -> None:
    server = _server().start()
    pid, port, base_dir = server.pid, server.port, server.base_dir
    assert pid is not None and base_dir is not None
    assert server.startup_s < 30 and _accepts(port)
    with psycopg.connect(server.url()) as conn:  # stop() does not wait for it to close
        server.stop()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert _gone(pid) and not base_dir.exists() and not _accepts(port)
    server.stop()  # a second stop is harmless
    assert repr(server) == "PostgresServer(version='15.18', state='stopped')".replace(
        "15.18", server.binaries.version)


_CHILD_SCRIPT = textwrap.dedent("""
    import time
    from tests.postgres import PostgresServer, find_binaries
    server = PostgresServer(find_binaries()).start()
    print(server.pid, server.base_dir, flush=True)
    time.sleep(120)
""")


def test_server_dies_with_a_sigkilled_parent_and_its_directory_is_swept() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, "-c", _CHILD_SCRIPT], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert parent.stdout is not None
        pid_text, base_dir_text = parent.stdout.readline().split()
        pid, base_dir = int(pid_text), Path(base_dir_text)
        assert not _gone(pid, timeout_s=0)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert _gone(pid), f"postgres (pid {pid}) outlived its SIGKILLed parent"
    assert base_dir.exists()  # SIGKILL leaves it; the next start removes it
    assert base_dir in remove_stale_dirs(base_dir.parent)
    assert not base_dir.exists()


def test_without_binaries_the_fixture_fails_with_the_install_command(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        import tests.postgres
        tests.postgres.DEBIAN_BIN_DIRS = "/nonexistent/postgresql/*/bin"
        pytest_plugins = ["tests.postgres"]
    """))
    (tmp_path / "test_needs_server.py").write_text(
        "def test_needs_server(postgresql_url):\n    pass\n")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
        timeout=120)
    assert done.returncode == 1, done.stdout  # an error, not a skip
    assert "1 error" in done.stdout and "skipped" not in done.stdout
    assert "not found on PATH or in /nonexistent/postgresql/*/bin: run `bash .ci/tools.sh`" \
        in done.stdout
