"""Logging for the ``chainwatch`` command: text for people, JSON lines for machines, and
secrets redacted from both.

:func:`configure` installs one handler on stderr for the root logger:

- ``text`` (default): ``2024-05-01 12:00:00,123 INFO consumers.tasks: task p0001 opened …``
- ``json`` (``--log-format json``, setting ``log_format``, ``CHAINWATCH_LOG_FORMAT``): one
  object a line with ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and
  ``exception`` / ``stack`` when there is one, plus any ``extra={...}`` fields.

Its :class:`RedactSecrets` filter replaces the value of every
:class:`~pipeline.secret.Secret` of the loaded settings (:func:`redact_settings`) with
``**********`` in the message, the exception text and ``extra`` fields (nested ones too),
whichever logger the record comes from, so a password cannot reach the log even when code
logs the settings' config dicts or an error that quotes them.

>>> import logging
>>> f = RedactSecrets(["hunter2"])
>>> r = logging.LogRecord("x", logging.INFO, __file__, 1, "login %s", ("pw=hunter2",), None)
>>> f.filter(r), r.getMessage()
(True, 'login pw=**********')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from pipeline.secret import Secret
from pipeline.settings import LOG_FORMATS, Settings

MASK = "**********"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class RedactSecrets(logging.Filter):
    """Replaces known secret values in a record's message, exception text and extras."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._needles: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact these values, and their escaped forms in ``repr`` and JSON."""
        needles = set(self._needles)
        for secret in secrets:
            if secret:
                needles |= {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
        self._needles = tuple(sorted(needles, key=len, reverse=True))  # longest first

    def redact(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._needles:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not raise into the caller
            message = f"{record.msg} [arguments dropped: they do not fit the format]"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD:
                setattr(record, name, self._scrub(value))
        return True

    def _scrub(self, value: object) -> object:
        """An ``extra`` value with secrets redacted, nested containers included."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {self.redact(str(k)): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrub(v) for v in value]
        return self.redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (+ exception, stack, extras)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in doc:
                doc[name] = value
        return orjson.dumps(doc, default=str).decode()


_redactor = RedactSecrets()
_handler: logging.Handler | None = None


def configure(level: str = "WARNING", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log ``level`` and above to ``stream`` (stderr) in ``fmt``, redacting known secrets.

    Replaces the handler an earlier call installed; leaves other handlers alone.
    """
    global _handler  # noqa: PLW0603 (one handler per process, replaced on reconfiguration)
    if fmt not in LOG_FORMATS:
        fmt = "text"  # loading the settings reports the bad value
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_redactor)
    root.addHandler(handler)
    root.setLevel(level)
    _handler = handler
    # kafka-python logs every retry; chainwatch reports what matters
    logging.getLogger("kafka").setLevel(logging.NOTSET if level == "DEBUG" else logging.CRITICAL)


def reset() -> None:
    """Remove the handler :func:`configure` installed (the secrets stay redacted)."""
    global _handler  # noqa: PLW0603
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None


def redact_settings(settings: Settings) -> None:
    """Redact every secret of ``settings`` from all logs from now on."""
    _redactor.add(secrets_of(settings))


def secrets_of(obj: object) -> list[str]:
    """The values of every :class:`Secret` in a (nested) settings dataclass."""
    if isinstance(obj, Secret):
        return [obj.get()] if obj else []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [value for f in dataclasses.fields(obj)
                for value in secrets_of(getattr(obj, f.name))]
    return []


def announce(message: str, level: int = logging.INFO, logger: str = "chainwatch") -> None:
    """A line a command always shows on stderr (start, summary, error), whatever the level:
    as it is in text, as one object through the handler in JSON (stderr stays one object a
    line). Secrets are redacted either way."""
    if _handler is None or not isinstance(_handler.formatter, JsonFormatter):
        print(_redactor.redact(message), file=sys.stderr, flush=True)
        return
    record = logging.getLogger(logger).makeRecord(logger, level, "(cli)", 0, message, (),
                                                   None)
    _handler.handle(record)
