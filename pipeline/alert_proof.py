"""Is a stored alert in the audit log, unaltered? Its inclusion proof, checked.

The check ``chainwatch alerts show`` prints: the audit log's newest signed head must verify
with the pinned public key, the log's leaf of the alert id must be exactly the leaf the
stored alert's bytes give (:meth:`~pipeline.audit.Leaf.from_alert_json`), and its inclusion
proof must lead from that leaf to the head's root (:func:`~pipeline.audit.verify_inclusion`,
the same check as ``chainwatch audit check-proof``). It never raises: every way it can fail
is a :class:`ProofCheck` that is not ``ok``, with a sentence saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.audit import (
    AuditError,
    AuditReader,
    Leaf,
    LeafError,
    PublicKeyLike,
    verify_head,
    verify_inclusion,
)
from pipeline.audit.schema import DAMAGE

IN_LOG = "verified"
NOT_IN_LOG = "not_in_log"
NO_LOG = "no_log"
FAILED = "failed"


@dataclass(frozen=True)
class ProofCheck:
    """``outcome`` is one of ``verified``, ``not_in_log``, ``no_log``, ``failed``."""

    outcome: str
    message: str
    index: int | None = None
    size: int | None = None
    root: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == IN_LOG


def check_alert(raw: bytes, alert_id: str, audit_store: str | Path,
                public_key: PublicKeyLike) -> ProofCheck:
    """The audit check of the alert whose stored bytes are ``raw`` (see the module)."""
    store = Path(audit_store)
    if not store.is_file():
        return ProofCheck(NO_LOG, f"no audit log at {store} (give --audit-store)")
    try:
        expected = Leaf.from_alert_json(raw)
        with AuditReader.open(store) as reader:
            head = reader.head
            index = reader.index_of(alert_id)
            if head is None or index is None or index >= head.size:
                size = head.size if head else 0
                return ProofCheck(NOT_IN_LOG, f"not in the audit log {store} ({size} leaves): "
                                  "the auditor has not appended it (yet), or it never ran on "
                                  "this alert's topic", size=size)
            leaf = reader.leaf(index)
            proof = reader.inclusion_proof(index, head.size)
    except (AuditError, LeafError, *DAMAGE, OSError, ValueError) as exc:
        return ProofCheck(FAILED, f"the audit log {store} cannot be read: {exc}")
    root = head.root.hex()
    if not verify_head(public_key, head):
        return ProofCheck(FAILED, f"the newest head of {store} is not signed by the public "
                          "key given", index, head.size, root)
    if leaf.data != expected.data:
        return ProofCheck(FAILED, f"leaf {index} of {store} has other bytes than the stored "
                          "alert: one of them was altered", index, head.size, root)
    if not verify_inclusion(public_key, head, expected, proof):
        return ProofCheck(FAILED, f"the inclusion proof of leaf {index} does not lead to the "
                          "signed root", index, head.size, root)
    return ProofCheck(IN_LOG, f"leaf {index} of {head.size} in {store}; its proof "
                      f"({len(proof.path)} hashes) leads to root {root[:16]}…, signed at "
                      f"{head.timestamp_ms} ms; the stored alert's bytes are that leaf's",
                      index, head.size, root)
