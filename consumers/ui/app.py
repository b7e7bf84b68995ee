"""The web view's routes: pages for people, JSON for programs, one event stream.

``/``                        the alert queue, newest first, with the filter form; live
``/alerts/{id}``             one alert: evidence, sources, chart, audit proof, status form
``POST /alerts/{id}/status`` the form's target (then back to the alert page, 303)
``GET /api/alerts``          a JSON array, newest first; filters as query parameters
``GET /api/alerts/{id}``     the alert, status, note, history and its audit check
``POST /api/alerts/{id}/status``  ``{"status", "note"}``: stored; a verdict is published
``GET /api/stream``          server-sent events: ``alert`` for each newly stored alert
``/static/…``                the page's CSS and script, from this package

Store calls are blocking (SQLAlchemy), so they run in Starlette's thread pool.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from consumers.ui.auth import AuthMiddleware, Credentials
from consumers.ui.chart import Point, stamp, timeline_svg
from consumers.ui.filters import FilterError, Filters
from pipeline.alert_proof import FAILED, IN_LOG, NO_LOG, NOT_IN_LOG, check_alert
from pipeline.alert_store import STATUSES, AlertStore, AlertStoreError, StoredAlert
from pipeline.alerts import SEVERITIES
from pipeline.audit import AuditKeyError
from pipeline.audit.trust import configured_public_key
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from producers.verdicts import publish_label

HERE = Path(__file__).parent
POLL_S = 0.25  # how often the event stream looks for new alerts
KEEPALIVE_S = 15.0
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
        Route("/api/stream", views.stream),
        Route("/login", views.login),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], middleware=[Middleware(AuthMiddleware, credentials=creds)])


def row(s: StoredAlert) -> dict[str, Any]:
    """An alert as ``/api/alerts`` and the event stream give it: the stored alert's JSON
    (:meth:`~pipeline.alert_store.StoredAlert.to_json_dict`) with ``detected`` (its stream
    time, ISO) and ``href`` (its page)."""
    return s.to_json_dict() | {"detected": stamp(s.alert.detected_at),
                               "href": f"/alerts/{s.alert_id}"}


class _Views:
    def __init__(self, settings: Settings, store: AlertStore,
                 publish: Callable[[Settings, Any], str | None]) -> None:
        self.settings = settings
        self.store = store
        self.publish = publish
        self.templates = Jinja2Templates(directory=HERE / "templates")

    # -- pages -----------------------------------------------------------------------------

    async def queue(self, request: Request) -> Response:
        try:
            filters = Filters.parse(request.query_params.getlist)
        except FilterError as exc:
            return self._page(request, "error.html", {"message": str(exc)}, 400)

        def read() -> tuple[list[StoredAlert], int]:
            newest = self.store.query(limit=1)
            return (self.store.query(**filters.query_args(), limit=filters.limit),
                    newest[0].seq if newest else 0)

        alerts, top = await run_in_threadpool(read)
        stream = urlencode([(k, v) for k, v in request.query_params.multi_items()
                            if k != "limit"] + [("after", str(top))])
        return self._page(request, "queue.html", {
            "alerts": [row(s) for s in alerts], "filters": filters, "stream": stream,
            "severities": SEVERITIES, "statuses": STATUSES})

    async def alert_page(self, request: Request) -> Response:
        try:
            found, others, history, proof = await run_in_threadpool(
                self._details, request.path_params["alert_id"])
        except AlertStoreError as exc:
            return self._page(request, "error.html", {"message": str(exc)}, 404)
        a = found.alert
        chart = timeline_svg([Point(o.alert.detected_at, o.alert.score, o.alert.type,
                                    o.alert_id == found.alert_id) for o in others])
        return self._page(request, "alert.html", {
            "s": found, "a": a, "detected": stamp(a.detected_at),
            "event": stamp(a.event_time), "evidence": sorted(a.evidence.items()),
            "others": [row(o) for o in others], "chart": chart,
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
        return JSONResponse([row(s) for s in alerts])

    async def api_alert(self, request: Request) -> Response:
        try:
            found, _, history, proof = await run_in_threadpool(
                self._details, request.path_params["alert_id"])
        except AlertStoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse(row(found) | {
            "history": [{"status": h.status, "note": h.note, "at": h.at} for h in history],
            "audit": proof})

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
            after = _after(request)
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if after is None:
            newest = await run_in_threadpool(self.store.query, limit=1)
            after = newest[0].seq if newest else 0

        async def events(last: int) -> AsyncIterator[str]:
            yield f"retry: 1000\n: chainwatch alerts after seq {last}\n\n"
            quiet = 0.0
            while not await request.is_disconnected():
                fresh = await run_in_threadpool(self._since, filters, last)
                for s in fresh:
                    yield f"id: {s.seq}\nevent: alert\ndata: {json.dumps(row(s))}\n\n"
                    last = s.seq
                quiet = 0.0 if fresh else quiet + POLL_S
                if quiet >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await anyio.sleep(POLL_S)

        return StreamingResponse(events(after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # -- blocking work (thread pool) --------------------------------------------------------

    def _since(self, filters: Filters, last: int) -> list[StoredAlert]:
        return self.store.query(**filters.query_args(), after_seq=last, newest_first=False,
                                limit=500)

    def _details(self, alert_id: str) -> tuple[StoredAlert, list[StoredAlert], list[Any],
                                                dict[str, Any]]:
        found = self.store.get(alert_id)
        if found is None:
            raise AlertStoreError(f"no alert {alert_id!r} in {self.store.shown}")
        others = self.store.query(subjects=[found.alert.subject], limit=500)
        if all(o.alert_id != found.alert_id for o in others):
            others.append(found)
        return found, others, self.store.history(found.alert_id), self._proof(found)

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


def _after(request: Request) -> int | None:
    text = request.query_params.get("after") or request.headers.get("last-event-id")
    if text is None or text == "":
        return None
    try:
        return max(int(text), 0)
    except ValueError:
        raise FilterError(f"after {text!r} is not a seq (a whole number)") from None


def _pretty(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)
