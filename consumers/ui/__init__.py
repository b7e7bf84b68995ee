"""The web view (``chainwatch ui``): the alert queue, alert pages and a JSON API.

A Starlette app (:func:`build_app`) on the alert store and the audit log, served by uvicorn
(:func:`serve`). Pages are rendered server-side (Jinja2, escaped) with every asset served
from this package, no CDN; the queue updates live from server-sent events (``/api/stream``,
the store polled by ``seq``). Who may use it is :mod:`consumers.ui.auth`.
"""

from consumers.ui.app import build_app
from consumers.ui.server import check_exposure, serve

__all__ = ["build_app", "check_exposure", "serve"]
