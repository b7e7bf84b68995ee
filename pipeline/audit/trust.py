"""The scorer's question before it restores a checkpoint: is this digest in the audit log?

"In the log" means more than a row in a table: the log's newest signed head must verify with
the *pinned* public key (from configuration, not from the file being checked), and an
inclusion proof of the checkpoint's leaf must lead to that head's root. A store someone
edited, or signed with another key, vouches for nothing.

A checkpoint the auditor has not appended yet (it runs a little behind) is not trusted
either; :meth:`~pipeline.checkpoints.CheckpointStore.load_newest_good` then falls back to the
previous one, which only means re-reading a little more input.

With ``audit.url`` set, the scorer asks the auditor instead of opening its file
(:class:`RemoteCheckpointTrust`): it fetches the checkpoint's inclusion proof over HTTP
(:mod:`pipeline.audit.api`) and checks it exactly as the file path does, with the pinned key.
The auditor's word counts for nothing: a head it sends that the pinned key did not sign, a
leaf of another id, a proof that does not lead to the head's root are all "not trusted".

The check never raises: a store that is damaged, truncated or not an audit log at all, an
auditor that does not answer (within a few seconds) or answers garbage, all answer "not
trusted" with the reason logged, because it runs inside a consumer's rebalance callback,
where an exception would stop the scorer.
"""

from __future__ import annotations

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from pipeline.audit.api import decode_leaf
from pipeline.audit.errors import AuditError, AuditKeyError
from pipeline.audit.leaves import Leaf, checkpoint_id
from pipeline.audit.proofs import InclusionProof, verify_inclusion
from pipeline.audit.reader import AuditReader
from pipeline.audit.remote import AuditorUnreachable, get_json, shown_url
from pipeline.audit.schema import DAMAGE
from pipeline.audit.signing import PublicKeyLike, SignedHead, load_public_key, verify_head
from pipeline.settings import Settings

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_UNREADABLE = (AuditError, *DAMAGE, OSError, ValueError, TypeError, LookupError, OverflowError)
"""What reading a damaged store can raise on the way to an answer (see :func:`_check`)."""


def public_key_arg(value: str) -> Path | str:
    """A public key as given by a person: the path of a PEM file if there is one, else the
    text itself (PEM or 64 hex characters)."""
    return Path(value) if Path(value).is_file() else value


def default_public_key_path(settings: Settings) -> Path:
    """Where the auditor writes its public key: ``<private key>.pub``, the private key being
    ``audit.key`` or ``<audit.store>.key``."""
    return Path(f"{settings.audit.key or settings.audit.store + '.key'}.pub")


def configured_public_key(settings: Settings) -> Path | str:
    """The key heads must be signed with: ``audit.public_key``, else the auditor's ``.pub``
    file; AuditKeyError (saying what to do) if neither is there."""
    if settings.audit.public_key:
        return public_key_arg(settings.audit.public_key)
    path = default_public_key_path(settings)
    if not path.is_file():
        if settings.audit.url:
            where = shown_url(settings.audit.url)
            raise AuditKeyError(f"no public key for the auditor at {where}: pin the log's key"
                                " with audit.public_key "
                                "(CHAINWATCH_AUDIT_PUBLIC_KEY: its PEM file or 64 hex "
                                "characters, as `chainwatch audit public-key` prints it); the "
                                "key is never taken from the auditor itself")
        raise AuditKeyError(f"no public key at {path}: start the auditor first (`chainwatch "
                            "audit serve`), or give the log's key with --public-key / "
                            "audit.public_key (CHAINWATCH_AUDIT_PUBLIC_KEY)")
    return path


class Trust(ABC):
    """``trust(sha256) -> bool``: the checkpoint is in the log, proven against a head signed
    by the pinned key. Never raises; the reason for every "no" is logged at WARNING and kept
    in :attr:`last_reason`."""

    def __init__(self, public_key: PublicKeyLike) -> None:
        self.public_key = load_public_key(public_key)
        self.last_reason = ""

    def __call__(self, sha256: str) -> bool:
        try:
            reason = self._check(sha256)
        except _UNREADABLE as exc:  # a damaged file: whatever it holds, it vouches for nothing
            reason = f"{self._source()} cannot be read ({type(exc).__name__}: {exc})"
        self.last_reason = reason
        if reason:
            log.warning("checkpoint %s is not trusted: %s", sha256[:16], reason)
        return not reason

    @abstractmethod
    def _check(self, sha256: str) -> str:
        """The reason ``sha256`` is not trusted, or "" when it is."""

    @abstractmethod
    def _source(self) -> str:
        """Where the proofs come from, for reasons."""


