"""The alert store's suite, run on each backend: SQLite, and a real PostgreSQL server.

The "postgresql" backend takes its server from the session fixture ``postgresql_url``
(tests/postgres.py); each test gets its own schema there, dropped afterwards.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.alert_store import FORMAT, AlertStore, AlertStoreError, Incoming, store_url
from pipeline.alerts import Alert
from pipeline.errors import ConfigError, RecordError
from tests.alert_backends import alert_store_url
from tests.helpers import make_alert

__all__ = ["alert_store_url"]  # the fixture, imported: every test here runs on each backend


@pytest.fixture
def store(alert_store_url: str) -> Iterator[AlertStore]:
    with AlertStore.open(alert_store_url) as opened:
        yield opened


def alert(i: int, **changes: object) -> Alert:
    """``make_alert(i)`` with some fields changed (the id stays that of ``make_alert(i)``)."""
    return dataclasses.replace(make_alert(i), **changes)  # type: ignore[arg-type]


def test_add_is_idempotent_on_alert_id_and_the_first_copy_wins(store: AlertStore) -> None:
    first = alert(1)
    other_bytes = alert(1, score=0.5)  # same id, other content: the stored copy stays
    assert store.add([first, alert(2), first], {}) == 2
    assert store.add([other_bytes, alert(2), alert(3)], {}) == 1
    assert store.count() == 3
    got = store.get(first.alert_id)
    assert got is not None and got.alert == first and got.raw == first.to_json()


def test_offsets_are_written_with_the_alerts_in_one_transaction(store: AlertStore) -> None:
    assert store.offsets() == {}
    store.add([alert(1)], {("alerts", 0): 5, ("alerts", 1): 2})
    store.add([], {("alerts", 1): 9})  # offsets advance with no new alert (a bad message)
    assert store.offsets() == {("alerts", 0): 5, ("alerts", 1): 9}
    bad = alert(2, evidence={"x": object()})  # cannot be encoded: the batch fails whole
    with pytest.raises(TypeError):
        store.add([alert(3), bad], {("alerts", 0): 99})
    assert store.offsets() == {("alerts", 0): 5, ("alerts", 1): 9}
    assert store.get(alert(3).alert_id) is None and store.count() == 1


def test_a_failed_transaction_rolls_back_alerts_and_offsets(store: AlertStore,
                                                            alert_store_url: str) -> None:
    """A write that fails in the database (here: a row too big for a column on PostgreSQL,
    a trigger on SQLite) leaves neither the alerts nor the offsets of its batch."""
    engine = sa.create_engine(store_url(alert_store_url))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON alert_offsets "
                                 "WHEN NEW.partition = 7 BEGIN SELECT RAISE(ABORT, 'no'); END")
        else:
            conn.exec_driver_sql("ALTER TABLE alert_offsets ADD CONSTRAINT refuse "
                                 "CHECK (partition <> 7)")
    engine.dispose()
    with pytest.raises(AlertStoreError, match="cannot write the alert store"):
        store.add([alert(1)], {("alerts", 0): 1, ("alerts", 7): 1})
    assert store.count() == 0 and store.offsets() == {}


def test_a_refused_alert_rolls_back_its_batch_and_offsets(store: AlertStore,
                                                          alert_store_url: str) -> None:
    """An alert row the database refuses (on PostgreSQL inside the COPY) fails the whole
    batch with an AlertStoreError: no alert of it, no offset, and the next batch is
    stored as usual."""
    engine = sa.create_engine(store_url(alert_store_url))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON alerts WHEN "
                                 "NEW.subject = 'refused' BEGIN SELECT RAISE(ABORT, 'no'); END")
        else:
            conn.exec_driver_sql("ALTER TABLE alerts ADD CONSTRAINT refuse "
                                 "CHECK (subject <> 'refused')")
    engine.dispose()
    store.add([alert(1)], {("alerts", 0): 1})
    with pytest.raises(AlertStoreError, match="cannot write the alert store"):
        store.add([alert(2), alert(3, subject="refused"), alert(4)], {("alerts", 0): 4})
    assert store.count() == 1 and store.offsets() == {("alerts", 0): 1}
    assert store.add([alert(2), alert(4)], {("alerts", 0): 5}) == 2
    assert [s.seq for s in store.query(newest_first=False)] == [1, 2, 3]


def test_big_batches_half_duplicates_are_numbered_without_gaps(store: AlertStore) -> None:
    """Batches far over one look-up chunk (500 ids), half of each stored already: the new
    ones only, numbered on from the last seq, byte-exact, offsets set."""
    first = [alert(i) for i in range(0, 3000, 2)]
    assert store.add(first, {("alerts", 0): 1500}) == 1500
    mixed = [alert(i) for i in range(3000)] + [alert(3000), alert(3000)]
    assert store.add(mixed, {("alerts", 0): 3001, ("alerts", 1): 7}) == 1501
    stored = store.query(newest_first=False)
    assert [s.seq for s in stored] == list(range(1, 3002))
    assert [s.alert_id for s in stored[1500:]] == [alert(i).alert_id for i in
                                                   [*range(1, 3000, 2), 3000]]
    assert all(s.raw == s.alert.to_json() for s in stored[::250])
    assert store.offsets() == {("alerts", 0): 3001, ("alerts", 1): 7}


def test_json_round_trip_is_byte_exact(store: AlertStore) -> None:
    a = Alert.build(type="pump_and_dump", severity="critical", score=0.123456789,
                    subject="0x" + "ab" * 20, detector="pump_phase", model_version="2",
                    evidence={"return_10": 0.41, "nested": {"k": [1, 2.5, "é"]}},
                    source={"topic": "chain.dex", "partition": 3, "offset": 2**40,
                            "item_ids": ["log_1", "log_2"]},
                    event_time=1_700_000_000, detected_at=1_700_000_012,
                    addresses=("0x1", "0x2"), labels={"block_number": 42})
    wire = a.to_json()
    store.add([Incoming.parse(wire)], {})
    got = store.get(a.alert_id)
    assert got is not None
    assert got.raw == wire and got.alert == a and got.alert.to_json() == wire
    assert got.to_json_dict()["status"] == "new" and got.to_json_dict()["seq"] == 1


def test_filters_and_ordering(store: AlertStore) -> None:
    alerts = [alert(i, type="rug_pull" if i % 2 else "wash_trading",
                    severity="high" if i < 5 else "low", detected_at=100 + i) for i in range(10)]
    store.add(alerts[:6], {})
    store.add(alerts[6:], {})
    ids = [a.alert_id for a in alerts]
    assert [s.alert_id for s in store.query()] == ids[::-1]  # newest first
    assert [s.seq for s in store.query(newest_first=False)] == list(range(1, 11))
    assert [s.alert_id for s in store.query(limit=3)] == ids[:-4:-1]
    assert {s.alert.type for s in store.query(types=["rug_pull"])} == {"rug_pull"}
    assert len(store.query(types=["rug_pull"], severities=["low"])) == 3  # 5, 7, 9
    assert [s.alert_id for s in store.query(subjects=[alerts[4].subject])] == [ids[4]]
    assert [s.alert.detected_at for s in store.query(since=103, until=105,
                                                     newest_first=False)] == [103, 104, 105]
    assert [s.seq for s in store.query(after_seq=7, newest_first=False)] == [8, 9, 10]
    store.set_status(ids[0], "confirmed")
    assert [s.alert_id for s in store.query(statuses=["confirmed"])] == [ids[0]]
    assert len(store.query(statuses=["new"])) == 9


def test_get_by_unique_prefix(store: AlertStore) -> None:
    alerts = [alert(i) for i in range(40)]
    store.add(alerts, {})
    a = alerts[7]
    for prefix in (a.alert_id, a.alert_id[:12]):
        got = store.get(prefix)
        assert got is not None and got.alert_id == a.alert_id
    assert store.get("zz") is None and store.get("%") is None
    first = {x.alert_id[0] for x in alerts}
    common = next(c for c in first if sum(x.alert_id[0] == c for x in alerts) > 1)
    with pytest.raises(AlertStoreError, match="more than one"):
        store.get(common)


def test_set_status_keeps_a_history(store: AlertStore) -> None:
    a = alert(1)
    store.add([a], {})
    acked = store.set_status(a.alert_id[:10], "acknowledged", "looking")
    assert (acked.status, acked.note) == ("acknowledged", "looking")
    assert acked.status_updated_at is not None
    done = store.set_status(a.alert_id, "false_positive")  # no note: the old one stays
    assert (done.status, done.note) == ("false_positive", "looking")
    assert [(h.status, h.note) for h in store.history(a.alert_id)] == [
        ("acknowledged", "looking"), ("false_positive", None)]
    label = done.verdict_label()
    assert label is not None and (label.subject, label.label, label.source) == \
        (a.subject, 0, "analyst")
    assert acked.verdict_label() is None
    with pytest.raises(ConfigError, match="not one of"):
        store.set_status(a.alert_id, "fraud")
    with pytest.raises(AlertStoreError, match="no alert"):
        store.set_status("nope", "confirmed")


def test_reopening_keeps_everything(alert_store_url: str) -> None:
    with AlertStore.open(alert_store_url) as store:
        store.add([alert(1), alert(2)], {("alerts", 0): 2})
    with AlertStore.open(alert_store_url, create=False) as store:
        assert store.count() == 2 and store.offsets() == {("alerts", 0): 2}
        store.add([alert(3)], {})
        assert [s.seq for s in store.query(newest_first=False)] == [1, 2, 3]


def test_incoming_parse_refuses_what_is_not_an_alert() -> None:
    assert Incoming.parse(alert(1).to_json()).alert == alert(1)
    for raw, code in ((b"nope", "not_json"), (b"[1]", "bad_type"),
                      (b'{"alert_id": "x"}', "missing_field"),
                      (alert(1).to_json()[:-1] + b',"extra":1}', "bad_value"),
                      (alert(1).to_json().replace(b'"score":0.9', b'"score":"high"'),
                       "bad_type")):
        with pytest.raises(RecordError) as caught:
            Incoming.parse(raw)
        assert caught.value.code == code, raw


def test_bad_urls_and_paths_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scheme 'mysql' is not supported"):
        AlertStore.open("mysql://u:secret@h/db")
    with pytest.raises(ConfigError, match="is a directory"):
        AlertStore.open(str(tmp_path))
    with pytest.raises(AlertStoreError, match="no alert store at"):
        AlertStore.open(str(tmp_path / "none.db"), create=False)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(AlertStoreError, match="not a chainwatch alert store"):
        AlertStore.open(str(other))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(AlertStoreError, match="cannot open the alert store"):
        AlertStore.open(str(junk))
    try:
        AlertStore.open("mysql://u:secret@h/db")
    except ConfigError as exc:
        assert "secret" not in str(exc)


def test_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    AlertStore.open(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alert_store_meta SET value = 'chainwatch-alerts/9' "
                     "WHERE key = 'format'")
    with pytest.raises(AlertStoreError, match=f"reads {FORMAT} only"):
        AlertStore.open(str(path))


def test_postgresql_urls_use_psycopg() -> None:
    assert store_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert store_url("a/b.db") == "sqlite:///a/b.db"
    assert store_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"


def test_concurrent_writers_number_alerts_in_commit_order(alert_store_url: str) -> None:
    """Writers take the lock before they number: seqs are 1..n with no gap, and each
    batch's alerts are consecutive, so a reader following seq misses nothing."""
    import threading

    with AlertStore.open(alert_store_url):
        pass  # tables made once, before the writers race

    def write(worker: int) -> None:
        with AlertStore.open(alert_store_url) as mine:
            for b in range(8):
                base = (worker * 8 + b) * 25
                mine.add([alert(base + i) for i in range(25)], {("alerts", worker): b + 1})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with AlertStore.open(alert_store_url) as store:
        stored = store.query(newest_first=False)
        assert [s.seq for s in stored] == list(range(1, 801))
        batch_of = [int(s.alert.subject, 16) // 25 for s in stored]
        assert all(batch_of[i] == batch_of[i - i % 25] for i in range(800))  # contiguous
        assert store.offsets() == {("alerts", w): 8 for w in range(4)}


def test_a_verdict_label_is_at_the_alerts_stream_time(store: AlertStore) -> None:
    a = alert(1, labels={"block_number": 16_000_098})
    store.add([a], {})
    label = store.set_status(a.alert_id, "confirmed").verdict_label()
    assert label is not None
    assert (label.subject, label.label, label.source, label.block_number,
            label.released_block, label.key) == (a.subject, 1, "analyst", 16_000_098,
                                                 16_000_098, a.subject)


def test_status_changes_follow_the_history_of_every_writer(store: AlertStore,
                                                           alert_store_url: str) -> None:
    """Changes made through two stores on one URL (two processes, or hosts, alike) come out
    of ``status_changes`` once each, in the order committed, after any id, filtered like
    ``query`` but never by status."""
    alerts = [alert(i, type="rug_pull" if i < 3 else "wash_trading", detected_at=100 + i)
              for i in range(5)]
    store.add(alerts, {})
    assert store.latest() == (5, 0) and store.status_changes() == []
    ids = [a.alert_id for a in alerts]
    store.set_status(ids[0], "acknowledged", "looking")
    with AlertStore.open(alert_store_url, create=False) as other:
        other.set_status(ids[3], "confirmed")
        other.set_status(ids[0][:10], "false_positive", "a real buyer")
    store.set_status(ids[1], "acknowledged")
    changes = store.status_changes()
    assert [(c.alert_id, c.status, c.note) for c in changes] == [
        (ids[0], "acknowledged", "looking"), (ids[3], "confirmed", None),
        (ids[0], "false_positive", "a real buyer"), (ids[1], "acknowledged", None)]
    numbers = [c.id for c in changes]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    assert store.latest() == (5, numbers[-1])
    assert store.status_changes(numbers[1]) == changes[2:]
    assert store.status_changes(numbers[-1]) == []
    assert store.status_changes(limit=2) == changes[:2]
    assert [c.alert_id for c in store.status_changes(types=["rug_pull"])] == [
        ids[0], ids[0], ids[1]]
    assert [c.alert_id for c in store.status_changes(since=101, until=103)] == [ids[3],
                                                                              ids[1]]
    assert [c.alert_id for c in store.status_changes(numbers[0], subjects=[alerts[0].subject],
                                                     severities=["high"])] == [ids[0]]
    assert store.history(ids[0]) == [changes[0], changes[2]]


def test_a_status_change_committed_late_is_not_skipped(alert_store_url: str) -> None:
    """A follower that has seen change N never gets a change numbered below N later: a
    writer holding its transaction open (here, stopped right after its insert into the
    history) keeps a second writer from numbering, and so from committing, before it."""
    import threading

    with AlertStore.open(alert_store_url) as s:
        s.add([alert(1), alert(2)], {})
    held, release = threading.Event(), threading.Event()
    slow = AlertStore.open(alert_store_url, create=False)
    fast = AlertStore.open(alert_store_url, create=False)
    follower = AlertStore.open(alert_store_url, create=False)

    def stop_after_the_insert(_conn: object, _cursor: object, statement: str,
                              *_rest: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO STATUS_HISTORY"):
            held.set()
            release.wait(10)

    sa.event.listen(slow._engine, "after_cursor_execute", stop_after_the_insert)
    first = threading.Thread(target=slow.set_status, args=(alert(1).alert_id, "acknowledged"))
    second = threading.Thread(target=fast.set_status, args=(alert(2).alert_id, "confirmed"))
    try:
        first.start()
        assert held.wait(10)
        second.start()
        second.join(0.5)
        assert second.is_alive()  # waiting for the first writer's lock
        assert follower.status_changes() == []  # nothing committed, nothing to skip
        release.set()
        first.join(10)
        second.join(10)
        assert not first.is_alive() and not second.is_alive()
        seen = follower.status_changes()
        assert [(c.alert_id, c.status) for c in seen] == [
            (alert(1).alert_id, "acknowledged"), (alert(2).alert_id, "confirmed")]
        assert seen[0].id < seen[1].id
    finally:
        release.set()
        for opened in (slow, fast, follower):
            opened.close()


def test_a_stored_retraction_marks_the_alerts_it_names(store: AlertStore) -> None:
    from pipeline.records import Retraction
    from pipeline.scoring.retractions import Retractions

    alerts = [make_alert(i) for i in range(4)]
    for a in alerts:  # raised on block 9
        object.__setattr__(a, "labels", {"block_number": 9})
    book = Retractions()
    book.note(alerts[:2])
    (retraction,) = book.retract(Retraction(9, "0x" + "ab" * 32, "reorg"), {"topic": "t"})
    store.add([*alerts, retraction], {})
    ids = [a.alert_id for a in alerts]
    assert store.retracted(ids) == {ids[0]: retraction.alert_id, ids[1]: retraction.alert_id}
    store.add([retraction], {})  # a re-sent retraction changes nothing
    assert store.retracted([*ids, "nope"]) == {ids[0]: retraction.alert_id,
                                               ids[1]: retraction.alert_id}
