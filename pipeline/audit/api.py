"""The audit log's read-only JSON API, served beside the auditor's metrics.

``chainwatch audit serve --metrics-port P`` answers, on the same port as ``/metrics``:

``GET /v1/head``
    the newest signed head, exactly as published to ``chainwatch.audit`` (and as ``chainwatch
    audit head`` prints it); 404 while the log is empty.
``GET /v1/checkpoints/<sha256>/proof``, ``GET /v1/alerts/<alert_id>/proof``
    the leaf's inclusion proof against the newest signed head, in the shape ``chainwatch
    audit prove`` prints (so ``chainwatch audit check-proof`` checks a saved answer):
    ``leaf_id``, ``leaf`` (its bytes as text: canonical JSON after the kind line),
    ``leaf_base64`` (the same bytes), ``index``, ``proof`` (``index``, ``size``, ``path``) and
    ``head``. 404 when the log does not hold the id (yet); 400 for a digest that is not 64
    hex characters or an id that no leaf could have.
``GET /v1/consistency?first=N[&second=M]``
    the proof that the tree of M leaves (default: the newest) extends the tree of N, with
    the heads signed at both sizes when the log has them (``old_head``, ``new_head``).

A client trusts none of it: it checks the head's signature with the key it pinned, and the
proof against the head (:mod:`pipeline.audit.remote` does, for scorers). The API opens its
own read-only connection per request (:class:`~pipeline.audit.reader.AuditReader`), never
the writer's, so a standby auditor serves it from the file too. Errors are a JSON object
``{"error": "..."}``: 400 bad input, 404 not found, 503 no log (yet) or one that cannot be
read.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pipeline.audit.errors import AuditError, ProofError
from pipeline.audit.leaves import CHECKPOINT_PREFIX, checkpoint_id
from pipeline.audit.reader import AuditReader
from pipeline.audit.schema import DAMAGE
from pipeline.health import Reply, Route

PREFIX = "/v1/"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ID = re.compile(r"[\x21-\x7e]{1,200}")  # what a leaf id may be (pipeline.audit.leaves)
_ENDPOINTS = ("/v1/head", "/v1/checkpoints/<sha256>/proof", "/v1/alerts/<alert_id>/proof",
              "/v1/consistency?first=N[&second=M]")


def routes(store: str | Path) -> dict[str, Route]:
    """The API's routes for :class:`~pipeline.health.HealthServer`, over the log ``store``."""
    return {PREFIX: AuditApi(store)}


def proof_document(reader: AuditReader, leaf_id: str) -> dict[str, Any] | None:
    """The inclusion proof of ``leaf_id`` against the newest head, as the API and ``chainwatch
    audit prove`` give it; None if the log does not hold the id."""
    head = reader.head
    index = reader.index_of(leaf_id)
    if head is None or index is None or index >= head.size:
        return None
    proof = reader.inclusion_proof(index, head.size)
    leaf = reader.leaf(index)
    return {"leaf_id": leaf.id, "leaf": leaf.data.decode(),
            "leaf_base64": base64.b64encode(leaf.data).decode(), "index": index,
            "proof": json.loads(proof.to_json()), "head": json.loads(head.to_json())}


class AuditApi:
    """The :data:`~pipeline.health.Route` of ``/v1/``; see the module docstring."""

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.store)!r})"

    def __call__(self, path: str, query: Mapping[str, str]) -> Reply:
        parts = [unquote(p) for p in path.removeprefix(PREFIX.rstrip("/")).split("/")]
        parts = [p for p in parts if p]
        match parts:
            case []:
                return Reply.json(200, {"endpoints": list(_ENDPOINTS)})
            case ["head"]:
                return self._read(self._head)
            case ["checkpoints", digest, "proof"]:
                if not _SHA256.fullmatch(digest):
                    return Reply.error(400, f"{digest[:80]!r} is not a SHA-256 digest (64 "
                                       "hex characters)")
                return self._read(lambda r: self._proof(r, checkpoint_id(digest.lower())))
            case ["alerts", alert_id, "proof"]:
                if not _ID.fullmatch(alert_id) or alert_id.startswith(CHECKPOINT_PREFIX):
                    return Reply.error(400, f"{alert_id[:80]!r} is not an alert id (1-200 "
                                       "printable ASCII characters, no spaces)")
                return self._read(lambda r: self._proof(r, alert_id))
            case ["consistency"]:
                return self._consistency(query)
        return Reply.error(404, f"no such endpoint {path[:200]!r}; try "
                           + ", ".join(_ENDPOINTS))

    def _read(self, answer: Callable[[AuditReader], Reply]) -> Reply:
        """``answer(reader)`` on a fresh read-only reader; 503 if there is no log to read."""
        if not self.store.is_file():
            return Reply.error(503, "the audit log does not exist yet: the auditor creates "
                               "it when it starts appending")
        try:
            with AuditReader.open(self.store) as reader:
                return answer(reader)
        except (AuditError, *DAMAGE, UnicodeError, OSError) as exc:
            return Reply.error(503, f"the audit log cannot be read ({type(exc).__name__}); "
                               "run chainwatch audit verify on it")

    @staticmethod
    def _head(reader: AuditReader) -> Reply:
        head = reader.head
        if head is None:
            return Reply.error(404, "the audit log is empty: no signed head yet")
        return Reply(200, head.to_json() + b"\n")

    @staticmethod
    def _proof(reader: AuditReader, leaf_id: str) -> Reply:
        document = proof_document(reader, leaf_id)
        if document is None:
            return Reply.error(404, f"{leaf_id} is not in the audit log ({reader.size} "
                               "leaves): it was not appended (yet)")
        return Reply.json(200, document)

    def _consistency(self, query: Mapping[str, str]) -> Reply:
        try:
            first = _size(query, "first")
            second = _size(query, "second") if "second" in query else None
        except ValueError as exc:
            return Reply.error(400, str(exc))
        if first is None:
            return Reply.error(400, "give the older tree size: ?first=N (and ?second=M, "
                               "default the newest)")
        if second is not None and first > second:
            return Reply.error(400, f"first ({first}) is larger than second ({second})")

        def answer(reader: AuditReader) -> Reply:
            size = reader.size
            if max(first, second if second is not None else 0) > size:
                return Reply.error(404, f"the log has {size} leaves, fewer than asked for")
            try:
                proof = reader.consistency_proof(first, second)
            except ProofError as exc:
                return Reply.error(400, str(exc))
            old, new = reader.head_at(proof.old_size), reader.head_at(proof.new_size)
            return Reply.json(200, {"proof": json.loads(proof.to_json()),
                                    "old_head": json.loads(old.to_json()) if old else None,
                                    "new_head": json.loads(new.to_json()) if new else None})

        return self._read(answer)


def _size(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(f"{name}={text[:40]!r} is not a tree size (a whole number >= 0)")
    return int(text)


def decode_leaf(document: Mapping[str, Any]) -> bytes:
    """The leaf bytes of a proof document: ``leaf_base64`` if there, else ``leaf`` as text;
    AuditError if neither is usable."""
    encoded = document.get("leaf_base64")
    if isinstance(encoded, str):
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuditError(f"leaf_base64 is not base64 ({exc})") from exc
    text = document.get("leaf")
    if isinstance(text, str):
        return text.encode()
    raise AuditError("the proof has no leaf (leaf_base64 or leaf)")
