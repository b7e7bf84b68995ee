"""Webhook delivery of alerts: the bodies, one POST with retries, and the URL kept secret.

A :class:`WebhookTarget` is the validated ``[notify]`` settings. :func:`body` makes what is
sent: ``json`` is the alert's wire JSON, byte for byte; ``slack`` is a Slack incoming-webhook
message (``text`` and ``blocks``). :meth:`Webhook.deliver` POSTs it with an
``Idempotency-Key: <alert_id>`` header, each attempt bounded by ``timeout_ms``:

* 2xx is delivered;
* a connection error, a timeout, 429 or 5xx is tried again, up to ``retries`` more times,
  after ``backoff_ms`` doubled at each retry (jittered by up to 10 %, capped at
  :data:`MAX_BACKOFF_S`), or after the server's ``Retry-After`` when it gives one (capped the
  same way);
* anything else (3xx, since redirects are not followed, and 4xx other than 429) is refused at
  once: sending the same body again would not help.

The URL is a secret (a Slack webhook URL is its own credential): nothing here puts it in a
message; :attr:`WebhookTarget.shown` is its scheme and host.

>>> t = WebhookTarget.build("https://hooks.example.com/T0/B0/s3cr3t", min_severity="high")
>>> t.shown, t.wants("critical"), t.wants("medium")
('https://hooks.example.com', True, False)
"""

from __future__ import annotations

import email.utils
import http.client
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from pipeline.alerts import SEVERITIES, Alert
from pipeline.errors import ConfigError
from pipeline.secret import Secret
from pipeline.settings import Notify

FORMATS = ("json", "slack")
MAX_BACKOFF_S = 30.0
"""No wait between attempts is longer, whether from the backoff or from Retry-After."""
JITTER = 0.1
"""Each backoff is scaled by a random factor in [1 - JITTER, 1 + JITTER]."""
EVIDENCE_SHOWN = 6
"""A Slack message shows this many evidence fields (by name); the JSON body has them all."""
_RESPONSE_KEPT = 64 * 1024


@dataclass(frozen=True)
class WebhookTarget:
    """Where and how to notify; built only through :meth:`build`, which validates."""

    url: Secret
    format: str
    min_severity: str
    retries: int = 5
    backoff_ms: int = 500
    timeout_ms: int = 5000

    @classmethod
    def build(cls, url: str | Secret, *, format: str = "json", min_severity: str = "medium",
              retries: int = 5, backoff_ms: int = 500, timeout_ms: int = 5000) -> WebhookTarget:
        """A target, or ConfigError in one line (which never shows the URL's path)."""
        secret = url if isinstance(url, Secret) else Secret(url)
        text = secret.get().strip()
        if not text:
            raise ConfigError("no webhook URL; give --webhook-url or set "
                              "CHAINWATCH_NOTIFY_WEBHOOK_URL (notify.webhook_url)")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("the webhook URL must be http:// or https:// with a host (got "
                              f"{_scheme(text)}); give the receiver's full URL")
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ConfigError(f"the webhook URL's port is not a number ({_shown(text)})") \
                from None
        if any(c.isspace() or ord(c) < 32 for c in text):
            raise ConfigError(f"the webhook URL contains spaces or control characters "
                              f"({_shown(text)}); give it URL-encoded")
        if format not in FORMATS:
            raise ConfigError(f"notify format {format!r} is not one of {', '.join(FORMATS)}")
        if min_severity not in SEVERITIES:
            raise ConfigError(f"notify min_severity {min_severity!r} is not one of "
                              f"{', '.join(SEVERITIES)}")
        for name, value, low in (("retries", retries, 0), ("backoff_ms", backoff_ms, 0),
                                 ("timeout_ms", timeout_ms, 1)):
            if value < low:
                raise ConfigError(f"notify {name} must be at least {low}, not {value}")
        return cls(Secret(text), format, min_severity, retries, backoff_ms, timeout_ms)

    @classmethod
    def from_settings(cls, notify: Notify) -> WebhookTarget:
        return cls.build(notify.webhook_url, format=notify.format,
                         min_severity=notify.min_severity, retries=notify.retries,
                         backoff_ms=notify.backoff_ms, timeout_ms=notify.timeout_ms)

    @property
    def shown(self) -> str:
        """The URL as it may be shown: scheme and host (with its port), nothing else."""
        return _shown(self.url.get())

    def wants(self, severity: str) -> bool:
        """Whether an alert of ``severity`` is at or above :attr:`min_severity`."""
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else -1
        return rank >= SEVERITIES.index(self.min_severity)

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (1, 2, ...), jittered and capped."""
        base = self.backoff_ms / 1000 * 2 ** (retry - 1)
        return float(min(base * rng.uniform(1 - JITTER, 1 + JITTER), MAX_BACKOFF_S))


def _scheme(text: str) -> str:
    scheme = urlsplit(text).scheme
    if scheme.isalpha() and len(scheme) <= 10:  # anything else might be part of a secret
        return f"scheme {scheme!r}"
    return "no http(s) scheme"


def _shown(text: str) -> str:
    parts = urlsplit(text)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


# -- bodies ------------------------------------------------------------------------------


def body(target: WebhookTarget, alert: Alert, raw: bytes) -> bytes:
    """What is POSTed for ``alert`` (whose wire bytes are ``raw``) in the target's format."""
    if target.format == "json":
        return raw
    return orjson.dumps(slack_message(alert))


