"""The web view's routes: pages for people, JSON for programs, one event stream.

``/``                        the alert queue, newest first, with the filter form; live
``/alerts/{id}``             one alert: evidence, its records around it (chart and table),
                             its subject's alerts (chart), audit proof, status form
``POST /alerts/{id}/status`` the form's target (then back to the alert page, 303)
``GET /api/alerts``          a JSON array, newest first; filters as query parameters
``GET /api/alerts/{id}``     the alert, status, note, history and its audit check
``GET /api/alerts/{id}/context``  the subject's records around the alert (price, liquidity,
                             flow; :mod:`pipeline.alert_context`), or why there are none
``POST /api/alerts/{id}/status``  ``{"status", "note"}``: stored; a verdict is published
``GET /api/stream``          server-sent events: ``alert`` for each newly stored alert,
                             ``status`` for each status change
``/static/…``                the page's CSS and script, from this package

The event stream follows two numbers of the store, the alerts' ``seq`` and the status
history's ``id`` (both handed out in commit order, whichever process writes: see
:mod:`pipeline.alert_store`). Each event's ``id`` is the combined cursor ``SEQ:CHANGE``, the
newest seq and change id sent so far, whichever kind the event is; resuming from it
(``Last-Event-ID`` on reconnect, else the ``after`` parameter) sends the alerts after SEQ and
the changes after CHANGE, so neither kind is lost or repeated. ``Last-Event-ID`` wins over
``after``: a reconnecting EventSource sends the URL it first opened, ``after`` and all. A
bare ``SEQ`` (the older form) means the changes after the newest at connection; no cursor,
both newest. Every poll sends new alerts first, then changes; an ``alert`` event carries the
alert's status at the time it was read, and the changes that follow bring it up to date.

``status`` data: ``{"change", "alert_id", "status", "note", "at"}``, ``note`` being the one
given with the change (null when the alert's note was kept). Changes are filtered by the
alert's type, subject, severity and time like alerts, never by status: a page that filters
on status needs the change that takes a row out of it.

Store calls are blocking (SQLAlchemy), so they run in Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode

import anyio
import orjson
from kafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from consumers.ui.auth import AuthMiddleware, Credentials
from consumers.ui.chart import Point, records_figure, stamp, timeline_svg
from consumers.ui.filters import FilterError, Filters
from pipeline import alert_context, clients
from pipeline.alert_context import Context
from pipeline.alert_proof import FAILED, IN_LOG, NO_LOG, NOT_IN_LOG, check_alert
from pipeline.alert_store import (
    STATUSES,
    AlertStore,
    AlertStoreError,
    StatusChange,
    StoredAlert,
)
from pipeline.alerts import SEVERITIES, Alert
from pipeline.audit import AuditKeyError
from pipeline.audit.trust import configured_public_key
from pipeline.errors import BrokerError, ConfigError
from pipeline.settings import Settings
from producers.verdicts import publish_label

HERE = Path(__file__).parent
POLL_S = 0.25  # how often the event stream looks for new alerts and status changes
BATCH = 500  # alerts, and changes, one poll sends at most
KEEPALIVE_S = 15.0
KAFKA_TIMEOUT_MS = 2000  # an alert page waits this long for Kafka when its records are not kept
KAFKA_RETRY_S = 30.0  # and, Kafka unreachable, tries again only after this
SHOWN = {IN_LOG: "VERIFIED", NOT_IN_LOG: "NOT IN LOG", FAILED: "FAILED", NO_LOG: "NO AUDIT LOG",
         "no_key": "NO KEY"}


def build_app(settings: Settings, store: AlertStore, *,
              publish: Callable[[Settings, Any], str | None] = publish_label) -> Starlette:
    """The app on ``store`` (opened by the caller, closed by it) and ``settings``' audit log,
    authenticated by ``settings.ui``; ``publish`` sends a verdict label (None when sent,
    else why not)."""
    views = _Views(settings, store, publish)
    creds = Credentials(settings.ui.token.get(), settings.ui.username,
                        settings.ui.password.get())
    return Starlette(routes=[
        Route("/", views.queue),
        Route("/alerts/{alert_id}", views.alert_page),
        Route("/alerts/{alert_id}/status", views.post_form, methods=["POST"]),
        Route("/api/alerts", views.api_list),
        Route("/api/alerts/{alert_id}", views.api_alert),
        Route("/api/alerts/{alert_id}/status", views.api_status, methods=["POST"]),
        Route("/api/alerts/{alert_id}/context", views.api_context),
        Route("/api/stream", views.stream),
        Route("/login", views.login),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], middleware=[Middleware(AuthMiddleware, credentials=creds)])


def row(s: StoredAlert, retracted: dict[str, str] | None = None) -> dict[str, Any]:
    """An alert as ``/api/alerts`` and the event stream give it: the stored alert's JSON
    (:meth:`~pipeline.alert_store.StoredAlert.to_json_dict`) with ``detected`` (its stream
    time, ISO), ``href`` (its page) and ``retracted_by`` (the retraction that withdrew it,
    its block orphaned by a reorg; null if none, or not looked up: the event stream's)."""
    return s.to_json_dict() | {"detected": stamp(s.alert.detected_at),
                               "href": f"/alerts/{s.alert_id}",
                               "retracted_by": (retracted or {}).get(s.alert_id)}


class _Views:
    def __init__(self, settings: Settings, store: AlertStore,
                 publish: Callable[[Settings, Any], str | None]) -> None:
        self.settings = settings
        self.store = store
        self.publish = publish
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self._context_table = False
        self._kafka_down_until = 0.0
        self._kafka_down = ""

    # -- pages -----------------------------------------------------------------------------

    async def queue(self, request: Request) -> Response:
        try:
            filters = Filters.parse(request.query_params.getlist)
        except FilterError as exc:
            return self._page(request, "error.html", {"message": str(exc)}, 400)

        def read() -> tuple[list[StoredAlert], Cursor]:
            cursor = Cursor(*self.store.latest())  # first: what commits next is streamed
            return self.store.query(**filters.query_args(), limit=filters.limit), cursor

        alerts, cursor = await run_in_threadpool(read)
        marks = await run_in_threadpool(self.store.retracted, [a.alert_id for a in alerts])
        stream = urlencode([(k, v) for k, v in request.query_params.multi_items()
                            if k not in ("limit", "after")] + [("after", str(cursor))])
        return self._page(request, "queue.html", {
            "alerts": [row(s, marks) for s in alerts], "filters": filters, "stream": stream,
            "severities": SEVERITIES, "statuses": STATUSES,
            "since": _given(request, "since"), "until": _given(request, "until"),
            "window": _window(filters)})

    async def alert_page(self, request: Request) -> Response:
        try:
            found, others, history, proof = await run_in_threadpool(
                self._details, request.path_params["alert_id"])
        except AlertStoreError as exc:
            return self._page(request, "error.html", {"message": str(exc)}, 404)
        a = found.alert
        chart = timeline_svg([Point(o.alert.detected_at, o.alert.score, o.alert.type,
                                    o.alert_id == found.alert_id) for o in others])
        ctx, missing = await run_in_threadpool(self._context, a)
        marks = await run_in_threadpool(self.store.retracted, [o.alert_id for o in others])
        records_svg, records = ("", []) if ctx is None else records_figure(
            ctx, a.event_time, a.source.get("offset", -1))
        if ctx is not None and not ctx.samples:
            missing = (f"No record of {a.subject} among offsets {ctx.first_offset} to "
                       f"{ctx.last_offset} of {ctx.topic} partition {ctx.partition}.")
        return self._page(request, "alert.html", {
            "ctx": ctx, "records_svg": records_svg, "records": records,
            "records_missing": missing, "stamp": stamp,
            "s": found, "a": a, "detected": stamp(a.detected_at),
            "event": stamp(a.event_time), "evidence": sorted(a.evidence.items()),
            "others": [row(o, marks) for o in others], "chart": chart,
            "retracted_by": marks.get(found.alert_id),
            "history": [(stamp(h.at), h.status, h.note) for h in history],
            "proof": proof, "proof_shown": SHOWN.get(proof["outcome"], proof["outcome"]),
            "statuses": STATUSES, "label": request.query_params.get("label", ""),
            "why": request.query_params.get("why", ""),
            "saved": request.query_params.get("saved", ""),
            "labels_topic": self.settings.topics.labels, "json": _pretty})

    async def post_form(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        status = (form.get("status") or [""])[0]
        note = (form.get("note") or [""])[0]
        try:
            found, label = await run_in_threadpool(
                self._set_status, request.path_params["alert_id"], status, note or "")
        except (AlertStoreError, ConfigError) as exc:
            return self._page(request, "error.html", {"message": str(exc)}, 400)
        query = {"saved": status}
        if label is not None:
            query |= {"label": "published" if label["published"] else "failed",
                      "why": label["reason"] or ""}
        return RedirectResponse(f"/alerts/{found.alert_id}?{urlencode(query)}", status_code=303)

    async def login(self, request: Request) -> Response:  # reached only without a token set
        return RedirectResponse("/", status_code=303)

    def _page(self, request: Request, name: str, context: dict[str, Any],
              status: int = 200) -> Response:
        return self.templates.TemplateResponse(
            request, name, context | {"store_shown": self.store.shown}, status_code=status)

    # -- JSON ------------------------------------------------------------------------------

    async def api_list(self, request: Request) -> Response:
        try:
            filters = Filters.parse(request.query_params.getlist)
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        alerts = await run_in_threadpool(
            lambda: self.store.query(**filters.query_args(), limit=filters.limit))
        marks = await run_in_threadpool(self.store.retracted, [a.alert_id for a in alerts])
        return JSONResponse([row(s, marks) for s in alerts])

    async def api_alert(self, request: Request) -> Response:
        try:
            found, _, history, proof = await run_in_threadpool(
                self._details, request.path_params["alert_id"])
        except AlertStoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        marks = await run_in_threadpool(self.store.retracted, [found.alert_id])
        return JSONResponse(row(found, marks) | {
            "history": [{"status": h.status, "note": h.note, "at": h.at} for h in history],
            "audit": proof})

    async def api_context(self, request: Request) -> Response:
        found = await run_in_threadpool(self.store.get, request.path_params["alert_id"])
        if found is None:
            return JSONResponse({"error": f"no alert {request.path_params['alert_id']!r}"},
                                status_code=404)
        ctx, missing = await run_in_threadpool(self._context, found.alert)
        return JSONResponse({"alert_id": found.alert_id,
                             "context": None if ctx is None else orjson.loads(ctx.to_json()),
                             "reason": missing})

    async def api_status(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not (isinstance(body, dict) and isinstance(body.get("status"), str)
                and isinstance(body.get("note", ""), str | None)):
            return JSONResponse({"error": 'give a JSON object {"status": "...", "note": "..."}'
                                 f"; status one of {', '.join(STATUSES)}"}, status_code=400)
        try:
            found, label = await run_in_threadpool(
                self._set_status, request.path_params["alert_id"], body["status"],
                body.get("note"))
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except AlertStoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse(row(found) | {"label": label})

    async def stream(self, request: Request) -> Response:
        try:
            filters = Filters.parse(request.query_params.getlist)
            given = _cursor(request)
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if given is None or given.change is None:
            seq, change = await run_in_threadpool(self.store.latest)
            start = Cursor(seq if given is None else given.seq, change)
        else:
            start = given

        async def events(at: Cursor) -> AsyncIterator[str]:
            yield f"retry: 1000\n: chainwatch alerts after {at}\n\n"
            quiet = 0.0
            while not await request.is_disconnected():
                alerts, changes = await run_in_threadpool(self._since, filters, at)
                for s in alerts:
                    at = Cursor(s.seq, at.change)
                    yield f"id: {at}\nevent: alert\ndata: {json.dumps(row(s))}\n\n"
                for c in changes:
                    at = Cursor(at.seq, c.id)
                    yield f"id: {at}\nevent: status\ndata: {json.dumps(change_data(c))}\n\n"
                quiet = 0.0 if alerts or changes else quiet + POLL_S
                if quiet >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await anyio.sleep(POLL_S)

        return StreamingResponse(events(start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # -- blocking work (thread pool) --------------------------------------------------------

    def _since(self, filters: Filters,
               at: Cursor) -> tuple[list[StoredAlert], list[StatusChange]]:
        """The alerts after ``at.seq`` matching the filters, then the changes after
        ``at.change`` of alerts matching them but for status (500 of each at most)."""
        alerts = self.store.query(**filters.query_args(), after_seq=at.seq,
                                  newest_first=False, limit=BATCH)
        unstatused = filters.query_args()
        del unstatused["statuses"]
        return alerts, self.store.status_changes(at.change or 0, **unstatused, limit=BATCH)

    def _details(self, alert_id: str) -> tuple[StoredAlert, list[StoredAlert], list[Any],
                                                dict[str, Any]]:
        found = self.store.get(alert_id)
        if found is None:
            raise AlertStoreError(f"no alert {alert_id!r} in {self.store.shown}")
        others = self.store.query(subjects=[found.alert.subject], limit=500)
        if all(o.alert_id != found.alert_id for o in others):
            others.append(found)
        return found, others, self.store.history(found.alert_id), self._proof(found)

    def _context(self, alert: Alert) -> tuple[Context | None, str]:
        """The records around ``alert``: kept by the sink, else read from Kafka now (and
        kept); None and why not when neither can be had."""
        try:
            if not self._context_table:
                alert_context.ensure_table(self.store)
                self._context_table = True
            ctx = alert_context.load(self.store, alert.alert_id)
        except SQLAlchemyError as exc:
            return None, f"The alert store cannot give this alert's records: {_first(exc)}"
        if ctx is not None:
            return ctx, ""
        before = self.settings.alerts.context_records
        if not alert.source.get("topic"):
            return None, "This alert names no source record."
        if not before:
            return None, "alerts.context_records is 0: records around alerts are not read."
        if time.monotonic() < self._kafka_down_until:
            return None, self._kafka_down
        try:
            consumer = clients.consumer(self.settings, enable_auto_commit=False,
                                        bootstrap_timeout_ms=KAFKA_TIMEOUT_MS)
        except (BrokerError, KafkaError, OSError) as exc:
            self._kafka_down_until = time.monotonic() + KAFKA_RETRY_S
            self._kafka_down = ("The alert sink kept no records for this alert, and Kafka "
                                f"cannot give them now: {_first(exc)}")
            return None, self._kafka_down
        try:
            ctx = alert_context.read_contexts(consumer, [alert], before, deadline_s=5.0) \
                .get(alert.alert_id)
        except KafkaError as exc:
            return None, f"Reading this alert's records from Kafka failed: {_first(exc)}"
        finally:
            consumer.close()
        if ctx is None:
            src = alert.source
            return None, (f"{src.get('topic')} partition {src.get('partition')} is not on "
                          f"Kafka at {self.settings.bootstrap_servers} (any more).")
        with contextlib.suppress(SQLAlchemyError):  # if not kept: shown now, read next time
            alert_context.save(self.store, [ctx])
        return ctx, ""

    def _proof(self, found: StoredAlert) -> dict[str, Any]:
        audit = self.settings.audit.store
        try:
            key = configured_public_key(self.settings) if Path(audit).is_file() else ""
            check = check_alert(found.raw, found.alert_id, audit, key)
        except AuditKeyError as exc:
            return {"outcome": "no_key", "message": f"cannot check against {audit}: {exc}",
                    "store": audit, "index": None, "size": None, "root": ""}
        return {"outcome": check.outcome, "message": check.message, "store": audit,
                "index": check.index, "size": check.size, "root": check.root}

    def _set_status(self, alert_id: str, status: str,
                    note: str | None) -> tuple[StoredAlert, dict[str, Any] | None]:
        """Store the status (and note); publish a verdict's label like `alerts ack`."""
        updated = self.store.set_status(alert_id, status, note)
        label = updated.verdict_label()
        if label is None:
            return updated, None
        why = self.publish(self.settings, label)
        return updated, {"label": label.label, "topic": self.settings.topics.labels,
                         "published": why is None, "reason": why}


class Cursor(NamedTuple):
    """Where an event stream is: the newest alert seq and status change id it has sent;
    ``change`` None when a client gave a bare seq (see the module docstring)."""

    seq: int
    change: int | None

    def __str__(self) -> str:
        return f"{self.seq}:{self.change or 0}"


def _cursor(request: Request) -> Cursor | None:
    """The stream's start: ``Last-Event-ID`` (a reconnection), else ``after``, else None."""
    text = (request.headers.get("last-event-id") or request.query_params.get("after")
            or "").strip()
    if not text:
        return None
    seq, colon, change = text.partition(":")
    try:
        return Cursor(max(int(seq), 0), max(int(change), 0) if colon else None)
    except ValueError:
        raise FilterError(f"after {text!r} is neither SEQ nor SEQ:CHANGE (whole numbers: "
                          "an event's id)") from None


def change_data(c: StatusChange) -> dict[str, Any]:
    """A status change as the event stream's ``status`` event carries it."""
    return {"change": c.id, "alert_id": c.alert_id, "status": c.status, "note": c.note,
            "at": c.at}


def _given(request: Request, name: str) -> str:
    """A query parameter as typed (the form's time fields show it again after a reload)."""
    return (request.query_params.get(name) or "").strip()


def _window(filters: Filters) -> str:
    """The time filter in words, stream time as the queue shows it ('' when none)."""
    since, until = (None if t is None else _when(t) for t in (filters.since, filters.until))
    if since and until:
        return f"detected from {since} to {until}"
    if since or until:
        return f"detected from {since}" if since else f"detected until {until}"
    return ""


def _when(seconds: float) -> str:
    try:
        return stamp(seconds)
    except (OverflowError, ValueError, OSError):  # beyond the calendar: the number, then
        return f"{seconds:g} (unix seconds)"


def _first(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


def _pretty(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)
