"""``chainwatch ui``'s JSON endpoints and authentication, on a real server over HTTP.

The server is the command as a user runs it (``--port 0``, the URL on stdout's first line),
on a store of a few alerts and an audit log holding some of them; verdict labels go to the
session's real broker (or, in one test, to a port where no broker listens).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import queue
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from pipeline.alert_store import AlertStore, Incoming
from pipeline.alerts import Alert
from pipeline.audit import AuditLog, Leaf, Signer
from pipeline.records import Label
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.alert_backends import alert_store_url
from tests.conftest import CHAINWATCH, cli_env, consume_all, free_port
from tests.helpers import make_alert
from tests.ui_server import call, get_json, ui_server

__all__ = ["alert_store_url"]  # the fixture, imported
pytestmark = pytest.mark.integration

PUMP = Alert.build(type="pump_and_dump", severity="medium", score=0.6,
                   subject=make_alert(0).subject, detector="pump_burst", model_version="1",
                   evidence={"rise": 0.4, "buy_orders": 12}, event_time=50, detected_at=55,
                   source={"topic": "market.trades", "partition": 0, "offset": 9,
                           "item_ids": ["trade_1", "trade_2"]})


@dataclasses.dataclass
class World:
    store: Path
    audit: Path
    key: str
    alerts: list[Alert]  # in the order stored (seq 1, 2, …)

    def args(self) -> list[str]:
        return ["--audit-store", str(self.audit), "--public-key", self.key]


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A store of 4 alerts: two in the audit log as stored, one whose stored bytes were
    altered after the log took it, and one the log does not hold."""
    signer = Signer.generate()
    audit = tmp_path / "audit.db"
    with AuditLog.open(audit, signer) as log:
        log.append([Leaf.from_alert(make_alert(i)) for i in range(3)])
    altered = dataclasses.replace(make_alert(2), score=0.1)
    store = tmp_path / "alerts.db"
    with AlertStore.open(str(store)) as s:
        s.add([make_alert(0), make_alert(1), Incoming(altered.to_json(), altered), PUMP], {})
    return World(store, audit, signer.public_hex(), [make_alert(0), make_alert(1), altered, PUMP])


