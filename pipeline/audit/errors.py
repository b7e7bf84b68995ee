"""Errors of the audit chain, on the one chainwatch root.

    ChainwatchError                 (pipeline.errors)
    └── AuditError                  the audit log cannot be opened, written or read as asked
        ├── AuditKeyError           a signing or public key is missing, unreadable, malformed
        │                           or its file is readable by others
        ├── ProofError              a proof was asked for an index or size the log lacks
        ├── WriterFenced            this writer may not append now (its lease is lost or
        │                           could not be confirmed): the batch was rolled back
        ├── LogChanged              another process wrote to the log since this writer
        │                           opened it: nothing appended; open it again
        └── LeafError               one input record cannot become a leaf; it is also a
                                    RecordError (``code``, ``field``, ``value``), so a service
                                    sends it to the dead-letter topic and goes on

Verification never raises any of these: :func:`~pipeline.audit.verify_head`,
:func:`~pipeline.audit.verify_inclusion`, :func:`~pipeline.audit.verify_consistency` answer
False and :func:`~pipeline.audit.verify_store` answers a result that is not ok.
"""

from __future__ import annotations

from pipeline.errors import ChainwatchError, RecordError


class AuditError(ChainwatchError):
    """The audit log cannot be opened, written or read as asked; the message says why."""


class AuditKeyError(AuditError):
    """A key is missing, unreadable or malformed, or a private key file is open to others."""


class ProofError(AuditError):
    """A proof was asked for a leaf index or tree size that the log does not have."""


class WriterFenced(AuditError):
    """The writer's fence said no before a commit (its lease is lost or could not be
    confirmed); nothing was appended."""


class LogChanged(AuditError):
    """Another process wrote to the log since this writer opened it; nothing was appended.
    Open the log again to append on top of what the other writer left."""


class LeafError(RecordError, AuditError):
    """One alert or checkpoint record cannot be made into a leaf (not JSON, bad field, ...)."""
