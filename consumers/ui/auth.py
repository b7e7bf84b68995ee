"""Who may use the web view: a bearer token, HTTP basic authentication, or (on loopback) all.

With ``ui.token`` set, a request carries ``Authorization: Bearer TOKEN`` or the ``token``
cookie that ``/login?token=TOKEN`` sets (HttpOnly, SameSite=Strict: what a browser and its
EventSource send). With ``ui.username`` and ``ui.password`` set, HTTP basic authentication.
With both, either is accepted; with neither, every request is (the server then refuses to
bind beyond loopback: :func:`consumers.ui.server.check_exposure`). A POST whose ``Origin``
is not the server itself is refused (403), so another site cannot post with the browser's
credentials. Secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import urlsplit

from starlette.datastructures import Headers, QueryParams
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "token"


class Credentials:
    """The configured secrets; ``enabled`` when any is set."""

    def __init__(self, token: str = "", username: str = "", password: str = "") -> None:
        self.token = token
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return f"Credentials(token={bool(self.token)}, basic={self.basic})"

    @property
    def basic(self) -> bool:
        return bool(self.username and self.password)

    @property
    def enabled(self) -> bool:
        return bool(self.token) or self.basic

    def allows(self, headers: Headers) -> bool:
        if not self.enabled:
            return True
        kind, _, value = headers.get("authorization", "").partition(" ")
        if self.token:
            cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE, "")
            if kind.lower() == "bearer" and _same(value.strip(), self.token):
                return True
            if cookie and _same(cookie, self.token):
                return True
        if self.basic and kind.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return _same(user, self.username) & _same(password, self.password)
        return False


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class AuthMiddleware:
    """ASGI middleware: every HTTP request authenticated by :class:`Credentials`."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        response = self._refusal(scope, headers)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        creds = self.credentials
        if scope["method"] == "POST" and not _same_origin(headers):
            return _error(scope, 403, "this request comes from another site's page; post from "
                          "the chainwatch ui page itself")
        if creds.token and scope["path"] == "/login":
            given = QueryParams(scope.get("query_string", b"")).get("token", "")
            if given and _same(given, creds.token):
                done = RedirectResponse("/", status_code=303)
                done.set_cookie(COOKIE, given, httponly=True, samesite="strict")
                return done
            return _error(scope, 401, "wrong or missing token: open /login?token=TOKEN with "
                          "the token of setting ui.token")
        if creds.allows(headers):
            return None
        how = []
        if creds.token:
            how.append("Authorization: Bearer TOKEN (or open /login?token=TOKEN)")
        if creds.basic:
            how.append("HTTP basic authentication (ui.username, ui.password)")
        response = _error(scope, 401, "authentication required: " + " or ".join(how))
        response.headers["WWW-Authenticate"] = ('Basic realm="chainwatch", charset="UTF-8"'
                                                if creds.basic else 'Bearer realm="chainwatch"')
        return response


def _same_origin(headers: Headers) -> bool:
    origin = headers.get("origin")
    if origin is None:  # not sent by a browser's form or fetch from another page
        return True
    return urlsplit(origin).netloc == headers.get("host", "")


def _error(scope: Scope, status: int, message: str) -> Response:
    if str(scope["path"]).startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message + "\n", status_code=status)