def _env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    base = cli_env(settings) if settings else dict(os.environ) | {
        "CHAINWATCH_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}  # no broker there
    return base | extra


def test_alerts_newest_first_with_the_queues_filters(world: World) -> None:
    with ui_server(world.store, *world.args(), env=_env()) as url:
        rows = get_json(f"{url}/api/alerts")
        assert [r["seq"] for r in rows] == [4, 3, 2, 1]
        assert [r["alert_id"] for r in rows] == [a.alert_id for a in world.alerts[::-1]]
        assert rows[0]["href"] == f"/alerts/{PUMP.alert_id}" and rows[0]["status"] == "new"
        assert rows[0]["detected"] == "1970-01-01 00:00:55Z"
        fields = {k: rows[0][k] for k in Alert.__dataclass_fields__}
        assert Alert.from_json(json.dumps(fields).encode()) == PUMP

        def ids(query: str) -> list[str]:
            return [r["alert_id"] for r in get_json(f"{url}/api/alerts?{query}")]

        assert ids("type=pump_and_dump") == [PUMP.alert_id]
        assert ids("severity=high") == [a.alert_id for a in world.alerts[2::-1]]
        assert ids("type=pump_and_dump,rug_pull&limit=2") == [PUMP.alert_id,
                                                               world.alerts[2].alert_id]
        assert ids(f"subject={PUMP.subject}") == [PUMP.alert_id, world.alerts[0].alert_id]
        assert ids("severity=high&severity=medium&until=1") == [world.alerts[1].alert_id,
                                                                 world.alerts[0].alert_id]
        assert ids("since=1970-01-01T00:00:02Z") == [PUMP.alert_id, world.alerts[2].alert_id]
        assert ids("status=confirmed") == []
        for bad, says in (("severity=huge", "severity 'huge' is not one of"),
                          ("limit=0", "limit 0 must be between"),
                          ("since=yesterday", "neither unix seconds nor an ISO time")):
            status, _, body = call(f"{url}/api/alerts?{bad}")
            assert status == 400 and says in json.loads(body)["error"], body
        assert call(f"{url}/?status=lost")[0] == 400
        page = call(f"{url}/?type=pump_and_dump")[2].decode()
        assert PUMP.alert_id in page and world.alerts[0].alert_id not in page


def test_one_alert_with_its_audit_check(world: World) -> None:
    with ui_server(world.store, *world.args(), env=_env()) as url:
        outcomes = {}
        for a in world.alerts:
            got = get_json(f"{url}/api/alerts/{a.alert_id[:10]}")  # a prefix is enough
            assert got["alert_id"] == a.alert_id and got["history"] == []
            outcomes[a.alert_id] = got["audit"]["outcome"]
        assert list(outcomes.values()) == ["verified", "verified", "failed", "not_in_log"]
        page = call(f"{url}/alerts/{world.alerts[0].alert_id}")[2].decode()
        assert "VERIFIED" in page and "log_0" in page and "<svg" in page
        assert "FAILED" in call(f"{url}/alerts/{world.alerts[2].alert_id}")[2].decode()
        page = call(f"{url}/alerts/{PUMP.alert_id}")[2].decode()
        assert "NOT IN LOG" in page and "trade_2" in page and "buy_orders" in page
        status, _, body = call(f"{url}/api/alerts/ffffffffff")
        assert status == 404 and "no alert 'ffffffffff'" in json.loads(body)["error"]
        assert call(f"{url}/alerts/ffffffffff")[0] == 404


def test_status_persists_and_a_verdict_is_published(world: World, settings: Settings,
                                                    consumer_factory: Callable[...,
                                                                               KafkaConsumer],
                                                    ) -> None:
    ensure_topics(settings)
    labels = consumer_factory(settings.topics.labels, auto_offset_reset="earliest")
    target = world.alerts[1]
    with ui_server(world.store, *world.args(), env=_env(settings)) as url:
        status, _, body = call(f"{url}/api/alerts/{target.alert_id}/status", "POST",
                               {"status": "acknowledged", "note": "looking"})
        assert status == 200, body
        got = json.loads(body)
        assert (got["status"], got["note"], got["label"]) == ("acknowledged", "looking", None)
        status, _, body = call(f"{url}/api/alerts/{target.alert_id}/status", "POST",
                               {"status": "confirmed", "note": "drained"})
        got = json.loads(body)
        assert status == 200 and got["label"] == {
            "label": 1, "topic": settings.topics.labels, "published": True, "reason": None}
        # the form on the alert page: saved, then back to the page (303), which says so
        status, headers, _ = call(f"{url}/alerts/{PUMP.alert_id}/status", "POST",
                                  "status=false_positive&note=a+real+buyer")
        assert status == 303 and headers["location"].startswith(f"/alerts/{PUMP.alert_id}?")
        page = call(url + headers["location"])[2].decode()
        assert "published as a label" in page and "a real buyer" in page
        detail = get_json(f"{url}/api/alerts/{target.alert_id}")
        assert [(h["status"], h["note"]) for h in detail["history"]] == [
            ("acknowledged", "looking"), ("confirmed", "drained")]
        for bad in ({"status": "done"}, {"note": "no status"}, {"status": 1}):
            assert call(f"{url}/api/alerts/{target.alert_id}/status", "POST", bad)[0] == 400
    with AlertStore.open(str(world.store), create=False) as store:
        kept = store.get(target.alert_id)
        assert kept is not None and (kept.status, kept.note) == ("confirmed", "drained")
        assert [h.status for h in store.history(target.alert_id)] == ["acknowledged",
                                                                       "confirmed"]
    sent = [Label.from_dict(json.loads(m.value)) for m in consume_all(labels, 2)]
    assert sorted((lb.subject, lb.label, lb.source) for lb in sent) == sorted(
        [(target.subject, 1, "analyst"), (PUMP.subject, 0, "analyst")])


def test_without_kafka_the_status_is_kept_and_the_label_said_unpublished(world: World) -> None:
    with ui_server(world.store, *world.args(), env=_env()) as url:
        status, headers, _ = call(f"{url}/alerts/{PUMP.alert_id}/status", "POST",
                                  "status=confirmed&note=")
        assert status == 303
        page = call(url + headers["location"])[2].decode()
        assert "the label was NOT published" in page and "cannot reach Kafka" in page
        assert get_json(f"{url}/api/alerts/{PUMP.alert_id}")["status"] == "confirmed"


def _stream_sends_new_alerts(store: str, url: str) -> None:
    """New alerts added to ``store`` (two rug pulls, a pump between them) reach
    ``/api/stream?type=rug_pull`` once each, within 2 s, the pump filtered out."""
    events: list[dict[str, object]] = []

    def listen() -> None:
        request = urllib.request.Request(f"{url}/api/stream?type=rug_pull")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) == 2:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.0)  # connected: the stream starts after the newest stored alert
    fresh = [make_alert(7), dataclasses.replace(PUMP, subject="0xother", alert_id="p2"),
             make_alert(8)]
    started = time.monotonic()
    with AlertStore.open(store, create=False) as opened:
        opened.add(fresh, {})
    listener.join(5)
    assert not listener.is_alive(), events
    assert time.monotonic() - started < 2.0
    assert [e["alert_id"] for e in events] == [fresh[0].alert_id, fresh[2].alert_id]
    assert [e["seq"] for e in events] == [5, 7]  # the pump alert (seq 6) filtered out


