"""The alert store: every alert of ``chainwatch.alerts``, queryable, with its analyst status.

One code path (SQLAlchemy Core) over two backends, chosen by ``alerts.store``:

* a path (``chainwatch-data/alerts.db``) or ``sqlite:///PATH``: an embedded SQLite file (WAL,
  so readers and the one writer work at once);
* ``postgresql://user:pass@host/db`` (or ``postgresql+psycopg://``): a PostgreSQL database,
  through psycopg 3.

Tables (format :data:`FORMAT`, kept in ``alert_store_meta``; another format is refused with
a message; the layout is in :mod:`pipeline.alert_schema`):

``alerts``
    ``alert_id`` (primary key), ``seq`` (1, 2, 3, … in the order the alerts were stored:
    what ``tail`` follows), ``type``, ``severity``, ``score``, ``subject``, ``detector``,
    ``model_version``, ``event_time``, ``detected_at`` (stream time, unix seconds),
    ``stored_at`` (wall clock, unix seconds), ``source_topic``, ``source_partition``,
    ``source_offset`` (the record that fired it, from the alert's ``source``), ``raw`` (the
    alert's exact JSON as it arrived, so it can be held against its audit leaf), ``status``
    (:data:`STATUSES`, ``new`` at first), ``note``, ``status_updated_at``.
``alert_offsets``
    ``topic``, ``partition``, ``next_offset``: the input the stored alerts cover, written in
    the same transaction as the alerts, so the store alone says where a sink resumes.
``status_history``
    ``id``, ``alert_id``, ``status``, ``note``, ``at``: every analyst action, oldest first.
    ``id`` (autoincrement) numbers the changes of the whole store, so
    :meth:`AlertStore.status_changes` gives "the changes after id X" from the primary key's
    index, whichever process or host made them.

Writers take a lock first (an update of the meta row: SQLite's write lock, a row lock in
PostgreSQL), both ``add`` and ``set_status``, so seqs and history ids are handed out in
commit order: a reader following ``seq`` or the history's ``id`` never skips a row committed
late (an id may be missing, from a transaction rolled back, but none appears behind one
already seen).

>>> from pipeline.alerts import Alert
>>> a = Alert.build(type="rug_pull", severity="high", score=0.9, subject="0xab",
...     detector="liquidity_drain", model_version="1", evidence={"drop": 0.95},
...     source={"topic": "chain.dex", "partition": 0, "offset": 7, "item_ids": ["log_7"]},
...     event_time=100, detected_at=100)
>>> store = AlertStore.open("sqlite://")                    # in memory
>>> store.add([a, a], {("chainwatch.alerts", 0): 2}), store.add([a], {})
(1, 0)
>>> got = store.get(a.alert_id[:8])
>>> got.alert == a, got.raw == a.to_json(), got.status, store.offsets()
(True, True, 'new', {('chainwatch.alerts', 0): 2})
>>> store.set_status(a.alert_id, "confirmed", "drained").status
'confirmed'
>>> store.close()
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from pipeline.alert_schema import (
    ALERTS,
    FORMAT,
    HISTORY,
    META,
    METADATA,
    OFFSETS,
    RETRACTED,
    Incoming,
)
from pipeline.alerts import Alert
from pipeline.errors import ChainwatchError, ConfigError
from pipeline.records import Label

__all__ = ["FORMAT", "STATUSES", "VERDICTS", "AlertStore", "AlertStoreError", "Incoming",
           "StatusChange", "StoredAlert", "store_url"]

STATUSES = ("new", "acknowledged", "confirmed", "false_positive")
VERDICTS = {"confirmed": 1, "false_positive": 0}
"""Statuses that are verdicts, and the label each one publishes (1 fraud, 0 legitimate)."""
_CHUNK = 500  # ids per IN (...) look-up: far below every backend's parameter limit
_CHANGE = (HISTORY.c.id, HISTORY.c.alert_id, HISTORY.c.status, HISTORY.c.note, HISTORY.c.at)


class AlertStoreError(ChainwatchError):
    """The alert store cannot be opened, read or written; the message says what to do."""


@dataclass(frozen=True)
class StoredAlert:
    """An alert in the store, with where it is in the store and what analysts said."""

    seq: int
    alert: Alert
    raw: bytes
    status: str
    note: str | None
    status_updated_at: float | None
    stored_at: float

    @property
    def alert_id(self) -> str:
        return self.alert.alert_id

    def to_json_dict(self) -> dict[str, Any]:
        """The alert's own fields, and ``status``, ``note``, ``status_updated_at``, ``seq``,
        ``stored_at`` (what ``chainwatch alerts list --json`` prints, one a line)."""
        return dict(orjson.loads(self.raw)) | {
            "status": self.status, "note": self.note,
            "status_updated_at": self.status_updated_at, "seq": self.seq,
            "stored_at": self.stored_at}

    def to_json_line(self) -> bytes:
        """:meth:`to_json_dict` as compact JSON, without a newline (``list --json``, JSONL)."""
        return orjson.dumps(self.to_json_dict())

    def verdict_label(self) -> Label | None:
        """The label an analyst's verdict publishes (None for a status that is none):
        subject and partition key the alert's subject, stream time its ``labels.block_number``
        (else ``event_time``), source ``analyst``."""
        if self.status not in VERDICTS:
            return None
        block = self.alert.labels.get("block_number")
        block = block if isinstance(block, int) and block >= 0 else max(self.alert.event_time, 0)
        return Label(subject=self.alert.subject, label=VERDICTS[self.status], source="analyst",
                     block_number=block, released_block=block,
                     partition_key=self.alert.subject)


@dataclass(frozen=True)
class StatusChange:
    """One analyst action: ``id`` numbers the store's changes in commit order; ``note`` is
    the one given with it (None: the alert's note was kept)."""

    id: int
    alert_id: str
    status: str
    note: str | None
    at: float


def store_url(url_or_path: str) -> str:
    """The SQLAlchemy URL of a store setting; ConfigError (one line) if it is none."""
    text = url_or_path.strip()
    hint = ("give a file path, sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB "
            "(setting alerts.store, CHAINWATCH_ALERTS_STORE, --store)")
    if not text:
        raise ConfigError(f"the alert store is empty; {hint}")
    if "://" not in text:
        path = Path(text)
        if path.is_dir():
            raise ConfigError(f"alert store {text} is a directory; {hint}")
        return f"sqlite:///{path}"
    scheme = text.partition("://")[0]
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + text.partition("://")[2]
    if scheme in ("postgresql+psycopg", "sqlite"):
        return text
    raise ConfigError(f"alert store {_hidden(text)!r}: scheme {scheme!r} is not supported; "
                      f"{hint}")


def _hidden(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.partition("://")[0] + "://…"


class AlertStore:
    """Open with :meth:`open`; ``add`` (the sink), ``query`` / ``get`` / ``set_status``
    (people), ``close``."""

    def __init__(self, engine: Engine, shown: str) -> None:
        self._engine = engine
        self.shown = shown  # the store's URL without its password
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, url_or_path: str, create: bool = True) -> AlertStore:
        """The store at ``url_or_path``, its tables created if missing (``create``; else a
        store that does not exist is an AlertStoreError saying how to make one)."""
        url = store_url(url_or_path)
        shown = _hidden(url)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "",
                                                                           ":memory:"):
            path = Path(parsed.database)
            if not path.exists():
                if not create:
                    raise AlertStoreError(f"no alert store at {path}; fill one with `chainwatch "
                                          "alerts sink` (or `chainwatch demo`), or check --store")
                path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **_engine_options(parsed.get_backend_name()))
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine, shown)
        try:
            store._prepare(create)
        except BaseException:
            engine.dispose()
            raise
        return store

    def _prepare(self, create: bool) -> None:
        with self._errors("open"):
            inspector = sa.inspect(self._engine)
            if not inspector.has_table(META.name):
                if not create or inspector.get_table_names():
                    raise AlertStoreError(f"{self.shown} is not a chainwatch alert store (no "
                                          f"{META.name} table); check --store")
                with self._engine.begin() as conn:
                    METADATA.create_all(conn)
                    conn.execute(sa.insert(META), [{"key": "format", "value": FORMAT},
                                                   {"key": "writer", "value": ""}])
            with self._engine.connect() as conn:
                found = conn.execute(sa.select(META.c.value).where(META.c.key == "format")) \
                    .scalar()
            if found != FORMAT:
                raise AlertStoreError(f"{self.shown} holds alert store format {found!r}; this "
                                      f"chainwatch reads {FORMAT} only (use a new store)")
        with contextlib.suppress(SQLAlchemyError):  # a store made before retractions
            RETRACTED.create(self._engine, checkfirst=True)

    def __repr__(self) -> str:
        return f"AlertStore({self.shown!r})"

    @property
    def engine(self) -> Engine:
        """The store's SQLAlchemy engine, for tables kept beside the alerts (their
        contexts, :mod:`pipeline.alert_context`)."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        driver_error: type[Exception] = self._engine.dialect.loaded_dbapi.Error  # COPY's
        try:
            yield
        except (SQLAlchemyError, driver_error) as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise AlertStoreError(f"cannot {what} the alert store {self.shown}: {first}") \
                from None

    # -- writing ---------------------------------------------------------------------------

    def add(self, batch: Iterable[Alert | Incoming],
            offsets: Mapping[tuple[str, int], int]) -> int:
        """Store the alerts of ``batch`` not stored yet (by ``alert_id``; the first copy wins)
        and set the input offsets ``(topic, partition) -> next offset``, in one transaction.
        Returns how many alerts were new."""
        items = [b if isinstance(b, Incoming) else Incoming(b.to_json(), b) for b in batch]
        now = time.time()
        with self._errors("write"), self._engine.begin() as conn:
            _lock(conn)
            fresh: dict[str, Incoming] = {}
            for item in items:
                fresh.setdefault(item.alert.alert_id, item)
            for known in _known(conn, list(fresh)):
                fresh.pop(known, None)
            if fresh:
                top = conn.execute(sa.select(sa.func.max(ALERTS.c.seq))).scalar() or 0
                _insert(conn, [_row(item, top + n, now) for n, item in
                               enumerate(fresh.values(), start=1)])
                _mark_retracted(conn, [i.alert for i in fresh.values()
                                       if i.alert.type == "retraction"], now)
            if offsets:
                _set_offsets(conn, offsets)
        return len(fresh)

    def set_status(self, alert_id: str, status: str, note: str | None = None) -> StoredAlert:
        """Set an alert's status (and note, when given), recorded in its history."""
        if status not in STATUSES:
            raise ConfigError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        found = self.get(alert_id)
        if found is None:
            raise AlertStoreError(f"no alert {alert_id!r} in {self.shown}; see `chainwatch "
                                  "alerts list`")
        now = time.time()
        values: dict[str, Any] = {"status": status, "status_updated_at": now}
        if note is not None:
            values["note"] = note
        with self._errors("write"), self._engine.begin() as conn:
            _lock(conn)  # history ids in commit order (see the module docstring)
            conn.execute(sa.update(ALERTS).where(ALERTS.c.alert_id == found.alert_id)
                         .values(**values))
            conn.execute(sa.insert(HISTORY).values(alert_id=found.alert_id, status=status,
                                                   note=note, at=now))
        updated = self.get(found.alert_id)
        assert updated is not None
        return updated

    # -- reading ---------------------------------------------------------------------------

    def retracted(self, alert_ids: Sequence[str]) -> dict[str, str]:
        """Of ``alert_ids``, those a ``retraction`` alert withdrew (their block was orphaned
        by a reorg), with that retraction's id."""
        found: dict[str, str] = {}
        with self._errors("read"), self._engine.connect() as conn:
            ids = list(alert_ids)
            for i in range(0, len(ids), _CHUNK):
                found |= dict(conn.execute(
                    sa.select(RETRACTED.c.alert_id, RETRACTED.c.retracted_by)
                    .where(RETRACTED.c.alert_id.in_(ids[i:i + _CHUNK]))).all())
        return found

    def offsets(self) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset`` of the input the stored alerts cover."""
        with self._errors("read"), self._engine.connect() as conn:
            rows = conn.execute(sa.select(OFFSETS.c.topic, OFFSETS.c.partition,
                                          OFFSETS.c.next_offset)).all()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def count(self) -> int:
        with self._errors("read"), self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ALERTS)).scalar()
                       or 0)

    def query(self, *, types: Sequence[str] = (), subjects: Sequence[str] = (),
              severities: Sequence[str] = (), statuses: Sequence[str] = (),
              since: float | None = None, until: float | None = None,
              limit: int | None = None, after_seq: int | None = None,
              newest_first: bool = True) -> list[StoredAlert]:
        """Alerts matching every filter given (each a set of allowed values; ``since`` and
        ``until`` bound ``detected_at``, inclusive), by ``seq``: newest first by default."""
        q = sa.select(ALERTS).where(*_matching(
            types=types, subjects=subjects, severities=severities, statuses=statuses,
            since=since, until=until))
        if after_seq is not None:
            q = q.where(ALERTS.c.seq > after_seq)
        q = q.order_by(ALERTS.c.seq.desc() if newest_first else ALERTS.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self._errors("read"), self._engine.connect() as conn:
            return [_stored(row) for row in conn.execute(q).mappings()]

    def get(self, alert_id: str) -> StoredAlert | None:
        """The alert with this id, or with the one id that starts with it (None if none);
        AlertStoreError if the prefix is ambiguous."""
        with self._errors("read"), self._engine.connect() as conn:
            row = conn.execute(sa.select(ALERTS).where(ALERTS.c.alert_id == alert_id)) \
                .mappings().first()
            if row is None and alert_id:
                rows = conn.execute(sa.select(ALERTS).where(
                    ALERTS.c.alert_id.startswith(alert_id, autoescape=True)).limit(2)) \
                    .mappings().all()
                if len(rows) > 1:
                    raise AlertStoreError(f"{alert_id!r} is the start of more than one alert "
                                          "id; give more of it")
                row = rows[0] if rows else None
        return None if row is None else _stored(row)

    def history(self, alert_id: str) -> list[StatusChange]:
        """The status changes of an alert, oldest first."""
        with self._errors("read"), self._engine.connect() as conn:
            rows = conn.execute(sa.select(*_CHANGE).where(HISTORY.c.alert_id == alert_id)
                                .order_by(HISTORY.c.id)).all()
        return [StatusChange(*r) for r in rows]

    def latest(self) -> tuple[int, int]:
        """``(seq, change)``: the newest alert's seq and the newest status change's id (0 when
        there is none), where a follower of ``query(after_seq=…)`` and
        :meth:`status_changes` starts."""
        with self._errors("read"), self._engine.connect() as conn:
            seq = conn.execute(sa.select(sa.func.max(ALERTS.c.seq))).scalar()
            change = conn.execute(sa.select(sa.func.max(HISTORY.c.id))).scalar()
        return int(seq or 0), int(change or 0)

    def status_changes(self, after: int = 0, *, types: Sequence[str] = (),
                       subjects: Sequence[str] = (), severities: Sequence[str] = (),
                       since: float | None = None, until: float | None = None,
                       limit: int | None = None) -> list[StatusChange]:
        """The status changes with an id above ``after``, oldest first (at most ``limit``),
        of the alerts matching every filter given, as in :meth:`query`. There is no status
        filter: a change is what moves an alert into or out of one. Ids grow in commit
        order, so following the last id returned misses nothing, across processes."""
        q = sa.select(*_CHANGE).where(HISTORY.c.id > after)
        if wheres := _matching(types=types, subjects=subjects, severities=severities,
                               statuses=(), since=since, until=until):
            q = q.join_from(HISTORY, ALERTS, HISTORY.c.alert_id == ALERTS.c.alert_id) \
                .where(*wheres)
        q = q.order_by(HISTORY.c.id)
        if limit is not None:
            q = q.limit(limit)
        with self._errors("read"), self._engine.connect() as conn:
            return [StatusChange(*r) for r in conn.execute(q).all()]


def _matching(*, types: Sequence[str], subjects: Sequence[str], severities: Sequence[str],
              statuses: Sequence[str], since: float | None,
              until: float | None) -> list[sa.ColumnElement[bool]]:
    """The conditions on ``alerts`` of :meth:`AlertStore.query`'s filters."""
    wheres: list[sa.ColumnElement[bool]] = [
        column.in_(list(allowed)) for column, allowed in (
            (ALERTS.c.type, types), (ALERTS.c.subject, subjects),
            (ALERTS.c.severity, severities), (ALERTS.c.status, statuses)) if allowed]
    if since is not None:
        wheres.append(ALERTS.c.detected_at >= since)
    if until is not None:
        wheres.append(ALERTS.c.detected_at <= until)
    return wheres


