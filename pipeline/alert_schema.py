"""The alert store's layout (format :data:`FORMAT`), and the validation of incoming alerts.

See :mod:`pipeline.alert_store` for what each table holds; a change of layout is a new
format, which older stores are refused under (with a message), never read wrongly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import orjson
import sqlalchemy as sa

from pipeline.alerts import SEVERITIES, Alert
from pipeline.errors import RecordError

FORMAT = "chainwatch-alerts/1"

METADATA = sa.MetaData()
ALERTS = sa.Table(
    "alerts", METADATA,
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
    sa.Column("type", sa.String(100), nullable=False, index=True),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("subject", sa.String(200), nullable=False, index=True),
    sa.Column("detector", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("event_time", sa.BigInteger, nullable=False),
    sa.Column("detected_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("stored_at", sa.Float, nullable=False),
    sa.Column("source_topic", sa.String(250)),
    sa.Column("source_partition", sa.Integer),
    sa.Column("source_offset", sa.BigInteger),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="new"),
    sa.Column("note", sa.Text),
    sa.Column("status_updated_at", sa.Float),
)
OFFSETS = sa.Table(
    "alert_offsets", METADATA,
    sa.Column("topic", sa.String(250), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)
HISTORY = sa.Table(
    "status_history", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(200), sa.ForeignKey("alerts.alert_id"), nullable=False,
              index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
)
META = sa.Table(
    "alert_store_meta", METADATA,
    sa.Column("key", sa.String(50), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
RETRACTED = sa.Table(  # made on opening in stores older than it (pipeline.alert_store)
    "alert_retractions", METADATA,
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("retracted_by", sa.String(200), nullable=False),
    sa.Column("block_hash", sa.String(100), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)
CONTEXT = sa.Table(  # made on first use in stores older than it (pipeline.alert_context)
    "alert_context", METADATA,
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("fetched_at", sa.Float, nullable=False),
)

_FIELDS: dict[str, type | tuple[type, ...]] = {
           "alert_id": str, "type": str, "severity": str, "score": (int, float),
           "subject": str, "addresses": list, "evidence": dict, "detector": str,
           "model_version": str, "source": dict, "event_time": int, "detected_at": int,
           "labels": dict}


class Incoming(NamedTuple):
    """An alert as it arrived: its exact bytes, and the alert they hold."""

    raw: bytes
    alert: Alert

    @classmethod
    def parse(cls, raw: bytes) -> Incoming:
        """Validate ``raw`` as an alert; RecordError (with a dead-letter code) if it is not."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RecordError("not_json", f"alert is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise RecordError("bad_type", f"alert must be a JSON object, not "
                              f"{type(obj).__name__}")
        obj.setdefault("labels", {})
        if missing := sorted(set(_FIELDS) - set(obj)):
            raise RecordError("missing_field", f"alert lacks the fields {missing}",
                              field=missing[0])
        if unknown := sorted(set(obj) - set(_FIELDS)):
            raise RecordError("bad_value", f"alert has unknown fields {unknown}",
                              field=unknown[0])
        for name, kind in _FIELDS.items():
            value = obj[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise RecordError("bad_type", f"alert field {name!r} has the wrong type "
                                  f"({type(value).__name__})", field=name, value=value)
        if not 1 <= len(obj["alert_id"]) <= 200 or obj["severity"] not in SEVERITIES:
            raise RecordError("bad_value", "alert_id must be 1-200 characters and severity "
                              f"one of {SEVERITIES}", field="alert_id", value=obj["alert_id"])
        return cls(raw, Alert.from_json(raw))


def point_in_time(text: str) -> float:
    """Unix seconds from unix seconds or an ISO 8601 time (UTC unless it says otherwise): the
    ``since`` / ``until`` of the store's queries, as the CLI and the web view take them.
    ValueError, saying what is accepted, for anything else."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither unix seconds nor an ISO time such as "
                         "2024-01-31T12:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
