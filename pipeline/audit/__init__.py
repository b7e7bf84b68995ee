"""The audit chain: a signed, append-only Merkle log of alerts and checkpoints (RFC 9162).

Every alert and every checkpoint record becomes a *leaf*: canonical bytes with a kind and
an id (:class:`Leaf`). Leaves are hashed into a Merkle tree exactly as RFC 6962 / 9162 do
(:mod:`~pipeline.audit.merkle`), and every appended batch yields an Ed25519-signed tree head
that links the previous head's hash (:class:`SignedHead`). The log answers two questions,
each with a proof that anyone holding the public key and a signed head can check without
the store (:mod:`~pipeline.audit.proofs`):

* *inclusion*: this alert (or checkpoint) is in the log the head describes;
* *consistency*: the log the new head describes extends the one the old head described,
  so nothing was removed or rewritten in between.

The parts, each a small module:

* :class:`AuditLog` writes one SQLite file (:mod:`~pipeline.audit.store`), one process at a
  time; :class:`AuditReader` reads it from any number of processes
  (:mod:`~pipeline.audit.reader`); the layout is in :mod:`~pipeline.audit.schema`, and
  leaves are found by id through an in-memory index (:mod:`~pipeline.audit.ids`);
* :func:`verify_store` checks a whole file, leaf by leaf and head by head, and names the
  first bad entry (:mod:`~pipeline.audit.verify`); the file seal makes every byte of it
  count (:mod:`~pipeline.audit.seal`), and heads kept outside the file catch a rollback or
  a removed seal (:mod:`~pipeline.audit.external`);
* :class:`Signer` holds the private key, :func:`load_public_key` reads public keys
  (:mod:`~pipeline.audit.signing`);
* errors derive from :class:`AuditError` (:mod:`~pipeline.audit.errors`); verification
  functions never raise, they answer False or a result that is not ok.

A round trip::

    leaf = Leaf.from_alert_json(raw)                              # bytes from Kafka
    with AuditLog.open("chainwatch-data/audit.db") as log:        # key: audit.db.key
        result = log.append([leaf], {("chainwatch.alerts", 0): 42})   # offset 41 read
        proof = log.inclusion_proof(leaf.id)
    verify_inclusion(public_key, result.head, leaf, proof)        # no store needed
    verify_store("chainwatch-data/audit.db", public_key=public_key)
"""

from pipeline.audit.errors import AuditError, AuditKeyError, LeafError, ProofError
from pipeline.audit.leaves import KINDS, Leaf, checkpoint_id
from pipeline.audit.merkle import EMPTY_ROOT, CompactRange, leaf_hash, node_hash, root_of
from pipeline.audit.proofs import (
    ConsistencyProof,
    InclusionProof,
    verify_consistency,
    verify_consistency_path,
    verify_inclusion,
    verify_inclusion_path,
)
from pipeline.audit.reader import AuditReader
from pipeline.audit.signing import PublicKeyLike, SignedHead, Signer, load_public_key, verify_head
from pipeline.audit.store import AppendResult, AuditLog, Offsets, default_key_path
from pipeline.audit.verify import VerifyResult, verify_store

__all__ = [
    "EMPTY_ROOT",
    "KINDS",
    "AppendResult",
    "AuditError",
    "AuditKeyError",
    "AuditLog",
    "AuditReader",
    "CompactRange",
    "ConsistencyProof",
    "InclusionProof",
    "Leaf",
    "LeafError",
    "Offsets",
    "ProofError",
    "PublicKeyLike",
    "SignedHead",
    "Signer",
    "VerifyResult",
    "checkpoint_id",
    "default_key_path",
    "leaf_hash",
    "load_public_key",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_consistency_path",
    "verify_head",
    "verify_inclusion",
    "verify_inclusion_path",
    "verify_store",
]