class CheckpointTrust(Trust):
    """The checkpoint is in the audit log file ``store`` (read-only), proven against its
    newest signed head."""

    def __init__(self, store: str | Path, public_key: PublicKeyLike) -> None:
        super().__init__(public_key)
        self.store = Path(store)

    @classmethod
    def from_settings(cls, settings: Settings) -> Trust:
        """The check the settings ask for: the auditor at ``audit.url`` if set, else the file
        ``audit.store``; either way with :func:`configured_public_key`."""
        key = configured_public_key(settings)
        if settings.audit.url:
            return RemoteCheckpointTrust(settings.audit.url, key)
        return cls(settings.audit.store, key)

    def _source(self) -> str:
        return f"the audit log {self.store}"

    def _check(self, sha256: str) -> str:
        """The reason ``sha256`` is not trusted, or "" when it is."""
        try:
            with AuditReader.open(self.store) as reader:
                head = reader.head
                if head is None:
                    return f"the audit log {self.store} is empty"
                if not verify_head(self.public_key, head):
                    return (f"the newest head of {self.store} is not signed by the configured "
                            "public key")
                leaf_id = checkpoint_id(sha256)
                index = reader.index_of(leaf_id)
                if index is None or index >= head.size:
                    return "its digest is not in the audit log (yet)"
                leaf = Leaf.decode(reader.leaf(index).data)  # the id its bytes give, not the column
                proof = reader.inclusion_proof(index, head.size)
        except AuditError as exc:
            return str(exc)
        if leaf.id != leaf_id or not verify_inclusion(self.public_key, head, leaf, proof):
            return f"the inclusion proof of leaf {index} does not verify against the signed head"
        return ""


class RemoteCheckpointTrust(Trust):
    """The checkpoint is in the log of the auditor at ``url``: its inclusion proof, fetched
    over HTTP (``GET /v1/checkpoints/<sha256>/proof``), verifies here with the pinned key.

    Each question is one request of at most about ``timeout_s`` seconds. After an auditor
    did not answer (or answered 5xx), questions in the next ``retry_after_s`` seconds are
    "not trusted" at once with the same reason, so a rebalance that restores many tasks
    waits for one timeout, not one per checkpoint.
    """

    def __init__(self, url: str, public_key: PublicKeyLike, *, timeout_s: float = 3.0,
                 retry_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(public_key)
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_until = float("-inf")
        self._down_reason = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({shown_url(self.url)!r})"

    def _source(self) -> str:
        return f"the auditor at {shown_url(self.url)}"

    def _check(self, sha256: str) -> str:
        if not _SHA256.fullmatch(sha256):
            return f"{sha256[:80]!r} is not a SHA-256 digest"
        now = self._clock()
        if now < self._down_until:
            return f"{self._down_reason} (not asked again for {self.retry_after_s:g} s)"
        source = self._source()
        try:
            status, document = get_json(f"{self.url}/v1/checkpoints/{sha256.lower()}/proof",
                                        self.timeout_s)
        except AuditorUnreachable as exc:
            return self._down(now, f"{source} did not answer: {exc}")
        if status == 404:
            return f"its digest is not in the audit log (yet), says {source}"
        if status != 200:
            error = document.get("error") if isinstance(document, dict) else None
            reason = f"{source} answered HTTP {status}" + (f": {str(error)[:200]}" if error
                                                            else "")
            return self._down(now, reason) if status >= 500 else reason
        try:
            if not isinstance(document, dict):
                raise AuditError("the answer is not a JSON object")
            head = SignedHead.from_json(json.dumps(document["head"]))
            proof = InclusionProof.from_json(json.dumps(document["proof"]))
            data = decode_leaf(document)
            if document.get("index", proof.index) != proof.index:
                raise AuditError("its index and its proof's index differ")
        except (AuditError, KeyError, TypeError, ValueError) as exc:
            return f"{source} answered something that is not an inclusion proof ({exc})"
        if not verify_head(self.public_key, head):
            return f"the head {source} sent is not signed by the configured public key"
        try:
            leaf = Leaf.decode(data)
        except AuditError as exc:
            return f"the leaf {source} sent is not a leaf ({exc})"
        if leaf.id != checkpoint_id(sha256.lower()):
            return f"{source} sent the leaf of {leaf.id[:80]!r}, not of this checkpoint"
        if not verify_inclusion(self.public_key, head, leaf, proof):
            return (f"the inclusion proof of leaf {proof.index} that {source} sent does not "
                    "verify against the signed head")
        return ""

    def _down(self, now: float, reason: str) -> str:
        self._down_until = now + self.retry_after_s
        self._down_reason = reason
        return reason