def _escape(text: str) -> str:
    """Slack's three control characters, escaped as its mrkdwn requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _value(value: Any, limit: int = 120) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else value if isinstance(value, str) \
        else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def slack_message(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification line) and ``blocks``."""
    line = (f"[{alert.severity.upper()}] {alert.type} on {alert.subject} "
            f"(score {alert.score:.3f}, alert {alert.alert_id})")
    fields = [("Type", alert.type), ("Severity", alert.severity),
              ("Subject", f"`{alert.subject}`"), ("Score", f"{alert.score:.3f}"),
              ("Detector", f"{alert.detector} (model {alert.model_version})"),
              ("Detected (stream time)", _when(alert.detected_at))]
    names = sorted(alert.evidence)
    evidence = [f"• `{_escape(k)}` {_escape(_value(alert.evidence[k]))}"
                for k in names[:EVIDENCE_SHOWN]]
    if len(names) > EVIDENCE_SHOWN:
        evidence.append(f"… and {len(names) - EVIDENCE_SHOWN} more in the alert's JSON")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                    "text": f"{alert.severity.upper()}: {alert.type}"[:150]}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"[:2000]}
            for name, value in fields]},
    ]
    if evidence:
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": ("*Evidence*\n" + "\n".join(evidence))[:3000]}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"alert `{alert.alert_id}`"}]})
    return {"text": _escape(line), "blocks": blocks}


# -- delivery ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One POST's result: ``status`` 0 when no HTTP answer came (then ``error`` says why)."""

    status: int
    error: str = ""
    retry_after_s: float | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status in {0, 429} or self.status >= 500

    @property
    def kind(self) -> str:
        """A bounded label: ok, timeout, connection, http_429, http_4xx, http_5xx, http_3xx."""
        if self.ok:
            return "ok"
        if self.status == 0:
            return "timeout" if self.error.startswith("timeout") else "connection"
        return "http_429" if self.status == 429 else f"http_{self.status // 100}xx"

    def describe(self) -> str:
        return self.error or f"HTTP {self.status}"


@dataclass(frozen=True)
class Delivery:
    """How one alert's delivery ended: ``delivered``, ``failed`` (retries spent),
    ``rejected`` (refused at once) or ``interrupted`` (stopped while waiting to retry)."""

    outcome: str
    attempts: tuple[Attempt, ...]
    elapsed_s: float

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]


class Transport(Protocol):
    """One POST: (url, body, headers, timeout in s) -> the attempt's result."""

    def __call__(self, url: str, data: bytes, headers: dict[str, str],
                 timeout_s: float) -> Attempt: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx comes back as an HTTPError with its status


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def urllib_transport() -> Transport:
    """POSTs with urllib.request (redirects not followed, proxies from the environment)."""
    opener = urllib.request.build_opener(_NoRedirect())

    def post(url: str, data: bytes, headers: dict[str, str], timeout_s: float) -> Attempt:
        started = time.perf_counter()
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=timeout_s) as response:
                response.read(_RESPONSE_KEPT)
                return Attempt(response.status, elapsed_s=time.perf_counter() - started)
        except urllib.error.HTTPError as exc:
            with exc:
                retry_after = _retry_after(exc.headers.get("Retry-After"))
                return Attempt(exc.code, retry_after_s=retry_after,
                               elapsed_s=time.perf_counter() - started)
        except TimeoutError:
            error = f"timeout after {timeout_s:g} s"
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                error = f"timeout after {timeout_s:g} s"
            else:
                error = f"connection error: {_reason(reason)}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"connection error: {_reason(exc)}"
        return Attempt(0, error, elapsed_s=time.perf_counter() - started)

    return post


def _reason(reason: object) -> str:
    """An error's class and errno/strerror, never its text (which may quote the URL)."""
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__} ({reason.strerror})"
    if isinstance(reason, str):
        return "URLError"
    return type(reason).__name__


class Webhook:
    """Delivers bodies to one target, retrying as the module docstring says."""

    def __init__(self, target: WebhookTarget, transport: Transport | None = None,
                 seed: int | None = None, user_agent: str = "chainwatch") -> None:
        self.target = target
        self.transport = transport or urllib_transport()
        self.rng = random.Random(seed)
        self.user_agent = user_agent

    def deliver(self, data: bytes, alert_id: str,
                wait: Callable[[float], bool] | None = None,
                on_retry: Callable[[Attempt, float], None] | None = None) -> Delivery:
        """POST ``data`` until delivered, refused or out of retries.

        ``wait(seconds)`` sleeps between attempts and returns True to give up (a stop was
        asked for; default: sleep); ``on_retry(attempt, wait_s)`` hears of each failed
        attempt tried again.
        """
        t = self.target
        headers = {"Content-Type": "application/json", "Idempotency-Key": alert_id,
                   "User-Agent": self.user_agent}
        started = time.perf_counter()
        attempts: list[Attempt] = []
        while True:
            attempt = self.transport(t.url.get(), data, headers, t.timeout_ms / 1000)
            attempts.append(attempt)
            if attempt.ok or not attempt.retryable or len(attempts) > t.retries:
                outcome = "delivered" if attempt.ok else \
                    "failed" if attempt.retryable else "rejected"
                return Delivery(outcome, tuple(attempts), time.perf_counter() - started)
            pause = self.target.backoff_s(len(attempts), self.rng)
            if attempt.retry_after_s is not None:
                pause = min(attempt.retry_after_s, MAX_BACKOFF_S)
            if on_retry is not None:
                on_retry(attempt, pause)
            if wait is None:
                time.sleep(pause)
            elif wait(pause):
                return Delivery("interrupted", tuple(attempts), time.perf_counter() - started)
