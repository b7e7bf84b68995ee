"""Asking an auditor over HTTP: one bounded GET of a JSON document (see :mod:`pipeline.audit.api`).

The answer is only ever data to check (:class:`~pipeline.audit.trust.RemoteCheckpointTrust`
verifies every head and proof with the key it pinned), so this module only has to make the
request safe to make from a rebalance callback: a few seconds at most however the server
behaves (each socket operation has the timeout, and the whole answer a deadline), a bounded
body, no redirects followed, and one error type for everything that went wrong on the way.
URLs are shown without credentials, path or query.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from pipeline.audit.errors import AuditError

MAX_BODY = 1 << 20
"""The largest answer read: a proof at 2**64 leaves is ~5 KB, a head ~300 bytes."""


class AuditorUnreachable(AuditError):
    """The auditor did not answer (refused, timed out, cut off, or too much)."""


def shown_url(url: str) -> str:
    """``scheme://host[:port]``: never a password (netloc) nor a token (path, query)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://[{host}]{port}" if ":" in host else f"{parts.scheme}://{host}{port}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is the answer


def get_json(url: str, timeout_s: float) -> tuple[int, Any]:
    """GET ``url``: (HTTP status, the body parsed as JSON, or None if it is not JSON).

    AuditorUnreachable if no answer came within about ``timeout_s`` seconds (connecting,
    and reading all of it), or the body is larger than :data:`MAX_BODY`.
    """
    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(_NoRedirect())
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    where = shown_url(url)
    try:
        try:
            response = opener.open(request, timeout=timeout_s)
        except urllib.error.HTTPError as exc:  # 4xx, 5xx, 3xx: an answer all the same
            response = exc
        with response:
            status = int(response.status or 0)
            body = _read(response, deadline, where)
    except AuditorUnreachable:
        raise
    except urllib.error.URLError as exc:
        raise AuditorUnreachable(f"{where} cannot be reached ({_why(exc.reason)})") from None
    except TimeoutError as exc:
        raise AuditorUnreachable(f"{where} did not answer within {timeout_s:g} s") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, cut short, garbled
        raise AuditorUnreachable(f"{where} failed ({type(exc).__name__}: {exc})") from None
    try:
        return status, json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return status, None


def _read(response: Any, deadline: float, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY:
            raise AuditorUnreachable(f"{where} sent more than {MAX_BODY} bytes")
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise AuditorUnreachable(f"{where} was still sending at the deadline")
    return b"".join(chunks)


def _why(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)