class _Stream:
    """``/api/stream`` read in a thread: its events ``(id, event, data)`` as they arrive."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
        self.opened = threading.Event()  # the first block came: the start cursor is fixed
        self.failure: BaseException | None = None
        request = urllib.request.Request(url, headers=headers or {})
        threading.Thread(target=self._read, args=(request,), daemon=True).start()
        assert self.opened.wait(10), f"the stream did not open: {self.failure}"

    def _read(self, request: urllib.request.Request) -> None:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                fields: dict[str, str] = {}
                for raw in response:
                    line = raw.decode().rstrip("\n")
                    if line:
                        if not line.startswith(":"):
                            name, _, value = line.partition(": ")
                            fields[name] = value
                        continue
                    self.opened.set()
                    if "event" in fields:
                        self.events.put((fields["id"], fields["event"],
                                         json.loads(fields["data"])))
                    fields = {}
        except Exception as exc:  # the server stopping ends it; kept for the asserts
            self.failure = exc

    def next(self, within_s: float = 2.0) -> tuple[str, str, dict[str, Any]]:
        """The next event; it must come within ``within_s``."""
        try:
            return self.events.get(timeout=within_s)
        except queue.Empty:
            raise AssertionError(f"no event within {within_s} s ({self.failure})") from None

    def quiet(self, for_s: float = 1.0) -> bool:
        """True when no event comes for ``for_s``."""
        try:
            extra = self.events.get(timeout=for_s)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected event {extra}")


def _stream_sends_status_changes(store: str, url: str, alerts: list[Alert]) -> None:
    """Status changes reach ``/api/stream?type=rug_pull&status=new`` within 2 s each, made
    through the server (the API) or through a second AlertStore on the same URL (this
    process), status filter or not; the pump's change is filtered out by type. Each event's
    id is the cursor SEQ:CHANGE, and resuming from one (Last-Event-ID, over ``after``) sends
    exactly the events after it, of both kinds. ``alerts[0]``, ``[1]`` are rug pulls, the
    last is PUMP."""
    with AlertStore.open(store, create=False) as other:
        seq, change = other.latest()
        live = _Stream(f"{url}/api/stream?type=rug_pull&status=new")
        started = time.monotonic()
        status, _, body = call(f"{url}/api/alerts/{alerts[0].alert_id}/status", "POST",
                               {"status": "acknowledged", "note": "via the api"})
        assert status == 200, body
        first = live.next()
        assert time.monotonic() - started < 2.0
        assert first[:2] == (f"{seq}:{change + 1}", "status")
        assert first[2] | {"at": 0} == {"change": change + 1, "alert_id": alerts[0].alert_id,
                                        "status": "acknowledged", "note": "via the api",
                                        "at": 0}
        assert isinstance(first[2]["at"], float) and first[2]["at"] > time.time() - 60
        other.set_status(PUMP.alert_id, "acknowledged")  # not a rug pull: not sent
        started = time.monotonic()
        other.set_status(alerts[1].alert_id[:12], "false_positive", "by the store")
        second = live.next()
        assert time.monotonic() - started < 2.0
        assert second[:2] == (f"{seq}:{change + 3}", "status")  # change + 2: the pump's
        assert (second[2]["alert_id"], second[2]["status"], second[2]["note"]) == (
            alerts[1].alert_id, "false_positive", "by the store")  # sent, status filter or not
        fresh = make_alert(30)
        other.add([fresh], {})
        third = live.next()
        assert third[:2] == (f"{seq + 1}:{change + 3}", "alert")  # the cursor covers both
        assert third[2]["alert_id"] == fresh.alert_id
        assert live.quiet(0.6)

        # -- resuming: Last-Event-ID wins over after; a bare seq; a bad cursor -------------
        again = _Stream(f"{url}/api/stream?type=rug_pull&after=0:0",
                        headers={"Last-Event-ID": first[0]})
        # one poll: the alerts after seq first, then the changes after change + 1
        assert [again.next(), again.next()] == [(f"{seq + 1}:{change + 1}", *third[1:]),
                                                (f"{seq + 1}:{change + 3}", *second[1:])]
        assert again.quiet(0.6)
        bare = _Stream(f"{url}/api/stream?after={seq}")
        assert bare.next()[:2] == (f"{seq + 1}:{change + 3}", "alert")  # changes: newest on
        assert bare.quiet(0.6)
        status, _, body = call(f"{url}/api/stream?after=1:x")
        assert status == 400 and "neither SEQ nor SEQ:CHANGE" in json.loads(body)["error"]


def test_the_event_stream_sends_each_new_alert_once(world: World) -> None:
    with ui_server(world.store, *world.args(), env=_env()) as url:
        _stream_sends_new_alerts(str(world.store), url)


def test_on_each_backend_the_queue_status_and_stream_work(alert_store_url: str) -> None:
    """SQLite and PostgreSQL: the same endpoints on a store of four alerts."""
    alerts = [make_alert(0), make_alert(1), make_alert(2), PUMP]
    with AlertStore.open(alert_store_url) as s:
        s.add(alerts, {})
    with ui_server(alert_store_url, env=_env()) as url:
        assert [r["alert_id"] for r in get_json(f"{url}/api/alerts")] == [
            a.alert_id for a in alerts[::-1]]
        assert [r["alert_id"] for r in get_json(f"{url}/api/alerts?severity=medium")] == [
            PUMP.alert_id]
        status, _, body = call(f"{url}/api/alerts/{PUMP.alert_id}/status", "POST",
                               {"status": "acknowledged", "note": "on it"})
        assert status == 200 and json.loads(body)["status"] == "acknowledged", body
        assert [r["alert_id"] for r in get_json(f"{url}/api/alerts?status=acknowledged")] \
            == [PUMP.alert_id]
        assert get_json(f"{url}/api/alerts/{PUMP.alert_id}")["audit"]["outcome"] == "no_log"
        _stream_sends_new_alerts(alert_store_url, url)
        _stream_sends_status_changes(alert_store_url, url, alerts)


def test_a_token_is_required_and_enforced(world: World) -> None:
    with ui_server(world.store, *world.args(), env=_env(CHAINWATCH_UI_TOKEN="s3cret")) as url:
        for path in ("/", "/api/alerts", f"/alerts/{PUMP.alert_id}", "/api/stream",
                     "/static/ui.css"):
            status, headers, body = call(url + path)
            assert status == 401 and "Bearer" in headers["www-authenticate"], path
        status, _, body = call(f"{url}/api/alerts")
        assert "authentication required" in json.loads(body)["error"]
        assert call(f"{url}/api/alerts", headers={"Authorization": "Bearer wrong"})[0] == 401
        good = {"Authorization": "Bearer s3cret"}
        assert len(get_json(f"{url}/api/alerts", headers=good)) == 4
        assert call(f"{url}/api/alerts/{PUMP.alert_id}/status", "POST",
                    {"status": "acknowledged"})[0] == 401
        assert get_json(f"{url}/api/alerts/{PUMP.alert_id}", headers=good)["status"] == "new"
        assert call(f"{url}/login?token=wrong")[0] == 401
        status, headers, _ = call(f"{url}/login?token=s3cret")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert cookie.startswith("token=s3cret;") and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert call(f"{url}/", headers={"Cookie": "token=s3cret"})[0] == 200
        # a page of another site cannot post with the browser's credentials
        assert call(f"{url}/api/alerts/{PUMP.alert_id}/status", "POST",
                    {"status": "confirmed"},
                    headers=good | {"Origin": "http://evil.example"})[0] == 403


def test_basic_authentication(world: World) -> None:
    env = _env(CHAINWATCH_UI_USERNAME="ana", CHAINWATCH_UI_PASSWORD="pw:with:colons")
    with ui_server(world.store, *world.args(), env=env) as url:
        status, headers, _ = call(f"{url}/")
        assert status == 401 and headers["www-authenticate"].startswith('Basic realm=')

        def basic(user: str, password: str) -> dict[str, str]:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}

        assert call(f"{url}/api/alerts", headers=basic("ana", "pw"))[0] == 401
        assert call(f"{url}/api/alerts", headers=basic("bob", "pw:with:colons"))[0] == 401
        assert call(f"{url}/api/alerts", headers={"Authorization": "Basic %%%"})[0] == 401
        assert len(get_json(f"{url}/api/alerts", headers=basic("ana", "pw:with:colons"))) == 4


@pytest.mark.parametrize(("host", "extra", "says"), [
    ("0.0.0.0", {}, "--host 0.0.0.0 would serve the alert store beyond this machine without "
     "authentication"),
    ("::", {}, "--host :: would serve the alert store beyond this machine"),
    ("127.0.0.1", {"CHAINWATCH_UI_USERNAME": "ana"}, "needs both ui.username and ui.password"),
])
def test_beyond_loopback_without_authentication_is_refused(world: World, host: str,
                                                           extra: dict[str, str],
                                                           says: str) -> None:
    result = subprocess.run([CHAINWATCH, "ui", "--store", str(world.store), "--host", host,
                             "--port", "0"], capture_output=True, text=True, timeout=60,
                            env=_env(None, **extra), check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr


def test_beyond_loopback_with_a_token_serves(world: World) -> None:
    with ui_server(world.store, "--host", "0.0.0.0", *world.args(),
                   env=_env(CHAINWATCH_UI_TOKEN="t")) as url:
        assert url.startswith("http://0.0.0.0:")
        port = url.rpartition(":")[2]
        status, _, _ = call(f"http://127.0.0.1:{port}/api/alerts",
                            headers={"Authorization": "Bearer t"})
        assert status == 200


def test_a_missing_store_and_a_taken_port_are_one_line(tmp_path: Path, world: World) -> None:
    result = subprocess.run([CHAINWATCH, "ui", "--store", str(tmp_path / "none.db")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "no alert store at" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with ui_server(world.store, env=_env()) as url:
        port = url.rpartition(":")[2]
        result = subprocess.run([CHAINWATCH, "ui", "--store", str(world.store), "--port", port],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in result.stderr
