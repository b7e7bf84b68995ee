"""The alert store's backends as one fixture: each test that takes it runs on SQLite and on
a real PostgreSQL server (the session fixture ``postgresql_url`` of tests/postgres.py), each
time on an empty store (a fresh schema on PostgreSQL, dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pipeline.alert_store import store_url


@pytest.fixture(params=["sqlite", "postgresql"])
def alert_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty alert store on each backend."""
    if request.param == "sqlite":
        yield str(tmp_path / "store" / "alerts.db")
        return
    base = store_url(request.getfixturevalue("postgresql_url"))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()