def _mark_retracted(conn: Connection, retractions: list[Alert], now: float) -> None:
    """Each alert a newly stored retraction names, marked by it (the first retraction wins)."""
    rows = {a: {"alert_id": a, "retracted_by": r.alert_id,
                "block_hash": str(r.evidence.get("block_hash", r.subject)), "at": now}
            for r in retractions for a in r.evidence.get("retracted", [])
            if isinstance(a, str)}
    if not rows:
        return
    have = set(conn.execute(sa.select(RETRACTED.c.alert_id).where(
        RETRACTED.c.alert_id.in_(list(rows)))).scalars())
    fresh = [row for a, row in rows.items() if a not in have]
    if fresh:
        conn.execute(sa.insert(RETRACTED), fresh)


def _engine_options(backend: str) -> dict[str, Any]:
    if backend == "sqlite":
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers beside the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # a killed process loses no commit
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _lock(conn: Connection) -> None:
    """The writers' lock, until the transaction ends (see the module docstring)."""
    conn.execute(sa.update(META).where(META.c.key == "writer").values(value=META.c.value))


def _known(conn: Connection, ids: list[str]) -> list[str]:
    """Which of ``ids`` the store holds. PostgreSQL: one ``= ANY(array)``, whose plan is an
    index look-up whatever the statistics (a long ``IN ($1, …, $500)``, once psycopg has
    prepared it, can get a generic plan that scans the whole table per chunk: the stalls of
    a young store). SQLite: ``IN`` chunks, within its parameter limit."""
    if not ids:
        return []
    if conn.dialect.name == "postgresql":
        wanted = sa.bindparam("ids", ids, type_=postgresql.ARRAY(ALERTS.c.alert_id.type))
        return list(conn.execute(sa.select(ALERTS.c.alert_id)
                                 .where(ALERTS.c.alert_id == sa.any_(wanted))).scalars())
    return [known for start in range(0, len(ids), _CHUNK)
            for known in conn.execute(sa.select(ALERTS.c.alert_id).where(
                ALERTS.c.alert_id.in_(ids[start:start + _CHUNK]))).scalars()]


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert new alerts' rows (none stored yet: the caller holds the lock and checked).
    PostgreSQL: one ``COPY`` (psycopg), several times faster than a row-by-row
    ``executemany``; SQLite: ``executemany``, fast in process."""
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(ALERTS), rows)
        return
    names = [c.name for c in ALERTS.columns]
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(ALERTS.name), sql.SQL(", ").join(map(sql.Identifier, names)))
    driver = conn.connection.driver_connection  # psycopg's, in this transaction
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(copy_in) as copy:
        for row in rows:
            copy.write_row([row[name] for name in names])


def _set_offsets(conn: Connection, offsets: Mapping[tuple[str, int], int]) -> None:
    """Upsert the input offsets: one ``INSERT … ON CONFLICT DO UPDATE`` for them all."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    upsert = dialect_insert(OFFSETS)
    conn.execute(upsert.on_conflict_do_update(
        index_elements=[OFFSETS.c.topic, OFFSETS.c.partition],
        set_={"next_offset": upsert.excluded.next_offset}),
        [{"topic": topic, "partition": partition, "next_offset": next_offset}
         for (topic, partition), next_offset in sorted(offsets.items())])


def _row(item: Incoming, seq: int, now: float) -> dict[str, Any]:
    a = item.alert
    source = a.source
    partition, offset = source.get("partition"), source.get("offset")
    return {
        "alert_id": a.alert_id, "seq": seq, "type": a.type, "severity": a.severity,
        "score": float(a.score), "subject": a.subject, "detector": a.detector,
        "model_version": a.model_version, "event_time": a.event_time,
        "detected_at": a.detected_at, "stored_at": now,
        "source_topic": source.get("topic") if isinstance(source.get("topic"), str) else None,
        "source_partition": partition if type(partition) is int else None,
        "source_offset": offset if type(offset) is int else None,
        "raw": item.raw.decode("utf-8"), "status": "new", "note": None,
        "status_updated_at": None,
    }


def _stored(row: sa.RowMapping) -> StoredAlert:
    raw = str(row["raw"]).encode("utf-8")
    return StoredAlert(seq=int(row["seq"]), alert=Alert.from_json(raw), raw=raw,
                       status=str(row["status"]), note=row["note"],
                       status_updated_at=row["status_updated_at"],
                       stored_at=float(row["stored_at"]))
