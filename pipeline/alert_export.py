"""Stored alerts written out for other tools: JSON lines, CSV or Parquet.

``jsonl`` is one :meth:`~pipeline.alert_store.StoredAlert.to_json_dict` per line (the alert's
own fields plus its store fields), exactly what ``chainwatch alerts list --json`` prints.
``csv`` and ``parquet`` have one row per alert and the columns :data:`COLUMNS`: scalars as
they are, ``addresses`` joined with ``;``, and ``evidence``, ``source`` and ``labels`` as
compact JSON text.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.alert_store import StoredAlert

FORMATS = ("jsonl", "csv", "parquet")
COLUMNS = ("seq", "alert_id", "type", "severity", "score", "subject", "addresses", "detector",
           "model_version", "event_time", "detected_at", "evidence", "source", "labels",
           "status", "note", "status_updated_at", "stored_at")


def flat_row(stored: StoredAlert) -> dict[str, Any]:
    """The CSV / Parquet row of an alert (see the module docstring)."""
    a = stored.alert
    return {
        "seq": stored.seq, "alert_id": a.alert_id, "type": a.type, "severity": a.severity,
        "score": a.score, "subject": a.subject, "addresses": ";".join(a.addresses),
        "detector": a.detector, "model_version": a.model_version, "event_time": a.event_time,
        "detected_at": a.detected_at,
        "evidence": orjson.dumps(a.evidence, option=orjson.OPT_SORT_KEYS).decode(),
        "source": orjson.dumps(a.source, option=orjson.OPT_SORT_KEYS).decode(),
        "labels": orjson.dumps(a.labels, option=orjson.OPT_SORT_KEYS).decode(),
        "status": stored.status, "note": stored.note,
        "status_updated_at": stored.status_updated_at, "stored_at": stored.stored_at,
    }


def export(alerts: Sequence[StoredAlert], fmt: str, out: Path) -> int:
    """Write ``alerts`` to ``out`` in ``fmt`` (one of :data:`FORMATS`); the count written."""
    if fmt == "jsonl":
        with out.open("wb") as f:
            for stored in alerts:
                f.write(stored.to_json_line() + b"\n")
    elif fmt == "csv":
        with out.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(flat_row(s) for s in alerts)
    elif fmt == "parquet":
        rows = [flat_row(s) for s in alerts]
        schema = pa.schema([
            ("seq", pa.int64()), ("alert_id", pa.string()), ("type", pa.string()),
            ("severity", pa.string()), ("score", pa.float64()), ("subject", pa.string()),
            ("addresses", pa.string()), ("detector", pa.string()),
            ("model_version", pa.string()), ("event_time", pa.int64()),
            ("detected_at", pa.int64()), ("evidence", pa.string()), ("source", pa.string()),
            ("labels", pa.string()), ("status", pa.string()), ("note", pa.string()),
            ("status_updated_at", pa.float64()), ("stored_at", pa.float64())])
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, out)
    else:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    return len(alerts)
