"""The queue's filters, from query parameters: the same for ``/``, ``/api/alerts`` and
``/api/stream`` (each of type, subject, severity, status repeatable or comma-separated;
``since``/``until`` unix seconds or ISO 8601 of stream time; ``limit``).

>>> f = Filters.parse({"type": ["rug_pull,pump_and_dump"], "severity": ["high"]}.get)
>>> f.types, f.severities, f.limit
(('rug_pull', 'pump_and_dump'), ('high',), 100)
>>> Filters.parse({"status": ["lost"]}.get)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
consumers.ui.filters.FilterError: status 'lost' is not one of new, acknowledged, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.alert_schema import point_in_time
from pipeline.alert_store import STATUSES
from pipeline.alerts import SEVERITIES
from pipeline.errors import ChainwatchError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class FilterError(ChainwatchError):
    """A query parameter that is not a valid filter (HTTP 400)."""


@dataclass(frozen=True)
class Filters:
    types: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, getlist: Callable[[str], list[str] | None]) -> Filters:
        """From ``getlist(name)`` (a query string's values of ``name``)."""

        def values(name: str) -> tuple[str, ...]:
            return tuple(v.strip() for value in getlist(name) or () for v in value.split(",")
                         if v.strip())

        found = cls(types=values("type"), subjects=values("subject"),
                    severities=values("severity"), statuses=values("status"),
                    since=_moment("since", values("since")),
                    until=_moment("until", values("until")), limit=_limit(values("limit")))
        for name, given, allowed in (("severity", found.severities, SEVERITIES),
                                     ("status", found.statuses, STATUSES)):
            if bad := [v for v in given if v not in allowed]:
                raise FilterError(f"{name} {bad[0]!r} is not one of {', '.join(allowed)}")
        if found.since is not None and found.until is not None and found.since > found.until:
            raise FilterError("since is after until; give an earlier since")
        return found

    def query_args(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`~pipeline.alert_store.AlertStore.query`."""
        return {"types": self.types, "subjects": self.subjects,
                "severities": self.severities, "statuses": self.statuses,
                "since": self.since, "until": self.until}

    def first(self, name: str) -> str:
        """The first value of a filter, for the form's fields ('' when none)."""
        given: tuple[str, ...] = getattr(self, name)
        return given[0] if given else ""


def _moment(name: str, given: tuple[str, ...]) -> float | None:
    if not given:
        return None
    try:
        return point_in_time(given[0])
    except ValueError as exc:
        raise FilterError(f"{name} {exc}") from None


def _limit(given: tuple[str, ...]) -> int:
    if not given:
        return DEFAULT_LIMIT
    try:
        limit = int(given[0])
    except ValueError:
        raise FilterError(f"limit {given[0]!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise FilterError(f"limit {limit} must be between 1 and {MAX_LIMIT}")
    return limit
