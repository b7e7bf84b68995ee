"""The scorer's question before it restores a checkpoint: is this digest in the audit log?

"In the log" means more than a row in a table: the log's newest signed head must verify with
the *pinned* public key (from configuration, not from the file being checked), and an
inclusion proof of the checkpoint's leaf must lead to that head's root. A store someone
edited, or signed with another key, vouches for nothing.

A checkpoint the auditor has not appended yet (it runs a little behind) is not trusted
either; :meth:`~pipeline.checkpoints.CheckpointStore.load_newest_good` then falls back to the
previous one, which only means re-reading a little more input.

The check never raises: a store that is damaged, truncated or not an audit log at all
answers "not trusted" with the reason logged, because it runs inside a consumer's rebalance
callback, where an exception would stop the scorer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.audit.errors import AuditError, AuditKeyError
from pipeline.audit.leaves import Leaf, checkpoint_id
from pipeline.audit.proofs import verify_inclusion
from pipeline.audit.reader import AuditReader
from pipeline.audit.schema import DAMAGE
from pipeline.audit.signing import PublicKeyLike, load_public_key, verify_head
from pipeline.settings import Settings

log = logging.getLogger(__name__)

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
        raise AuditKeyError(f"no public key at {path}: start the auditor first (`chainwatch "
                            "audit serve`), or give the log's key with --public-key / "
                            "audit.public_key (CHAINWATCH_AUDIT_PUBLIC_KEY)")
    return path


class CheckpointTrust:
    """``trust(sha256) -> bool``: the checkpoint is in the log, proven against a signed head.

    The reason for every "no" is logged at WARNING and kept in :attr:`last_reason`.
    """

    def __init__(self, store: str | Path, public_key: PublicKeyLike) -> None:
        self.store = Path(store)
        self.public_key = load_public_key(public_key)
        self.last_reason = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointTrust:
        """The check the settings ask for: ``audit.store``, and :func:`configured_public_key`."""
        return cls(settings.audit.store, configured_public_key(settings))

    def __call__(self, sha256: str) -> bool:
        try:
            reason = self._check(sha256)
        except _UNREADABLE as exc:  # a damaged file: whatever it holds, it vouches for nothing
            reason = f"the audit log {self.store} cannot be read ({type(exc).__name__}: {exc})"
        self.last_reason = reason
        if reason:
            log.warning("checkpoint %s is not trusted: %s", sha256[:16], reason)
        return not reason

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
